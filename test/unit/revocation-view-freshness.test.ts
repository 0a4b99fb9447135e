/**
 * The view's freshness after a revocation made on this replica (src/app.ts: `noteLocalRevocation`
 * then `follower.refresh()`): the view must defer to the database until the follower has read the
 * feed with a read that started after the revocation committed ("never a stale yes").
 *
 * The real RevocationFollower and RevocationView, over a fake connection whose reads the test
 * answers by hand, and a wall clock the test holds still (both compare Date.now() milliseconds).
 */
import { jest } from '@jest/globals';
import { RevocationView } from '../../src/domain/revocations/view.js';
import type { AccessTokenClaims } from '../../src/domain/tokens/access-tokens.js';
import { type FeedConnection, RevocationFollower } from '../../src/persistence/revocation-feed.js';
import { createLogger } from '../../src/observability/logger.js';

const T = Date.parse('2026-12-01T12:00:00.000Z');
let wallClock = T;

/** A connection whose reads wait until the test answers them (with no rows: the read's snapshot predates the commit). */
class HeldReads implements FeedConnection {
  readonly pending: (() => void)[] = [];
  async all<R extends object>(): Promise<R[]> {
    await new Promise<void>((resolve) => this.pending.push(resolve));
    return [];
  }
  close(): void {}
  answerNext(): void {
    this.pending.shift()!();
  }
}

const claims = (sessionId: string): AccessTokenClaims =>
  ({ userId: 'u-1', sessionId, email: 'a@example.com', roles: [], issuedAt: T / 1000 - 60, expiresAt: T / 1000 + 600, tokenId: 't-1' }) as unknown as AccessTokenClaims;

const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

beforeEach(() => {
  wallClock = T;
  jest.spyOn(Date, 'now').mockImplementation(() => wallClock);
});
afterEach(() => {
  jest.restoreAllMocks();
});

async function started(): Promise<{ view: RevocationView; follower: RevocationFollower; connection: HeldReads }> {
  const connection = new HeldReads();
  let follower: RevocationFollower | undefined;
  const view = new RevocationView({
    relevanceMs: 16 * 60_000,
    maxStalenessMs: 2_000,
    lastReadAt: () => follower?.lastReadAt,
    connected: () => follower?.connected ?? false,
  });
  follower = new RevocationFollower(view, {
    connect: async () => connection,
    relevanceMs: 16 * 60_000,
    pollIntervalMs: 60_000,
    readTimeoutMs: 60_000,
    logger: createLogger('silent'),
  });
  const loading = follower.start();
  await settle();
  connection.answerNext();
  await loading;
  return { view, follower, connection };
}


describe('a revocation made on this replica', () => {
  it('is not answered from memory by a view whose last read started before it (a later millisecond)', async () => {
    const { view, follower, connection } = await started();
    wallClock += 5;
    const reading = follower.refresh(); // a poll: its snapshot predates the revocation below
    await settle();
    wallClock += 1;
    // The revocation commits; the app notes it and asks for a read (coalesced behind this one).
    view.noteLocalRevocation();
    const again = follower.refresh();
    wallClock += 1;
    // The poll ends; the read asked for starts (a millisecond after the revocation).
    connection.answerNext();
    await settle();
    expect(view.verdict(claims('revoked-session'))).toBe('unknown');
    // Once that read has finished, the view is trusted again.
    connection.answerNext();
    await again;
    await reading;
    expect(view.verdict(claims('revoked-session'))).toBe('active');
    await follower.stop();
  });

  it('is not answered from memory by a view whose last read started in the same millisecond, before the commit was visible', async () => {
    const { view, follower, connection } = await started();
    wallClock += 5;
    // A poll starts at millisecond X; the database takes its snapshot before the revocation's
    // commit is visible (the read answers with no rows).
    const reading = follower.refresh();
    await settle();
    // Still millisecond X: the revocation's commit answer arrives and the app notes it.
    view.noteLocalRevocation();
    const again = follower.refresh();
    connection.answerNext();
    await settle();
    // The only read that finished started before the commit was visible: the view does not know
    // about the revocation, so it must not answer 'active' for the revoked session.
    const verdict = view.verdict(claims('revoked-session'));
    connection.answerNext();
    await again;
    await reading;
    await follower.stop();
    expect(verdict).toBe('unknown');
  });
});
