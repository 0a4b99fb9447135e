import type { EntityManager } from '@mikro-orm/postgresql';
import type { RevocationReason } from '../../domain/sessions/revocation.js';
import { SENT_AT, WRITE_DEADLINE } from '../call-scope.js';
import { BEFORE_DEADLINE, dateOrNull, Fragment, queryOne, raw, sql, WRITE_GUARD } from './sql.js';
import { AUDIT, AUDIT_COLUMNS, AUDIT_PLACEHOLDERS, auditValues, type AuditEntry, type AuditEventType } from './audit.js';

export interface NewSession {
  readonly id: string;
  readonly userId: string;
  readonly refreshSecretHash: Buffer;
  readonly ipAddress: string;
  readonly userAgent: string;
  readonly deviceName: string;
  readonly now: Date;
  readonly idleExpiresAt: Date;
  readonly absoluteExpiresAt: Date;
}

export interface RotatedSession {
  readonly userId: string;
  readonly email: string;
  readonly roles: readonly string[];
  readonly idleExpiresAt: Date;
  readonly absoluteExpiresAt: Date;
}

/**
 * One session with what a refused rotation, a logout, `check_revocation` and a bearer credential
 * need: its secrets and rotation, its revocation and expiry, and its user's current standing.
 */
export interface SessionState {
  readonly userId: string;
  readonly generation: number;
  readonly refreshSecretHash: Buffer;
  readonly previousSecretHash: Buffer | null;
  readonly rotatedAt: Date | null;
  readonly revokedAt: Date | null;
  readonly idleExpiresAt: Date;
  readonly absoluteExpiresAt: Date;
  readonly user: { readonly email: string; readonly roles: readonly string[]; readonly disabledAt: Date | null };
}

interface RawSessionState {
  user_id: string;
  generation: number;
  refresh_secret_hash: Buffer;
  previous_secret_hash: Buffer | null;
  rotated_at: string | null;
  revoked_at: string | null;
  idle_expires_at: string;
  absolute_expires_at: string;
  email: string;
  roles: string[];
  disabled_at: string | null;
}

/**
 * The refresh fast path's single statement (exported so that the benchmark can run the very same
 * statement bare, as the limit a refresh is measured against). Parameters: next hash, now, now,
 * sent at, idle expiry, ip, user agent, device name, session id, presented hash, now, now, write
 * deadline. `rotated_at` is the call's time plus however long the statement took to be applied
 * after it was sent (database clock): the grace window for the previous token counts from the
 * rotation's commit, not from the call's start, so a rotation held up in the network does not
 * shorten it. (Expressed in the call's clock, so that a test's injected clock stays in charge.)
 */
export const ROTATE_SQL = `update sessions s
          set generation = s.generation + 1,
              previous_secret_hash = s.refresh_secret_hash,
              refresh_secret_hash = ?,
              rotated_at = ?::timestamptz + greatest(clock_timestamp() - ?::timestamptz, interval '0'),
              last_used_at = ?,
              idle_expires_at = least(?::timestamptz, s.absolute_expires_at),
              ip_address = coalesce(?, s.ip_address),
              user_agent = coalesce(?, s.user_agent),
              device_name = coalesce(?, s.device_name)
         from users u
        where s.id = ? and u.id = s.user_id
          and s.refresh_secret_hash = ?
          and s.revoked_at is null and s.idle_expires_at > ? and s.absolute_expires_at > ?
          and u.disabled_at is null
      returning s.user_id, u.email, u.roles, s.idle_expires_at, s.absolute_expires_at, ${BEFORE_DEADLINE}`;

