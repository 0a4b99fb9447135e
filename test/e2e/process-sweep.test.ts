/**
 * End-to-end: `latchkey sweep` (the one-shot for a Kubernetes CronJob) and the schedule
 * variables, through the compiled CLI. Runs on the PostgreSQL in TEST_DATABASE_URL, or on an
 * embedded PGlite reached over its socket when that is unset.
 */
import { Children, within } from '../support/children.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { processEnv } from '../support/process-env.js';
import { runLatchkey } from '../support/process.js';
import { count, insertSessions, insertUsers, seedId, seedIds, ids } from '../support/sweeps.js';

const DAY = 86_400_000;
const ago = (ms: number) => new Date(Date.now() - ms);

const children = new Children();
afterEach(() => children.killAll());

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  expect(await run(['migrate'], processEnv(db))).toMatchObject({ code: 0 });
});

afterAll(async () => {
  await children.killAll();
  await db?.drop();
});

async function run(args: string[], env: Record<string, string>) {
  const proc = children.track(runLatchkey(args, env));
  const exit = await within(proc.exited, 30_000, `latchkey ${args.join(' ')} to exit`, proc);
  return { ...exit, stdout: proc.stdout(), stderr: proc.stderr(), logs: proc.logs() };
}

/** stdout without the JSON log lines: what the command prints for people. */
const printed = (stdout: string) => stdout.split('\n').filter((line) => line !== '' && !line.startsWith('{'));

async function seed(): Promise<void> {
  await insertUsers(db.url, 3);
  // Sessions: 3 idle-expired, 2 revoked 30 days ago, 4 live.
  await insertSessions(db.url, 3, { group: 1, count: 3, idleExpiresAt: ago(DAY), absoluteExpiresAt: ago(-DAY) });
  await insertSessions(db.url, 3, { group: 2, count: 2, idleExpiresAt: ago(-DAY), absoluteExpiresAt: ago(-DAY), revokedAt: ago(30 * DAY) });
  await insertSessions(db.url, 3, { group: 3, count: 4, idleExpiresAt: ago(-DAY), absoluteExpiresAt: ago(-DAY) });
  // One-time tokens: 1 expired, 1 used, 1 redeemable; one user each, as a user has at most one unused token per purpose.
  const tokens: [Date, Date | null][] = [
    [ago(DAY), null],
    [ago(-DAY), ago(60_000)],
    [ago(-DAY), null],
  ];
  for (const [i, [expiresAt, usedAt]] of tokens.entries()) {
    await query(
      db.url,
      `insert into one_time_tokens (id, user_id, purpose, token_hash, created_at, expires_at, used_at) values ($1, $2, 'password_reset', $3, now(), $4, $5)`,
      [seedId(4, i + 1), seedId(0, i + 1), Buffer.from([i]), expiresAt, usedAt],
    );
  }
  // Audit events: 2 older than the 90-day retention, 1 recent.
  for (const occurredAt of [ago(400 * DAY), ago(91 * DAY), ago(DAY)]) {
    await query(db.url, `insert into audit_events (occurred_at, event_type) values ($1, 'test')`, [occurredAt]);
  }
  // Revocation events: two older than the access-token lifetime plus skew (15 min + 1 min), one not.
  for (const occurredAt of [ago(DAY), ago(17 * 60_000), ago(60_000)]) {
    await query(
      db.url,
      `insert into revocation_events (kind, session_id, user_id, reason, occurred_at) values ('session', gen_random_uuid(), gen_random_uuid(), 'LOGOUT', $1)`,
      [occurredAt],
    );
  }
}

