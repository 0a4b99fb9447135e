import type { EntityManager } from '@mikro-orm/postgresql';

/**
 * Raw statements through the EntityManager's connection (and its transaction, when inside one).
 * The hot paths use hand-written SQL so that each does its work in one round trip (a CTE that
 * inserts a session and its audit event, a conditional UPDATE … RETURNING for a rotation).
 * Parameters are always bound, never interpolated.
 */
export async function queryOne<T extends object>(em: EntityManager, sql: string, params: readonly unknown[] = []): Promise<T | undefined> {
  const row = await em.execute<Record<string, unknown>>(sql, [...params], 'get');
  return (row ?? undefined) as T | undefined;
}

export async function queryAll<T extends object>(em: EntityManager, sql: string, params: readonly unknown[] = []): Promise<T[]> {
  return (await em.execute<Record<string, unknown>[]>(sql, [...params], 'all')) as T[];
}

/** A nullable timestamptz column as read through MikroORM's connection (text) to a Date. */
export function dateOrNull(value: string | null): Date | null {
  return value === null ? null : new Date(value);
}

/** Runs a statement and returns the number of rows it affected. */
export async function run(em: EntityManager, sql: string, params: readonly unknown[] = []): Promise<number> {
  const result = await em.execute<{ affectedRows: number }>(sql, [...params], 'run');
  return result.affectedRows;
}
