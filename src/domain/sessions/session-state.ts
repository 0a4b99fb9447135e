/** A session's lifecycle state, named as latchkey.session.v1.SessionState without the prefix. */
export const SESSION_STATES = ['ACTIVE', 'REVOKED', 'EXPIRED'] as const;
export type SessionStatus = (typeof SESSION_STATES)[number];

/** The ListSessions filters: UNSPECIFIED lists active sessions, like ACTIVE. */
export const SESSION_STATE_FILTERS = ['UNSPECIFIED', ...SESSION_STATES] as const;
export type SessionStateFilter = (typeof SESSION_STATE_FILTERS)[number];

/**
 * A session's state at `now`. Revocation wins over expiry: a session revoked before it expired
 * stays REVOKED, so its revocation reason is never lost.
 */
export function sessionStatusAt(
  session: { readonly revokedAt: Date | null; readonly idleExpiresAt: Date; readonly absoluteExpiresAt: Date },
  now: Date,
): SessionStatus {
  if (session.revokedAt !== null) return 'REVOKED';
  if (session.idleExpiresAt <= now || session.absoluteExpiresAt <= now) return 'EXPIRED';
  return 'ACTIVE';
}
