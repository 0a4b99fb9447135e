/**
 * A request pool saturated by slow statements is busy, not down (DESIGN.md "Staying up under
 * load"): calls beyond MAX_CALLS_IN_FLIGHT are refused at once with OVERLOADED and a RetryInfo,
 * health and readiness stay SERVING throughout, the admitted calls complete once the statements
 * can run, and only a real outage (the database unreachable) turns the server NOT_SERVING.
 */
import { type Client, status } from '@grpc/grpc-js';
import pg from 'pg';
import { startApp, type RunningApp } from '../../src/app.js';
import type { LoginResponse, RefreshTokenResponse, ValidateTokenResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { decodeStatusDetails } from '../../src/grpc/errors.js';
import { createLogger } from '../../src/observability/logger.js';
import { failure, login, register } from '../support/auth.js';
import { authClient, call, healthStatus } from '../support/clients.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { metricValue, readyzStatus } from '../support/metrics.js';
import { watchHealth, type HealthWatch } from '../support/probes.js';
import { TcpProxy } from '../support/proxy.js';
import { waitFor } from '../support/wait.js';

const MAX_CALLS = 8;
const POOL = 2;
const EXCESS = 22;
/** Generous deadlines: the admitted calls wait for the lock, and must not run out of time doing so. */
const LONG_DEADLINE_MS = 60_000;

let db: TestDatabase;
let proxy: TcpProxy;
let app: RunningApp;
let locker: pg.Client | undefined;
let watch: HealthWatch | undefined;

/**
 * Needs a PostgreSQL server: the embedded PGlite runs every connection on one backend, so a row
 * lock held from another connection stalls the whole database, which is then rightly "down".
 */
const onPostgres = process.env.TEST_DATABASE_URL ? describe : describe.skip;

onPostgres('a saturated pool', () => {
  beforeAll(async () => {
    db = await createTestDatabase();
    proxy = TcpProxy.forUrl(db.url);
    await proxy.start();
    app = await startApp(
      testConfig(proxy.rewrite(db.url), {
        DATABASE_POOL_MAX: String(POOL),
        MAX_CALLS_IN_FLIGHT: String(MAX_CALLS),
        DATABASE_HEALTH_INTERVAL: '100ms',
        // Far above how long the lock is held: the blocked statements wait, they do not time out.
        DATABASE_STATEMENT_TIMEOUT: '30s',
        // The admitted refreshes of one token complete one after another once the lock goes; all
        // within the grace window, so each gets the pair the first one made.
        REFRESH_REUSE_GRACE: '5m',
      }),
      createLogger('silent'),
    );
  });

  afterAll(async () => {
    watch?.cancel();
    await locker?.end().catch(() => undefined);
    await app?.stop();
    await proxy?.stop();
    await db?.drop();
  });

  const metric = (name: string) => metricValue(app.httpPort, name);

  it('refuses calls beyond MAX_CALLS_IN_FLIGHT while the pool is held by blocked statements, stays SERVING, then goes NOT_SERVING only in a real outage', async () => {
    const client = authClient(app.grpcPort);
    const rpc = <Res>(method: string, request: object, deadlineMs = LONG_DEADLINE_MS) =>
      call<object, Res>(client as unknown as Client, method, request, { deadlineMs });
    try {
      await register(client, 'saturated@example.com');
      const signedIn = await login(client, 'saturated@example.com');
      const refreshToken = signedIn.tokens!.refreshToken;

      watch = watchHealth(app.grpcPort);
      expect(await watch.until('SERVING')).toBe(true);
      expect(await readyzStatus(app.httpPort)).toBe(200);

      // A row lock from outside the server: the refresh's UPDATE of this session waits for it.
      locker = new pg.Client({ connectionString: db.url });
      await locker.connect();
      await locker.query('begin');
      await locker.query('select id from sessions where id = $1 for update', [signedIn.sessionId]);

      // MAX_CALLS calls are admitted: POOL statements run (blocked on the lock), the rest wait for a slot.
      const admitted = Array.from({ length: MAX_CALLS }, () => rpc<RefreshTokenResponse>('refreshToken', { refreshToken }));
      const load = await waitFor(
        async () => [await metric('latchkey_calls_in_flight'), await metric('latchkey_database_pool_in_use'), await metric('latchkey_database_pool_waiting')],
        (values) => values[0] === MAX_CALLS && values[1] === POOL && values[2] === MAX_CALLS - POOL,
        15_000,
      );
      expect(load).toEqual([MAX_CALLS, POOL, MAX_CALLS - POOL]);

      // Every call beyond: refused at once, with a RetryInfo. A login is refused the same way,
      // before it takes a place in the hashing queue.
      const excess = await Promise.all(Array.from({ length: EXCESS }, () => rpc('refreshToken', { refreshToken })));
      const refusedLogin = await rpc('login', { email: 'saturated@example.com', password: 'correct horse battery' });
      for (const { error } of [...excess, refusedLogin]) {
        expect(failure(error)).toEqual({
          code: status.RESOURCE_EXHAUSTED,
          reason: 'OVERLOADED',
          message: 'the server is at capacity; retry shortly',
          fields: [],
        });
        expect(decodeStatusDetails(error!.metadata).retryInfo?.retryDelay).toEqual({ seconds: 1, nanos: 0 });
      }
      expect(await metric('latchkey_admission_refused_total')).toBe(EXCESS + 1);
      expect(await metric('latchkey_password_hashes_queued')).toBe(0);

      // Busy is not down: health (polled, and the Watch stream), readiness and the database gauge
      // say SERVING for as long as the pool stays saturated; local token validation still answers.
      const samples: string[] = [];
      for (let i = 0; i < 10; i++) {
        samples.push(`${await healthStatus(app.grpcPort)}/${await readyzStatus(app.httpPort)}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(samples).toEqual(Array(10).fill('SERVING/200'));
      expect(await metric('latchkey_database_up')).toBe(1);
      const validated = await rpc<ValidateTokenResponse>('validateToken', { accessToken: signedIn.tokens!.accessToken });
      expect(validated.error).toBeUndefined();
      // Still saturated: nothing above ran because something gave way.
      expect(await metric('latchkey_calls_in_flight')).toBe(MAX_CALLS);

      // The lock goes: every admitted call completes, with the one pair the rotation made.
      await locker.query('rollback');
      const results = await Promise.all(admitted);
      expect(results.map((r) => r.error?.code ?? status.OK)).toEqual(Array(MAX_CALLS).fill(status.OK));
      expect(new Set(results.map((r) => r.response!.tokens!.refreshToken)).size).toBe(1);
      expect(await waitFor(() => metric('latchkey_calls_in_flight'), (n) => n === 0)).toBe(0);
      expect(watch.statuses).toEqual(['SERVING']);

      // A real outage: the database unreachable. Now, and only now, NOT_SERVING.
      await proxy.stop();
      expect(await waitFor(() => healthStatus(app.grpcPort), (s) => s === 'NOT_SERVING')).toBe('NOT_SERVING');
      expect(await readyzStatus(app.httpPort)).toBe(503);
      expect(await watch.until('NOT_SERVING')).toBe(true);

      await proxy.start();
      expect(await waitFor(() => healthStatus(app.grpcPort), (s) => s === 'SERVING')).toBe('SERVING');
      expect(await readyzStatus(app.httpPort)).toBe(200);
      expect(watch.statuses).toEqual(['SERVING', 'NOT_SERVING', 'SERVING']);
      const again = await rpc<LoginResponse>('login', { email: 'saturated@example.com', password: 'correct horse battery' });
      expect(again.error).toBeUndefined();
    } finally {
      client.close();
    }
  });
});
