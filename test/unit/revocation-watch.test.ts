import { DomainError } from '../../src/domain/errors.js';
import {
  comparePositions,
  decodeCursor,
  encodeCursor,
  type FeedPosition,
  type RevocationEvent,
  type RevocationFeedFollower,
} from '../../src/domain/revocations/events.js';
import { RevocationWatch, type WatchFeedReader, type WatchMessage } from '../../src/domain/revocations/watch.js';

const MINUTE = 60_000;
const NOW = Date.parse('2026-12-01T12:00:00Z');
const RELEVANCE = 16 * MINUTE;
const clock = { now: () => NOW };

/**
 * The feed in memory: `committed` is the table (in feed order), `delivered` how far the follower
 * has read it. A read of the reader may run a hook first, to have events committed and delivered
 * while the catch-up is in progress.
 */
class FakeFeed implements RevocationFeedFollower {
  readonly committed: RevocationEvent[] = [];
  delivered = 0;
  horizonAt: FeedPosition | undefined;
  readonly listeners = new Set<(event: RevocationEvent) => void>();
  readonly reads: { after?: FeedPosition; since?: Date; limit: number }[] = [];
  duringRead: (() => void) | undefined;
  #next = 1n;

  /** Appends events to the table (as committed transactions would), not yet seen by the follower. */
  commit(count: number, ageMs = 0): RevocationEvent[] {
    const added: RevocationEvent[] = [];
    for (let i = 0; i < count; i++) {
      const n = this.#next++;
      const event: RevocationEvent = {
        kind: 'session',
        position: { xid: 1000n + n, id: n },
        sessionId: `session-${n}`,
        userId: `user-${n}`,
        reason: 'LOGOUT',
        occurredAt: new Date(NOW - ageMs),
      };
      this.committed.push(event);
      added.push(event);
    }
    return added;
  }

  /** The follower reads everything committed and delivers it to subscribers, in order. */
  follow(): void {
    while (this.delivered < this.committed.length) {
      const event = this.committed[this.delivered++]!;
      for (const listener of [...this.listeners]) listener(event);
    }
  }

  get position(): FeedPosition | undefined {
    return this.delivered === 0 ? undefined : this.committed[this.delivered - 1]!.position;
  }

  /**
   * Committed events behind a transaction still open on the server: the follower has seen them
   * (`visible`) but neither delivers them nor lets ordered reads return them yet.
   */
  unsettled = 0;

  subscribe(listener: (event: RevocationEvent) => void) {
    this.listeners.add(listener);
    const visible = this.unsettled > 0 ? this.committed[this.delivered + this.unsettled - 1]!.position : undefined;
    return { position: this.position, visible, unsubscribe: () => this.listeners.delete(listener) };
  }

  readonly reader: WatchFeedReader = {
    readOrdered: async (options) => {
      this.reads.push({ after: options.after, since: options.since, limit: options.limit });
      await Promise.resolve();
      this.duringRead?.();
      // The reader sees what is committed when its statement runs (after the hook).
      const matching = this.committed.slice(0, this.committed.length - this.unsettled).filter((event) =>
        options.after ? comparePositions(event.position, options.after) > 0 : event.occurredAt >= (options.since ?? new Date(0)),
      );
      return { events: matching.slice(0, options.limit), complete: matching.length <= options.limit };
    },
    horizon: async () => this.horizonAt,
  };
}

function watchOf(feed: FakeFeed, cursor = '', options: { bufferLimit?: number; pageSize?: number } = {}): RevocationWatch {
  return new RevocationWatch(
    { reader: feed.reader, follower: feed, relevanceMs: RELEVANCE, bufferLimit: options.bufferLimit ?? 100, pageSize: options.pageSize ?? 3, clock },
    cursor,
  );
}

/** Takes `count` messages. */
async function take(watch: RevocationWatch, count: number): Promise<WatchMessage[]> {
  const messages: WatchMessage[] = [];
  while (messages.length < count) {
    const result = await watch.next();
    if (result.done) break;
    messages.push(result.value);
  }
  return messages;
}

/** Takes messages up to and including the in_sync marker. */
async function untilInSync(watch: RevocationWatch): Promise<WatchMessage[]> {
  const messages: WatchMessage[] = [];
  for (;;) {
    const result = await watch.next();
    if (result.done) throw new Error('the watch ended before the marker');
    messages.push(result.value);
    if (result.value.kind === 'in_sync') return messages;
  }
}

