import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Clock } from '../domain/clock.js';
import type { Orm } from '../persistence/orm.js';
import { executeBound } from '../persistence/repositories/sql.js';

/**
 * First key of every advisory lock Latchkey takes (`pg_try_advisory_xact_lock(namespace, job)`),
 * so its locks cannot collide with another application's on a shared database. "LK".
 */
export const ADVISORY_LOCK_NAMESPACE = 0x4c4b;

/**
 * One kind of row a sweep deletes: rows of `table` whose `column` is before (`<`) or at (`<=`)
 * the cutoff. Each pass walks one indexed column in order, so a batch reads only the index range
 * it deletes, however large the backlog (one query with OR across columns would have to sort
 * every matching row for each batch).
 */
export interface SweepPass {
  /** Names the pass in code and docs, e.g. `idle-expired`. */
  readonly name: string;
  readonly table: string;
  /** An indexed timestamp column. */
  readonly column: string;
  readonly comparison: '<' | '<=';
  /** The cutoff for a run that started at `now`. */
  cutoff(now: Date): Date;
}

export interface SweepJob {
  /** The job's name in logs and metrics, e.g. `sweep-sessions`. */
  readonly name: string;
  /** Second key of the job's advisory lock; unique per job. */
  readonly lockKey: number;
  readonly passes: readonly SweepPass[];
}

export interface SweepOptions {
  readonly orm: Orm;
  /** Decides the cutoffs and the time limit; injected so tests say exactly what "now" is. */
  readonly clock: Clock;
  readonly batchSize: number;
  /** No new batch starts once this much time (by `clock`) has passed since the run began. */
  readonly maxDurationMs: number;
  /**
   * Share of the run spent in batches, in percent (default 100: no rest). After a batch that took
   * t (real time), the run rests t × (100 − p) / p before the next.
   */
  readonly dutyCyclePercent?: number;
  /** Shutdown: no new batch starts once aborted; the batch in flight finishes (or rolls back). */
  readonly signal?: AbortSignal;
}

/** Why a run ended. */
export type SweepStop =
  /** Every pass ran until a batch came back short: nothing left (apart from rows others held locked). */
  | 'completed'
  /** `maxDurationMs` passed; the rest is left for the next run. */
  | 'time_limit'
  /** Another replica (or run) held the job's advisory lock: this run deleted nothing more. */
  | 'skipped_lock'
  /** The signal was aborted (shutdown) between batches. */
  | 'interrupted';

export interface SweepResult {
  readonly stop: SweepStop;
  /** Rows deleted by committed batches. */
  readonly rowsDeleted: number;
  /** Batches that got the lock and committed. */
  readonly batches: number;
}

/** Thrown for a failure part-way through a run, carrying what committed before it. */
export class SweepFailedError extends Error {
  constructor(
    readonly progress: { rowsDeleted: number; batches: number },
    cause: unknown,
  ) {
    super(`sweep failed: ${(cause as Error | undefined)?.message ?? String(cause)}`, { cause });
    this.name = 'SweepFailedError';
  }
}

const quote = (identifier: string) => `"${identifier.replaceAll('"', '""')}"`;

/**
 * One batch as one statement, and so one transaction of its own (parameters: the two lock keys;
 * the job, this replica's id and the lease in milliseconds; the cutoff, the batch size). In the
 * order PostgreSQL runs it:
 *
 * 1. `pg_try_advisory_xact_lock` on the job's key, held until the statement ends. When it is not
 *    granted, everything below is gated off (a one-time filter): no row is read or locked.
 * 2. The job's lease in `scheduler_leases`: taken or renewed (until the database's now + the
 *    lease) only if it is free, expired, or already this replica's. A replica that finds another
 *    one's lease deletes nothing, though it got the advisory lock during the holder's rest.
 * 3. `select id … order by <column> limit n for update skip locked`: walks the column's index from
 *    the oldest row, takes at most n row locks and passes over any row that a login, a refresh or
 *    another sweeper holds, instead of waiting for it.
 * 4. `delete … where id = any(array(…))`: the same as `id in (…)`, but always planned as a primary
 *    key lookup of those n ids; `in (…)` can be planned as a hash join over the whole table.
 *
 * A single statement rather than BEGIN … COMMIT: if the connection dies part-way, the server rolls
 * the statement back and the pool discards the connection. (An explicit transaction through
 * MikroORM/Kysely leaks its pooled connection when the ROLLBACK itself fails on a dead
 * connection, kysely-org/kysely#1990, and the pool runs dry after a few database outages.)
 */
export function batchDeleteSql(pass: SweepPass): string {
  const table = quote(pass.table);
  const column = quote(pass.column);
  return [
    'with lock as materialized (select pg_try_advisory_xact_lock(?, ?) as granted),',
    'lease as (insert into scheduler_leases as l (job, holder, expires_at)',
    "  select ?, ?, clock_timestamp() + ?::int * interval '1 millisecond' from lock where granted",
    '  on conflict (job) do update set holder = excluded.holder, expires_at = excluded.expires_at',
    '  where l.holder = excluded.holder or l.expires_at <= clock_timestamp()',
    '  returning 1),',
    `deleted as (delete from ${table} where (select count(*) from lease) > 0 and "id" = any(array(`,
    `  select "id" from ${table} where ${column} ${pass.comparison} ? order by ${column} limit ? for update skip locked`,
    ')) returning 1)',
    'select (select granted from lock) as locked, (select count(*) from lease) > 0 as granted, (select count(*) from deleted)::int as deleted',
  ].join('\n');
}

