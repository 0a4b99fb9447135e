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
