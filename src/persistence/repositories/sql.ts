import type { EntityManager } from '@mikro-orm/postgresql';
import { CompiledQuery } from 'kysely';
import { CallDeadlineError, DEADLINE_SQLSTATE, runStatement, SENT_AT, WRITE_DEADLINE } from '../call-scope.js';

/**
 * Raw statements through the EntityManager's connection (and its transaction, when inside one).
 * The hot paths use hand-written SQL so that each does its work in one round trip (a CTE that
 * inserts a session and its audit event, a conditional UPDATE … RETURNING for a rotation).
 *
 * Parameters are always bound, never interpolated: the text goes to PostgreSQL with `$n`
 * placeholders and the values separately (the extended query protocol, through Kysely's pg
 * driver). `em.execute` and MikroORM's query builder would inline them as escaped literals (the
 * simple query protocol), and then password hashes, token hashes and emails would show in
 * pg_stat_activity, in PostgreSQL's logs of slow or failing statements, and in the text of
 * MikroORM's exceptions.
 */
export async function queryOne<T extends object>(em: EntityManager, sql: string, params: readonly unknown[] = []): Promise<T | undefined> {
  const row = await execute<Record<string, unknown> | null>(em, sql, params, 'get');
  return (row ?? undefined) as T | undefined;
}

export async function queryAll<T extends object>(em: EntityManager, sql: string, params: readonly unknown[] = []): Promise<T[]> {
  return (await execute<Record<string, unknown>[]>(em, sql, params, 'all')) as T[];
}

/**
 * Every statement goes through here: within a call it is admitted and bounded by the call's
 * deadline (call-scope.ts), and WRITE_DEADLINE parameters become the time after which the
 * database refuses to apply it. A write refused that way surfaces as CallDeadlineError.
 */
async function execute<T>(em: EntityManager, sql: string, params: readonly unknown[], method: 'get' | 'all' | 'run'): Promise<T> {
  return runStatement(async ({ guard, sentAt }) => {
    const bound = params.map((p) => (p === WRITE_DEADLINE ? guard : p === SENT_AT ? sentAt : p));
    try {
      return (await executeBound(em, sql, bound, method)) as T;
    } catch (error) {
      if (deadlinePassedInDatabase(error)) throw new CallDeadlineError('the write reached the database after its call\'s deadline and was not applied');
      throw error;
    }
  });
}

function deadlinePassedInDatabase(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if ((e as { code?: unknown }).code === DEADLINE_SQLSTATE) return true;
  }
  return false;
}

/** What a statement returns, by method: its first row, its rows, or how many rows it affected. */
export type StatementResult<M extends 'get' | 'all' | 'run'> = M extends 'get'
  ? Record<string, unknown> | undefined
  : M extends 'all'
    ? Record<string, unknown>[]
    : { affectedRows: number };

/**
 * Runs one statement with `?` placeholders on the EntityManager's transaction when it is inside
 * one (em.transactional), else on a pooled connection, with its parameters bound. The ORM's own
 * pg type parsers apply (timestamps come back as text, see dateOrNull), and the statement's text,
 * never its parameters, goes to the ORM's query log (LOG_LEVEL=trace). Not admitted through the
 * call's DatabaseGate: the repositories use queryOne/queryAll/run/one, which are.
 */
export async function executeBound<M extends 'get' | 'all' | 'run'>(em: EntityManager, sql: string, params: readonly unknown[], method: M): Promise<StatementResult<M>> {
  const connection = em.getConnection();
  await connection.ensureConnection();
  const logger = em.config.getLogger();
  const started = Date.now();
  try {
    const result = await em.getKysely().executeQuery(CompiledQuery.raw(numberedPlaceholders(sql), [...params]));
    const rows = result.rows as Record<string, unknown>[];
    const affected = method === 'run' ? Number(result.numAffectedRows ?? rows.length) : undefined;
    logger.logQuery({ query: sql, level: 'info', took: Date.now() - started, results: method === 'run' ? undefined : rows.length, affected });
    return (method === 'get' ? rows[0] : method === 'all' ? rows : { affectedRows: affected! }) as StatementResult<M>;
  } catch (error) {
    logger.logQuery({ query: sql, level: 'error', took: Date.now() - started });
    throw error;
  }
}

/**
 * `?` placeholders to PostgreSQL's `$1`, `$2`, …. Our statements hold no `?` other than
 * placeholders (no `?` operators, none in literals or comments); one that did would leave the
 * values and placeholders unequal in number, which PostgreSQL refuses ("bind message supplies …").
 */
export function numberedPlaceholders(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

/**
 * `latchkey_before(?)` with the call's write deadline bound to it: put it in the RETURNING list of
 * every statement (or CTE) that writes on a call's behalf. RETURNING is evaluated for each row
 * after it was written and its lock taken, so a write that reaches the database (or gets its row
 * lock) after the call gave up raises and the whole statement rolls back.
 */
export const BEFORE_DEADLINE = 'latchkey_before(?) as before_deadline';

/** A nullable timestamptz column as read through MikroORM's connection (text) to a Date. */
export function dateOrNull(value: string | null): Date | null {
  return value === null ? null : new Date(value);
}

/** Runs a statement and returns the number of rows it affected. */
export async function run(em: EntityManager, sql: string, params: readonly unknown[] = []): Promise<number> {
  const result = await execute<{ affectedRows: number }>(em, sql, params, 'run');
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

/** BEFORE_DEADLINE as a Fragment, for statements composed with the `sql` tag. */
export const WRITE_GUARD = new Fragment(BEFORE_DEADLINE, [WRITE_DEADLINE]);

/** Trusted SQL text (column lists), never a value. */
export const raw = (text: string) => new Fragment(text, []);

/** Runs a composed statement (see `sql`) and returns its first row. */
export async function one<T extends object>(em: EntityManager, statement: Fragment): Promise<T | undefined> {
  return queryOne<T>(em, statement.text, statement.params);
}
