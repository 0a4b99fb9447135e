import type { Clock } from '../clock.js';
import { DomainError } from '../errors.js';
import {
  comparePositions,
  decodeCursor,
  encodeCursor,
  type FeedPosition,
  type RevocationEvent,
  type RevocationFeedFollower,
  type RevocationFeedReader,
} from './events.js';

/** The catch-up reader, with the sweep's horizon: a cursor below it may have missed deleted events. */
export type WatchFeedReader = RevocationFeedReader & { horizon(): Promise<FeedPosition | undefined> };

/** One message of a watch: an event, or the marker that the watcher has caught up. Each carries its resume cursor. */
export type WatchMessage =
  | { readonly kind: 'event'; readonly event: RevocationEvent; readonly cursor: string }
  | { readonly kind: 'in_sync'; readonly cursor: string };

export interface RevocationWatchOptions {
  readonly reader: WatchFeedReader;
  readonly follower: RevocationFeedFollower;
  /** Without a cursor, every event that occurred within this long before now is sent first (token lifetime plus skew). */
  readonly relevanceMs: number;
  /** Live events held for a consumer that has not taken them yet; beyond it the watch fails with OVERLOADED. */
  readonly bufferLimit: number;
  /** Events per catch-up read. */
  readonly pageSize?: number;
  readonly clock: Clock;
}

const DEFAULT_PAGE_SIZE = 500;
/** Where a feed with nothing in it starts: every real position is after it. */
const ORIGIN: FeedPosition = { xid: 0n, id: 0n };

const max = (a: FeedPosition | undefined, b: FeedPosition | undefined): FeedPosition | undefined =>
  a === undefined ? b : b === undefined ? a : comparePositions(a, b) >= 0 ? a : b;
const after = (a: FeedPosition, b: FeedPosition | undefined): boolean => b === undefined || comparePositions(a, b) > 0;

/** The position a `since_cursor` names; empty means "no cursor". Anything else is INVALID_ARGUMENT. */
export function parseSinceCursor(cursor: string): FeedPosition | undefined {
  if (cursor === '') return undefined;
  const position = decodeCursor(cursor);
  if (!position) {
    throw DomainError.invalidArgument([
      { field: 'since_cursor', description: 'must be empty or the cursor of a message of an earlier WatchRevocations stream' },
    ]);
  }
  return position;
}

/**
 * One consumer's view of the revocation feed (WatchRevocations): the events after a cursor (or,
 * without one, every event still relevant), then an `in_sync` marker, then live events, each
 * exactly once and in feed order.
 *
 * The handoff from the database to the live follower has no gap and no duplicate because the
 * watch subscribes to the follower *before* reading anything: the follower delivers every event
 * after its position at that moment (`target`), so the catch-up only has to read up to `target`
 * (or until nothing more is readable: the follower only delivers what is readable), and every
 * live event at or below the last position sent is dropped. Live events that arrive during the
 * catch-up wait in memory; if more than `bufferLimit` arrive before it ends (a burst, or a slow
 * catch-up), they are dropped and `target` moves to the newest one, so the catch-up reads them
 * from the database instead: the database is the truth, memory only a shortcut.
 *
 * The marker is sent whether or not the watch started from a cursor: it always means "everything
 * up to now has been sent", which is what a client needs to know, and one rule is simpler for
 * clients than two. Its cursor is the furthest position the catch-up covered. "Up to now" means
 * every event the follower had seen committed when the watch started (`visible`), settled or not:
 * an event a still-open transaction could precede (any transaction on the server, in any database:
 * the commit horizon is the server's) is only readable in order once that transaction ends, so the
 * marker waits for the follower to deliver it, and the events the follower delivers meanwhile go
 * out ahead of the marker, in order.
 *
 * Once live, events the consumer has not taken are held up to `bufferLimit`; beyond it the watch
 * fails (`failed` rejects) with OVERLOADED: the consumer resumes from its last cursor, and its
 * backlog is then read from the database instead of held here.
 *
 * Pull-based: `next()` reads the database only when the consumer asks for more, so a consumer
 * that is slow during the catch-up costs at most one page.
 */
