import type { Orm } from '../../src/persistence/orm.js';
import { sweepAuditEvents, sweepOneTimeTokens } from '../../src/scheduler/jobs/index.js';
import { sweep, type SweepOptions } from '../../src/scheduler/sweep.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { fixedClock, ids, insertUsers, openMigratedOrm, seedId } from '../support/sweeps.js';

const NOW = new Date('2026-06-01T12:00:00.000Z');
const DAY = 86_400_000;
const at = (offsetMs: number) => new Date(NOW.getTime() + offsetMs);

let db: TestDatabase;
let orm: Orm;

beforeAll(async () => {
  db = await createTestDatabase();
  orm = await openMigratedOrm(db.url);
  await insertUsers(db.url, 7);
});

afterAll(async () => {
  await orm?.close(true);
  await db?.drop();
});

const options = (overrides: Partial<SweepOptions> = {}): SweepOptions => ({
  orm,
  clock: fixedClock(NOW),
  batchSize: 2,
  maxDurationMs: 60_000,
  ...overrides,
});

describe('sweep-one-time-tokens', () => {
  const tokens: [name: string, expiresAt: Date, usedAt: Date | null, deleted: boolean][] = [
    ['expired an hour ago', at(-3_600_000), null, true],
    ['expiring this instant', NOW, null, true],
    ['used, not yet expired', at(DAY), at(-60_000), true],
    ['used and expired', at(-DAY), at(-2 * DAY), true],
    ['used this instant', at(DAY), NOW, true],
    ['valid for another millisecond', at(1), null, false],
    ['valid for a day', at(DAY), null, false],
  ];

  beforeAll(async () => {
    // One user per token: a user has at most one unused token per purpose.
    for (const [i, [, expiresAt, usedAt]] of tokens.entries()) {
      await query(
        db.url,
        `insert into one_time_tokens (id, user_id, purpose, token_hash, created_at, expires_at, used_at)
         values ($1, $2, $3, $4, $5, $6, $7)`,
        [seedId(1, i + 1), seedId(0, i + 1), i % 2 ? 'password_reset' : 'email_verification', Buffer.from([i]), at(-3 * DAY), expiresAt, usedAt],
      );
    }
  });

  it('deletes used or expired tokens and keeps the redeemable ones', async () => {
    const result = await sweep(sweepOneTimeTokens(), options());

    expect(result).toMatchObject({ stop: 'completed', rowsDeleted: 5 });
    const kept = tokens.flatMap(([name, , , deleted], i) => (deleted ? [] : [`${name} ${seedId(1, i + 1)}`]));
    const names = new Map(tokens.map(([name], i) => [seedId(1, i + 1), name]));
    expect((await ids(db.url, 'one_time_tokens')).map((id) => `${names.get(id)} ${id}`)).toEqual(kept);
    expect(await sweep(sweepOneTimeTokens(), options())).toMatchObject({ stop: 'completed', rowsDeleted: 0 });
  });
});

describe('sweep-audit-events', () => {
  const retentionMs = 90 * DAY;
  const events: [name: string, occurredAt: Date, deleted: boolean][] = [
    ['a year old', at(-365 * DAY), true],
    ['a millisecond past retention', at(-retentionMs - 1), true],
    ['exactly the retention old', at(-retentionMs), false],
    ['a day old', at(-DAY), false],
    ['just now', NOW, false],
  ];

  beforeAll(async () => {
    for (const [name, occurredAt] of events) {
      await query(db.url, `insert into audit_events (occurred_at, event_type, details) values ($1, 'test', $2)`, [occurredAt, { name }]);
    }
  });

  it('deletes events older than the retention and keeps the rest', async () => {
    const result = await sweep(sweepAuditEvents({ retentionMs }), options({ batchSize: 1 }));

    // Two rows, one per batch, then an empty batch ends the pass.
    expect(result).toEqual({ stop: 'completed', rowsDeleted: 2, batches: 3 });
    const kept = await query<{ name: string }>(db.url, `select details->>'name' as name from audit_events order by occurred_at`);
    expect(kept.map((r) => r.name)).toEqual(events.filter(([, , deleted]) => !deleted).map(([name]) => name));
  });
});
