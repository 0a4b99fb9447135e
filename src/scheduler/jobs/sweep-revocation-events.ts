import type { SweepJob } from '../sweep.js';

/**
 * Deletes revocation-feed events that no longer matter: older than the access-token lifetime plus
 * clock skew, no token issued before them can still be valid. A trigger records the greatest
 * position deleted (`revocation_feed_horizon`), so a WatchRevocations cursor from before it is
 * answered CURSOR_EXPIRED instead of silently missing events.
 */
export function sweepRevocationEvents(options: { relevanceMs: number }): SweepJob {
  return {
    name: 'sweep-revocation-events',
    lockKey: 4,
    passes: [
      {
        name: 'past-relevance',
        table: 'revocation_events',
        column: 'occurred_at',
        comparison: '<',
        cutoff: (now) => new Date(now.getTime() - options.relevanceMs),
      },
    ],
  };
}
