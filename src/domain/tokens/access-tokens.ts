import jwt from 'jsonwebtoken';
import { randomUUID } from 'node:crypto';
import type { Clock } from '../clock.js';
import { DomainError } from '../errors.js';
import { SIGNING_ALGORITHM, type KeyRing } from '../keys/key-ring.js';

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
}

const invalid = () => new DomainError('TOKEN_INVALID', 'the access token is invalid');
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
 */
export class AccessTokens {
  constructor(
    private readonly keys: KeyRing,
    private readonly options: AccessTokenOptions,
    private readonly clock: Clock,
  ) {}

  issue(subject: AccessTokenSubject): { token: string; claims: AccessTokenClaims } {
    const issuedAt = Math.floor(this.clock.now() / 1000);
    const expiresAt = issuedAt + Math.floor(this.options.ttlMs / 1000);
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
    const token = jwt.sign(payload, this.keys.signing.privateKey, {
      algorithm: SIGNING_ALGORITHM,
      keyid: this.keys.signing.kid,
      header: { alg: SIGNING_ALGORITHM, typ: ACCESS_TOKEN_TYPE },
    });
    return { token, claims: { ...subject, tokenId, issuedAt, expiresAt } };
  }

  verify(token: string): AccessTokenClaims {
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
      if (error instanceof jwt.TokenExpiredError) throw new DomainError('TOKEN_EXPIRED', 'the access token has expired');
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
    return { userId: sub, sessionId: sid, tokenId: jti, issuedAt: iat, expiresAt: exp, email, roles };
  }
}