export const sessions = {
  /**
   * The write half of a login, in one statement (one round trip): the user's last sign-in time,
   * the session, the audit event, and, when the user is at `maxSessions`, the revocation of the
   * least recently used active sessions (with an audit event each). The session is only inserted
   * if, once the user row's lock is held, the user is still enabled and the password is still the
   * one that was checked (`passwordChangedAt` as read by the lookup; a re-hash keeps it), so a login
   * that waited behind DisableUser or a password change or reset leaves no session. `maxSessions`
   * 0 means no limit. Two logins of one user at the same moment may both keep their sessions; the
   * next login evicts down to the limit again. A successful login also forgets the account's
   * failed attempts (its `login_throttles` row, `throttleId`).
   */
  async insertForLogin(
    em: EntityManager,
    session: NewSession,
    checked: { passwordChangedAt: Date; maxSessions: number; throttleId: string },
    audit: AuditEntry,
  ): Promise<{ evicted: number } | undefined> {
    const { maxSessions } = checked;
    const row = await queryOne<{ id: string; evicted: number }>(
      em,
      `with signed_in as (
         update users set last_login_at = ?
          where id = ? and disabled_at is null and password_changed_at = ?::timestamptz
         returning id, ${BEFORE_DEADLINE}
       ), created as (
         insert into sessions (id, user_id, generation, refresh_secret_hash, ip_address, user_agent, device_name,
                               created_at, last_used_at, idle_expires_at, absolute_expires_at)
         select ?, id, 0, ?, ?, ?, ?, ?, ?, ?, ? from signed_in
         returning id
       ), evicted as (
         update sessions set revoked_at = ?, revoked_reason = 'SESSION_LIMIT'
          where ?::int > 0 and exists (select 1 from created)
            and id in (select id from sessions
                        where user_id = ? and revoked_at is null and idle_expires_at > ? and absolute_expires_at > ?
                        order by last_used_at desc, created_at desc, id desc
                        offset greatest(?::int - 1, 0))
         returning id, user_id, ${BEFORE_DEADLINE}
       ), audited as (
         insert into audit_events (${AUDIT_COLUMNS}) select ${AUDIT_PLACEHOLDERS} from created
       ), audited_evictions as (
         insert into audit_events (${AUDIT_COLUMNS})
         select ?, 'session.evicted', user_id, id, null, null, '{"reason":"SESSION_LIMIT"}'::jsonb from evicted
       ), throttle_reset as (
         delete from login_throttles where id = ? and exists (select 1 from created)
       )
       select id, (select count(*) from evicted)::int as evicted from created`,
      [
        session.now,
        session.userId,
        checked.passwordChangedAt,
        WRITE_DEADLINE,
        session.id,
        session.refreshSecretHash,
        session.ipAddress,
        session.userAgent,
        session.deviceName,
        session.now,
        session.now,
        session.idleExpiresAt,
        session.absoluteExpiresAt,
        session.now,
        maxSessions,
        session.userId,
        session.now,
        session.now,
        maxSessions,
        WRITE_DEADLINE,
        ...auditValues(audit),
        session.now,
        checked.throttleId,
      ],
    );
    // No row: the user was disabled (or deleted) between the lookup and this statement.
    return row ? { evicted: row.evicted } : undefined;
  },

  /**
   * Rotates the refresh token in one conditional UPDATE: it succeeds only for the current secret
   * of an active session of an enabled user. Concurrent rotations with one secret serialise on the
   * row lock, and every one after the first finds the secret already replaced.
   */
  async rotate(
    em: EntityManager,
    rotation: {
      sessionId: string;
      presentedHash: Buffer;
      nextHash: Buffer;
      now: Date;
      idleExpiresAt: Date;
      client?: { ipAddress: string; userAgent: string; deviceName: string };
    },
  ): Promise<RotatedSession | undefined> {
    const row = await queryOne<{ user_id: string; email: string; roles: string[]; idle_expires_at: string; absolute_expires_at: string }>(
      em,
      ROTATE_SQL,
      [
        rotation.nextHash,
        rotation.now,
        SENT_AT,
        rotation.now,
        rotation.idleExpiresAt,
        rotation.client?.ipAddress ?? null,
        rotation.client?.userAgent ?? null,
        rotation.client?.deviceName ?? null,
        rotation.sessionId,
        rotation.presentedHash,
        rotation.now,
        rotation.now,
        WRITE_DEADLINE,
      ],
    );
    if (!row) return undefined;
    return {
      userId: row.user_id,
      email: row.email,
      roles: row.roles,
      idleExpiresAt: new Date(row.idle_expires_at),
      absoluteExpiresAt: new Date(row.absolute_expires_at),
    };
  },

  /** One session and its user's standing, by id (a primary-key read joined with the user's row). */
  async state(em: EntityManager, sessionId: string): Promise<SessionState | undefined> {
    const row = await queryOne<RawSessionState>(
      em,
      `select s.user_id, s.generation, s.refresh_secret_hash, s.previous_secret_hash, s.rotated_at, s.revoked_at,
              s.idle_expires_at, s.absolute_expires_at, u.email, u.roles, u.disabled_at
         from sessions s join users u on u.id = s.user_id
        where s.id = ?`,
      [sessionId],
    );
    if (!row) return undefined;
    return {
      userId: row.user_id,
      generation: row.generation,
      refreshSecretHash: row.refresh_secret_hash,
      previousSecretHash: row.previous_secret_hash,
      rotatedAt: dateOrNull(row.rotated_at),
      revokedAt: dateOrNull(row.revoked_at),
      idleExpiresAt: new Date(row.idle_expires_at),
      absoluteExpiresAt: new Date(row.absolute_expires_at),
      user: { email: row.email, roles: row.roles, disabledAt: dateOrNull(row.disabled_at) },
    };
  },

  /**
   * Revokes the session if `presentedHash` is its current secret and it is not revoked yet, and
   * records the audit event (the user and session ids come from the revoked row).
   */
  async revokeWithSecret(
    em: EntityManager,
    revocation: { sessionId: string; presentedHash: Buffer; now: Date; reason: RevocationReason },
    audit: { type: AuditEventType; details?: Record<string, unknown> },
  ): Promise<boolean> {
    const row = await queryOne<{ id: string }>(
      em,
      `with revoked as (
         update sessions set revoked_at = ?, revoked_reason = ?
          where id = ? and refresh_secret_hash = ? and revoked_at is null
         returning id, user_id, ${BEFORE_DEADLINE}
       ), audited as (
         insert into audit_events (${AUDIT_COLUMNS}) select ?, ?, user_id, id, null, null, ?::jsonb from revoked
       )
       select id from revoked`,
      [
        revocation.now,
        revocation.reason,
        revocation.sessionId,
        revocation.presentedHash,
        WRITE_DEADLINE,
        revocation.now,
        audit.type,
        JSON.stringify(audit.details ?? {}),
      ],
    );
    return row !== undefined;
  },
  /**
   * Records a replayed, rotated-out refresh token: revokes the session (REFRESH_TOKEN_REUSED) if
   * it is not revoked yet, and writes the audit event either way, in one statement. True when
   * this call revoked it.
   */
  async revokeForReuse(
    em: EntityManager,
    reuse: { sessionId: string; now: Date; ipAddress?: string; userAgent?: string; details: Record<string, unknown> },
  ): Promise<boolean> {
    const row = await queryOne<{ revoked: number }>(
      em,
      `with revoked as (
         update sessions set revoked_at = ?, revoked_reason = 'REFRESH_TOKEN_REUSED'
          where id = ? and revoked_at is null
         returning id, ${BEFORE_DEADLINE}
       ), audited as (
         insert into audit_events (${AUDIT_COLUMNS})
         select ?, 'refresh_token.reused', user_id, id, ?, ?, ?::jsonb || jsonb_build_object('revoked', exists (select 1 from revoked))
           from sessions where id = ?
         returning ${BEFORE_DEADLINE}
       )
       select count(*)::int as revoked from revoked`,
      [
        reuse.now,
        reuse.sessionId,
        WRITE_DEADLINE,
        reuse.now,
        reuse.ipAddress || null,
        reuse.userAgent || null,
        JSON.stringify(reuse.details),
        reuse.sessionId,
        WRITE_DEADLINE,
      ],
    );
    return (row?.revoked ?? 0) > 0;
  },
};

