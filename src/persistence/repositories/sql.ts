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

/** A piece of SQL with its bound values, composed in text order by the `sql` tag. */
export class Fragment {
  constructor(
    readonly text: string,
    readonly params: readonly unknown[],
  ) {}
}

/** Interpolated values become `?` binds; interpolated Fragments are spliced in with their binds. */
export function sql(strings: TemplateStringsArray, ...values: unknown[]): Fragment {
  let text = strings[0]!;
  const params: unknown[] = [];
  values.forEach((value, i) => {
    if (value instanceof Fragment) {
      text += value.text;
      params.push(...value.params);
    } else {
      text += '?';
      params.push(value);
    }
    text += strings[i + 1]!;
  });
  return new Fragment(text, params);
}

/** Trusted SQL text (column lists), never a value. */
export const raw = (text: string) => new Fragment(text, []);

/** Runs a composed statement (see `sql`) and returns its first row. */
export async function one<T extends object>(em: EntityManager, statement: Fragment): Promise<T | undefined> {
  return queryOne<T>(em, statement.text, statement.params);
}
