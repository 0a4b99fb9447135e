import pg from 'pg';
import type { Orm } from '../../src/persistence/orm.js';
import { sweepSessions } from '../../src/scheduler/jobs/index.js';
import { runSweep } from '../../src/scheduler/run.js';
import { ADVISORY_LOCK_NAMESPACE, sweep, type SweepOptions } from '../../src/scheduler/sweep.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { capturingLogger, count, fixedClock, ids, insertSessions, insertUsers, openMigratedOrm, scriptedClock, seedId, seedIds } from '../support/sweeps.js';

const NOW = new Date('2026-06-01T12:00:00.000Z');
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const RETENTION = 7 * DAY;
const at = (offsetMs: number) => new Date(NOW.getTime() + offsetMs);
const job = sweepSessions({ revokedRetentionMs: RETENTION });

let db: TestDatabase;
let orm: Orm;

beforeAll(async () => {
  db = await createTestDatabase();
  orm = await openMigratedOrm(db.url, 2);
  await insertUsers(db.url, 200);
});

afterAll(async () => {
  await orm?.close(true);
  await db?.drop();
});

beforeEach(() => query(db.url, 'delete from sessions'));

const options = (overrides: Partial<SweepOptions> = {}): SweepOptions => ({
  orm,
  clock: fixedClock(NOW),
  batchSize: 1000,
  maxDurationMs: 60_000,
  ...overrides,
});

it('deletes exactly the expired and the long-revoked sessions, and nothing else', async () => {
  const future = at(DAY);
  // 50,000 expired: absolute expiry passed, idle expiry passed, both, expiring this very instant,
  // and expired while revoked only recently (expiry wins: such a token can never work again).
  await insertSessions(db.url, 200, { group: 1, count: 20_000, idleExpiresAt: future, absoluteExpiresAt: at(-HOUR) });
  await insertSessions(db.url, 200, { group: 2, count: 19_000, idleExpiresAt: at(-1), absoluteExpiresAt: future });
  await insertSessions(db.url, 200, { group: 3, count: 9_000, idleExpiresAt: at(-DAY), absoluteExpiresAt: at(-DAY) });
  await insertSessions(db.url, 200, { group: 4, count: 1_000, idleExpiresAt: NOW, absoluteExpiresAt: future });
  await insertSessions(db.url, 200, { group: 5, count: 1_000, idleExpiresAt: at(-1), absoluteExpiresAt: future, revokedAt: at(-HOUR) });
  // 2,000 revoked longer ago than the retention (one millisecond is enough), still unexpired.
  await insertSessions(db.url, 200, { group: 6, count: 1_999, idleExpiresAt: future, absoluteExpiresAt: future, revokedAt: at(-30 * DAY) });
  await insertSessions(db.url, 200, { group: 7, count: 1, idleExpiresAt: future, absoluteExpiresAt: future, revokedAt: at(-RETENTION - 1) });
  // 500 revoked recently, one of them exactly the retention ago (not yet "older than").
  await insertSessions(db.url, 200, { group: 8, count: 499, idleExpiresAt: future, absoluteExpiresAt: future, revokedAt: at(-DAY) });
  await insertSessions(db.url, 200, { group: 9, count: 1, idleExpiresAt: future, absoluteExpiresAt: future, revokedAt: at(-RETENTION) });
  // 1,000 live, a millisecond from expiry at the latest.
  await insertSessions(db.url, 200, { group: 10, count: 999, idleExpiresAt: at(14 * DAY), absoluteExpiresAt: at(30 * DAY) });
  await insertSessions(db.url, 200, { group: 11, count: 1, idleExpiresAt: at(1), absoluteExpiresAt: at(1) });
  expect(await count(db.url, 'sessions')).toBe(53_500);

  const result = await sweep(job, options());

  expect(result).toMatchObject({ stop: 'completed', rowsDeleted: 52_000 });
  const kept = [...seedIds(8, 499), ...seedIds(9, 1), ...seedIds(10, 999), ...seedIds(11, 1)].sort();
  expect(await ids(db.url, 'sessions')).toEqual(kept);
  expect(await count(db.url, 'users')).toBe(200);

  // Nothing left to do: a second run deletes nothing.
  expect(await sweep(job, options())).toEqual({ stop: 'completed', rowsDeleted: 0, batches: 3 });
});

it('deletes in batches of the configured size', async () => {
  await insertSessions(db.url, 200, { group: 1, count: 250, idleExpiresAt: at(-1), absoluteExpiresAt: at(DAY) });
  // Passes: absolute expiry (one empty batch), idle expiry (100 + 100 + 50), revoked (one empty batch).
  expect(await sweep(job, options({ batchSize: 100 }))).toEqual({ stop: 'completed', rowsDeleted: 250, batches: 5 });
  expect(await count(db.url, 'sessions')).toBe(0);
});

it('starts no batch after the time limit, and the next run continues', async () => {
  await insertSessions(db.url, 200, { group: 1, count: 1_000, idleExpiresAt: at(DAY), absoluteExpiresAt: at(-1) });
  // The clock moves 10 s each time it is read: read at the start, then before each batch.
  const stepping = scriptedClock((read) => at(10_000 * (read - 1)));

  const first = await sweep(job, options({ clock: stepping, batchSize: 100, maxDurationMs: 25_000 }));

  expect(first).toEqual({ stop: 'time_limit', rowsDeleted: 200, batches: 2 });
  expect(await count(db.url, 'sessions')).toBe(800);
  expect(await sweep(job, options({ batchSize: 100 }))).toMatchObject({ stop: 'completed', rowsDeleted: 800 });
  expect(await count(db.url, 'sessions')).toBe(0);
});

