import type { SweepJob } from '../sweep.js';

/** Deletes audit events older than the retention period. */
export function sweepAuditEvents(options: { retentionMs: number }): SweepJob {
  return {
    name: 'sweep-audit-events',
    lockKey: 3,
    passes: [
      {
        name: 'past-retention',
        table: 'audit_events',
        column: 'occurred_at',
        comparison: '<',
        cutoff: (now) => new Date(now.getTime() - options.retentionMs),
      },
    ],
  };
}
