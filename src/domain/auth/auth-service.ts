import { randomUUID } from 'node:crypto';
import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import type { Logger } from '../../observability/logger.js';
import { auditEvents } from '../../persistence/repositories/audit.js';
import { sessions, type SessionState } from '../../persistence/repositories/sessions.js';
import { users, type UserRecord } from '../../persistence/repositories/users.js';
import type { Clock } from '../clock.js';
import { ADMIN_ROLE, type UserCaller } from '../callers.js';
import { DomainError } from '../errors.js';
import { invalid, RequestChecks, type Checked } from '../validation.js';
import type { KeyRing } from '../keys/key-ring.js';
import type { PasswordHasher } from '../passwords/hasher.js';
import { checkPassword } from '../passwords/policy.js';
import { checkClientInfo, type ClientInfo } from '../sessions/client-info.js';
import type { AccessTokenClaims, AccessTokens } from '../tokens/access-tokens.js';
import {
  formatRefreshToken,
  hashRefreshSecret,
  newRefreshSecret,
  parseRefreshToken,
  type RefreshSecretDeriver,
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

function checkDisplayName(field: string, name: string): Checked<string> {
  const trimmed = name.trim();
  if (trimmed.length > MAX_DISPLAY_NAME * 2 || Array.from(trimmed).length > MAX_DISPLAY_NAME) {
    return invalid(field, `must be at most ${MAX_DISPLAY_NAME} characters`);
  }
  if (/\p{Cc}/u.test(trimmed) || !trimmed.isWellFormed() || trimmed.includes('\uFFFD')) {
    return invalid(field, 'must be text without control characters');
  }
  return { value: trimmed };
}

function checkTokenField(field: string, token: string, max: number): void {
  if (token.length === 0) throw DomainError.invalidArgument([{ field, description: 'is required' }]);
  if (token.length > max) throw DomainError.invalidArgument([{ field, description: `must be at most ${max} characters` }]);
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

  async register(input: { email: string; password: string; displayName: string }, signal?: AbortSignal): Promise<UserRecord> {
    const checks = new RequestChecks();
    const email = checks.check(normaliseEmail('email', input.email));
    const password = checks.check(checkPassword('password', input.password, true));
    const displayName = checks.check(checkDisplayName('display_name', input.displayName));
    checks.throwIfAny();
    // Hash before looking at the table, so a taken email costs the same time as a free one.
    const passwordHash = await this.deps.hasher.hash(password!, signal);
    const now = this.now();
    const id = randomUUID();
    const user = await users.insert(
      this.em(),
      { id, email: email!, passwordHash, displayName: displayName!, now },
      { type: 'user.registered', occurredAt: now, userId: id },
    );
    if (!user) throw new DomainError('EMAIL_TAKEN', 'an account with this email already exists');
    return user;
  }

  /**
   * Only what the user waits for: look the user up, compare the hash, insert the session (with
   * its audit event, in one statement), sign the tokens. Unknown email, wrong password and a
   * disabled account all cost one hash comparison and one write.
   */
  async login(
    input: { email: string; password: string; client: ClientInfo | undefined },
    signal?: AbortSignal,
  ): Promise<{ user: UserRecord; sessionId: string; tokens: IssuedTokens }> {
    const checks = new RequestChecks();
    const address = checks.check(normaliseEmail('email', input.email));
    const text = checks.check(checkPassword('password', input.password, false));
    const device = checks.check(checkClientInfo('client', input.client));
    checks.throwIfAny();

    const em = this.em();
    const user = await users.findByEmail(em, address!);
    const { match, needsRehash } = await this.deps.hasher.verify(text!, user?.passwordHash, signal);
    const now = this.now();
    const failure = { occurredAt: now, ipAddress: device!.ipAddress, userAgent: device!.userAgent };
    if (!user || !match) {
      await this.auditFailedLogin(em, { ...failure, userId: user?.id ?? null, details: { reason: 'INVALID_CREDENTIALS', email: address } });
      throw invalidCredentials();
    }
    // Only after the password matched, so this never tells a stranger the email is registered.
    if (user.disabledAt !== null) {
      await this.auditFailedLogin(em, { ...failure, userId: user.id, details: { reason: 'ACCOUNT_DISABLED', email: address } });
      throw new DomainError('ACCOUNT_DISABLED', 'this account is disabled');
    }

    const sessionId = randomUUID();
    const secret = newRefreshSecret();
    const absoluteExpiresAt = new Date(now.getTime() + this.deps.sessionPolicy.maxLifetimeMs);
    const idleExpiresAt = new Date(Math.min(now.getTime() + this.deps.sessionPolicy.idleTimeoutMs, absoluteExpiresAt.getTime()));
    const inserted = await sessions.insertForLogin(
      em,
      { id: sessionId, userId: user.id, refreshSecretHash: hashRefreshSecret(secret), ...device!, now, idleExpiresAt, absoluteExpiresAt },
      { type: 'login.succeeded', occurredAt: now, userId: user.id, sessionId, ipAddress: device!.ipAddress, userAgent: device!.userAgent },
    );
    if (!inserted) throw invalidCredentials();
    if (needsRehash) this.rehashInBackground(user, text!);

    const access = this.deps.accessTokens.issue({ userId: user.id, sessionId, email: user.email, roles: user.roles });
    return {
      user: { ...user, lastLoginAt: now },
      sessionId,
      tokens: {
        accessToken: access.token,
        accessTokenExpiresAt: new Date(access.claims.expiresAt * 1000),
        refreshToken: formatRefreshToken(sessionId, secret),
        refreshTokenExpiresAt: idleExpiresAt,
      },
    };
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
    const work = this.deps.hasher
      .hash(password)
      .then((hash) => users.replacePasswordHash(this.em(), user.id, user.passwordHash, hash))
      .then(
        (replaced) => log.info({ userId: user.id, cost: this.deps.hasher.cost, replaced }, 'password re-hashed at the configured cost'),
        (error: unknown) => log.warn({ userId: user.id, err: error }, 'password re-hash skipped; will retry at the next login'),
      )
      .finally(() => this.background.delete(work));
    this.background.add(work);
  }

  /**
   * Exchanges the current refresh token for a new pair in one conditional UPDATE (see
   * sessions.rotate). The new secret is derived from the presented one, so a retry can later be
   * answered with the same child.
   */
  async refresh(input: { refreshToken: string; client: ClientInfo | undefined }): Promise<IssuedTokens> {
    checkTokenField('refresh_token', input.refreshToken, MAX_REFRESH_TOKEN_LENGTH);
    let client: ClientInfo | undefined;
    if (input.client) {
      const checks = new RequestChecks();
      client = checks.check(checkClientInfo('client', input.client));
      checks.throwIfAny();
    }
    const presented = parseRefreshToken(input.refreshToken);
    if (!presented) throw invalidRefreshToken();

    const em = this.em();
    const now = this.now();
    const nextSecret = this.deps.refreshSecrets.child(presented.sessionId, presented.secret);
    const presentedHash = hashRefreshSecret(presented.secret);
    const rotated = await sessions.rotate(em, {
      sessionId: presented.sessionId,
      presentedHash,
      nextHash: hashRefreshSecret(nextSecret),
      now,
      idleExpiresAt: new Date(now.getTime() + this.deps.sessionPolicy.idleTimeoutMs),
      client,
    });
    if (!rotated) throw await this.explainRejectedRefreshToken(em, presented.sessionId, presentedHash, now);

    const access = this.deps.accessTokens.issue({ userId: rotated.userId, sessionId: presented.sessionId, email: rotated.email, roles: rotated.roles });
    return {
      accessToken: access.token,
      accessTokenExpiresAt: new Date(access.claims.expiresAt * 1000),
      refreshToken: formatRefreshToken(presented.sessionId, nextSecret),
      refreshTokenExpiresAt: rotated.idleExpiresAt,
    };
  }

  /**
   * Why a refresh token was not accepted. Someone who does not hold the session's current secret
   * learns nothing about the session (TOKEN_INVALID); the holder learns whether it was revoked or
   * expired. A rotated-out secret is TOKEN_INVALID for now; the reuse rules will build on this.
   */
  private async explainRejectedRefreshToken(
    em: EntityManager,
    sessionId: string,
    presentedHash: Buffer,
    now: Date,
  ): Promise<DomainError> {
    const state = await sessions.state(em, sessionId);
    if (!state || !state.refreshSecretHash.equals(presentedHash)) return invalidRefreshToken();
    if (state.revokedAt !== null) return new DomainError('SESSION_REVOKED', 'the session has been revoked');
    if (state.idleExpiresAt <= now || state.absoluteExpiresAt <= now) return new DomainError('SESSION_EXPIRED', 'the session has expired');
    // Current secret of an active session, yet not rotated: the user was disabled.
    return new DomainError('SESSION_REVOKED', 'the session has been revoked');
  }

  /** Revokes the refresh token's session. Idempotent for the current token of an ended session. */
  async logout(input: { refreshToken: string }): Promise<void> {
    checkTokenField('refresh_token', input.refreshToken, MAX_REFRESH_TOKEN_LENGTH);
    const presented = parseRefreshToken(input.refreshToken);
    if (!presented) throw invalidRefreshToken();
    const em = this.em();
    const presentedHash = hashRefreshSecret(presented.secret);
    const revoked = await sessions.revokeWithSecret(
      em,
      { sessionId: presented.sessionId, presentedHash, now: this.now(), reason: 'LOGOUT' },
      { type: 'session.logged_out' },
    );
    if (revoked) return;
    const state = await sessions.state(em, presented.sessionId);
    if (!state || !state.refreshSecretHash.equals(presentedHash)) throw invalidRefreshToken();
    // The current token of a session that already ended: nothing to do.
  }

  /**
   * Verifies an access token locally. With `checkRevocation`, also reads the session: one primary
   * key lookup, so a revocation on any replica is seen at once.
   */
  async validate(input: { accessToken: string; checkRevocation: boolean }): Promise<AccessTokenClaims> {
    checkTokenField('access_token', input.accessToken, MAX_ACCESS_TOKEN_LENGTH);
    const claims = this.deps.accessTokens.verify(input.accessToken);
    if (input.checkRevocation) await this.activeSessionOf(claims);
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

  /** The token's session, if it belongs to the token's user and is neither revoked nor expired. */
  private async activeSessionOf(claims: AccessTokenClaims): Promise<SessionState> {
    const session = await sessions.state(this.em(), claims.sessionId);
    // A disabled user's sessions are revoked with the user; the check here also covers a login
    // that raced with the disabling.
    if (!session || session.userId !== claims.userId || session.revokedAt !== null || session.user.disabledAt !== null) {
      throw new DomainError('SESSION_REVOKED', 'the session has been revoked');
    }
    const now = this.deps.clock.now();
    if (session.idleExpiresAt.getTime() <= now || session.absoluteExpiresAt.getTime() <= now) {
      throw new DomainError('SESSION_EXPIRED', 'the session has expired');
    }
    return session;
  }

  jwks(): { json: string; keyIds: readonly string[] } {
    return { json: this.deps.keys.jwksJson, keyIds: this.deps.keys.keyIds };
  }
}