const ids = (messages: WatchMessage[]) => messages.map((m) => (m.kind === 'event' ? m.event.position.id : 'in_sync'));
const cursorOf = (event: RevocationEvent) => encodeCursor(event.position);

/** Every event message's cursor names its own event, and every cursor (the marker's too) moves forward. */
function expectConsistentCursors(messages: WatchMessage[]): void {
  let previous: FeedPosition | undefined;
  for (const message of messages) {
    const position = decodeCursor(message.cursor)!;
    expect(position).toBeDefined();
    if (message.kind === 'event') expect(position).toEqual(message.event.position);
    if (previous) expect(comparePositions(position, previous)).toBeGreaterThanOrEqual(message.kind === 'event' ? 1 : 0);
    previous = position;
  }
}

describe('RevocationWatch without a cursor', () => {
  it('sends every relevant event, then the marker with the follower\'s position, then live events', async () => {
    const feed = new FakeFeed();
    feed.commit(2, RELEVANCE + MINUTE); // too old to matter: not sent
    const relevant = feed.commit(4, MINUTE);
    feed.follow();
    const watch = watchOf(feed);

    const snapshot = await untilInSync(watch);
    expect(ids(snapshot)).toEqual([...relevant.map((e) => e.position.id), 'in_sync']);
    expect(snapshot.at(-1)).toEqual({ kind: 'in_sync', cursor: cursorOf(relevant.at(-1)!) });
    expect(feed.reads[0]).toEqual({ after: undefined, since: new Date(NOW - RELEVANCE), limit: 3 });

    const live = feed.commit(2);
    feed.follow();
    const next = await take(watch, 2);
    expect(ids(next)).toEqual(live.map((e) => e.position.id));
    expectConsistentCursors([...snapshot, ...next]);
    watch.close();
  });

  it('hands over from the database to live events with no gap and no duplicate when events arrive during the catch-up', async () => {
    const feed = new FakeFeed();
    const before = feed.commit(7, MINUTE);
    feed.follow();
    const watch = watchOf(feed, '', { pageSize: 2 });
    // During each catch-up read, two more events commit and the follower delivers them.
    let rounds = 0;
    feed.duringRead = () => {
      if (rounds++ < 3) {
        feed.commit(2);
        feed.follow();
      }
    };

    const snapshot = await untilInSync(watch);
    feed.duringRead = undefined;
    const after = feed.commit(3);
    feed.follow();
    // What was delivered live during the catch-up and not read from the database follows the marker.
    const sentBefore = snapshot.length - 1;
    const live = await take(watch, feed.committed.length - sentBefore);

    const all = [...snapshot, ...live];
    const events = ids(all).filter((id) => id !== 'in_sync');
    expect(events).toEqual(feed.committed.map((e) => e.position.id));
    expect(sentBefore).toBeGreaterThanOrEqual(before.length);
    expect(ids(live).slice(-3)).toEqual(after.map((e) => e.position.id));
    expectConsistentCursors(all);
    watch.close();
  });

  it('reads from the database the live events it had to drop when more than the buffer arrived during the catch-up', async () => {
    const feed = new FakeFeed();
    feed.commit(4, MINUTE);
    feed.follow();
    const watch = watchOf(feed, '', { pageSize: 2, bufferLimit: 3 });
    let first = true;
    feed.duringRead = () => {
      if (!first) return;
      first = false;
      feed.commit(10); // a burst larger than the buffer
      feed.follow();
    };

    const snapshot = await untilInSync(watch);
    // Held: at most the buffer's worth of the newest live events, after the marker.
    const held = await take(watch, feed.committed.length - (snapshot.length - 1));
    expect(held.length).toBeLessThanOrEqual(3);
    const events = ids([...snapshot, ...held]).filter((id) => id !== 'in_sync');
    expect(events).toEqual(feed.committed.map((e) => e.position.id));
    // The dropped ones were read from the database, before the marker.
    expect(snapshot.length - 1).toBeGreaterThanOrEqual(feed.committed.length - 3);
    expectConsistentCursors([...snapshot, ...held]);
    watch.close();
  });

  it('reads what the follower has already seen but the catch-up had not (events committed after the subscription are live)', async () => {
    const feed = new FakeFeed();
    feed.commit(2, MINUTE);
    feed.follow();
    const watch = watchOf(feed);
    feed.commit(2); // committed after the subscription, not yet followed
    const snapshot = await untilInSync(watch);
    // The catch-up may read them (they are committed) or leave them to the follower; either way once.
    feed.follow();
    const rest = await take(watch, 4 + 1 - snapshot.length);
    const events = ids([...snapshot, ...rest]).filter((id) => id !== 'in_sync');
    expect(events).toEqual(feed.committed.map((e) => e.position.id));
    watch.close();
  });

  it('gives the marker a cursor even when there is nothing to send', async () => {
    const empty = new FakeFeed();
    const watch = watchOf(empty);
    const [marker] = await take(watch, 1);
    expect(marker).toMatchObject({ kind: 'in_sync' });
    expect(decodeCursor(marker!.cursor)).toEqual({ xid: 0n, id: 0n });
    watch.close();

    // Only old events: the marker's cursor is the follower's position, so a resume skips them.
    const old = new FakeFeed();
    old.commit(3, RELEVANCE * 2);
    old.follow();
    const second = watchOf(old);
    expect(await take(second, 1)).toEqual([{ kind: 'in_sync', cursor: cursorOf(old.committed.at(-1)!) }]);
    second.close();
  });
});

