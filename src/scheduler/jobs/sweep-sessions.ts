import type { SweepJob } from '../sweep.js';

/**
 * Deletes sessions past their absolute or idle expiry (their refresh tokens can never work
 * again), and revoked sessions once `revokedRetentionMs` has passed since the revocation: until
 * then a replayed refresh token of a revoked session is still recognised as reuse.
 */
export function sweepSessions(options: { revokedRetentionMs: number }): SweepJob {
  return {
    name: 'sweep-sessions',
    lockKey: 1,
    passes: [
      { name: 'absolute-expired', table: 'sessions', column: 'absolute_expires_at', comparison: '<=', cutoff: (now) => now },
      { name: 'idle-expired', table: 'sessions', column: 'idle_expires_at', comparison: '<=', cutoff: (now) => now },
      {
        name: 'revoked-past-retention',
        table: 'sessions',
        column: 'revoked_at',
        comparison: '<',
        cutoff: (now) => new Date(now.getTime() - options.revokedRetentionMs),
      },
    ],
  };
}
