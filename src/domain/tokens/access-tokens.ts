import jwt from 'jsonwebtoken';
import { LRUCache } from 'lru-cache';
import { randomUUID } from 'node:crypto';
import type { Clock } from '../clock.js';
import { DomainError } from '../errors.js';
import { SIGNING_ALGORITHM, type KeyRing } from '../keys/key-ring.js';
import { hasLowSSignature, withLowSSignature } from './low-s.js';

/** RFC 9068 media type of a JWT access token, in the `typ` header. */
export const ACCESS_TOKEN_TYPE = 'at+jwt';

export interface AccessTokenSubject {
  readonly userId: string;
  readonly sessionId: string;
  readonly email: string;
  readonly roles: readonly string[];
}

export interface AccessTokenClaims extends AccessTokenSubject {
  readonly tokenId: string;
  /** Seconds since the epoch, as in the token. */
  readonly issuedAt: number;
  readonly expiresAt: number;
}

export interface AccessTokenOptions {
  readonly issuer: string;
  readonly audience: string;
  readonly ttlMs: number;
  /** Verified tokens remembered (least recently used out); 0 verifies every token every time. */
  readonly cacheSize?: number;
}

/** A token whose signature, algorithm, issuer, audience and claims have been checked once. */
interface VerifiedToken {
  readonly kid: string;
  readonly claims: AccessTokenClaims;
}

const invalid = () => new DomainError('TOKEN_INVALID', 'the access token is invalid');
const expired = () => new DomainError('TOKEN_EXPIRED', 'the access token has expired');
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The JOSE header, read before verification only to pick the key; nothing in it is trusted. */
function headerOf(token: string): { kid?: unknown; typ?: unknown } | undefined {
  const end = token.indexOf('.');
  if (end <= 0) return undefined;
  try {
    const header: unknown = JSON.parse(Buffer.from(token.slice(0, end), 'base64url').toString('utf8'));
    return typeof header === 'object' && header !== null ? header : undefined;
  } catch {
    return undefined;
  }
}

const isStringArray = (value: unknown): value is string[] => Array.isArray(value) && value.every((item) => typeof item === 'string');

/**
 * Signs and verifies access tokens: ES256 JWTs with `kid` and `typ: at+jwt`. Verification is local
 * (no database): only ES256, only a published key, the configured issuer and audience, and
 * `exp`/`nbf` against the injected clock. jsonwebtoken checks neither `typ` nor that `exp` exists,
 * so both are checked here.
 *
 * The ES256 signature check (about 70 µs of CPU) is most of what validating a token costs, and the
 * callers of ValidateToken present the same token on every request of a user's session. So a
 * token that passed every check is remembered, keyed by its exact text: presented again, it skips
 * the signature, and only what can change since is checked again — that it has not expired by the
 * injected clock, and that its key is still published. A token differing in any character is a
 * different key and goes through the full check.
 */
export class AccessTokens {
  private readonly verified: LRUCache<string, VerifiedToken> | undefined;

  constructor(
    private readonly keys: Pick<KeyRing, 'signing' | 'verificationKey'>,
    private readonly options: AccessTokenOptions,
    private readonly clock: Clock,
  ) {
    const size = options.cacheSize ?? 0;
    this.verified = size > 0 ? new LRUCache({ max: size }) : undefined;
  }

  /**
   * Signs a token for `subject`, valid for the configured lifetime but never past `notAfter` (the
   * session's absolute expiry): a token then never outlives its session, which is what lets the
   * revocation view answer `check_revocation` without reading the session's expiry.
   */
  issue(subject: AccessTokenSubject, notAfter?: Date): { token: string; claims: AccessTokenClaims } {
    const issuedAt = Math.floor(this.clock.now() / 1000);
    const lifetimeEnd = issuedAt + Math.floor(this.options.ttlMs / 1000);
    const expiresAt = notAfter ? Math.max(issuedAt + 1, Math.min(lifetimeEnd, Math.floor(notAfter.getTime() / 1000))) : lifetimeEnd;
    const tokenId = randomUUID();
    const payload = {
      iss: this.options.issuer,
      aud: this.options.audience,
      sub: subject.userId,
      sid: subject.sessionId,
      iat: issuedAt,
      exp: expiresAt,
      jti: tokenId,
      roles: subject.roles,
      email: subject.email,
    };
    const token = withLowSSignature(
      jwt.sign(payload, this.keys.signing.privateKey, {
        algorithm: SIGNING_ALGORITHM,
        keyid: this.keys.signing.kid,
        header: { alg: SIGNING_ALGORITHM, typ: ACCESS_TOKEN_TYPE },
      }),
    );
    return { token, claims: { ...subject, tokenId, issuedAt, expiresAt } };
  }

  verify(token: string): AccessTokenClaims {
    const seen = this.verified?.get(token);
    if (seen) {
      if (!this.keys.verificationKey(seen.kid)) {
        this.verified!.delete(token);
        throw invalid();
      }
      // jsonwebtoken's rule: expired once the clock reaches `exp`.
      if (Math.floor(this.clock.now() / 1000) >= seen.claims.expiresAt) {
        this.verified!.delete(token);
        throw expired();
      }
      return seen.claims;
    }
    // One valid spelling per token (low-s.ts): the high-S twin of a token is refused.
    if (!hasLowSSignature(token)) throw invalid();
    const header = headerOf(token);
    if (!header || header.typ !== ACCESS_TOKEN_TYPE || typeof header.kid !== 'string') throw invalid();
    const key = this.keys.verificationKey(header.kid);
    if (!key) throw invalid();
    let payload: jwt.JwtPayload;
    try {
      const verified = jwt.verify(token, key, {
        algorithms: [SIGNING_ALGORITHM],
        issuer: this.options.issuer,
        audience: this.options.audience,
        clockTimestamp: Math.floor(this.clock.now() / 1000),
      });
      if (typeof verified !== 'object' || verified === null) throw invalid();
      payload = verified;
    } catch (error) {
      // jsonwebtoken checks the signature before the dates, so a forged token never reads "expired".
      if (error instanceof jwt.TokenExpiredError) throw expired();
      throw invalid();
    }
    const { sub, sid, jti, iat, exp, email, roles } = payload as Record<string, unknown>;
    if (
      typeof sub !== 'string' || !UUID.test(sub) ||
      typeof sid !== 'string' || !UUID.test(sid) ||
      typeof jti !== 'string' || typeof iat !== 'number' || typeof exp !== 'number' ||
      typeof email !== 'string' || !isStringArray(roles)
    ) {
      throw invalid();
    }
    const claims = Object.freeze({ userId: sub, sessionId: sid, tokenId: jti, issuedAt: iat, expiresAt: exp, email, roles: Object.freeze([...roles]) });
    this.verified?.set(token, { kid: header.kid, claims });
    return claims;
  }
}