describe('RevocationWatch from a cursor', () => {
  it('sends every event after the cursor (relevant or not), then the marker, then live events', async () => {
    const feed = new FakeFeed();
    const events = feed.commit(6, RELEVANCE * 2);
    feed.follow();
    const watch = watchOf(feed, cursorOf(events[1]!));

    const snapshot = await untilInSync(watch);
    expect(ids(snapshot)).toEqual([...events.slice(2).map((e) => e.position.id), 'in_sync']);
    expect(snapshot.at(-1)!.cursor).toBe(cursorOf(events.at(-1)!));
    expect(feed.reads[0]).toMatchObject({ after: events[1]!.position });

    const live = feed.commit(1);
    feed.follow();
    expect(ids(await take(watch, 1))).toEqual([live[0]!.position.id]);
    watch.close();
  });

  it('resumes exactly after the cursor of any message, the marker included', async () => {
    const feed = new FakeFeed();
    feed.commit(5, MINUTE);
    feed.follow();
    const first = watchOf(feed);
    const messages = await untilInSync(first);
    first.close();

    for (const [index, message] of messages.entries()) {
      const resumed = watchOf(feed, message.cursor);
      const rest = await untilInSync(resumed);
      const expected = messages.slice(index + 1).filter((m) => m.kind === 'event');
      expect(ids(rest)).toEqual([...ids(expected), 'in_sync']);
      resumed.close();
    }
  });

  it('is CURSOR_EXPIRED when the sweep has deleted events after the cursor, and fine at the horizon itself', async () => {
    const feed = new FakeFeed();
    const events = feed.commit(5, MINUTE);
    feed.follow();
    feed.horizonAt = events[2]!.position;

    const expired = watchOf(feed, cursorOf(events[1]!));
    const error = await expired.next().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DomainError);
    expect(error).toMatchObject({ reason: 'CURSOR_EXPIRED', kind: 'out_of_range' });
    expired.close();

    const atHorizon = watchOf(feed, cursorOf(events[2]!));
    expect(ids(await untilInSync(atHorizon))).toEqual([4n, 5n, 'in_sync']);
    atHorizon.close();
  });

  it('is CURSOR_EXPIRED when the sweep passes the cursor during the catch-up', async () => {
    const feed = new FakeFeed();
    const events = feed.commit(6, MINUTE);
    feed.follow();
    const watch = watchOf(feed, cursorOf(events[0]!), { pageSize: 2 });
    expect(ids(await take(watch, 2))).toEqual([2n, 3n]);
    feed.horizonAt = events[4]!.position; // deleted up to 5 while 4 and 5 were still to be read
    await expect(watch.next()).rejects.toMatchObject({ reason: 'CURSOR_EXPIRED' });
    watch.close();
  });

  it('refuses a malformed cursor as INVALID_ARGUMENT on since_cursor, before subscribing', () => {
    const feed = new FakeFeed();
    for (const cursor of ['nope', encodeCursor({ xid: 1n, id: 2n }) + 'x', Buffer.from('v1.1').toString('base64url'), '%%%']) {
      let error: unknown;
      try {
        watchOf(feed, cursor);
      } catch (e) {
        error = e;
      }
      expect(error).toMatchObject({ reason: 'INVALID_ARGUMENT', fieldViolations: [expect.objectContaining({ field: 'since_cursor' })] });
    }
    expect(feed.listeners.size).toBe(0);
  });
});

