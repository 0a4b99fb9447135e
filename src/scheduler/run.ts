import type { Logger } from '../observability/logger.js';
import type { SweepMetrics } from './metrics.js';
import { sweep, SweepFailedError, type SweepJob, type SweepOptions, type SweepStop } from './sweep.js';

export type SweepOutcome = SweepStop | 'failed';

/** What one run did; the same fields as its log line. */
export interface SweepReport {
  readonly job: string;
  readonly outcome: SweepOutcome;
  readonly rowsDeleted: number;
  readonly batches: number;
  readonly durationMs: number;
  readonly skippedForLock: boolean;
  readonly stoppedAtTimeLimit: boolean;
  /** The failure, when `outcome` is `failed`. */
  readonly error?: Error;
}

export interface RunSweepDeps extends SweepOptions {
  readonly logger: Logger;
  readonly metrics?: SweepMetrics;
}

/**
 * Runs a sweep once and reports it: one JSON log line and the metrics. Never throws: a failing
 * run (database gone, a statement error) is logged with its error and counted, and the next
 * scheduled run starts afresh. The scheduler and `latchkey sweep` both run sweeps through here.
 */
export async function runSweep(job: SweepJob, deps: RunSweepDeps): Promise<SweepReport> {
  // Duration is an observation, measured on the monotonic clock; `clock` drives behaviour (cutoffs, time limit).
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  let outcome: Pick<SweepReport, 'outcome' | 'rowsDeleted' | 'batches' | 'error'>;
  try {
    const result = await sweep(job, deps);
    outcome = { outcome: result.stop, rowsDeleted: result.rowsDeleted, batches: result.batches };
  } catch (error) {
    const progress = error instanceof SweepFailedError ? error.progress : { rowsDeleted: 0, batches: 0 };
    const cause = error instanceof SweepFailedError ? error.cause : error;
    outcome = { ...progress, outcome: 'failed', error: cause instanceof Error ? cause : new Error(String(cause)) };
  }
  const report: SweepReport = {
    job: job.name,
    ...outcome,
    durationMs: elapsed(),
    skippedForLock: outcome.outcome === 'skipped_lock',
    stoppedAtTimeLimit: outcome.outcome === 'time_limit',
  };

  const { error, ...fields } = report;
  if (error) {
    deps.logger.error({ ...fields, err: error }, 'sweep run failed');
  } else if (report.skippedForLock && report.rowsDeleted === 0) {
    // The normal case with several replicas: one sweeps, the others say so quietly.
    deps.logger.debug(fields, 'sweep run skipped: another replica holds the lock');
  } else {
    deps.logger.info(fields, 'sweep run finished');
  }
  deps.metrics?.runFinished(job.name, report.outcome, report.rowsDeleted, report.durationMs / 1000, new Date(deps.clock.now()));
  return report;
}
