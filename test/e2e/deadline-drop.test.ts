/**
 * A call whose statement waits for a pool connection past the call's deadline is dropped before
 * the statement reaches the database (DESIGN.md "Staying up under load"): the caller gets
 * UNAVAILABLE (not DEADLINE_EXCEEDED: the server answers first), nothing is sent, nothing changes.
 */
import { type Client, status } from '@grpc/grpc-js';
import pg from 'pg';
import { startApp, type RunningApp } from '../../src/app.js';
import type { RefreshTokenResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { createLogger } from '../../src/observability/logger.js';
import { failure, login, register } from '../support/auth.js';
import { authClient, call } from '../support/clients.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { metricValue } from '../support/metrics.js';
import { StatementLog } from '../support/statements.js';
import { waitFor } from '../support/wait.js';

let db: TestDatabase;
let app: RunningApp;
let locker: pg.Client | undefined;
const log = new StatementLog();

beforeAll(async () => {
  db = await createTestDatabase();
  app = await startApp(
    testConfig(db.url, {
      // One connection: one statement at a time, the rest wait in the statement-slot queue.
      DATABASE_POOL_MAX: '1',
      DATABASE_STATEMENT_TIMEOUT: '30s',
      // With one connection readiness pings through the request pool (PoolProbe): a ping would
      // wait behind the blocked statement. No periodic ping during the test, and a ping timeout
      // above how long the lock is held, so the call below meets the statement queue, not a
      // database marked down.
      DATABASE_HEALTH_INTERVAL: '10m',
      DATABASE_HEALTH_TIMEOUT: '30s',
    }),
    createLogger('trace', log),
  );
});

afterAll(async () => {
  await locker?.end().catch(() => undefined);
  await app?.stop();
  await db?.drop();
});

const metric = (name: string) => metricValue(app.httpPort, name);
const sessionRow = async (id: string) =>
  (await query<{ generation: string; refresh_secret_hash: Buffer; last_used_at: Date }>(
    db.url,
    'select generation, refresh_secret_hash, last_used_at from sessions where id = $1',
    [id],
  ))[0];

it('answers UNAVAILABLE for a call whose deadline passes while its statement waits for the one connection, and never sends that statement', async () => {
  const client = authClient(app.grpcPort);
  const refresh = (refreshToken: string, deadlineMs: number) =>
    call<object, RefreshTokenResponse>(client as unknown as Client, 'refreshToken', { refreshToken }, { deadlineMs });
  try {
    await register(client, 'deadline@example.com');
    const blocked = await login(client, 'deadline@example.com');
    const queued = await login(client, 'deadline@example.com');
    const queuedBefore = await sessionRow(queued.sessionId);

    // The only connection is taken by a refresh whose UPDATE waits for a row lock held outside.
    locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    await locker.query('begin');
    await locker.query('select id from sessions where id = $1 for update', [blocked.sessionId]);
    log.statements = [];
    const holder = refresh(blocked.tokens!.refreshToken, 60_000);
    expect(await waitFor(() => metric('latchkey_database_pool_in_use'), (n) => n === 1, 15_000)).toBe(1);
    const droppedBefore = (await metric('latchkey_database_deadline_dropped_total')) ?? 0;

    // A refresh of another session, with a short deadline: its statement queues for the
    // connection, its time runs out there, and the server answers before the deadline does.
    const { error } = await refresh(queued.tokens!.refreshToken, 300);
    expect({ code: failure(error).code, reason: failure(error).reason }).toEqual({ code: status.UNAVAILABLE, reason: 'UNAVAILABLE' });
    expect(await metric('latchkey_database_deadline_dropped_total')).toBe(droppedBefore + 1);
    expect(await metric('latchkey_database_pool_waiting')).toBe(0);
    // The holder is still blocked: the refusal above came from the queue, not from it finishing.
    expect(await metric('latchkey_database_pool_in_use')).toBe(1);

    await locker.query('rollback');
    expect((await holder).error).toBeUndefined();

    // Only the holder's UPDATE reached the database; the dropped call's never did, and its
    // session is exactly as it was, so its refresh token still works.
    expect(log.statements.filter((s) => /^update sessions /.test(s))).toHaveLength(1);
    expect(await sessionRow(queued.sessionId)).toEqual(queuedBefore);
    const retried = await refresh(queued.tokens!.refreshToken, 10_000);
    expect(retried.error).toBeUndefined();
  } finally {
    client.close();
  }
});