it('stops between batches when shut down', async () => {
  await insertSessions(db.url, 200, { group: 1, count: 1_000, idleExpiresAt: at(DAY), absoluteExpiresAt: at(-1) });
  const shutdown = new AbortController();
  // Shutdown arrives while the first batch is being prepared: that batch still commits.
  const clock = scriptedClock((read) => {
    if (read === 2) shutdown.abort();
    return NOW;
  });

  expect(await sweep(job, options({ clock, batchSize: 100, signal: shutdown.signal }))).toEqual({
    stop: 'interrupted',
    rowsDeleted: 100,
    batches: 1,
  });
  expect(await count(db.url, 'sessions')).toBe(900);
});

it('rests between batches when given a duty cycle, deletes the same rows, and a shutdown cuts a rest short', async () => {
  await insertSessions(db.url, 200, { group: 1, count: 1_000, idleExpiresAt: at(DAY), absoluteExpiresAt: at(-1) });
  expect(await sweep(job, options({ batchSize: 300, dutyCyclePercent: 50 }))).toMatchObject({ stop: 'completed', rowsDeleted: 1_000 });
  expect(await count(db.url, 'sessions')).toBe(0);

  // At 1% the rest after each batch is 99 times the batch: shutdown arrives during the first one.
  await insertSessions(db.url, 200, { group: 2, count: 1_000, idleExpiresAt: at(DAY), absoluteExpiresAt: at(-1) });
  const shutdown = new AbortController();
  const run = sweep(job, options({ batchSize: 100, dutyCyclePercent: 1, signal: shutdown.signal }));
  while ((await count(db.url, 'sessions')) > 900) await new Promise((r) => setTimeout(r, 2));
  shutdown.abort();
  const result = await run;
  expect(result.stop).toBe('interrupted');
  expect(result.batches).toBeGreaterThanOrEqual(1);
  expect(result.batches).toBeLessThan(10);
  expect(result.rowsDeleted).toBe(result.batches * 100);
  expect(await count(db.url, 'sessions')).toBe(1_000 - result.rowsDeleted);
});

it('logs one JSON line per run with the counts', async () => {
  await insertSessions(db.url, 200, { group: 1, count: 30, idleExpiresAt: at(-1), absoluteExpiresAt: at(DAY) });
  const { logger, lines } = capturingLogger('info');

  const report = await runSweep(job, { ...options({ batchSize: 20 }), logger });

  expect(report).toMatchObject({ job: 'sweep-sessions', outcome: 'completed', rowsDeleted: 30, batches: 4 });
  expect(lines()).toEqual([
    expect.objectContaining({
      level: 'info',
      msg: 'sweep run finished',
      job: 'sweep-sessions',
      outcome: 'completed',
      rowsDeleted: 30,
      batches: 4,
      durationMs: expect.any(Number),
      skippedForLock: false,
      stoppedAtTimeLimit: false,
    }),
  ]);
});

// PGlite serves every connection from one backend session, and advisory and row locks are held by
// a session: a second connection there cannot be kept out. These two need a real server.
const onPostgres = process.env.TEST_DATABASE_URL ? describe : describe.skip;

onPostgres('against other transactions (PostgreSQL)', () => {
  let other: pg.Client;
  beforeEach(async () => {
    other = new pg.Client({ connectionString: db.url });
    await other.connect();
  });
  afterEach(() => other.end());

  it('skips the run, saying so at debug level, while another replica holds the job lock', async () => {
    await insertSessions(db.url, 200, { group: 1, count: 10, idleExpiresAt: at(-1), absoluteExpiresAt: at(DAY) });
    await other.query('select pg_advisory_lock($1, $2)', [ADVISORY_LOCK_NAMESPACE, job.lockKey]);
    const { logger, lines } = capturingLogger('debug');

    const report = await runSweep(job, { ...options(), logger });

    expect(report).toMatchObject({ outcome: 'skipped_lock', rowsDeleted: 0, batches: 0, skippedForLock: true });
    expect(lines()).toEqual([
      expect.objectContaining({ level: 'debug', msg: 'sweep run skipped: another replica holds the lock', job: 'sweep-sessions', skippedForLock: true }),
    ]);
    expect(await count(db.url, 'sessions')).toBe(10);

    await other.query('select pg_advisory_unlock($1, $2)', [ADVISORY_LOCK_NAMESPACE, job.lockKey]);
    expect(await sweep(job, options())).toMatchObject({ stop: 'completed', rowsDeleted: 10 });
  });

  it('passes over rows another transaction holds instead of waiting for them', async () => {
    await insertSessions(db.url, 200, { group: 1, count: 50, idleExpiresAt: at(-1), absoluteExpiresAt: at(DAY) });
    const held = [seedId(1, 7), seedId(1, 8), seedId(1, 9)];
    await other.query('begin');
    await other.query('select id from sessions where id = any($1::uuid[]) for update', [held]);

    // If the sweep waited for these rows, it would fail on the statement timeout instead.
    const whileHeld = await sweep(job, options());

    expect(whileHeld).toMatchObject({ stop: 'completed', rowsDeleted: 47 });
    expect(await ids(db.url, 'sessions')).toEqual([...held].sort());
    await other.query('commit');
    expect(await sweep(job, options())).toMatchObject({ stop: 'completed', rowsDeleted: 3 });
  });
});
