/**
 * The revocation follower's own connection (LISTEN/NOTIFY plus reads) lost, then restored, while
 * the database itself stays reachable (DESIGN.md "Revocation reach": "falls back to the database
 * read when it is not [fresh] (listener lost, lag past a bound): never a stale yes").
 *
 * How the cut is made: the server's DATABASE_URL points through ApplicationProxy, which tells
 * the follower's connection (application_name `latchkey-revocation-feed`) from the request pool's
 * by the PostgreSQL startup message, and cuts (resets, then refuses reconnections) or black-holes
 * only that one. The request pool keeps its connections through the same proxy, so
 * check_revocation can and must fall back to the database; cutting every connection
 * (TcpProxy.stop) would test a database outage instead, and would let the pool's reconnection race
 * the follower's.
 */
import type { LoginResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { login, register } from '../support/auth.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { ApplicationProxy, FEED_APPLICATION_NAME } from '../support/feed-proxy.js';
import { metricValue } from '../support/metrics.js';
import { type Replica, startReplica, withApiKey } from '../support/replicas.js';
import { waitFor } from '../support/wait.js';

const API_KEY = 'revocation-listener-tests-key-0123456789abcdef';
/** Safety net for anything that should happen soon; never an assertion on duration. */
const SOON = 15_000;

let db: TestDatabase;
let proxy: ApplicationProxy;
const replicas: Replica[] = [];

/** The follower's connection exists only with a pool of more than one connection on PostgreSQL; the embedded database is polled through the ORM's one connection. */
const onPostgres = process.env.TEST_DATABASE_URL ? describe : describe.skip;

onPostgres('the follower connection cut and restored', () => {
  beforeAll(async () => {
    db = await createTestDatabase();
    proxy = ApplicationProxy.forUrl(db.url);
    await proxy.start();
  });
  afterEach(async () => {
    proxy.restore();
    for (const replica of replicas.splice(0)) await replica.close();
  });
  afterAll(async () => {
    await proxy?.stop();
    await db?.drop();
  });

  async function replica(name: string, url: string, overrides: Record<string, string> = {}): Promise<Replica> {
    const started = await startReplica(name, url, { SERVICE_API_KEYS: API_KEY, MAX_SESSIONS_PER_USER: '0', ...overrides });
    replicas.push(started);
    return started;
  }

  let people = 0;
  async function sessionsOf(on: Replica, count: number): Promise<LoginResponse[]> {
    const email = `listener-${++people}@example.com`;
    await register(on.auth, email);
    const logins: LoginResponse[] = [];
    for (let i = 0; i < count; i++) logins.push(await login(on.auth, email));
    return logins;
  }

  /** An answer with no statement came from the view; one with a statement from the database. */
  async function answer(on: Replica, signed: LoginResponse): Promise<{ outcome: string; from: 'memory' | 'database' }> {
    const check = await on.checkRevocation(signed.tokens!.accessToken);
    return { outcome: check.outcome, from: check.statements.length === 0 ? 'memory' : 'database' };
  }
  async function eventually(on: Replica, signed: LoginResponse, expected: { outcome: string; from: 'memory' | 'database' }): Promise<void> {
    await waitFor(() => answer(on, signed), (a) => a.outcome === expected.outcome && a.from === expected.from, SOON, 20);
    expect(await answer(on, signed)).toEqual(expected);
  }

  it('cut: check_revocation falls back to the database (fallbacks counted) and refuses what was revoked meanwhile; restored: answers from memory again, nothing missed', async () => {
    const a = await replica('A', proxy.rewrite(db.url));
    // Another replica, straight to the database: its revocations reach A only through the feed.
    const b = await replica('B', db.url);
    const [kept, bySql, byReplica, afterHeal] = await sessionsOf(a, 4);
    expect(proxy.connections(FEED_APPLICATION_NAME)).toBe(1);
    for (const signed of [kept!, bySql!, byReplica!]) await eventually(a, signed, { outcome: 'OK', from: 'memory' });
    const fallbacksBefore = await a.fallbacks();

    proxy.cut(FEED_APPLICATION_NAME);
    // The follower notices the loss: the view is no longer trusted, the database answers.
    await eventually(a, kept!, { outcome: 'OK', from: 'database' });
    expect(await a.fallbacks()).toBeGreaterThan(fallbacksBefore);
    expect(await metricValue(a.app.httpPort, 'latchkey_revocation_view_lag_seconds')).toBeGreaterThan(0);

    // Revoked meanwhile, in SQL and through the other replica: refused (from the database).
    await query(db.url, `update sessions set revoked_at = now(), revoked_reason = 'REVOKED_BY_SERVICE' where id = $1`, [bySql!.sessionId]);
    expect((await b.rpc('logout', { refreshToken: byReplica!.tokens!.refreshToken })).error).toBeUndefined();
    expect(await answer(a, bySql!)).toEqual({ outcome: 'SESSION_REVOKED', from: 'database' });
    expect(await answer(a, byReplica!)).toEqual({ outcome: 'SESSION_REVOKED', from: 'database' });
    // Still cut: the follower keeps trying and is refused each time, and the view stays untrusted.
    await waitFor(async () => proxy.refused, (n) => n >= 2, SOON);
    expect(proxy.refused).toBeGreaterThanOrEqual(2);
    expect(await answer(a, kept!)).toEqual({ outcome: 'OK', from: 'database' });

    proxy.restore();
    // Back in memory, and what was revoked during the cut was not missed.
    await eventually(a, bySql!, { outcome: 'SESSION_REVOKED', from: 'memory' });
    expect(proxy.connections(FEED_APPLICATION_NAME)).toBe(1);
    expect(await answer(a, byReplica!)).toEqual({ outcome: 'SESSION_REVOKED', from: 'memory' });
    expect(await answer(a, kept!)).toEqual({ outcome: 'OK', from: 'memory' });
    const fallbacksAfter = await a.fallbacks();
    expect(await answer(a, kept!)).toEqual({ outcome: 'OK', from: 'memory' });
    expect(await a.fallbacks()).toBe(fallbacksAfter);

    // And it follows again: a revocation after the heal reaches A's view.
    expect((await b.sessionRpc('revokeSession', { sessionId: afterHeal!.sessionId }, withApiKey(API_KEY))).error).toBeUndefined();
    await eventually(a, afterHeal!, { outcome: 'SESSION_REVOKED', from: 'memory' });
  });

  it('black-holed (connected, but no read succeeds): past REVOCATION_MAX_STALENESS the database answers; healed: memory again, nothing missed', async () => {
    // Reads time out only well after the staleness bound: in between, the connection is still up
    // but the view is too old to trust (the "lag past a bound" case, not a lost connection).
    const a = await replica('A', proxy.rewrite(db.url), { REVOCATION_MAX_STALENESS: '1s', DATABASE_HEALTH_TIMEOUT: '20s' });
    const b = await replica('B', db.url);
    const [kept, revoked] = await sessionsOf(a, 2);
    await eventually(a, kept!, { outcome: 'OK', from: 'memory' });
    await eventually(a, revoked!, { outcome: 'OK', from: 'memory' });

    proxy.freeze(FEED_APPLICATION_NAME);
    await eventually(a, kept!, { outcome: 'OK', from: 'database' });
    expect(await metricValue(a.app.httpPort, 'latchkey_revocation_view_lag_seconds')).toBeGreaterThan(1);
    // The connection was not dropped: this is staleness, not a lost listener.
    expect(proxy.connections(FEED_APPLICATION_NAME)).toBe(1);

    expect((await b.sessionRpc('revokeSession', { sessionId: revoked!.sessionId }, withApiKey(API_KEY))).error).toBeUndefined();
    expect(await answer(a, revoked!)).toEqual({ outcome: 'SESSION_REVOKED', from: 'database' });

    proxy.restore();
    await eventually(a, revoked!, { outcome: 'SESSION_REVOKED', from: 'memory' });
    expect(await answer(a, kept!)).toEqual({ outcome: 'OK', from: 'memory' });
  });
});