/** Ends this replica's lease on the job, so that another may sweep at once (parameters: job, holder). */
export const RELEASE_LEASE_SQL = 'delete from scheduler_leases where job = ? and holder = ?';

/**
 * A replica's id in `scheduler_leases`: one per ORM (one connection pool, as one process has), so
 * a run that could not let go of its lease (the database went away) is followed by the next run of
 * the same replica without waiting for it to expire.
 */
const replicaIds = new WeakMap<object, string>();
function replicaId(orm: Orm): string {
  let id = replicaIds.get(orm);
  if (!id) replicaIds.set(orm, (id = randomUUID()));
  return id;
}

/**
 * How long a batch's lease lasts: the rest the batch will be followed by, plus a margin, so the
 * lease outlives the rest and lapses soon after a replica that stopped mid-run (10 s at least).
 */
function leaseMs(previousBatchMs: number, options: SweepOptions): number {
  const percent = options.dutyCyclePercent ?? 100;
  const rest = percent >= 100 ? 0 : (previousBatchMs * (100 - percent)) / percent;
  return Math.ceil(Math.max(10_000, 4 * (previousBatchMs + rest)));
}

/** How often, and after how long a pause, a lease holder tries again when another replica's statement holds the advisory lock. */
const LOCKED_OUT_RETRIES = 20;
const LOCKED_OUT_PAUSE_MS = 25;

async function pause(ms: number, options: SweepOptions): Promise<boolean> {
  try {
    await sleep(ms, undefined, { signal: options.signal });
    return true;
  } catch {
    return false;
  }
}

/**
 * The rest after a batch that took `batchMs`, as the duty cycle asks; false when the signal ended
 * it (shutdown does not wait for a rest to finish).
 */
async function rest(batchMs: number, options: SweepOptions): Promise<boolean> {
  const percent = options.dutyCyclePercent ?? 100;
  if (percent >= 100) return true;
  try {
    await sleep((batchMs * (100 - percent)) / percent, undefined, { signal: options.signal });
    return true;
  } catch {
    return false; // only the signal rejects the sleep
  }
}

/**
 * Runs one sweep: for each pass, batches of at most `batchSize` rows, each batch a transaction
 * that first takes the job's transaction-scoped advisory lock and the job's lease, so only one
 * replica sweeps a job at a time, through its rests as well (a replica that does not get both ends
 * its run). Cutoffs are fixed when the run starts. Throws SweepFailedError when a statement fails;
 * batches committed before it stay committed, the failing one rolls back. The lease is let go when
 * the run ends (a failure to do so only leaves it to expire).
 */
export async function sweep(job: SweepJob, options: SweepOptions): Promise<SweepResult> {
  const startedAt = new Date(options.clock.now());
  const em = options.orm.em.fork();
  const holder = replicaId(options.orm);
  let rowsDeleted = 0;
  let batches = 0;
  let lastBatchMs = 0;
  try {
    for (const pass of job.passes) {
      const sql = batchDeleteSql(pass);
      const cutoff = pass.cutoff(startedAt);
      for (;;) {
        if (options.signal?.aborted) return { stop: 'interrupted', rowsDeleted, batches };
        if (options.clock.now() - startedAt.getTime() >= options.maxDurationMs) return { stop: 'time_limit', rowsDeleted, batches };
        const batchStarted = performance.now();
        let batch: { locked: boolean; granted: boolean; deleted: number } | undefined;
        for (let attempt = 1; ; attempt++) {
          batch = (await executeBound(em, sql, [
            ADVISORY_LOCK_NAMESPACE,
            job.lockKey,
            job.name,
            holder,
            leaseMs(lastBatchMs, options),
            cutoff,
            options.batchSize,
          ], 'get')) as typeof batch;
          // The lease holder found the advisory lock taken: another replica's statement is looking
          // at the lease (and will find it taken). That takes a moment; try again rather than end.
          if (batch?.locked || batches === 0 || attempt >= LOCKED_OUT_RETRIES) break;
          if (!(await pause(LOCKED_OUT_PAUSE_MS, options))) return { stop: 'interrupted', rowsDeleted, batches };
        }
        if (!batch?.granted) return { stop: 'skipped_lock', rowsDeleted, batches };
        lastBatchMs = performance.now() - batchStarted;
        const deleted = Number(batch.deleted);
        rowsDeleted += deleted;
        batches += 1;
        if (deleted < options.batchSize) break;
        if (!(await rest(lastBatchMs, options))) return { stop: 'interrupted', rowsDeleted, batches };
      }
    }
    return { stop: 'completed', rowsDeleted, batches };
  } catch (error) {
    throw new SweepFailedError({ rowsDeleted, batches }, error);
  } finally {
    if (batches > 0) await executeBound(em, RELEASE_LEASE_SQL, [job.name, holder], 'run').catch(() => undefined);
  }
}