/**
 * Two CTEs, `revoked` and `revocations_audited`, for any change that ends a user's sessions
 * (SessionService, password change and reset, disabling): revoke every active session of the user
 * in the one-row CTE `from` (its `user_id`), except `exceptSessionId`, and write one
 * `session.revoked` audit row per session (details: the reason, plus `details`). With `enabled`
 * false (a boolean value or SQL condition) they revoke nothing.
 */
export function revokeSessionsOf(
  from: string,
  revocation: {
    now: Date;
    reason: RevocationReason;
    exceptSessionId?: string | null;
    enabled?: boolean | Fragment;
    createdBy?: Date;
    details?: Record<string, unknown>;
  },
): Fragment {
  const { now, reason } = revocation;
  const enabled = revocation.enabled instanceof Fragment ? revocation.enabled : sql`${revocation.enabled ?? true}::boolean`;
  const except = revocation.exceptSessionId == null ? raw('') : sql` and id <> ${revocation.exceptSessionId}`;
  const createdBy = revocation.createdBy === undefined ? raw('') : sql` and created_at <= ${revocation.createdBy}`;
  return sql`revoked as (
       update sessions set revoked_at = ${now}, revoked_reason = ${reason}
        where ${enabled} and user_id = (select user_id from ${raw(from)})
          and revoked_at is null and idle_expires_at > ${now} and absolute_expires_at > ${now}${except}${createdBy}
       returning id, user_id, ${WRITE_GUARD}
     ), revocations_audited as (
       insert into ${AUDIT}
       select ${now}, 'session.revoked', user_id, id, null, null, ${JSON.stringify({ reason, ...revocation.details })}::jsonb from revoked
     )`;
}

/** How many sessions the `revoked` CTE of revokeSessionsOf ended. */
export const REVOKED_COUNT = raw('(select count(*)::int from revoked)');
