/**
 * The revocation feed read in order (DESIGN.md "Revocation reach"): a reader resuming from a cursor
 * never skips an event, even when a transaction that will append one is still open while later
 * ones commit (sequence ids and commit order differ), and a stream resumed on another server after
 * a restart misses nothing and repeats nothing.
 */
import type { Client } from '@grpc/grpc-js';
import pg from 'pg';
import { startApp, type RunningApp } from '../../src/app.js';
import { encodeCursor as encode, type FeedPosition, type RevocationEvent } from '../../src/domain/revocations/events.js';
import type { LoginResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { createLogger } from '../../src/observability/logger.js';
import { PostgresRevocationFeed, pgFeedDb } from '../../src/persistence/revocation-feed.js';
import { login, register } from '../support/auth.js';
import { authClient, call, sessionClient } from '../support/clients.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, query, type TestDatabase, waitUntilSettled } from '../support/database.js';
import { type Replica, startReplica, withApiKey } from '../support/replicas.js';
import { expectStrictlyIncreasing, openRevocationStream, positionOf, readFeed, type RevocationStream } from '../support/revocation-stream.js';
import { waitFor } from '../support/wait.js';

const API_KEY = 'revocation-feed-tests-key-0123456789abcdef';
const service = withApiKey(API_KEY);
const ORIGIN: FeedPosition = { xid: 0n, id: 0n };

let db: TestDatabase;
const apps: RunningApp[] = [];
const streams: RevocationStream[] = [];
const replicas: Replica[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
});
async function stopAll(): Promise<void> {
  for (const stream of streams.splice(0)) stream.close();
  for (const app of apps.splice(0)) await app.stop();
  for (const replica of replicas.splice(0)) await replica.close();
}
afterEach(stopAll);
afterAll(async () => {
  await stopAll();
  await db?.drop();
});

async function start(): Promise<RunningApp> {
  const app = await startApp(testConfig(db.url, { SERVICE_API_KEYS: API_KEY, MAX_SESSIONS_PER_USER: '0' }), createLogger('silent'));
  apps.push(app);
  return app;
}
function watch(app: RunningApp, cursor = ''): RevocationStream {
  const stream = openRevocationStream(app.grpcPort, API_KEY, cursor);
  streams.push(stream);
  return stream;
}

let people = 0;
async function signedIn(app: RunningApp, sessions: number): Promise<LoginResponse[]> {
  const client = authClient(app.grpcPort);
  try {
    const email = `feed-${++people}@example.com`;
    await register(client, email);
    const logins: LoginResponse[] = [];
    for (let i = 0; i < sessions; i++) logins.push(await login(client, email));
    return logins;
  } finally {
    client.close();
  }
}

async function revokeSession(app: RunningApp, sessionId: string): Promise<void> {
  const client = sessionClient(app.grpcPort);
  try {
    const { error } = await call(client as unknown as Client, 'revokeSession', { sessionId }, { metadata: service });
    expect(error).toBeUndefined();
  } finally {
    client.close();
  }
}
async function logout(app: RunningApp, signed: LoginResponse): Promise<void> {
  const client = authClient(app.grpcPort);
  try {
    expect((await call(client as unknown as Client, 'logout', { refreshToken: signed.tokens!.refreshToken })).error).toBeUndefined();
  } finally {
    client.close();
  }
}
const revokeInSql = (sessionId: string) =>
  query(db.url, `update sessions set revoked_at = now(), revoked_reason = 'REVOKED_BY_SERVICE' where id = $1`, [sessionId]);

const sessionIds = (events: readonly RevocationEvent[]) => events.map((e) => (e.kind === 'session' ? e.sessionId : `user:${e.userId}`));

/** Needs a second connection holding a transaction open: the embedded database serves one connection at a time. */
const onPostgres = process.env.TEST_DATABASE_URL ? describe : describe.skip;

