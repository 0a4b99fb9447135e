import type { EntityManager } from '@mikro-orm/postgresql';
import { CallDeadlineError, DEADLINE_SQLSTATE, runStatement, SENT_AT, WRITE_DEADLINE } from '../call-scope.js';

/**
 * Raw statements through the EntityManager's connection (and its transaction, when inside one).
 * The hot paths use hand-written SQL so that each does its work in one round trip (a CTE that
 * inserts a session and its audit event, a conditional UPDATE … RETURNING for a rotation).
 * Parameters are always bound, never interpolated.
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
      return (await em.execute(sql, bound, method)) as T;
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