export class RevocationWatch {
  /** Rejects when the watch fails between calls to `next()` (a consumer too far behind). Never resolves. */
  readonly failed: Promise<never>;

  readonly #options: RevocationWatchOptions;
  readonly #start: FeedPosition | undefined;
  readonly #abort = new AbortController();
  #unsubscribe: (() => void) | undefined;
  #phase: 'catching-up' | 'live' | 'closed' = 'catching-up';
  /** Catch-up: read the database at least up to here (the follower's position, or the newest live event dropped). */
  #target: FeedPosition | undefined;
  /** The last position read from the database (or the start cursor). */
  #read: FeedPosition | undefined;
  /** The last position queued for the consumer: nothing at or below it is queued again. */
  #queuedUpTo: FeedPosition | undefined;
  /** Messages ready for the consumer: a catch-up page, then the marker and live events. */
  #ready: WatchMessage[] = [];
  /** During the catch-up: live events waiting for it to end. */
  #live: RevocationEvent[] = [];
  /** The furthest event the follower had seen committed at the start: the marker waits until it is delivered. */
  #awaiting: FeedPosition | undefined;
  /** The catch-up has read everything up to `target` (reset when `target` moves). */
  #complete = false;
  /** How many times live events were dropped to the database: a read that overlapped a drop may not cover them. */
  #drops = 0;
  #error: unknown;
  #fail!: (error: unknown) => void;
  #wake: (() => void) | undefined;

