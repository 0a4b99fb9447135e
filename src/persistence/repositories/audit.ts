import type { EntityManager } from '@mikro-orm/postgresql';
import { WRITE_DEADLINE } from '../call-scope.js';
import { BEFORE_DEADLINE, raw, run } from './sql.js';

/** Names of audit events, as stored in `audit_events.event_type`. */
export type AuditEventType =
  | 'user.registered'
  | 'login.succeeded'
  /**
   * Rate-limited (issue 18): written for the first failed password check of an account in a
   * LOGIN_LOCKOUT_WINDOW (details.reason INVALID_CREDENTIALS), and for each ACCOUNT_DISABLED or
   * changed-during-login refusal; later failures of the window are only counted.
   */
  | 'login.failed'
  /** Repeated failures locked the account; details.lockedUntil, details.lockCount. */
  | 'account.locked'
  /** UnlockUser lifted the account's lock and forgot its failures. */
  | 'account.unlocked'
  | 'session.logged_out'
  /** A session revoked through SessionService, a password change or reset, or a disabled user; details.reason says which. */
  | 'session.revoked'
  /** A login pushed the user over MAX_SESSIONS_PER_USER and this session was the least recently used. */
  | 'session.evicted'
  /** A rotated-out refresh token was presented; details.generationsBehind, details.revoked. */
  | 'refresh_token.reused'
  | 'password.changed'
  | 'password.change_failed'
  | 'password.reset_requested'
  | 'password.reset'
  | 'email.verification_requested'
  | 'email.verified'
  | 'user.disabled'
  | 'user.enabled'
  | 'user.roles_changed';

export interface AuditEntry {
  readonly type: AuditEventType;
  readonly occurredAt: Date;
  readonly userId?: string | null;
  readonly sessionId?: string | null;
  readonly ipAddress?: string;
  readonly userAgent?: string;
  /** Never a password or a token. */
  readonly details?: Record<string, unknown>;
}

/** Column list and values of one audit row, for statements that insert it alongside other work. */
export function auditValues(entry: AuditEntry): unknown[] {
  return [
    entry.occurredAt,
    entry.type,
    entry.userId ?? null,
    entry.sessionId ?? null,
    entry.ipAddress || null,
    entry.userAgent || null,
    JSON.stringify(entry.details ?? {}),
  ];
}

export const AUDIT_COLUMNS = 'occurred_at, event_type, user_id, session_id, ip_address, user_agent, details';
/** `audit_events (<columns>)`, for composed statements (see `sql`). */
export const AUDIT = raw(`audit_events (${AUDIT_COLUMNS})`);

export const AUDIT_PLACEHOLDERS = '?, ?, ?::uuid, ?::uuid, ?, ?, ?::jsonb';

export const auditEvents = {
  async insert(em: EntityManager, entry: AuditEntry): Promise<void> {
    await run(em, `insert into audit_events (${AUDIT_COLUMNS}) values (${AUDIT_PLACEHOLDERS}) returning ${BEFORE_DEADLINE}`, [...auditValues(entry), WRITE_DEADLINE]);
  },
};
