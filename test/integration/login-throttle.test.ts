/**
 * The login-throttle statement and its sweep (issue 18), against the database directly: parallel
 * failures are counted one after another (no lost update), and `sweep-login-throttles` deletes
 * exactly the rows whose window, lock and repeat memory are over.
 */
import type { Orm } from '../../src/persistence/orm.js';
import { throttles, type LockoutPolicy } from '../../src/persistence/repositories/throttles.js';
import { sweepLoginThrottles } from '../../src/scheduler/jobs/index.js';
import { sweep } from '../../src/scheduler/sweep.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { fixedClock, openMigratedOrm } from '../support/sweeps.js';

const NOW = new Date('2026-06-01T12:00:00.000Z');
const at = (offsetMs: number) => new Date(NOW.getTime() + offsetMs);
const MINUTE = 60_000;
const policy: LockoutPolicy = { threshold: 5, windowMs: 15 * MINUTE, durationMs: MINUTE, maxDurationMs: 4 * MINUTE };

let db: TestDatabase;
let orm: Orm;

beforeAll(async () => {
  db = await createTestDatabase();
  orm = await openMigratedOrm(db.url, process.env.TEST_DATABASE_URL ? 8 : 1);
});

afterAll(async () => {
  await orm?.close(true);
  await db?.drop();
});

const record = (id: string, now: Date, p: LockoutPolicy = policy) =>
  throttles.recordFailure(orm.em.fork(), { throttleId: id, now, policy: p }, { userId: null, details: { reason: 'INVALID_CREDENTIALS' } });

const row = async (id: string) =>
  (await query<{ failures: number; lock_count: number; locked_until: Date | null; expires_at: Date }>(
    db.url,
    'select failures, lock_count, locked_until, expires_at from login_throttles where id = $1',
    [id],
  ))[0];

it('counts parallel failures without losing one: exactly one of them locks', async () => {
  const id = 'a'.repeat(64);
  const results = await Promise.all(Array.from({ length: 20 }, () => record(id, NOW)));
  // 5 lock; the 15 after count into the window again (a lock is never extended by them).
  expect(results.filter((r) => r.lockedNow)).toHaveLength(1);
  expect((await row(id))).toEqual({ failures: 15, lock_count: 1, locked_until: at(MINUTE), expires_at: at(15 * MINUTE + 4 * MINUTE) });
  const audit = await query<{ event_type: string }>(db.url, `select event_type from audit_events order by id`);
  expect(audit.map((a) => a.event_type)).toEqual(['login.failed', 'account.locked']);
});

it('starts a new window once the last one is over, and forgets the repeat count once the row expired', async () => {
  const id = 'b'.repeat(64);
  for (let i = 0; i < 4; i++) await record(id, NOW);
  // Window over: the count restarts at 1, no lock.
  expect(await record(id, at(15 * MINUTE))).toMatchObject({ failures: 1, lockedNow: false, lockCount: 0 });
  for (let i = 0; i < 4; i++) await record(id, at(16 * MINUTE));
  expect(await row(id)).toMatchObject({ failures: 0, lock_count: 1, locked_until: at(17 * MINUTE) });
  // Past expires_at (the window's end + the maximum duration): a new row in all but name.
  const expiresAt = (await row(id))!.expires_at;
  expect(await record(id, expiresAt)).toEqual({ failures: 1, lockedUntil: null, lockedNow: false, lockCount: 0 });
});

it('locks at the first failure with a threshold of 1, and never with 0', async () => {
  expect(await record('c'.repeat(64), NOW, { ...policy, threshold: 1 })).toMatchObject({ lockedNow: true, lockedUntil: at(MINUTE), lockCount: 1 });
  for (let i = 0; i < 10; i++) expect((await record('d'.repeat(64), NOW, { ...policy, threshold: 0 })).lockedNow).toBe(false);
});

it('sweeps exactly the rows whose expires_at has passed', async () => {
  await query(db.url, 'delete from login_throttles');
  const rows: [id: string, expiresAt: Date][] = [
    ['1'.repeat(64), at(-MINUTE)],
    ['2'.repeat(64), NOW],
    ['3'.repeat(64), at(1)],
    ['4'.repeat(64), at(MINUTE)],
  ];
  for (const [id, expiresAt] of rows) {
    await query(db.url, `insert into login_throttles (id, failures, window_started_at, lock_count, expires_at) values ($1, 1, $2, 0, $3)`, [id, at(-20 * MINUTE), expiresAt]);
  }
  const result = await sweep(sweepLoginThrottles(), { orm, clock: fixedClock(NOW), batchSize: 1, maxDurationMs: 60_000 });
  expect(result).toMatchObject({ stop: 'completed', rowsDeleted: 2 });
  expect((await query<{ id: string }>(db.url, 'select id from login_throttles order by id')).map((r) => r.id)).toEqual(['3'.repeat(64), '4'.repeat(64)]);
});
