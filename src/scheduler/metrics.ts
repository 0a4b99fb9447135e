import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { SweepOutcome } from './run.js';

/** Prometheus metrics of the sweeps, on the server's registry (or a throwaway one for `latchkey sweep`). */
export interface SweepMetrics {
  runFinished(job: string, outcome: SweepOutcome, rowsDeleted: number, seconds: number, at: Date): void;
  /** A scheduled run did not start because the previous one was still going (croner `protect`). */
  runOverlapped(job: string): void;
}

/**
 * The sweep's name is the `sweep` label: not `job`, which Prometheus sets on every scraped series
 * (the scrape job) and would rename ours to `exported_job`.
 */
export function createSweepMetrics(registry: Registry): SweepMetrics {
  const runs = new Counter({
    name: 'latchkey_sweep_runs_total',
    help: 'Sweep runs by sweep and outcome: completed, time_limit, skipped_lock, interrupted, failed, or skipped_overlap (the previous run was still going).',
    labelNames: ['sweep', 'outcome'] as const,
    registers: [registry],
  });
  const rows = new Counter({
    name: 'latchkey_sweep_rows_deleted_total',
    help: 'Rows deleted by sweeps, by sweep.',
    labelNames: ['sweep'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'latchkey_sweep_duration_seconds',
    help: 'Duration of sweep runs, by sweep (runs skipped for the lock included).',
    labelNames: ['sweep'] as const,
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900],
    registers: [registry],
  });
  const lastSuccess = new Gauge({
    name: 'latchkey_sweep_last_success_timestamp_seconds',
    help: 'When a run of the sweep last ended without an error (Unix time); alert when it falls far behind.',
    labelNames: ['sweep'] as const,
    registers: [registry],
  });
  return {
    runFinished(job, outcome, rowsDeleted, seconds, at) {
      runs.inc({ sweep: job, outcome });
      if (rowsDeleted > 0) rows.inc({ sweep: job }, rowsDeleted);
      duration.observe({ sweep: job }, seconds);
      if (outcome !== 'failed') lastSuccess.set({ sweep: job }, at.getTime() / 1000);
    },
    runOverlapped(job) {
      runs.inc({ sweep: job, outcome: 'skipped_overlap' });
    },
  };
}
