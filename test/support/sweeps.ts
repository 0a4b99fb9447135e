import type { Clock } from '../../src/domain/clock.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';
import { createOrm, type Orm } from '../../src/persistence/orm.js';
import { query } from './database.js';

/** An ORM on `url` with the schema migrated, as a replica would have it; quiet logs. */
export async function openMigratedOrm(url: string, poolMax = 1): Promise<Orm> {
  const orm = await createOrm({ clientUrl: url, poolMax, connectTimeoutMs: 2_000, statementTimeoutMs: 10_000, logger: createLogger('silent') });
  await orm.migrator.up();
  return orm;
}

/**
 * A deterministic uuid for row `i` of seed group `group` (both small numbers), so a test can
 * name exactly which rows must remain. The same expression in SQL and in JS.
 */
export function seedId(group: number, i: number): string {
  return `${group.toString(16).padStart(8, '0')}-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;
}
const seedIdSql = (group: number, index = 'i') => `(lpad(to_hex(${group}), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(${index}), 12, '0'))::uuid`;

/** Users `seedId(0, 1..count)`, bulk-inserted. */
export async function insertUsers(url: string, count: number): Promise<void> {
  await query(
    url,
    `insert into users (id, email, password_hash, password_changed_at, created_at, updated_at)
     select ${seedIdSql(0)}, 'user' || i || '@example.com', 'x', now(), now(), now() from generate_series(1, $1::int) as i`,
    [count],
  );
}

export interface SessionGroup {
  readonly group: number;
  readonly count: number;
  readonly idleExpiresAt: Date;
  readonly absoluteExpiresAt: Date;
  readonly revokedAt?: Date;
}

/** Sessions `seedId(group, 1..count)`, spread over users 1..users, bulk-inserted with generate_series. */
export async function insertSessions(url: string, users: number, g: SessionGroup): Promise<void> {
  await query(
    url,
    `insert into sessions (id, user_id, refresh_secret_hash, created_at, last_used_at, idle_expires_at, absolute_expires_at, revoked_at, revoked_reason)
     select ${seedIdSql(g.group)}, ${seedIdSql(0, `1 + i % ${users}`)},
            '\\x00', $2::timestamptz - interval '40 days', $2::timestamptz - interval '1 day', $3, $4, $5, case when $5::timestamptz is null then null else 'logout' end
     from generate_series(1, $1::int) as i`,
    [g.count, g.absoluteExpiresAt, g.idleExpiresAt, g.absoluteExpiresAt, g.revokedAt ?? null],
  );
}

export async function ids(url: string, table: string): Promise<string[]> {
  return (await query<{ id: string }>(url, `select id::text as id from ${table} order by id`)).map((r) => r.id);
}

export async function count(url: string, table: string): Promise<number> {
  return Number((await query<{ n: string }>(url, `select count(*) as n from ${table}`))[0]!.n);
}

/** The ids `seedId(group, 1..n)`, sorted as PostgreSQL sorts uuids. */
export function seedIds(group: number, n: number): string[] {
  return Array.from({ length: n }, (_, i) => seedId(group, i + 1));
}

/** A clock that always says `at`. */
export const fixedClock = (at: Date): Clock => ({ now: () => at.getTime() });

/** A clock that calls `onRead` with the number of each read (1, 2, …) and says what it returns. */
export const scriptedClock = (onRead: (read: number) => Date): Clock => {
  let reads = 0;
  return { now: () => onRead(++reads).getTime() };
};

/** A JSON logger whose lines a test can read back. */
export function capturingLogger(level: 'info' | 'debug' = 'debug'): { logger: Logger; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  return {
    logger: createLogger(level, { write: (line: string) => void chunks.push(line) }),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}