onPostgres('a transaction held open while later revocations commit', () => {
  let pool: pg.Pool;
  let holder: pg.Client | undefined;
  beforeAll(() => {
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
  });
  afterEach(async () => {
    await holder?.query('rollback').catch(() => undefined);
    await holder?.end();
    holder = undefined;
  });
  afterAll(async () => {
    await pool?.end();
  });

  /** Every event after `after`, in pages of 2 (the paging included), through PostgresRevocationFeed on a pool. */
  async function readAll(after: FeedPosition): Promise<{ events: RevocationEvent[]; complete: boolean; last: FeedPosition }> {
    const feed = new PostgresRevocationFeed(pgFeedDb(pool));
    const events: RevocationEvent[] = [];
    let from = after;
    for (;;) {
      const page = await feed.readOrdered({ after: from, limit: 2 });
      events.push(...page.events);
      if (page.events.length > 0) from = page.events.at(-1)!.position;
      if (page.complete) return { events, complete: true, last: from };
    }
  }

  it('readers (PostgresRevocationFeed, WatchRevocations, the follower) never move past it; once it commits its event comes first, every event exactly once, in cursor order', async () => {
    // A replica whose statements are counted: an answer with none came from its view.
    const replica = await startReplica('A', db.url, { SERVICE_API_KEYS: API_KEY, MAX_SESSIONS_PER_USER: '0' });
    replicas.push(replica);
    const app = replica.app;
    const [early, held, s1, s2, s3, s4] = await signedIn(app, 6);
    const live = watch(app);
    expect(await live.until((m) => m.some((x) => x.inSync))).toBe(true);
    const start0 = (await readAll(ORIGIN)).last;

    // Committed (and settled) before the held transaction starts: readable throughout.
    await revokeSession(app, early!.sessionId);
    await waitUntilSettled(db.url, [early!.sessionId]);

    holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    await holder.query('begin');
    await holder.query(`update sessions set revoked_at = now(), revoked_reason = 'LOGOUT' where id = $1`, [held!.sessionId]);
    const [{ xid: heldXid }] = (await holder.query<{ xid: string }>('select pg_current_xact_id_if_assigned()::text as xid')).rows as [{ xid: string }];
    expect(heldXid).not.toBeNull();

    // Later revocations commit through the API (three paths) and in SQL, while it is open.
    await revokeSession(app, s1!.sessionId);
    await logout(app, s2!);
    await revokeInSql(s3!.sessionId);
    // They are visible in the table, after the held transaction's position.
    const visibleAfter = await query<{ session_id: string }>(db.url, 'select session_id from revocation_events where xid > $1::xid8 order by xid, id', [heldXid]);
    expect(visibleAfter.map((r) => r.session_id)).toEqual([s1!.sessionId, s2!.sessionId, s3!.sessionId]);

    // The follower applies every visible event to the view (order does not matter there): it
    // refuses them from memory already, and the held session is not revoked.
    const fromMemory = async (signed: LoginResponse) => {
      const check = await replica.checkRevocation(signed.tokens!.accessToken);
      return check.statements.length === 0 ? check.outcome : `database: ${check.outcome}`;
    };
    await waitFor(() => fromMemory(s3!), (r) => r === 'SESSION_REVOKED');
    expect(await fromMemory(s1!)).toBe('SESSION_REVOKED');
    expect(await fromMemory(s2!)).toBe('SESSION_REVOKED');
    expect(await fromMemory(held!)).toBe('OK');

    // The ordered reader stops before the held transaction: only the earlier event.
    const first = await readAll(start0);
    expect(sessionIds(first.events)).toEqual([early!.sessionId]);
    expect(first.complete).toBe(true);
    for (const event of first.events) expect(event.position.xid < BigInt(heldXid)).toBe(true);
    // So does a stream started now from the same cursor: it sends that event, but holds its marker
    // back, because its replica has seen later events committed (s1–s3) that cannot be sent in order
    // yet: "in sync" means every event committed before the stream started was sent.
    const fromCursor = watch(app, encode(start0));
    expect(await fromCursor.until((m) => m.some((x) => x.event?.sessionId === early!.sessionId))).toBe(true);
    expect(await fromCursor.until((m) => m.some((x) => x.inSync), 1_000)).toBe(false);
    expect(fromCursor.events().map((e) => e.sessionId)).toEqual([early!.sessionId]);
    // …and the live stream, fed by the follower that has read them all, got the earlier event
    // and none of the later ones (they sort after the held transaction's position).
    expect(await live.until((m) => m.some((x) => x.event?.sessionId === early!.sessionId))).toBe(true);
    expect(live.events().map((e) => e.sessionId)).toEqual([early!.sessionId]);

    await holder.query('commit');
    await holder.end();
    holder = undefined;
    await waitFor(() => fromMemory(held!), (r) => r === 'SESSION_REVOKED');
    expect(await fromMemory(held!)).toBe('SESSION_REVOKED');
    // Now the held-back marker: after every event committed before that stream started, in order.
    expect(await fromCursor.until((m) => m.some((x) => x.inSync))).toBe(true);
    const beforeMarker = fromCursor.messages.slice(0, fromCursor.messages.findIndex((m) => m.inSync));
    expect(beforeMarker.map((m) => m.event?.sessionId)).toEqual([early!.sessionId, held!.sessionId, s1!.sessionId, s2!.sessionId, s3!.sessionId]);

    // Read again from the returned cursor: the held event first (its xid is the smallest), then the rest.
    await waitUntilSettled(db.url, [held!.sessionId, s1!.sessionId, s2!.sessionId, s3!.sessionId]);
    const second = await readAll(first.last);
    expect(sessionIds(second.events)).toEqual([held!.sessionId, s1!.sessionId, s2!.sessionId, s3!.sessionId]);
    const all = [...first.events, ...second.events];
    expectStrictlyIncreasing(all.map((e) => e.position));
    expect(new Set(sessionIds(all)).size).toBe(all.length);

    // Both streams deliver the same, once each, in order; and keep going.
    await revokeSession(app, s4!.sessionId);
    const expected = [held!.sessionId, s1!.sessionId, s2!.sessionId, s3!.sessionId, s4!.sessionId];
    for (const stream of [live, fromCursor]) {
      expect(await stream.until((m) => m.some((x) => x.event?.sessionId === s4!.sessionId))).toBe(true);
      expect(stream.events().map((e) => e.sessionId)).toEqual([early!.sessionId, ...expected]);
      expectStrictlyIncreasing(stream.events().map((e) => positionOf(e.cursor)));
    }
    // With the very cursors the ordered reader returned.
    expect(live.events().slice(0, all.length).map((e) => e.cursor)).toEqual(all.map((e) => encode(e.position)));
  });
});