  /** Parses the cursor (INVALID_ARGUMENT) and subscribes to the follower at once. */
  constructor(options: RevocationWatchOptions, sinceCursor: string) {
    this.#options = options;
    this.#start = parseSinceCursor(sinceCursor);
    this.#read = this.#start;
    this.#queuedUpTo = this.#start;
    this.failed = new Promise<never>((_, reject) => (this.#fail = reject));
    this.failed.catch(() => undefined);
    const subscription = options.follower.subscribe((event) => this.#onLive(event));
    this.#unsubscribe = subscription.unsubscribe;
    this.#target = subscription.position;
    if (subscription.visible !== undefined && after(subscription.visible, subscription.position)) this.#awaiting = subscription.visible;
  }

  /** The next message; waits for one while live. Rejects with CURSOR_EXPIRED, OVERLOADED or a read error. */
  async next(): Promise<IteratorResult<WatchMessage, undefined>> {
    for (;;) {
      if (this.#error !== undefined) throw this.#error;
      if (this.#phase === 'closed') return { done: true, value: undefined };
      const message = this.#ready.shift();
      if (message) return { done: false, value: message };
      if (this.#phase === 'catching-up') {
        await this.#catchUp();
      } else {
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
      }
    }
  }

  /** Ends the watch: unsubscribes, abandons a read in progress, and makes `next()` report the end. */
  close(): void {
    if (this.#phase === 'closed') return;
    this.#phase = 'closed';
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    this.#ready = [];
    this.#live = [];
    this.#abort.abort();
    this.#wake?.();
  }

  #onLive(event: RevocationEvent): void {
    if (this.#phase === 'closed' || !after(event.position, this.#queuedUpTo)) return;
    if (this.#phase === 'catching-up') {
      this.#live.push(event);
      if (this.#live.length > this.#options.bufferLimit) {
        // Too many to hold while the catch-up runs: read them from the database instead.
        this.#live = [];
        this.#target = max(this.#target, event.position);
        this.#complete = false;
        this.#drops += 1;
      }
      // A catch-up waiting for the follower to deliver what it had seen (see #catchUp).
      this.#wake?.();
      return;
    }
    this.#queue(event);
    const waiting = this.#ready.length - (this.#ready[0]?.kind === 'in_sync' ? 1 : 0);
    if (waiting > this.#options.bufferLimit) {
      const error = new DomainError(
        'OVERLOADED',
        `the consumer fell more than ${this.#options.bufferLimit} events behind the revocation feed; reconnect with the cursor of the last message received`,
      );
      this.#error = error;
      this.close();
      this.#fail(error);
      return;
    }
    this.#wake?.();
  }

  #queue(event: RevocationEvent): void {
    this.#ready.push({ kind: 'event', event, cursor: encodeCursor(event.position) });
    this.#queuedUpTo = event.position;
  }

  /**
   * One catch-up step, called when the consumer has taken every message ready: a page from the
   * database, or, once caught up, the marker and the live events held so far.
   */
  async #catchUp(): Promise<void> {
    if (!this.#complete) {
      await this.#readPage();
      // The last page goes to the consumer before the marker, so that live events only ever
      // wait behind other live events (the buffer limit counts the consumer's lag, not a page).
      if (!this.#complete || this.#ready.length > 0 || this.#phase === 'closed') return;
    }
    if (this.#awaiting !== undefined) {
      const followed = this.#options.follower.position;
      if (followed === undefined || comparePositions(followed, this.#awaiting) < 0) {
        // Not settled yet: send what the follower has delivered so far, or wait for more.
        this.#queueHeld();
        if (this.#ready.length > 0) return;
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
        return;
      }
      this.#awaiting = undefined;
      // Every event up to it was delivered live (the follower delivers before it moves on).
      this.#queueHeld();
      if (this.#ready.length > 0) return;
    }
    let through = max(max(this.#read, this.#target), this.#queuedUpTo);
    if (through === undefined) {
      // Nothing read and a follower that has read nothing: the feed is empty as far as anyone
      // knows. Resuming from the sweep's horizon (or the origin) is never expired and skips nothing.
      through = (await this.#options.reader.horizon()) ?? ORIGIN;
      if (this.#phase === 'closed') return;
    }
    this.#ready.push({ kind: 'in_sync', cursor: encodeCursor(through) });
    this.#queuedUpTo = max(this.#queuedUpTo, through);
    this.#phase = 'live';
    this.#queueHeld();
  }

  /** Queues the live events held during the catch-up (those not already sent), in order. */
  #queueHeld(): void {
    const held = this.#live;
    this.#live = [];
    for (const event of held) {
      if (after(event.position, this.#queuedUpTo)) this.#queue(event);
    }
  }

  async #readPage(): Promise<void> {
    const { reader, clock } = this.#options;
    const limit = this.#options.pageSize ?? DEFAULT_PAGE_SIZE;
    const since = new Date(clock.now() - this.#options.relevanceMs);
    const from = this.#read;
    const signal = this.#abort.signal;
    const drops = this.#drops;
    const page = await reader.readOrdered(from ? { after: from, since, limit, signal } : { since, limit, signal });
    if (from !== undefined && this.#start !== undefined) {
      // Checked after the read: the page is whole only if the sweep had deleted nothing after
      // `from` by then (the horizon only moves forward).
      const horizon = await reader.horizon();
      if (horizon && comparePositions(horizon, from) > 0) {
        throw new DomainError(
          'CURSOR_EXPIRED',
          'the cursor is older than the retained revocation history; clear the local revocation set and reconnect with an empty since_cursor',
        );
      }
    }
    if (this.#phase === 'closed') return;
    for (const event of page.events) {
      if (after(event.position, this.#queuedUpTo)) this.#queue(event);
      this.#read = event.position;
    }
    // The follower only delivers events the reader can read, so a read that started after they
    // were delivered and found nothing more covers them all; one that overlapped a drop may not.
    const target = this.#target;
    this.#complete =
      (page.complete && drops === this.#drops) || (target !== undefined && this.#read !== undefined && comparePositions(this.#read, target) >= 0);
  }
}
