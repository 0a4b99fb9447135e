/**
 * Why a session was revoked, as stored in `sessions.revoked_reason` and reported as
 * latchkey.session.v1.RevocationReason (same names without the prefix).
 */
export const REVOCATION_REASONS = [
  'LOGOUT',
  'REVOKED_BY_USER',
  'REVOKED_BY_SERVICE',
  'REFRESH_TOKEN_REUSED',
  'PASSWORD_CHANGED',
  'PASSWORD_RESET',
  'USER_DISABLED',
  'SESSION_LIMIT',
] as const;

export type RevocationReason = (typeof REVOCATION_REASONS)[number];

/**
 * What the session lifecycle reports as it happens, for metrics and alerting. Implemented by the
 * observability layer; the domain only calls it.
 */
export interface SessionEvents {
  /** `count` sessions were ended by this call, for `reason` (sessions already ended are not counted). */
  revoked(reason: RevocationReason, count: number): void;
  /** A rotated-out refresh token was presented: every detection, even for a session already ended. */
  reuseDetected(): void;
  /** A user's roles were replaced (a removal makes the user's older tokens stale). */
  rolesChanged?(): void;
}