describe('RevocationWatch and its consumer', () => {
  it('fails with OVERLOADED when more than the buffer of live events waits for the consumer', async () => {
    const feed = new FakeFeed();
    const watch = watchOf(feed, '', { bufferLimit: 5 });
    await untilInSync(watch);
    feed.commit(5);
    feed.follow();
    let failed: unknown;
    void watch.failed.catch((e: unknown) => (failed = e));
    await Promise.resolve();
    expect(failed).toBeUndefined();

    feed.commit(1);
    feed.follow();
    await Promise.resolve();
    expect(failed).toMatchObject({ reason: 'OVERLOADED', kind: 'resource_exhausted' });
    expect((failed as Error).message).toMatch(/more than 5 events behind.*cursor of the last message/);
    await expect(watch.next()).rejects.toBe(failed);
    expect(feed.listeners.size).toBe(0); // unsubscribed: nothing more is held
  });

  it('holds the marker back until the events the follower had seen committed, but not yet settled, are delivered; they go out first', async () => {
    const feed = new FakeFeed();
    feed.commit(3);
    feed.follow();
    // Two more commit behind a transaction that is still open somewhere on the server.
    feed.commit(2);
    feed.unsettled = 2;
    const watch = watchOf(feed);
    expect(ids(await take(watch, 3))).toEqual([1n, 2n, 3n]);
    let marker: WatchMessage[] | undefined;
    const waiting = untilInSync(watch).then((messages) => (marker = messages));
    await new Promise((resolve) => setImmediate(resolve));
    expect(marker).toBeUndefined();
    // The transaction ends: ordered reads and the follower reach them.
    feed.unsettled = 0;
    feed.follow();
    await waiting;
    expect(ids(marker!)).toEqual([4n, 5n, 'in_sync']);
    expect(marker!.at(-1)!.cursor).toBe(cursorOf(feed.committed[4]!));
    // And live from there, once each.
    feed.commit(1);
    feed.follow();
    expect(ids(await take(watch, 1))).toEqual([6n]);
    watch.close();
  });

  it('close() unsubscribes and ends a pending next()', async () => {
    const feed = new FakeFeed();
    const watch = watchOf(feed);
    await untilInSync(watch);
    const pending = watch.next();
    watch.close();
    expect(await pending).toEqual({ done: true, value: undefined });
    expect(feed.listeners.size).toBe(0);
  });

  it('delivers every event exactly once, in order, whatever the interleaving (randomised)', async () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    let checked = 0;
    for (let round = 0; round < 200; round++) {
      const feed = new FakeFeed();
      feed.commit(Math.floor(random() * 8), MINUTE);
      if (random() < 0.7) feed.follow();
      const startAt = feed.committed.length > 0 && random() < 0.5 ? feed.committed[Math.floor(random() * feed.committed.length)] : undefined;
      const watch = watchOf(feed, startAt ? cursorOf(startAt) : '', { pageSize: 1 + Math.floor(random() * 3), bufferLimit: 1 + Math.floor(random() * 4) });
      feed.duringRead = () => {
        if (random() < 0.5) feed.commit(Math.floor(random() * 4));
        if (random() < 0.6) feed.follow();
      };
      const received: WatchMessage[] = [];
      let failed = false;
      void watch.failed.catch(() => (failed = true));
      for (let step = 0; step < 40 && !failed; step++) {
        if (received.some((m) => m.kind === 'in_sync')) {
          feed.commit(Math.floor(random() * 2));
          feed.follow();
        }
        const result = await Promise.race([watch.next(), new Promise<'idle'>((resolve) => setImmediate(() => resolve('idle')))]).catch(() => 'failed' as const);
        if (result === 'failed') break;
        if (result === 'idle' || result.done) continue;
        received.push(result.value);
      }
      watch.close();
      if (failed) continue; // the consumer fell behind: it would resume from its last cursor
      checked += 1;
      const events = received.filter((m): m is Extract<WatchMessage, { kind: 'event' }> => m.kind === 'event').map((m) => m.event.position.id);
      const expected = feed.committed.filter((e) => !startAt || comparePositions(e.position, startAt.position) > 0).map((e) => e.position.id);
      // A prefix of the feed after the start, without gaps or repeats.
      expect(events).toEqual(expected.slice(0, events.length));
      expect(received.filter((m) => m.kind === 'in_sync').length).toBeLessThanOrEqual(1);
      expectConsistentCursors(received);
    }
    expect(checked).toBeGreaterThan(100);
  });
});
