import type { EntityManager } from '@mikro-orm/postgresql';
import type { RevocationReason } from '../../domain/sessions/revocation.js';
import type { OneTimeTokenPurpose } from '../entities/one-time-token.entity.js';
import { WRITE_DEADLINE } from '../call-scope.js';
import { AUDIT } from './audit.js';
import { REVOKED_COUNT, revokeSessionsOf } from './sessions.js';
import { dateOrNull, one, raw, sql, WRITE_GUARD, type Fragment } from './sql.js';
import { toUserRecord, USER_COLUMNS, type UserRecord } from './users.js';

/**
 * The statements of the password and account flows. Each request does its change in one
 * statement: the change, the sessions it revokes and every audit row are CTEs of one statement,
 * so they land together or not at all, without an explicit transaction.
 */

const USER = raw(USER_COLUMNS);

/**
 * The `redeemed` CTE: spends the token if it is of `purpose`, unused, unexpired, and its user still
 * has the address it was issued for (and meets `userCondition`, on `u`). One conditional UPDATE, so
 * of concurrent redemptions exactly one matches. Returns the token's `user_id` and `email`.
 */
function redeem(purpose: OneTimeTokenPurpose, tokenHash: Buffer, now: Date, userCondition: Fragment = raw('')): Fragment {
  return sql`redeemed as (
       update one_time_tokens t set used_at = ${now}
         from users u
        where t.token_hash = ${tokenHash} and t.purpose = ${purpose} and t.used_at is null and t.expires_at > ${now}
          and u.id = t.user_id and u.email = t.email${userCondition}
       returning t.user_id, t.email, ${WRITE_GUARD}
     )`;
}


/** A user has at most one unused token per purpose: a newer token takes over the older one's row. */
const REPLACE_UNUSED_TOKEN = raw(`on conflict (user_id, purpose) where used_at is null
  do update set id = excluded.id, token_hash = excluded.token_hash, email = excluded.email,
                created_at = excluded.created_at, expires_at = excluded.expires_at`);

export interface NewToken {
  readonly id: string;
  readonly hash: Buffer;
  readonly now: Date;
  readonly expiresAt: Date;
}

/** A stored one-time token with its user's standing, to explain why it cannot be redeemed. */
export interface OneTimeTokenState {
  readonly userId: string;
  /** The address the token was issued for (null for tokens from before it was recorded). */
  readonly email: string | null;
  readonly usedAt: Date | null;
  readonly expiresAt: Date;
  readonly userEmail: string;
  readonly userDisabledAt: Date | null;
}

type RawUserWithCount = Parameters<typeof toUserRecord>[0] & { revoked: number };

