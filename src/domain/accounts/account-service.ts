import { randomUUID } from 'node:crypto';
import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import type { Logger } from '../../observability/logger.js';
import { outsideCall } from '../../persistence/call-scope.js';
import type { OneTimeTokenPurpose } from '../../persistence/entities/one-time-token.entity.js';
import { accounts, type OneTimeTokenState } from '../../persistence/repositories/accounts.js';
import { auditEvents } from '../../persistence/repositories/audit.js';
import { users, type UserRecord } from '../../persistence/repositories/users.js';
import { throttles } from '../../persistence/repositories/throttles.js';
import type { AccountLockout } from '../auth/lockout.js';
import type { Caller, UserCaller } from '../callers.js';
import type { Clock } from '../clock.js';
import { DomainError } from '../errors.js';
import type { PasswordHasher, RequestOrigin } from '../passwords/hasher.js';
import { checkPassword } from '../passwords/policy.js';
import { checkId, isStoredId } from '../sessions/ids.js';
import type { SessionEvents } from '../sessions/revocation.js';
import { normaliseEmail } from '../users/email.js';
import { checkRequiredText, invalid, isUtf8Text, NOT_UTF8, RequestChecks, valid, type Checked } from '../validation.js';
import { linkWithToken, newOneTimeToken, oneTimeTokenHash } from './one-time-tokens.js';

/** Where a one-time token is redeemed and for how long it works. */
export interface OneTimeTokenPolicy {
  /** The page that redeems it; the link is this URL with `?token=<token>` appended. */
  readonly url: string;
  readonly ttlMs: number;
}

export interface AccountServiceDependencies {
  readonly orm: MikroORM;
  readonly hasher: PasswordHasher;
  readonly passwordReset: OneTimeTokenPolicy;
  readonly emailVerification: OneTimeTokenPolicy;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly events: SessionEvents;
  /** Per-account throttling, shared with Login: ChangePassword's check counts against the same lock. */
  readonly lockout: AccountLockout;
}

/** A one-time token for the calling service to deliver. The token is a secret: never log it. */
export interface IssuedOneTimeToken {
  readonly token: string;
  readonly link: string;
  readonly expiresAt: Date;
}

export const MAX_ONE_TIME_TOKEN_LENGTH = 256;
export const MAX_ROLES = 16;
export const MAX_ROLE_LENGTH = 32;
const ROLE = /^[a-z][a-z0-9._:-]*$/;
const ROLE_RULE = `must be 1 to ${MAX_ROLE_LENGTH} characters of a-z, 0-9, '.', '_', ':' or '-', starting with a letter`;

const tokenInvalid = () => new DomainError('TOKEN_INVALID', 'the token is invalid, already used or superseded');
const tokenExpired = () => new DomainError('TOKEN_EXPIRED', 'the token has expired');
const userNotFound = () => new DomainError('USER_NOT_FOUND', 'no user has this id');
const invalidCredentials = () => new DomainError('INVALID_CREDENTIALS', 'the current password is incorrect');


/** Sorted and without duplicates; each role checked, with its index in the request as the field. */
function checkRoles(field: string, roles: readonly string[]): Checked<string[]> {
  const violations = roles.flatMap((role, i) => {
    if (role.length > 0 && role.length <= MAX_ROLE_LENGTH && ROLE.test(role)) return [];
    // Invalid UTF-8 fails the pattern too; it is named as such, as in every other text field.
    return [{ field: `${field}[${i}]`, description: isUtf8Text(role) ? ROLE_RULE : NOT_UTF8 }];
  });
  const unique = [...new Set(roles)].sort();
  if (unique.length > MAX_ROLES) violations.unshift({ field, description: `must hold at most ${MAX_ROLES} distinct roles` });
  return violations.length > 0 ? { violations } : { value: unique };
}

/** Who made an administrative change, for its audit row. */
function actorOf(caller: Caller): Record<string, unknown> {
  return caller.kind === 'service' ? { actor: 'api_key' } : { actor: 'user', actorUserId: caller.userId, actorSessionId: caller.sessionId };
}

/**
 * The password and account flows (ChangePassword, password reset, email verification) and user
 * administration (GetUser, DisableUser, EnableUser, SetUserRoles). Each method takes the
 * authenticated Caller where the RPC needs one, and plain values; the gRPC handlers translate.
 * Every call forks its own EntityManager and does each change in one statement (no explicit
 * transaction).
 */
