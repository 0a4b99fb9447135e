import type { Config } from '../config/schema.js';
import { systemClock, type Clock } from '../domain/clock.js';
import type { Logger } from '../observability/logger.js';
import type { Orm } from '../persistence/orm.js';
import { sweepJobs } from './jobs/index.js';
import type { SweepMetrics } from './metrics.js';
import { runSweep, type SweepReport } from './run.js';
import { createScheduler, type Scheduler } from './scheduler.js';

export { createSweepMetrics, type SweepMetrics } from './metrics.js';
export type { SweepReport } from './run.js';
export type { Scheduler } from './scheduler.js';

export interface SweepDeps {
  readonly orm: Orm;
  readonly logger: Logger;
  readonly metrics?: SweepMetrics;
  /** The app's clock (default: the system clock). */
  readonly clock?: Clock;
}

/** The in-process scheduler of `serve`: every sweep on its schedule, or nothing when SCHEDULER_ENABLED is false. */
export function createSweepScheduler(config: Config, deps: SweepDeps): Scheduler {
  const jobs = config.SCHEDULER_ENABLED ? sweepJobs(config) : [];
  return createScheduler(
    jobs.map(({ job, schedule }) => ({
      name: job.name,
      schedule,
      run: (signal: AbortSignal) => runSweep(job, sweepOptions(config, deps, signal)),
    })),
    { logger: deps.logger, onOverlap: (job) => deps.metrics?.runOverlapped(job) },
  );
}

/** `latchkey sweep`: every sweep once, one after the other, through the same code path as the scheduler. */
export async function sweepOnce(config: Config, deps: SweepDeps, signal?: AbortSignal): Promise<SweepReport[]> {
  const reports: SweepReport[] = [];
  for (const { job } of sweepJobs(config)) reports.push(await runSweep(job, sweepOptions(config, deps, signal)));
  return reports;
}

function sweepOptions(config: Config, deps: SweepDeps, signal: AbortSignal | undefined) {
  return {
    orm: deps.orm,
    logger: deps.logger,
    metrics: deps.metrics,
    clock: deps.clock ?? systemClock,
    batchSize: config.SWEEP_BATCH_SIZE,
    maxDurationMs: config.SWEEP_MAX_DURATION,
    dutyCyclePercent: config.SWEEP_DUTY_CYCLE,
    signal,
  };
}
