import type { SweepJob } from '../sweep.js';

/**
 * Deletes per-account throttle rows (registered and unknown emails alike) whose window, lock and
 * repeat memory are all over: `expires_at` is the later of the window's and the lock's end plus
 * LOGIN_LOCKOUT_MAX_DURATION. A row past it already counts as new to the failure statement, so
 * the sweep only frees space; it never changes an answer.
 */
export function sweepLoginThrottles(): SweepJob {
  return {
    name: 'sweep-login-throttles',
    lockKey: 5,
    passes: [{ name: 'expired', table: 'login_throttles', column: 'expires_at', comparison: '<=', cutoff: (now) => now }],
  };
}