export class AccountService {
  /** Follow-up statements retried off the call (see afterCommit), finished before the database closes. */
  private readonly background = new Set<Promise<void>>();

  constructor(private readonly deps: AccountServiceDependencies) {}

  /** Waits for background follow-ups; called on shutdown after the last call has completed. */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.background]);
  }

  /**
   * The idempotent second statement of a change that has already committed (the sweep of sessions
   * a racing login left behind). Once the change is in, the call has succeeded: if the follow-up
   * fails (the call's deadline passed, the database went away), answering UNAVAILABLE would tell
   * the caller to retry a change that is already made, and the retry would then be refused
   * (the current password has changed, the token is spent). So it is retried once off the call,
   * unbounded by its deadline, and the call answers with what the first statement revoked.
   */
  private async afterCommit(what: string, followUp: () => Promise<number>): Promise<number> {
    try {
      return await followUp();
    } catch (error) {
      this.deps.logger.warn({ err: { message: (error as Error).message }, followUp: what }, 'follow-up statement failed after the change committed; retrying it in the background');
      const retry = outsideCall(followUp)
        .then(
          (count) => {
            this.deps.logger.info({ followUp: what, revoked: count }, 'follow-up statement retried');
          },
          (again: unknown) => {
            this.deps.logger.error({ err: { message: (again as Error).message }, followUp: what }, 'follow-up statement failed twice; sessions raced with the change may stay active');
          },
        )
        .finally(() => this.background.delete(retry));
      this.background.add(retry);
      return 0;
    }
  }

  protected em(): EntityManager {
    return this.deps.orm.em.fork();
  }

  private now(): Date {
    return new Date(this.deps.clock.now());
  }

  /**
   * Checks the current password, then replaces it; the caller's own session is never revoked.
   * A wrong current password is audited and changes nothing else.
   */
  async changePassword(
    caller: UserCaller,
    input: { currentPassword: string; newPassword: string; revokeOtherSessions: boolean | undefined },
    origin: RequestOrigin,
  ): Promise<{ revokedSessionCount: number }> {
    const checks = new RequestChecks();
    const current = checks.check(checkPassword('current_password', input.currentPassword, false));
    const next = checks.check(checkPassword('new_password', input.newPassword, true));
    checks.throwIfAny();

    // The current-password check counts against Login's lock (issue 18): the same throttle row,
    // read in the lookup after the hashing slot is taken, and a failure recorded before it is freed.
    const throttleId = this.deps.lockout.idOf(caller.email);
    const turn = this.deps.hasher.admit({ source: origin.source, account: caller.userId }, origin.signal);
    const em = this.em();
    let user: UserRecord | undefined;
    let newHash: string;
    try {
      await turn.started();
      const found = await throttles.lookupById(em, caller.userId, throttleId, this.now());
      if (found.lockedUntil) throw DomainError.accountLocked(found.lockedUntil.getTime() - this.deps.clock.now());
      user = found.user;
      const { match } = await turn.verify(current!, user?.passwordHash, throttleId);
      if (!user || !match) {
        await this.deps.lockout.recordFailure(em, throttleId, this.now(), { userId: caller.userId, details: { reason: 'INVALID_CREDENTIALS', rpc: 'ChangePassword' } });
        turn.release();
        await this.auditFailedChange(em, caller, 'INVALID_CREDENTIALS');
        throw invalidCredentials();
      }
      newHash = await turn.hash(next!);
    } finally {
      turn.release();
    }
    const now = this.now();
    const revokeOtherSessions = input.revokeOtherSessions !== false;
    const changed = await accounts.changePassword(em, {
      userId: user.id,
      sessionId: caller.sessionId,
      verifiedHash: user.passwordHash,
      newHash,
      revokeOtherSessions,
      now,
    });
    if (!changed) {
      // The password changed since it was checked: the one given is no longer current.
      await this.auditFailedChange(em, caller, 'CHANGED_CONCURRENTLY');
      throw invalidCredentials();
    }
    const raced = revokeOtherSessions
      ? await this.afterCommit('password change', () =>
          accounts.revokeRaced(this.em(), { userId: user!.id, now, reason: 'PASSWORD_CHANGED', startedBy: now, exceptSessionId: caller.sessionId }),
        )
      : 0;
    const revokedSessionCount = changed.revokedSessions + raced;
    this.deps.events.revoked('PASSWORD_CHANGED', revokedSessionCount);
    return { revokedSessionCount };
  }

  private async auditFailedChange(em: EntityManager, caller: UserCaller, reason: string): Promise<void> {
    const entry = { type: 'password.change_failed', occurredAt: this.now(), userId: caller.userId, sessionId: caller.sessionId, details: { reason } } as const;
    await auditEvents.insert(em, entry);
  }

  /**
   * Issues a reset token for the email's account. An unknown email or a disabled account gets a
   * response of the same shape with a random token that is never stored.
   */
  async requestPasswordReset(caller: Caller, input: { email: string }): Promise<IssuedOneTimeToken> {
    const email = valid(normaliseEmail('email', input.email));
    const issued = this.newToken(this.deps.passwordReset);
    await accounts.issuePasswordReset(this.em(), email, issued.stored, { ...actorOf(caller), email });
    return issued.response;
  }

  /** Redeems a reset token: sets the password and revokes every session of the user. */
  async resetPassword(input: { token: string; newPassword: string }, origin: RequestOrigin): Promise<void> {
    const checks = new RequestChecks();
    const token = checks.check(checkRequiredText('token', input.token, MAX_ONE_TIME_TOKEN_LENGTH));
    const password = checks.check(checkPassword('new_password', input.newPassword, true));
    checks.throwIfAny();
    const tokenHash = oneTimeTokenHash(token!);
    if (!tokenHash) throw tokenInvalid();

    const turn = this.deps.hasher.admit({ source: origin.source, account: tokenHash.toString('base64url') }, origin.signal);
    const em = this.em();
    let passwordHash: string;
    try {
      // Check the token before spending a hash on the password; the redemption below re-checks it.
      const problem = this.whyNotRedeemable(await accounts.tokenState(em, tokenHash, 'password_reset'), 'password_reset');
      if (problem) throw problem;
      passwordHash = await turn.hash(password!);
    } finally {
      turn.release();
    }
    const now = this.now();
    const reset = await accounts.resetPassword(em, { tokenHash, passwordHash, now });
    if (!reset) throw this.whyNotRedeemable(await accounts.tokenState(em, tokenHash, 'password_reset'), 'password_reset') ?? tokenInvalid();
    // A second, idempotent statement for a login with the old password that raced the reset.
    const raced = await this.afterCommit('password reset', () =>
      accounts.revokeRaced(this.em(), { userId: reset.userId, now, reason: 'PASSWORD_RESET', startedBy: now }),
    );
    this.deps.events.revoked('PASSWORD_RESET', reset.revokedSessions + raced);
  }

  /** Issues a verification token for the user's current address. */
  async requestEmailVerification(caller: Caller, input: { userId: string }): Promise<IssuedOneTimeToken & { email: string }> {
    const userId = this.checkUserId(input.userId);
    const issued = this.newToken(this.deps.emailVerification);
    const outcome = await accounts.issueEmailVerification(this.em(), userId, issued.stored, actorOf(caller));
    if (!outcome) throw userNotFound();
    if (outcome.disabled) throw new DomainError('ACCOUNT_DISABLED', 'this account is disabled');
    if (outcome.verified) throw new DomainError('EMAIL_ALREADY_VERIFIED', "the user's email is already verified");
    return { ...issued.response, email: outcome.email };
  }

  /** Redeems a verification token and marks the address it was issued for as verified. */
  async verifyEmail(input: { token: string }): Promise<{ userId: string; email: string }> {
    const token = valid(checkRequiredText('token', input.token, MAX_ONE_TIME_TOKEN_LENGTH));
    const tokenHash = oneTimeTokenHash(token);
    if (!tokenHash) throw tokenInvalid();
    const em = this.em();
    const verified = await accounts.verifyEmail(em, { tokenHash, now: this.now() });
    if (verified) return verified;
    throw this.whyNotRedeemable(await accounts.tokenState(em, tokenHash, 'email_verification'), 'email_verification') ?? tokenInvalid();
  }

  async getUser(input: { userId: string }): Promise<UserRecord> {
    const user = await users.findById(this.em(), this.checkUserId(input.userId));
    if (!user) throw userNotFound();
    return user;
  }

  /** Disables the user and revokes every active session; an already disabled user is left as it is. */
  async disableUser(caller: Caller, input: { userId: string }): Promise<{ user: UserRecord; revokedSessionCount: number }> {
    const userId = this.checkUserId(input.userId);
    const em = this.em();
    const now = this.now();
    const result = await accounts.disable(em, userId, now, actorOf(caller));
    if (!result) throw userNotFound();
    // A second, idempotent statement for a login that raced with the first (see the repository).
    // A retry after a failure here finds the user disabled and finishes the job.
    const stragglers = await accounts.revokeRaced(em, { userId, now, reason: 'USER_DISABLED', whileDisabled: true });
    this.deps.events.revoked('USER_DISABLED', result.revokedSessions + stragglers);
    return { user: result.user, revokedSessionCount: result.revokedSessions + stragglers };
  }

  /** Lets a disabled user sign in again; revoked sessions stay revoked. */
  async enableUser(caller: Caller, input: { userId: string }): Promise<UserRecord> {
    const userId = this.checkUserId(input.userId);
    const user = await accounts.enable(this.em(), userId, this.now(), actorOf(caller));
    if (!user) throw userNotFound();
    return user;
  }

  /**
   * Lifts the user's sign-in lock and forgets its failed attempts (issue 18), with an
   * `account.unlocked` audit row; a user without a lock is left as it is (the row is still audited).
   */
  async unlockUser(caller: Caller, input: { userId: string }): Promise<{ user: UserRecord; wasLocked: boolean }> {
    const userId = this.checkUserId(input.userId);
    const em = this.em();
    const user = await users.findById(em, userId);
    if (!user) throw userNotFound();
    const now = this.now();
    const { wasLocked } = await throttles.clear(em, this.deps.lockout.idOf(user.email), now, {
      type: 'account.unlocked',
      occurredAt: now,
      userId: user.id,
      details: actorOf(caller),
    });
    return { user, wasLocked };
  }

  /** Replaces the user's roles; they reach access tokens at the next login or refresh. */
  async setUserRoles(caller: Caller, input: { userId: string; roles: readonly string[] }): Promise<UserRecord> {
    const checks = new RequestChecks();
    const id = checks.check(checkId('user_id', input.userId, true));
    const roles = checks.check(checkRoles('roles', input.roles));
    checks.throwIfAny();
    const userId = this.knownIdShape(id!);
    const user = await accounts.setRoles(this.em(), userId, roles!, this.now(), actorOf(caller));
    if (!user) throw userNotFound();
    this.deps.events.rolesChanged?.();
    return user;
  }

  /** Empty or too long is INVALID_ARGUMENT; an id not of the stored form names no user. */
  private checkUserId(userId: string): string {
    return this.knownIdShape(valid(checkId('user_id', userId, true)));
  }

  /** USER_NOT_FOUND without a query for an id Latchkey never assigns (in SQL, a uuid cast error). */
  private knownIdShape(userId: string): string {
    if (!isStoredId(userId)) throw userNotFound();
    return userId;
  }

  private newToken(policy: OneTimeTokenPolicy): { stored: { id: string; hash: Buffer; now: Date; expiresAt: Date }; response: IssuedOneTimeToken } {
    const { token, hash } = newOneTimeToken();
    const now = this.now();
    const expiresAt = new Date(now.getTime() + policy.ttlMs);
    return { stored: { id: randomUUID(), hash, now, expiresAt }, response: { token, link: linkWithToken(policy.url, token), expiresAt } };
  }

  /**
   * Why a stored token cannot be redeemed now, or undefined if it can. Unknown, used, superseded
   * (its row now holds a newer hash) and issued for another address are all TOKEN_INVALID.
   */
  private whyNotRedeemable(state: OneTimeTokenState | undefined, purpose: OneTimeTokenPurpose): DomainError | undefined {
    if (!state || state.usedAt !== null || state.email !== state.userEmail) return tokenInvalid();
    if (state.expiresAt.getTime() <= this.deps.clock.now()) return tokenExpired();
    if (purpose === 'password_reset' && state.userDisabledAt !== null) return new DomainError('ACCOUNT_DISABLED', 'this account is disabled');
    return undefined;
  }
}
