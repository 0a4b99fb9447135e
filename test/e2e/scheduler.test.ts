/**
 * The scheduler inside a running server (in process): off under NODE_ENV=test unless enabled,
 * sweeps failing while the database is gone never stop the service, and shutdown lets the batch
 * in flight finish before the database closes.
 */
import { startApp, type RunningApp } from '../../src/app.js';
import { healthStatus } from '../support/clients.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { TcpProxy } from '../support/proxy.js';
import { capturingLogger, count, insertSessions, insertUsers, openMigratedOrm } from '../support/sweeps.js';
import { waitFor } from '../support/wait.js';

const DAY = 86_400_000;
const ago = (ms: number) => new Date(Date.now() - ms);

let db: TestDatabase;
let proxy: TcpProxy;
const apps: RunningApp[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  await (await openMigratedOrm(db.url)).close(true);
  proxy = TcpProxy.forUrl(db.url);
  await proxy.start();
});

afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.stop()));
});

afterAll(async () => {
  await proxy?.stop();
  await db?.drop();
});

async function start(url: string, overrides: Record<string, string> = {}) {
  const logs = capturingLogger('info');
  const app = await startApp(testConfig(url, overrides), logs.logger);
  apps.push(app);
  return { app, lines: logs.lines };
}

const sweepLines = (lines: () => Record<string, unknown>[], job = 'sweep-sessions') =>
  lines().filter((line) => line.component === 'scheduler' && line.job === job && typeof line.outcome === 'string');

it('schedules nothing under NODE_ENV=test unless SCHEDULER_ENABLED=true', async () => {
  const off = await start(db.url);
  expect(off.lines().filter((line) => line.component === 'scheduler')).toEqual([
    expect.objectContaining({ msg: 'scheduler disabled: no jobs scheduled (SCHEDULER_ENABLED=false)' }),
  ]);

  const on = await start(db.url, { SCHEDULER_ENABLED: 'true' });
  const started = on.lines().find((line) => line.msg === 'scheduler started');
  expect((started?.jobs as { job: string; schedule: string }[]).map(({ job, schedule }) => ({ job, schedule }))).toEqual([
    { job: 'sweep-sessions', schedule: '*/30 * * * *' },
    { job: 'sweep-one-time-tokens', schedule: '15 * * * *' },
    { job: 'sweep-audit-events', schedule: '45 3 * * *' },
    { job: 'sweep-revocation-events', schedule: '*/10 * * * *' },
    { job: 'sweep-login-throttles', schedule: '20 * * * *' },
    { job: 'rotate-signing-keys', schedule: '*/5 * * * *' },
  ]);
});

it('keeps serving while sweeps fail on a lost database, and the next run after it returns does the work', async () => {
  const { app, lines } = await start(proxy.rewrite(db.url), {
    SCHEDULER_ENABLED: 'true',
    SESSION_SWEEP_CRON: '* * * * * *',
    DATABASE_HEALTH_INTERVAL: '100ms',
  });
  await query(db.url, 'delete from sessions');
  await query(db.url, 'delete from users');
  await proxy.stop();
  await insertUsers(db.url, 5);
  await insertSessions(db.url, 5, { group: 1, count: 300, idleExpiresAt: ago(DAY), absoluteExpiresAt: ago(-DAY) });

  const failed = await waitFor(async () => sweepLines(lines).filter((l) => l.outcome === 'failed'), (found) => found.length > 0, 20_000);
  expect(failed[0]).toMatchObject({ level: 'error', msg: 'sweep run failed', err: expect.objectContaining({ message: expect.any(String) }) });
  // Still serving: health answers (NOT_SERVING, because of the database), liveness is fine.
  expect(await waitFor(() => healthStatus(app.grpcPort), (s) => s === 'NOT_SERVING')).toBe('NOT_SERVING');
  expect((await fetch(`http://127.0.0.1:${app.httpPort}/healthz`)).status).toBe(200);
  const metrics = await (await fetch(`http://127.0.0.1:${app.httpPort}/metrics`)).text();
  expect(metrics).toMatch(/^latchkey_sweep_runs_total\{sweep="sweep-sessions",outcome="failed"\} [1-9]\d*$/m);

  await proxy.start();
  await waitFor(() => count(db.url, 'sessions'), (n) => n === 0, 20_000);
  expect(await count(db.url, 'sessions')).toBe(0);
  const deleted = await waitFor(
    async () => sweepLines(lines).reduce((sum, l) => sum + (l.rowsDeleted as number), 0),
    (n) => n === 300,
  );
  expect(deleted).toBe(300);
  expect(await waitFor(() => healthStatus(app.grpcPort), (s) => s === 'SERVING')).toBe('SERVING');
});

it('on stop, lets the batch in flight finish before the database closes', async () => {
  await query(db.url, 'delete from sessions');
  await query(db.url, 'delete from users');
  await insertUsers(db.url, 5);
  await insertSessions(db.url, 5, { group: 2, count: 5_000, idleExpiresAt: ago(DAY), absoluteExpiresAt: ago(-DAY) });
  const { app, lines } = await start(db.url, {
    SCHEDULER_ENABLED: 'true',
    SESSION_SWEEP_CRON: '* * * * * *',
    SWEEP_BATCH_SIZE: '5',
  });

  // Stop as soon as the sweep has made progress, most likely part-way through its run.
  await waitFor(() => count(db.url, 'sessions'), (n) => n < 5_000, 20_000);
  await app.stop();
  apps.splice(apps.indexOf(app), 1);

  const runs = sweepLines(lines);
  expect(runs.length).toBeGreaterThan(0);
  for (const run of runs) expect(['completed', 'interrupted']).toContain(run.outcome);
  expect(lines().filter((line) => line.level === 'error')).toEqual([]);
  // Every batch either committed and was counted, or never happened: nothing half-done.
  const reported = runs.reduce((sum, l) => sum + (l.rowsDeleted as number), 0);
  expect(5_000 - (await count(db.url, 'sessions'))).toBe(reported);
});
