import type { Config } from '../config/schema.js';
import { systemClock, type Clock } from '../domain/clock.js';
import type { Logger } from '../observability/logger.js';
import type { Orm } from '../persistence/orm.js';
import { sweepJobs } from './jobs/index.js';
import type { SweepMetrics } from './metrics.js';
import { runSweep, type SweepReport } from './run.js';
import { createScheduler, type Scheduler } from './scheduler.js';
import type { KeyEncryptionKeys } from '../domain/keys/key-encryption.js';
import { ROTATE_SIGNING_KEYS_JOB, runKeyRotation } from './rotate-signing-keys.js';

export { createSweepMetrics, type SweepMetrics } from './metrics.js';
export type { SweepReport } from './run.js';
export { ROTATE_SIGNING_KEYS_JOB, runKeyRotation, type KeyRotationReport } from './rotate-signing-keys.js';
export type { Scheduler } from './scheduler.js';

export interface SweepDeps {
  readonly orm: Orm;
  readonly logger: Logger;
  readonly metrics?: SweepMetrics;
  /** The app's clock (default: the system clock). */
  readonly clock?: Clock;
  /** With them, the `rotate-signing-keys` job runs too (it seals the keys it stages). */
  readonly keyEncryptionKeys?: KeyEncryptionKeys;
}

/** The in-process scheduler of `serve`: every sweep on its schedule, or nothing when SCHEDULER_ENABLED is false. */
export function createSweepScheduler(config: Config, deps: SweepDeps): Scheduler {
  const jobs = config.SCHEDULER_ENABLED ? sweepJobs(config) : [];
  const keks = deps.keyEncryptionKeys;
  const rotation = config.SCHEDULER_ENABLED && keks
    ? [{ name: ROTATE_SIGNING_KEYS_JOB, schedule: config.SIGNING_KEY_ROTATION_CRON, run: () => runKeyRotation(config, { ...deps, clock: deps.clock ?? systemClock, keyEncryptionKeys: keks }) }]
    : [];
  return createScheduler(
    [
      ...jobs.map(({ job, schedule }) => ({
        name: job.name,
        schedule,
        run: (signal: AbortSignal) => runSweep(job, sweepOptions(config, deps, signal)),
      })),
      ...rotation,
    ],
    { logger: deps.logger, onOverlap: (job) => deps.metrics?.runOverlapped(job) },
  );
}

/** `latchkey sweep`: every sweep once, one after the other, through the same code path as the scheduler. */
export async function sweepOnce(config: Config, deps: SweepDeps, signal?: AbortSignal): Promise<SweepReport[]> {
  const reports: SweepReport[] = [];
  for (const { job } of sweepJobs(config)) reports.push(await runSweep(job, sweepOptions(config, deps, signal)));
  if (deps.keyEncryptionKeys && !signal?.aborted) {
    reports.push(await runKeyRotation(config, { ...deps, clock: deps.clock ?? systemClock, keyEncryptionKeys: deps.keyEncryptionKeys }));
  }
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