export const accounts = {
  /**
   * Stores a password-reset token for the enabled user with this email, replacing any unused one,
   * and audits the request whatever its outcome (unknown email, disabled account, issued). False
   * when nothing was stored.
   */
  async issuePasswordReset(em: EntityManager, email: string, token: NewToken, details: Record<string, unknown>): Promise<boolean> {
    const row = await one<{ issued: boolean }>(
      em,
      sql`with target as (
         select id, email, disabled_at from users where email = ${email}
       ), issued as (
         insert into one_time_tokens (id, user_id, purpose, token_hash, email, created_at, expires_at)
         select ${token.id}, id, 'password_reset', ${token.hash}, email, ${token.now}, ${token.expiresAt} from target where disabled_at is null
         ${REPLACE_UNUSED_TOKEN}
         returning user_id, ${WRITE_GUARD}
       ), audited as (
         insert into ${AUDIT}
         select ${token.now}, 'password.reset_requested', (select id from target), null, null, null,
                ${JSON.stringify(details)}::jsonb || jsonb_build_object('outcome',
                  case when exists (select 1 from issued) then 'issued'
                       when exists (select 1 from target) then 'account_disabled'
                       else 'unknown_email' end)
         returning ${WRITE_GUARD}
       )
       select exists (select 1 from issued) as issued`,
    );
    return row?.issued === true;
  },

  /**
   * Stores an email-verification token for the user's current address if the user is enabled and
   * unverified, replacing any unused one, with its audit row. Undefined for an unknown user;
   * otherwise the user's standing and whether a token was stored.
   */
  async issueEmailVerification(
    em: EntityManager,
    userId: string,
    token: NewToken,
    details: Record<string, unknown>,
  ): Promise<{ email: string; verified: boolean; disabled: boolean; issued: boolean } | undefined> {
    return one(
      em,
      sql`with target as (
         select id, email, email_verified_at, disabled_at from users where id = ${userId}
       ), issued as (
         insert into one_time_tokens (id, user_id, purpose, token_hash, email, created_at, expires_at)
         select ${token.id}, id, 'email_verification', ${token.hash}, email, ${token.now}, ${token.expiresAt}
           from target where disabled_at is null and email_verified_at is null
         ${REPLACE_UNUSED_TOKEN}
         returning user_id, email, ${WRITE_GUARD}
       ), audited as (
         insert into ${AUDIT}
         select ${token.now}, 'email.verification_requested', user_id, null, null, null,
                ${JSON.stringify(details)}::jsonb || jsonb_build_object('email', email)
           from issued
       )
       select t.email, t.email_verified_at is not null as verified, t.disabled_at is not null as disabled,
              exists (select 1 from issued) as issued
         from target t`,
    );
  },

  async tokenState(em: EntityManager, hash: Buffer, purpose: OneTimeTokenPurpose): Promise<OneTimeTokenState | undefined> {
    const row = await one<{ user_id: string; email: string | null; used_at: string | null; expires_at: string; user_email: string; disabled_at: string | null }>(
      em,
      sql`select t.user_id, t.email, t.used_at, t.expires_at, u.email as user_email, u.disabled_at
            from one_time_tokens t join users u on u.id = t.user_id
           where t.token_hash = ${hash} and t.purpose = ${purpose}`,
    );
    if (!row) return undefined;
    return {
      userId: row.user_id,
      email: row.email,
      usedAt: dateOrNull(row.used_at),
      expiresAt: new Date(row.expires_at),
      userEmail: row.user_email,
      userDisabledAt: dateOrNull(row.disabled_at),
    };
  },

  /**
   * Redeems a password-reset token and applies it: one conditional UPDATE spends the token (so of
   * two concurrent redemptions exactly one matches), and the same statement sets the password,
   * revokes every active session and writes the audit rows. Undefined when the token was not
   * redeemable (unknown, used, superseded, expired, issued for another address, user disabled).
   */
  async resetPassword(
    em: EntityManager,
    reset: { tokenHash: Buffer; passwordHash: string; now: Date },
  ): Promise<{ userId: string; revokedSessions: number } | undefined> {
    const { now } = reset;
    const row = await one<{ user_id: string; revoked: number }>(
      em,
      sql`with ${redeem('password_reset', reset.tokenHash, now, raw(' and u.disabled_at is null'))}, changed as (
         update users set password_hash = ${reset.passwordHash}, password_changed_at = ${now}, updated_at = ${now}
          where id = (select user_id from redeemed)
         returning id as user_id, ${WRITE_GUARD}
       ), ${revokeSessionsOf('changed', { now, reason: 'PASSWORD_RESET' })}, audited as (
         insert into ${AUDIT}
         select ${now}, 'password.reset', user_id, null, null, null, jsonb_build_object('revokedSessions', ${REVOKED_COUNT})
           from changed
       )
       select user_id, ${REVOKED_COUNT} as revoked from changed`,
    );
    return row ? { userId: row.user_id, revokedSessions: row.revoked } : undefined;
  },

  /**
   * Redeems an email-verification token and marks the address verified, in one statement with its
   * audit row. Undefined when the token was not redeemable (unknown, used, superseded, expired, or
   * issued for an address the user no longer has).
   */
  async verifyEmail(em: EntityManager, verification: { tokenHash: Buffer; now: Date }): Promise<{ userId: string; email: string } | undefined> {
    const { now } = verification;
    const row = await one<{ id: string; email: string }>(
      em,
      sql`with ${redeem('email_verification', verification.tokenHash, now)}, verified as (
         update users u set email_verified_at = coalesce(u.email_verified_at, ${now})
           from redeemed r
          where u.id = r.user_id and u.email = r.email
         returning u.id, u.email, ${WRITE_GUARD}
       ), audited as (
         insert into ${AUDIT}
         select ${now}, 'email.verified', id, null, null, null, jsonb_build_object('email', email) from verified
       )
       select id, email from verified`,
    );
    return row ? { userId: row.id, email: row.email } : undefined;
  },

  /**
   * Replaces the password only if the stored hash is still the one that was verified (a
   * concurrent change wins), revokes the user's other active sessions when asked, and audits it
   * all in one statement. Undefined when the hash had changed.
   */
  async changePassword(
    em: EntityManager,
    change: { userId: string; sessionId: string; verifiedHash: string; newHash: string; revokeOtherSessions: boolean; now: Date },
  ): Promise<{ revokedSessions: number } | undefined> {
    const { now } = change;
    const row = await one<{ revoked: number }>(
      em,
      sql`with changed as (
         update users set password_hash = ${change.newHash}, password_changed_at = ${now}, updated_at = ${now}
          where id = ${change.userId} and password_hash = ${change.verifiedHash}
         returning id as user_id, ${WRITE_GUARD}
       ), ${revokeSessionsOf('changed', { now, reason: 'PASSWORD_CHANGED', exceptSessionId: change.sessionId, enabled: change.revokeOtherSessions })},
       audited as (
         insert into ${AUDIT}
         select ${now}, 'password.changed', user_id, ${change.sessionId}::uuid, null, null,
                jsonb_build_object('revokeOtherSessions', ${change.revokeOtherSessions}::boolean, 'revokedSessions', ${REVOKED_COUNT})
           from changed
       )
       select ${REVOKED_COUNT} as revoked from changed`,
    );
    return row ? { revokedSessions: row.revoked } : undefined;
  },

  /**
   * Disables an enabled user, revokes every active session and audits it, in one statement. An
   * already disabled user is returned unchanged with nothing revoked. Undefined for an unknown id.
   */
  async disable(
    em: EntityManager,
    userId: string,
    now: Date,
    details: Record<string, unknown>,
  ): Promise<{ user: UserRecord; revokedSessions: number } | undefined> {
    const row = await one<RawUserWithCount>(
      em,
      sql`with target as (
         select ${USER} from users where id = ${userId} for update
       ), disabled as (
         update users set disabled_at = ${now}, updated_at = ${now}
          where id = (select id from target where disabled_at is null) and latchkey_before(${WRITE_DEADLINE})
         returning ${USER}, id as user_id
       ), ${revokeSessionsOf('disabled', { now, reason: 'USER_DISABLED' })}, audited as (
         insert into ${AUDIT}
         select ${now}, 'user.disabled', user_id, null, null, null,
                ${JSON.stringify(details)}::jsonb || jsonb_build_object('revokedSessions', ${REVOKED_COUNT})
           from disabled
       )
       select ${USER}, ${REVOKED_COUNT} as revoked from disabled
       union all
       select ${USER}, 0 from target where not exists (select 1 from disabled)`,
    );
    return row ? { user: toUserRecord(row), revokedSessions: row.revoked } : undefined;
  },

  /**
   * The second statement of a change that ends sessions (DisableUser; ResetPassword; ChangePassword
   * with `revoke_other_sessions`). A login that committed while the change's statement waited for
   * the user's row lock is not in that statement's snapshot, so its session would survive: an
   * active session of a disabled user (alive again after EnableUser), or one signed in with the
   * password just replaced. This idempotent statement, sent after the change committed, revokes
   * them: every active session of a still-disabled user, or every one started by the time of the
   * password change (the racing login read its clock before the change did, a bcrypt compare
   * earlier), except the caller's own.
   */
  async revokeRaced(
    em: EntityManager,
    raced: { userId: string; now: Date; reason: RevocationReason; whileDisabled?: boolean; startedBy?: Date; exceptSessionId?: string },
  ): Promise<number> {
    const { now, reason } = raced;
    const disabled = raced.whileDisabled ? raw(' and disabled_at is not null') : raw('');
    const row = await one<{ revoked: number }>(
      em,
      sql`with target as (
         select id as user_id from users where id = ${raced.userId}${disabled}
       ), ${revokeSessionsOf('target', { now, reason, createdBy: raced.startedBy, exceptSessionId: raced.exceptSessionId })}
       select ${REVOKED_COUNT} as revoked`,
    );
    return row?.revoked ?? 0;
  },

  /** Enables a disabled user (its revoked sessions stay revoked) with its audit row; an enabled user is returned unchanged. */
  async enable(em: EntityManager, userId: string, now: Date, details: Record<string, unknown>): Promise<UserRecord | undefined> {
    const row = await one<Parameters<typeof toUserRecord>[0]>(
      em,
      sql`with target as (
         select ${USER} from users where id = ${userId} for update
       ), enabled as (
         update users set disabled_at = null, updated_at = ${now}
          where id = (select id from target where disabled_at is not null) and latchkey_before(${WRITE_DEADLINE})
         returning ${USER}
       ), audited as (
         insert into ${AUDIT} select ${now}, 'user.enabled', id, null, null, null, ${JSON.stringify(details)}::jsonb from enabled
       )
       select ${USER} from enabled
       union all
       select ${USER} from target where not exists (select 1 from enabled)`,
    );
    return row ? toUserRecord(row) : undefined;
  },

  /**
   * Replaces the user's roles (given sorted and without duplicates) and audits the old and new
   * set; the same set changes nothing. Undefined for an unknown id.
   */
  async setRoles(
    em: EntityManager,
    userId: string,
    roles: readonly string[],
    now: Date,
    details: Record<string, unknown>,
  ): Promise<UserRecord | undefined> {
    // A JSON text, not an array: MikroORM expands array parameters into lists of binds.
    const wanted = sql`array(select jsonb_array_elements_text(${JSON.stringify(roles)}::jsonb))`;
    const row = await one<Parameters<typeof toUserRecord>[0]>(
      em,
      sql`with target as (
         select ${USER} from users where id = ${userId} for update
       ), changed as (
         update users set roles = ${wanted}, updated_at = ${now}
          where id = (select id from target) and roles is distinct from ${wanted} and latchkey_before(${WRITE_DEADLINE})
         returning ${USER}
       ), audited as (
         insert into ${AUDIT}
         select ${now}, 'user.roles_changed', id, null, null, null,
                ${JSON.stringify(details)}::jsonb
                  || jsonb_build_object('previousRoles', to_jsonb((select roles from target)), 'roles', to_jsonb(roles))
           from changed
       )
       select ${USER} from changed
       union all
       select ${USER} from target where not exists (select 1 from changed)`,
    );
    return row ? toUserRecord(row) : undefined;
  },
};
