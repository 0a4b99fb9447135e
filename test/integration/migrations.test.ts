import { createLogger } from '../../src/observability/logger.js';
import { createOrm, type Orm } from '../../src/persistence/orm.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { migrationsList } from '../../src/persistence/migrations/index.js';

/** Every migration the code ships, in order (src/persistence/migrations/index.ts). */
const MIGRATIONS = migrationsList.map((m) => m.name);
/** The tables the migrations leave, in name order. */
const TABLES = [
  'audit_events',
  'login_throttles',
  'mikro_orm_migrations',
  'one_time_tokens',
  'refresh_secret_keys',
  'revocation_events',
  'revocation_feed_horizon',
  'scheduler_leases',
  'sessions',
  'signing_keys',
  'users',
];

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

const tables = async () =>
  (await query<{ table_name: string }>(db.url, `select table_name from information_schema.tables where table_schema = 'public' order by 1`)).map(
    (r) => r.table_name,
  );

it('starts from an empty database', async () => {
  expect(await tables()).toEqual([]);
  expect((await orm.migrator.getPending()).map((m) => m.name)).toEqual(MIGRATIONS);
});

it('applies every migration to an empty database', async () => {
  const applied = await orm.migrator.up();
  expect(applied.map((m) => m.name)).toEqual(MIGRATIONS);
  expect(await tables()).toEqual(TABLES);
});

it('is a no-op the second time', async () => {
  expect(await orm.migrator.up()).toEqual([]);
  expect(await orm.migrator.getPending()).toEqual([]);
  const executed = await query<{ name: string }>(db.url, 'select name from mikro_orm_migrations order by id');
  expect(executed.map((r) => r.name)).toEqual(MIGRATIONS);
});

it('leaves a schema that matches the entity definitions exactly', async () => {
  // If an entity and the migrations drift apart, this diff is where it shows.
  const diff = await orm.schema.getUpdateSchemaSQL({ wrap: false });
  expect(diff.trim()).toBe('');
});

it('indexes every column that lookups and sweeps filter by', async () => {
  const rows = await query<{ indexdef: string }>(db.url, `select indexdef from pg_indexes where schemaname = 'public'`);
  // "… USING btree (a, b DESC) WHERE (c IS NULL)" → "a, b DESC where c IS NULL"
  const columns = rows
    .map((r) => /USING \w+ \((.*?)\)(?: WHERE \((.*)\))?$/.exec(r.indexdef))
    .map((m) => (m?.[2] ? `${m[1]} where ${m[2]}` : m?.[1]))
    .sort();
  expect(columns).toEqual(
    expect.arrayContaining([
      'email', // users: login lookup (unique)
      'user_id, last_used_at, created_at, id', // sessions: per-user lists, the login's session limit
      'idle_expires_at', // sessions: sweep
      'absolute_expires_at', // sessions: sweep
      'revoked_at where revoked_at IS NOT NULL', // sessions: sweep of old revoked sessions
      'token_hash', // one_time_tokens: redemption (unique)
      'expires_at', // one_time_tokens and signing_keys: sweep, JWKS
      'used_at', // one_time_tokens: sweep
      'occurred_at', // audit_events: retention sweep
      'user_id, occurred_at', // audit_events: per-user trail
    ]),
  );
});

it('refuses a one-time token with an unknown purpose at the database', async () => {
  const userId = '00000000-0000-4000-8000-000000000001';
  await query(
    db.url,
    `insert into users (id, email, password_hash, password_changed_at, created_at, updated_at) values ($1, 'p@example.com', 'x', now(), now(), now())`,
    [userId],
  );
  await expect(
    query(
      db.url,
      `insert into one_time_tokens (id, user_id, purpose, token_hash, created_at, expires_at) values (gen_random_uuid(), $1, 'login_link', '\\x01', now(), now())`,
      [userId],
    ),
  ).rejects.toThrow(/one_time_tokens_purpose_check/);
  await query(db.url, `delete from users where id = $1`, [userId]);
});

it('keeps at most one unused one-time token per user and purpose', async () => {
  const userId = '00000000-0000-4000-8000-000000000002';
  await query(
    db.url,
    `insert into users (id, email, password_hash, password_changed_at, created_at, updated_at) values ($1, 'q@example.com', 'x', now(), now(), now())`,
    [userId],
  );
  const insert = (hash: string, usedAt: string) =>
    query(
      db.url,
      `insert into one_time_tokens (id, user_id, purpose, token_hash, email, created_at, expires_at, used_at)
       values (gen_random_uuid(), $1, 'password_reset', $2, 'q@example.com', now(), now(), ${usedAt})`,
      [userId, hash],
    );
  await insert('\\x01', 'now()');
  await insert('\\x02', 'now()');
  await insert('\\x03', 'null');
  await expect(insert('\\x04', 'null')).rejects.toThrow(/one_time_tokens_user_id_purpose_unused_key/);
  await query(db.url, `delete from users where id = $1`, [userId]);
});

it('rolls back cleanly (down) and re-applies', async () => {
  await orm.migrator.down({ to: 0 });
  expect(await tables()).toEqual(['mikro_orm_migrations']);
  await orm.migrator.up();
  expect(await tables()).toEqual(TABLES);
});