describe('a stream resumed on a newly started server', () => {
  it('gets every event after its last cursor exactly once: nothing missed across the restart, nothing repeated', async () => {
    const first = await start();
    const logins = await signedIn(first, 6);
    const [r0, r1, r2, r3, r4, r5] = logins;
    await revokeSession(first, r0!.sessionId);

    const before = watch(first);
    expect(await before.until((m) => m.some((x) => x.inSync))).toBe(true);
    await revokeSession(first, r1!.sessionId);
    await logout(first, r2!);
    expect(await before.until((m) => m.some((x) => x.event?.sessionId === r2!.sessionId))).toBe(true);
    const received = before.events();
    const cursor = received.at(-1)!.cursor;
    before.close();

    // After the consumer left: one more on the old server, one while no server runs.
    await revokeSession(first, r3!.sessionId);
    await stopAll();
    await revokeInSql(r4!.sessionId);

    const second = await start();
    const after = watch(second, cursor);
    expect(await after.until((m) => m.some((x) => x.inSync))).toBe(true);
    expect(after.events().map((e) => e.sessionId)).toEqual([r3!.sessionId, r4!.sessionId]);
    // Then live on the new server.
    await revokeSession(second, r5!.sessionId);
    expect(await after.until((m) => m.some((x) => x.event?.sessionId === r5!.sessionId))).toBe(true);

    // The first stream started from no cursor: the whole (recent) feed, then this test's events.
    const combined = [...received, ...after.events()];
    const mine = new Set(logins.map((l) => l.sessionId));
    expect(combined.filter((e) => mine.has(e.sessionId)).map((e) => e.sessionId)).toEqual([r0, r1, r2, r3, r4, r5].map((l) => l!.sessionId));
    expectStrictlyIncreasing(combined.map((e) => positionOf(e.cursor)));
    // Exactly the feed, as its ordered reader sees it: nothing missed, nothing repeated.
    await stopAll();
    const feed = await readFeed(db.url, ORIGIN);
    expect(combined.map((e) => e.cursor)).toEqual(feed.events.map((e) => encode(e.position)));
  });
});
