/**
 * A sweep whose database goes away part-way through a run: the run is logged and counted as
 * failed, never thrown; what committed stays committed; the next run finishes the work.
 */
import { Registry } from 'prom-client';
import type { Orm } from '../../src/persistence/orm.js';
import { sweepSessions } from '../../src/scheduler/jobs/index.js';
import { createSweepMetrics } from '../../src/scheduler/metrics.js';
import { runSweep } from '../../src/scheduler/run.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { TcpProxy } from '../support/proxy.js';
import { capturingLogger, count, fixedClock, insertSessions, insertUsers, openMigratedOrm, scriptedClock } from '../support/sweeps.js';

const NOW = new Date('2026-06-01T12:00:00.000Z');
const DAY = 86_400_000;
const at = (offsetMs: number) => new Date(NOW.getTime() + offsetMs);
const job = sweepSessions({ revokedRetentionMs: 7 * DAY });

let db: TestDatabase;
let proxy: TcpProxy;
let orm: Orm;

beforeAll(async () => {
  db = await createTestDatabase();
  proxy = TcpProxy.forUrl(db.url);
  await proxy.start();
  orm = await openMigratedOrm(proxy.rewrite(db.url));
  await insertUsers(db.url, 10);
  await insertSessions(db.url, 10, { group: 1, count: 1_000, idleExpiresAt: at(DAY), absoluteExpiresAt: at(-1) });
});

afterAll(async () => {
  await orm?.close(true);
  await proxy?.stop();
  await db?.drop();
});

it('logs and counts the failure without throwing, and the next run completes the work', async () => {
  const registry = new Registry();
  const metrics = createSweepMetrics(registry);
  const { logger, lines } = capturingLogger('info');
  // The clock is read at the start and before each batch; on the third batch the database is
  // gone: every connection cut, new ones refused (the first two batches have committed).
  const clock = scriptedClock((read) => {
    if (read === 4) void proxy.stop();
    return NOW;
  });

  const failed = await runSweep(job, { orm, logger, metrics, clock, batchSize: 100, maxDurationMs: 60_000 });

  expect(failed).toMatchObject({ job: 'sweep-sessions', outcome: 'failed', rowsDeleted: 200, batches: 2 });
  expect(failed.error).toBeInstanceOf(Error);
  expect(lines()).toEqual([
    expect.objectContaining({
      level: 'error',
      msg: 'sweep run failed',
      job: 'sweep-sessions',
      outcome: 'failed',
      rowsDeleted: 200,
      batches: 2,
      err: expect.objectContaining({ message: expect.any(String) }),
    }),
  ]);
  // The failed batch rolled back: only the two committed batches are gone.
  expect(await count(db.url, 'sessions')).toBe(800);

  await proxy.start();
  const next = await runSweep(job, { orm, logger, metrics, clock: fixedClock(NOW), batchSize: 100, maxDurationMs: 60_000 });

  expect(next).toMatchObject({ outcome: 'completed', rowsDeleted: 800 });
  expect(await count(db.url, 'sessions')).toBe(0);
  const exposition = await registry.metrics();
  expect(exposition).toContain('latchkey_sweep_runs_total{sweep="sweep-sessions",outcome="failed"} 1');
  expect(exposition).toContain('latchkey_sweep_runs_total{sweep="sweep-sessions",outcome="completed"} 1');
  expect(exposition).toContain('latchkey_sweep_rows_deleted_total{sweep="sweep-sessions"} 1000');
});
