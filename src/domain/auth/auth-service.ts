import { randomUUID } from 'node:crypto';
import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import type { Logger } from '../../observability/logger.js';
import { outsideCall } from '../../persistence/call-scope.js';
import { auditEvents } from '../../persistence/repositories/audit.js';
import { sessions, type SessionState } from '../../persistence/repositories/sessions.js';
import type { SessionEvents } from '../sessions/revocation.js';
import type { RevocationView } from '../revocations/view.js';
import { sessionStatusAt } from '../sessions/session-state.js';
import { users, type UserRecord } from '../../persistence/repositories/users.js';
import { throttles } from '../../persistence/repositories/throttles.js';
import type { AccountLockout } from './lockout.js';
import { costOf } from '../passwords/hasher.js';
import type { Clock } from '../clock.js';
import { ADMIN_ROLE, type UserCaller } from '../callers.js';
import { DomainError } from '../errors.js';
import { BIDI_CONTROLS, checkRequiredText, checkUtf8Text, invalid, RequestChecks, valid, type Checked } from '../validation.js';
import type { KeyRing } from '../keys/key-ring.js';
import type { PasswordHasher, RequestOrigin } from '../passwords/hasher.js';
import { checkPassword } from '../passwords/policy.js';
import { checkClientInfo, type ClientInfo } from '../sessions/client-info.js';
import type { AccessTokenClaims, AccessTokens } from '../tokens/access-tokens.js';
import {
  formatRefreshToken,
  hashRefreshSecret,
  parseRefreshToken,
  type RefreshSecretDeriver,
  type RefreshToken,
} from '../tokens/refresh-tokens.js';
import { normaliseEmail } from '../users/email.js';

export interface SessionPolicy {
  readonly idleTimeoutMs: number;
  readonly maxLifetimeMs: number;
  /** How long the immediately previous refresh token still returns the current pair (REFRESH_REUSE_GRACE). */
  readonly reuseGraceMs: number;
  /** Active sessions per user; 0 is unlimited (MAX_SESSIONS_PER_USER). */
  readonly maxSessionsPerUser: number;
}

export interface AuthServiceDependencies {
  readonly orm: MikroORM;
  readonly hasher: PasswordHasher;
  readonly keys: KeyRing;
  readonly accessTokens: AccessTokens;
  readonly refreshSecrets: RefreshSecretDeriver;
  readonly sessionPolicy: SessionPolicy;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly events: SessionEvents;
  /** The replica's in-memory revocation view; without it, `check_revocation` always reads the database. */
  readonly revocations?: Pick<RevocationView, 'verdict'>;
  /** Per-account throttling (LOGIN_LOCKOUT_*), shared with ChangePassword and UnlockUser. */
  readonly lockout: AccountLockout;
}

export interface IssuedTokens {
  readonly accessToken: string;
  readonly accessTokenExpiresAt: Date;
  readonly refreshToken: string;
  /** The earlier of the session's idle and absolute expiry. */
  readonly refreshTokenExpiresAt: Date;
}

export const MAX_DISPLAY_NAME = 100;
export const MAX_ACCESS_TOKEN_LENGTH = 4096;
export const MAX_REFRESH_TOKEN_LENGTH = 256;

const invalidCredentials = () => new DomainError('INVALID_CREDENTIALS', 'the email or password is incorrect');
const invalidRefreshToken = () => new DomainError('TOKEN_INVALID', 'the refresh token is invalid');
const accountDisabled = () => new DomainError('ACCOUNT_DISABLED', 'this account is disabled');
const sessionRevoked = () => new DomainError('SESSION_REVOKED', 'the session has been revoked');
const sessionExpired = () => new DomainError('SESSION_EXPIRED', 'the session has expired');
const tokenStale = () =>
  new DomainError('TOKEN_STALE', 'the access token carries a role the user no longer has; refresh it to get one with the current roles');
const refreshTokenReused = () =>
  new DomainError('REFRESH_TOKEN_REUSED', 'a rotated-out refresh token was presented; the session has been revoked');

