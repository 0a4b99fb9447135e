import { Cron } from 'croner';
import type { Logger } from '../observability/logger.js';

/** A job the scheduler runs on a cron schedule. `run` must not throw (see runSweep); if it does, the error is logged. */
export interface ScheduledJob {
  readonly name: string;
  readonly schedule: string;
  run(signal: AbortSignal): Promise<unknown>;
}

export interface Scheduler {
  /** The jobs it schedules (none when the scheduler is disabled). */
  readonly jobs: readonly string[];
  start(): void;
  /**
   * No run starts after this is called, runs in flight are told to stop after their current
   * batch, and the promise resolves once they have: only then may the database close.
   */
  stop(): Promise<void>;
}

/**
 * croner wiring: one Cron per job with `protect: true`, so a run still going when the next one
 * is due makes that next one skip (logged and reported through `onOverlap`) instead of stacking up.
 */
export function createScheduler(
  jobs: readonly ScheduledJob[],
  deps: { logger: Logger; onOverlap?: (job: string) => void },
): Scheduler {
  const shutdown = new AbortController();
  const inFlight = new Set<Promise<void>>();
  const crons: Cron[] = [];

  const launch = (job: ScheduledJob): Promise<void> => {
    if (shutdown.signal.aborted) return Promise.resolve();
    const running = job.run(shutdown.signal).then(
      () => undefined,
      (error: unknown) => deps.logger.error({ job: job.name, err: error }, 'scheduled job failed'),
    );
    inFlight.add(running);
    return running.finally(() => inFlight.delete(running));
  };

  return {
    jobs: jobs.map((job) => job.name),
    start() {
      if (crons.length > 0 || shutdown.signal.aborted) return;
      if (jobs.length === 0) {
        deps.logger.info('scheduler disabled: no jobs scheduled (SCHEDULER_ENABLED=false)');
        return;
      }
      for (const job of jobs) {
        const cron = new Cron(
          job.schedule,
          {
            protect: () => {
              deps.logger.warn({ job: job.name }, 'scheduled run skipped: the previous run is still going');
              deps.onOverlap?.(job.name);
            },
            // The timers must not keep a process alive that is otherwise done.
            unref: true,
          },
          () => launch(job),
        );
        crons.push(cron);
      }
      deps.logger.info(
        { jobs: jobs.map((job, i) => ({ job: job.name, schedule: job.schedule, nextRunAt: crons[i]?.nextRun()?.toISOString() })) },
        'scheduler started',
      );
    },
    async stop() {
      for (const cron of crons) cron.stop();
      shutdown.abort();
      await Promise.all([...inFlight]);
    },
  };
}
