/**
 * Two replicas sweeping one database at the same moment: each on its own ORM (its own pool), as
 * two processes would be.
 */
import type { Orm } from '../../src/persistence/orm.js';
import { sweepSessions } from '../../src/scheduler/jobs/index.js';
import { runSweep } from '../../src/scheduler/run.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { capturingLogger, count, fixedClock, ids, insertSessions, insertUsers, openMigratedOrm, seedIds } from '../support/sweeps.js';

const NOW = new Date('2026-06-01T12:00:00.000Z');
const DAY = 86_400_000;
const at = (offsetMs: number) => new Date(NOW.getTime() + offsetMs);
const job = sweepSessions({ revokedRetentionMs: 7 * DAY });

let db: TestDatabase;
let replicas: Orm[];

beforeAll(async () => {
  db = await createTestDatabase();
  replicas = [await openMigratedOrm(db.url, 2), await openMigratedOrm(db.url, 2)];
  await insertUsers(db.url, 50);
});

afterAll(async () => {
  await Promise.all(replicas?.map((orm) => orm.close(true)) ?? []);
  await db?.drop();
});

it.each([1, 2, 3])('never fail, never double-count, and together delete each row once (round %i)', async () => {
  await query(db.url, 'delete from sessions');
  await insertSessions(db.url, 50, { group: 1, count: 3_000, idleExpiresAt: at(-1), absoluteExpiresAt: at(DAY) });
  await insertSessions(db.url, 50, { group: 2, count: 2_000, idleExpiresAt: at(DAY), absoluteExpiresAt: at(DAY), revokedAt: at(-30 * DAY) });
  await insertSessions(db.url, 50, { group: 3, count: 300, idleExpiresAt: at(DAY), absoluteExpiresAt: at(DAY) });
  const logs = capturingLogger('debug');

  // Small batches, so the two runs have many chances to interleave.
  const reports = await Promise.all(
    replicas.map((orm) => runSweep(job, { orm, logger: logs.logger, clock: fixedClock(NOW), batchSize: 50, maxDurationMs: 60_000 })),
  );

  for (const report of reports) expect(['completed', 'skipped_lock']).toContain(report.outcome);
  expect(logs.lines().filter((line) => line.level === 'error' || line.level === 'warn')).toEqual([]);
  // Each replica reports only what its own committed batches deleted.
  const reported = reports.reduce((sum, r) => sum + r.rowsDeleted, 0);
  expect(5_300 - (await count(db.url, 'sessions'))).toBe(reported);

  // A replica that was kept out by the lock leaves its share to the next run; together, all of it.
  const next = await runSweep(job, { orm: replicas[0]!, logger: logs.logger, clock: fixedClock(NOW), batchSize: 50, maxDurationMs: 60_000 });
  expect(reported + next.rowsDeleted).toBe(5_000);
  expect(await ids(db.url, 'sessions')).toEqual(seedIds(3, 300));
});

describe('the lease', () => {
  beforeEach(() => query(db.url, 'delete from sessions'));

  it('keeps the other replica out through the rests between batches, and is let go when the run ends', async () => {
    await insertSessions(db.url, 50, { group: 1, count: 400, idleExpiresAt: at(-1), absoluteExpiresAt: at(DAY) });
    const logs = capturingLogger('debug');
    const [holder, other] = replicas as [Orm, Orm];
    // Small batches with rests as long as the batches: the other replica tries again and again
    // while the holder rests, which is when the advisory lock alone would let it in.
    const running = runSweep(job, { orm: holder, logger: logs.logger, clock: fixedClock(NOW), batchSize: 20, maxDurationMs: 60_000, dutyCyclePercent: 20 });
    const attempts = [];
    let done = false;
    void running.finally(() => (done = true));
    // Once the holder's first batch has committed (its lease is there), the other replica starts trying.
    while ((await query(db.url, 'select 1 from scheduler_leases')).length === 0) await new Promise((r) => setTimeout(r, 1));
    while (!done) {
      attempts.push(await runSweep(job, { orm: other, logger: logs.logger, clock: fixedClock(NOW), batchSize: 20, maxDurationMs: 60_000 }));
      await new Promise((r) => setTimeout(r, 5));
    }

    expect(await running).toMatchObject({ outcome: 'completed', rowsDeleted: 400 });
    expect(attempts.length).toBeGreaterThan(1);
    expect(attempts.every((a) => a.outcome === 'skipped_lock' || (a.outcome === 'completed' && a.rowsDeleted === 0))).toBe(true);
    expect(await query(db.url, 'select * from scheduler_leases')).toEqual([]);
  });

  it('is taken over once it has expired, as when its replica stopped mid-run', async () => {
    await insertSessions(db.url, 50, { group: 1, count: 30, idleExpiresAt: at(-1), absoluteExpiresAt: at(DAY) });
    await query(db.url, `insert into scheduler_leases (job, holder, expires_at) values ($1, 'gone', clock_timestamp() + interval '1 hour')`, [job.name]);
    const options = { orm: replicas[0]!, logger: capturingLogger().logger, clock: fixedClock(NOW), batchSize: 50, maxDurationMs: 60_000 };

    expect(await runSweep(job, options)).toMatchObject({ outcome: 'skipped_lock', rowsDeleted: 0 });
    await query(db.url, `update scheduler_leases set expires_at = clock_timestamp() - interval '1 second' where job = $1`, [job.name]);
    expect(await runSweep(job, options)).toMatchObject({ outcome: 'completed', rowsDeleted: 30 });
    expect(await query(db.url, 'select * from scheduler_leases')).toEqual([]);
  });
});