function checkDisplayName(field: string, name: string): Checked<string> {
  const trimmed = name.trim();
  if (trimmed.length > MAX_DISPLAY_NAME * 2 || Array.from(trimmed).length > MAX_DISPLAY_NAME) {
    return invalid(field, `must be at most ${MAX_DISPLAY_NAME} characters`);
  }
  const notText = checkUtf8Text(field, trimmed);
  if (notText) return notText;
  if (/\p{Cc}/u.test(trimmed)) return invalid(field, 'must be text without control characters');
  if (BIDI_CONTROLS.test(trimmed)) return invalid(field, 'must not contain bidirectional embedding, override or isolate controls (U+202A–U+202E, U+2066–U+2069)');
  return { value: trimmed };
}

/**
 * Registration, login, refresh-token rotation, logout and access-token validation. Each method
 * takes plain values and returns plain values; the gRPC handlers translate. Every call forks its
 * own EntityManager.
 */
export class AuthService {
  /** Work started by a call but not awaited by it (re-hashing), finished before the database closes. */
  private readonly background = new Set<Promise<void>>();

  constructor(private readonly deps: AuthServiceDependencies) {}

  /** Waits for background work to finish; called on shutdown after the last call has completed. */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.background]);
  }

  private em(): EntityManager {
    return this.deps.orm.em.fork();
  }

  private now(): Date {
    return new Date(this.deps.clock.now());
  }

  async register(input: { email: string; password: string; displayName: string }, origin: RequestOrigin): Promise<UserRecord> {
    const checks = new RequestChecks();
    const email = checks.check(normaliseEmail('email', input.email));
    const password = checks.check(checkPassword('password', input.password, true));
    const displayName = checks.check(checkDisplayName('display_name', input.displayName));
    checks.throwIfAny();
    // Hash before looking at the table, so a taken email costs the same time as a free one.
    const turn = this.deps.hasher.admit({ source: origin.source, account: email! }, origin.signal);
    let passwordHash: string;
    try {
      passwordHash = await turn.hash(password!);
    } finally {
      turn.release();
    }
    const now = this.now();
    const id = randomUUID();
    const user = await users.insert(
      this.em(),
      { id, email: email!, passwordHash, displayName: displayName!, now },
      { type: 'user.registered', occurredAt: now, userId: id },
    );
    if (!user) throw new DomainError('EMAIL_TAKEN', 'an account with this email already exists');
    this.deps.hasher.dummies.moved(undefined, this.deps.hasher.cost);
    return user;
  }

  /**
   * Only what the user waits for: look the user up (with the account's lock, in the same
   * statement), compare the hash, insert the session (with its audit event, in one statement),
   * sign the tokens. Unknown email and wrong password cost the same: one lookup, one hash
   * comparison (a dummy of the cost stored hashes have), one failure statement. A locked account,
   * registered or not, costs one lookup and no hash.
   *
   * The lookup waits for the call's hashing slot, and the slot is held until the failure is
   * recorded: a check only starts once every check that finished before it has been counted, so
   * parallel wrong guesses overshoot the lockout threshold by at most the checks running at once
   * (PASSWORD_HASH_CONCURRENCY on each replica).
   */
  async login(
    input: { email: string; password: string; client: ClientInfo | undefined },
    origin: RequestOrigin,
  ): Promise<{ user: UserRecord; sessionId: string; tokens: IssuedTokens }> {
    const checks = new RequestChecks();
    const address = checks.check(normaliseEmail('email', input.email));
    const text = checks.check(checkPassword('password', input.password, false));
    const device = checks.check(checkClientInfo('client', input.client));
    checks.throwIfAny();

    // The place in the hashing queue comes first: a login refused for capacity costs no query.
    const throttleId = this.deps.lockout.idOf(address!);
    const turn = this.deps.hasher.admit({ source: origin.source, account: address! }, origin.signal);
    const em = this.em();
    let user: UserRecord | undefined;
    let verified: { match: boolean; needsRehash: boolean };
    try {
      await turn.started();
      const found = await throttles.lookupByEmail(em, address!, throttleId, this.now());
      if (found.lockedUntil) throw DomainError.accountLocked(found.lockedUntil.getTime() - this.deps.clock.now());
      user = found.user;
      verified = await turn.verify(text!, user?.passwordHash, throttleId);
      if (!user || !verified.match) {
        await this.deps.lockout.recordFailure(em, throttleId, this.now(), {
          userId: user?.id ?? null,
          ipAddress: device!.ipAddress,
          userAgent: device!.userAgent,
          details: { reason: 'INVALID_CREDENTIALS', email: address },
        });
        throw invalidCredentials();
      }
    } finally {
      turn.release();
    }
    const { needsRehash } = verified;
    const now = this.now();
    const failure = { occurredAt: now, ipAddress: device!.ipAddress, userAgent: device!.userAgent };
    // Only after the password matched, so this never tells a stranger the email is registered.
    if (user.disabledAt !== null) {
      await this.auditFailedLogin(em, { ...failure, userId: user.id, details: { reason: 'ACCOUNT_DISABLED', email: address } });
      throw accountDisabled();
    }

    const sessionId = randomUUID();
    const secret = this.deps.refreshSecrets.fresh(sessionId);
    const absoluteExpiresAt = new Date(now.getTime() + this.deps.sessionPolicy.maxLifetimeMs);
    const idleExpiresAt = new Date(Math.min(now.getTime() + this.deps.sessionPolicy.idleTimeoutMs, absoluteExpiresAt.getTime()));
    const inserted = await sessions.insertForLogin(
      em,
      { id: sessionId, userId: user.id, refreshSecretHash: hashRefreshSecret(secret), ...device!, now, idleExpiresAt, absoluteExpiresAt },
      { passwordChangedAt: user.passwordChangedAt, maxSessions: this.deps.sessionPolicy.maxSessionsPerUser, throttleId },
      { type: 'login.succeeded', occurredAt: now, userId: user.id, sessionId, ipAddress: device!.ipAddress, userAgent: device!.userAgent },
    );
    if (!inserted) {
      // The password matched the user as looked up, but the account was disabled or its password
      // was changed or reset before the session could be written.
      const disabled = (await users.findByEmail(em, address!))?.disabledAt != null;
      const reason = disabled ? 'ACCOUNT_DISABLED' : 'INVALID_CREDENTIALS';
      await this.auditFailedLogin(em, { ...failure, userId: user.id, details: { reason, email: address, changedDuringLogin: true } });
      throw disabled ? accountDisabled() : invalidCredentials();
    }
    this.deps.events.revoked('SESSION_LIMIT', inserted.evicted);
    if (inserted.evicted > 0) {
      this.deps.logger.info({ userId: user.id, evicted: inserted.evicted, limit: this.deps.sessionPolicy.maxSessionsPerUser }, 'session limit reached; least recently used sessions revoked');
    }
    if (needsRehash) this.rehashInBackground(user, text!);

    return { user: { ...user, lastLoginAt: now }, sessionId, tokens: this.issue(sessionId, secret, user.id, user, idleExpiresAt, absoluteExpiresAt) };
  }

  private async auditFailedLogin(
    em: EntityManager,
    entry: { occurredAt: Date; userId: string | null; ipAddress: string; userAgent: string; details: Record<string, unknown> },
  ): Promise<void> {
    await auditEvents.insert(em, { type: 'login.failed', ...entry });
  }

  /**
   * After a successful login with a hash of another cost, re-hash it off the response path. It
   * waits for the limiter like any hash; if the limiter is full it is simply tried again at the
   * next login. A password changed meanwhile is never overwritten.
   */
  private rehashInBackground(user: UserRecord, password: string): void {
    const log = this.deps.logger;
    // Not part of the call: its statement is neither bounded by the call's deadline nor counted
    // against the call's admission, and it queues for hashing as the server itself.
    const work = outsideCall(() => this.deps.hasher.hash(password, { source: 'latchkey/rehash', account: user.id }))
      .then((hash) => outsideCall(() => users.replacePasswordHash(this.em(), user.id, user.passwordHash, hash)))
      .then((replaced) => {
        if (replaced) this.deps.hasher.dummies.moved(costOf(user.passwordHash), this.deps.hasher.cost);
        return replaced;
      })
      .then(
        (replaced) => log.info({ userId: user.id, cost: this.deps.hasher.cost, replaced }, 'password re-hashed at the configured cost'),
        (error: unknown) => log.warn({ userId: user.id, err: error }, 'password re-hash skipped; will retry at the next login'),
      )
      .finally(() => this.background.delete(work));
    this.background.add(work);
  }

  /**
   * Exchanges a refresh token for a new pair (the rotation contract, DESIGN.md "Tokens and
   * sessions"). The common case is one conditional UPDATE (see sessions.rotate). The new secret
   * is derived from the presented one, so when the UPDATE finds the secret already rotated, one
   * read tells the rest apart:
   * - the immediately previous token within REFRESH_REUSE_GRACE gets the very pair the first call
   *   got (the child is derived again, nothing is written): concurrent refreshes and retries
   *   after a lost response all succeed with one result;
   * - the previous token after the window, or any older token of the session, is reuse: the
   *   session is revoked and the call fails with REFRESH_TOKEN_REUSED;
   * - anything else is TOKEN_INVALID.
   */
  async refresh(input: { refreshToken: string; client: ClientInfo | undefined }): Promise<IssuedTokens> {
    const checks = new RequestChecks();
    checks.check(checkRequiredText('refresh_token', input.refreshToken, MAX_REFRESH_TOKEN_LENGTH));
    const client = input.client && checks.check(checkClientInfo('client', input.client));
    checks.throwIfAny();
    const presented = parseRefreshToken(input.refreshToken);
    if (!presented) throw invalidRefreshToken();

    const em = this.em();
    const now = this.now();
    const nextSecret = this.deps.refreshSecrets.child(presented.sessionId, presented.secret);
    const rotated = await sessions.rotate(em, {
      sessionId: presented.sessionId,
      presentedHash: hashRefreshSecret(presented.secret),
      nextHash: hashRefreshSecret(nextSecret),
      now,
      idleExpiresAt: new Date(now.getTime() + this.deps.sessionPolicy.idleTimeoutMs),
      client,
    });
    if (rotated) return this.issue(presented.sessionId, nextSecret, rotated.userId, rotated, rotated.idleExpiresAt, rotated.absoluteExpiresAt);

    const state = await sessions.state(em, presented.sessionId);
    const behind = state && this.generationsBehind(presented, state, nextSecret);
    if (!state || behind === undefined) throw invalidRefreshToken();
    if (behind === 0) throw whyNotActive(state, now) ?? sessionRevoked();
    if (behind === 1 && this.withinGrace(state, now)) {
      // A retry of the token rotated moments ago: the holder gets the current pair again.
      const ended = whyNotActive(state, now);
      if (ended) throw ended;
      return this.issue(presented.sessionId, nextSecret, state.userId, state.user, state.idleExpiresAt, state.absoluteExpiresAt);
    }
    throw await this.reuseDetected(em, presented.sessionId, behind, now, client);
  }

  private issue(
    sessionId: string,
    refreshSecret: Buffer,
    userId: string,
    user: { email: string; roles: readonly string[] },
    idleExpiresAt: Date,
    absoluteExpiresAt: Date,
  ): IssuedTokens {
    // Never past the session's end (idle or absolute): see AccessTokens.issue.
    const sessionEnds = new Date(Math.min(idleExpiresAt.getTime(), absoluteExpiresAt.getTime()));
    const access = this.deps.accessTokens.issue({ userId, sessionId, email: user.email, roles: user.roles }, sessionEnds);
    return {
      accessToken: access.token,
      accessTokenExpiresAt: new Date(access.claims.expiresAt * 1000),
      refreshToken: formatRefreshToken(sessionId, refreshSecret),
      refreshTokenExpiresAt: idleExpiresAt,
    };
  }

  /** How many rotations ago the presented secret was the session's current one; undefined if never. */
  private generationsBehind(presented: RefreshToken, state: SessionState, firstChild: Buffer): number | undefined {
    return this.deps.refreshSecrets.generationsBehind(presented.sessionId, presented.secret, state.refreshSecretHash, state.generation, firstChild);
  }

  private withinGrace(state: SessionState, now: Date): boolean {
    return state.rotatedAt !== null && now.getTime() - state.rotatedAt.getTime() < this.deps.sessionPolicy.reuseGraceMs;
  }

  /** Revokes the session for a replayed old token (audited), and returns the error for the caller. */
  private async reuseDetected(em: EntityManager, sessionId: string, generationsBehind: number, now: Date, client?: ClientInfo): Promise<DomainError> {
    const revoked = await sessions.revokeForReuse(em, {
      sessionId,
      now,
      ipAddress: client?.ipAddress,
      userAgent: client?.userAgent,
      details: { generationsBehind },
    });
    this.deps.events.reuseDetected();
    this.deps.events.revoked('REFRESH_TOKEN_REUSED', revoked ? 1 : 0);
    this.deps.logger.warn({ sessionId, generationsBehind, revoked }, 'refresh token reuse detected; session revoked');
    return refreshTokenReused();
  }

  /**
   * Revokes the refresh token's session (LOGOUT). Idempotent for the current token of an ended
   * session. A rotated-out token is judged as in refresh: the previous one within the grace
   * window logs out, anything older is reuse.
   */
  async logout(input: { refreshToken: string }): Promise<void> {
    valid(checkRequiredText('refresh_token', input.refreshToken, MAX_REFRESH_TOKEN_LENGTH));
    const presented = parseRefreshToken(input.refreshToken);
    if (!presented) throw invalidRefreshToken();
    const em = this.em();
    const now = this.now();
    const presentedHash = hashRefreshSecret(presented.secret);
    const logout = { type: 'session.logged_out' } as const;
    if (await sessions.revokeWithSecret(em, { sessionId: presented.sessionId, presentedHash, now, reason: 'LOGOUT' }, logout)) {
      this.deps.events.revoked('LOGOUT', 1);
      return;
    }

    const state = await sessions.state(em, presented.sessionId);
    const nextSecret = this.deps.refreshSecrets.child(presented.sessionId, presented.secret);
    const behind = state && this.generationsBehind(presented, state, nextSecret);
    if (!state || behind === undefined) throw invalidRefreshToken();
    // The current token of a session that already ended: nothing to do.
    if (behind === 0) return;
    if (behind === 1 && this.withinGrace(state, now)) {
      const revoked = await sessions.revokeWithSecret(em, { sessionId: presented.sessionId, presentedHash: state.refreshSecretHash, now, reason: 'LOGOUT' }, logout);
      this.deps.events.revoked('LOGOUT', revoked ? 1 : 0);
      return;
    }
    throw await this.reuseDetected(em, presented.sessionId, behind, now);
  }

  /**
   * Verifies an access token locally. With `checkRevocation`, also checks that its session was
   * not revoked and that the user still has every role it carries: from the replica's revocation
   * view while that is fresh (no database read), otherwise from the session's row (one primary-key
   * lookup), so a revocation on any replica is seen within REVOCATION_MAX_STALENESS at most.
   */
  async validate(input: { accessToken: string; checkRevocation: boolean }): Promise<AccessTokenClaims> {
    valid(checkRequiredText('access_token', input.accessToken, MAX_ACCESS_TOKEN_LENGTH));
    const claims = this.deps.accessTokens.verify(input.accessToken);
    if (!input.checkRevocation) return claims;
    const verdict = this.deps.revocations?.verdict(claims) ?? 'unknown';
    if (verdict === 'revoked') throw sessionRevoked();
    if (verdict === 'stale') throw tokenStale();
    if (verdict === 'unknown') {
      const session = await this.activeSessionOf(claims);
      if (claims.roles.some((role) => !session.user.roles.includes(role))) throw tokenStale();
    }
    return claims;
  }

  /**
   * The caller behind a bearer access token (caller credentials): the token must verify and its
   * session must be active. The roles are the user's roles now, so removing `admin` takes effect
   * at once; `admin` needs both the signed claim and the current role.
   */
  async authenticateBearer(accessToken: string): Promise<UserCaller> {
    const claims = this.deps.accessTokens.verify(accessToken);
    const session = await this.activeSessionOf(claims);
    return {
      kind: 'user',
      userId: claims.userId,
      sessionId: claims.sessionId,
      email: session.user.email,
      roles: session.user.roles,
      admin: claims.roles.includes(ADMIN_ROLE) && session.user.roles.includes(ADMIN_ROLE),
    };
  }

  /** The token's session, if it belongs to the token's user and is active. */
  private async activeSessionOf(claims: AccessTokenClaims): Promise<SessionState> {
    const session = await sessions.state(this.em(), claims.sessionId);
    if (!session || session.userId !== claims.userId) throw sessionRevoked();
    const ended = whyNotActive(session, this.now());
    if (ended) throw ended;
    return session;
  }

  jwks(): { json: string; keyIds: readonly string[] } {
    return { json: this.deps.keys.jwksJson, keyIds: this.deps.keys.keyIds };
  }
}

/**
 * Why a session cannot be used now, or undefined when it is active. A disabled user's sessions are
 * revoked along with the user; the user check also covers anything that raced with that.
 */
function whyNotActive(state: SessionState, now: Date): DomainError | undefined {
  if (state.user.disabledAt !== null) return sessionRevoked();
  const status = sessionStatusAt(state, now);
  if (status === 'REVOKED') return sessionRevoked();
  if (status === 'EXPIRED') return sessionExpired();
  return undefined;
}
