import { defineEntity, p, type InferEntity } from '@mikro-orm/core';

/**
 * Recent failed password checks of one account (registered or not), for the per-account lockout.
 * `id` is HMAC-SHA256 (hex) of the normalised email under a server key: the table never holds an
 * email, and an unknown email is tracked exactly like a registered one. Written only by the
 * atomic failure statement (repositories/throttles.ts); swept once `expiresAt` has passed.
 */
export const LoginThrottleSchema = defineEntity({
  name: 'LoginThrottle',
  tableName: 'login_throttles',
  indexes: [{ name: 'login_throttles_expires_at_idx', properties: ['expiresAt'] }],
  properties: {
    id: p.string().length(64).primary(),
    /** Failures counted in the current window (reset to 0 when they lock the account). */
    failures: p.integer(),
    windowStartedAt: p.datetime(),
    /** When the current (or last) lock was set. */
    lockedAt: p.datetime().nullable(),
    lockedUntil: p.datetime().nullable(),
    /** Locks so far: the next lasts LOGIN_LOCKOUT_DURATION × 2^lockCount, at most LOGIN_LOCKOUT_MAX_DURATION. */
    lockCount: p.integer(),
    /** After this the row means nothing any more (window and lock over, repeat count forgotten): swept. */
    expiresAt: p.datetime(),
  },
});

export type LoginThrottle = InferEntity<typeof LoginThrottleSchema>;
