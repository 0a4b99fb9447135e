import type { SweepJob } from '../sweep.js';

/** Deletes password-reset and email-verification tokens that were used or have expired: neither can be redeemed again. */
export function sweepOneTimeTokens(): SweepJob {
  return {
    name: 'sweep-one-time-tokens',
    lockKey: 2,
    passes: [
      { name: 'expired', table: 'one_time_tokens', column: 'expires_at', comparison: '<=', cutoff: (now) => now },
      // `used_at <= now` rather than `is not null`, so the pass walks the used_at index in order.
      { name: 'used', table: 'one_time_tokens', column: 'used_at', comparison: '<=', cutoff: (now) => now },
    ],
  };
}