it('`latchkey sweep` runs every sweep once, prints one line per job with its counts, and exits 0', async () => {
  await seed();

  const result = await run(['sweep'], processEnv(db));

  expect(result).toMatchObject({ code: 0, signal: null, stderr: '' });
  // Batches: sessions 3 passes, tokens 2, audit events 1; each pass ends on a short batch.
  expect(printed(result.stdout)).toEqual([
    expect.stringMatching(/^sweep-sessions: completed, 5 rows deleted in 3 batches \(\d+ ms\)$/),
    expect.stringMatching(/^sweep-one-time-tokens: completed, 2 rows deleted in 2 batches \(\d+ ms\)$/),
    expect.stringMatching(/^sweep-audit-events: completed, 2 rows deleted in 1 batches \(\d+ ms\)$/),
    expect.stringMatching(/^sweep-revocation-events: completed, 2 rows deleted in 1 batches \(\d+ ms\)$/),
    expect.stringMatching(/^sweep-login-throttles: completed, 0 rows deleted in 1 batches \(\d+ ms\)$/),
    // No signing key yet on this database (only migrated): the rotation step makes the first.
    expect.stringMatching(/^rotate-signing-keys: completed, 1 keys staged, 0 retired, 0 removed \(\d+ ms\)$/),
  ]);
  expect(result.logs.filter((line) => line.msg === 'sweep run finished').map((line) => [line.job, line.rowsDeleted])).toEqual([
    ['sweep-sessions', 5],
    ['sweep-one-time-tokens', 2],
    ['sweep-audit-events', 2],
    ['sweep-revocation-events', 2],
    ['sweep-login-throttles', 0],
  ]);
  expect(result.logs.filter((line) => line.msg === 'key rotation run finished').map((line) => [line.job, line.outcome])).toEqual([['rotate-signing-keys', 'completed']]);
  // The feed's horizon moved to the last deleted event: cursors before it are expired.
  expect(await count(db.url, 'revocation_events')).toBe(1);
  expect(
    await query<{ behind: boolean }>(db.url, `select (h.xid, h.event_id) < (e.xid, e.id) as behind from revocation_feed_horizon h, revocation_events e`),
  ).toEqual([{ behind: true }]);
  expect(await ids(db.url, 'sessions')).toEqual(seedIds(3, 4));
  expect(await ids(db.url, 'one_time_tokens')).toEqual([seedId(4, 3)]);
  expect(await count(db.url, 'audit_events')).toBe(1);

  // Nothing left: a second run deletes nothing and still succeeds.
  const again = await run(['sweep'], processEnv(db));
  expect(again).toMatchObject({ code: 0 });
  expect(printed(again.stdout).map((line) => line.replace(/ in \d+ batches \(\d+ ms\)$/, ''))).toEqual([
    'sweep-sessions: completed, 0 rows deleted',
    'sweep-one-time-tokens: completed, 0 rows deleted',
    'sweep-audit-events: completed, 0 rows deleted',
    'sweep-revocation-events: completed, 0 rows deleted',
    'sweep-login-throttles: completed, 0 rows deleted',
    expect.stringMatching(/^rotate-signing-keys: completed, 0 keys staged, 0 retired, 0 removed \(\d+ ms\)$/),
  ]);
});

it('`latchkey sweep` exits 1 with the reason on stderr when a sweep fails, after running the others', async () => {
  await query(db.url, 'delete from sessions');
  await insertSessions(db.url, 3, { group: 5, count: 2, idleExpiresAt: ago(DAY), absoluteExpiresAt: ago(-DAY) });
  // A statement error the migrations check cannot see: the table is gone.
  await query(db.url, 'drop table one_time_tokens');

  const result = await run(['sweep'], processEnv(db));

  expect(result).toMatchObject({ code: 1, signal: null });
  expect(result.stderr).toMatch(/^latchkey: sweep failed: sweep-one-time-tokens: .*one_time_tokens.*\n$/);
  expect(printed(result.stdout)).toEqual([
    expect.stringMatching(/^sweep-sessions: completed, 2 rows deleted in 3 batches/),
    expect.stringMatching(/^sweep-one-time-tokens: failed, 0 rows deleted in 0 batches/),
    expect.stringMatching(/^sweep-audit-events: completed, 0 rows deleted in 1 batches/),
    expect.stringMatching(/^sweep-revocation-events: completed, 0 rows deleted in 1 batches/),
    expect.stringMatching(/^sweep-login-throttles: completed, 0 rows deleted in 1 batches/),
    expect.stringMatching(/^rotate-signing-keys: completed, 0 keys staged, 0 retired, 0 removed/),
  ]);
  expect(result.logs.filter((line) => line.level === 'error').map((line) => [line.msg, line.job])).toEqual([
    ['sweep run failed', 'sweep-one-time-tokens'],
  ]);
  expect(await count(db.url, 'sessions')).toBe(0);
});

describe('schedules', () => {
  it.each(['serve', 'sweep'])('an invalid cron expression stops `%s` with exit 78, naming the variable', async (command) => {
    const result = await run([command], processEnv(db, { SESSION_SWEEP_CRON: '*/30 * * *', AUDIT_SWEEP_CRON: '0 25 * * *' }));

    expect(result).toMatchObject({ code: 78, signal: null, stdout: '' });
    expect(result.stderr).toBe(
      [
        'latchkey: Invalid configuration (2 problems):',
        '  - SESSION_SWEEP_CRON: must be a cron expression such as `*/30 * * * *` (5 fields, or 6 with seconds first)',
        '  - AUDIT_SWEEP_CRON: must be a cron expression such as `*/30 * * * *` (5 fields, or 6 with seconds first)',
        '',
      ].join('\n'),
    );
  });
});
