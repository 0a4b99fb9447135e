import { createLogger } from '../../src/observability/logger.js';
import { createOrm, type Orm } from '../../src/persistence/orm.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { migrationsList } from '../../src/persistence/migrations/index.js';

/**
 * Migration20261201160000EmailNormalisation: addresses stored before emails were NFC- and
 * IDNA-normalised get the spelling Login now looks up; a collision is left for an operator.
 */
let db: TestDatabase;
let orm: Orm;

beforeAll(async () => {
  db = await createTestDatabase();
  orm = await createOrm({ clientUrl: db.url, poolMax: 1, connectTimeoutMs: 5_000, statementTimeoutMs: 5_000, logger: createLogger('silent') });
});

afterAll(async () => {
  await orm?.close(true);
  await db?.drop();
});

const ids = {
  nfd: '00000000-0000-4000-8000-000000000001',
  aLabel: '00000000-0000-4000-8000-000000000002',
  fullwidthDomain: '00000000-0000-4000-8000-000000000003',
  ascii: '00000000-0000-4000-8000-000000000004',
  keeper: '00000000-0000-4000-8000-000000000005',
  collider: '00000000-0000-4000-8000-000000000006',
};

it('rewrites stored addresses to their NFC, IDNA-normalised spelling, leaving collisions alone', async () => {
  // Every migration before this one, whatever lands in between.
  const names = migrationsList.map((m) => m.name);
  await orm.migrator.up({ to: names[names.indexOf('Migration20261201160000EmailNormalisation') - 1]! });
  const stored: [string, string][] = [
    [ids.nfd, 'jose\u0301@example.com'],
    [ids.aLabel, 'owner@xn--bcher-kva.de'],
    [ids.fullwidthDomain, 'someone@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.org'],
    [ids.ascii, 'plain@example.com'],
    [ids.keeper, 'r\u00e9sum\u00e9@example.com'],
    [ids.collider, 're\u0301sume\u0301@example.com'],
  ];
  for (const [id, email] of stored) {
    await query(db.url, "insert into users (id, email, password_hash, password_changed_at, created_at, updated_at) values ($1, $2, 'x', now(), now(), now())", [id, email]);
  }
  await query(
    db.url,
    "insert into one_time_tokens (id, user_id, purpose, token_hash, created_at, expires_at, email) values (gen_random_uuid(), $1, 'email_verification', '\\x01', now(), now() + interval '1 day', $2)",
    [ids.nfd, 'jose\u0301@example.com'],
  );

  const applied = await orm.migrator.up();
  expect(applied.map((m) => m.name)).toEqual(['Migration20261201160000EmailNormalisation']);

  const rows = await query<{ id: string; email: string }>(db.url, 'select id, email from users order by id');
  expect(Object.fromEntries(rows.map((r) => [r.id, r.email]))).toEqual({
    [ids.nfd]: 'jos\u00e9@example.com',
    [ids.aLabel]: 'owner@b\u00fccher.de',
    [ids.fullwidthDomain]: 'someone@example.org',
    [ids.ascii]: 'plain@example.com',
    [ids.keeper]: 'r\u00e9sum\u00e9@example.com',
    [ids.collider]: 're\u0301sume\u0301@example.com',
  });
  expect(await query(db.url, 'select email from one_time_tokens')).toEqual([{ email: 'jos\u00e9@example.com' }]);
});
