import { createHash, timingSafeEqual } from 'node:crypto';
import { DomainError } from './errors.js';

/**
 * Who is making a call, as established from its credential (DESIGN.md, "Caller credentials").
 * A user acts through a bearer access token whose session is active; a service through an API
 * key. A user whose token and account both carry the `admin` role may also act as a service.
 */
export type Caller = UserCaller | ServiceCaller;

export interface UserCaller {
  readonly kind: 'user';
  readonly userId: string;
  /** The session of the bearer token: `current` in session listings, kept by "sign out elsewhere". */
  readonly sessionId: string;
  readonly email: string;
  /** The user's roles now (not as signed into the token). */
  readonly roles: readonly string[];
  /** The token was signed with `admin` and the user still has it: a service credential. */
  readonly admin: boolean;
}

export interface ServiceCaller {
  readonly kind: 'service';
}

export const ADMIN_ROLE = 'admin';

/** The credential metadata of a call, as the transport found it (each header at most once). */
export interface PresentedCredentials {
  /** The whole `authorization` value, e.g. `Bearer eyJ…`. */
  readonly authorization?: string;
  /** The `x-api-key` value. */
  readonly apiKey?: string;
}

/** Verifies a bearer token and reads its session and user; supplied by the AuthService. */
export type BearerVerifier = (accessToken: string) => Promise<UserCaller>;

const MAX_BEARER_LENGTH = 4096;
const BEARER = /^Bearer +([A-Za-z0-9_.~+/=-]+)$/i;

const missingCredential = () =>
  new DomainError('TOKEN_INVALID', 'this call needs a credential: `authorization: Bearer <access token>` or `x-api-key`');

/**
 * The configured service API keys, as SHA-256 digests. A presented key is hashed and compared
 * with every digest in constant time, so neither the comparison nor the number of keys checked
 * depends on how much of a key matched.
 */
export class ServiceApiKeys {
  constructor(private readonly digests: readonly Buffer[]) {}

  matches(key: string): boolean {
    const presented = createHash('sha256').update(key).digest();
    let found = false;
    for (const digest of this.digests) found = timingSafeEqual(presented, digest) || found;
    return found;
  }
}

/**
 * Turns presented credentials into a Caller. `x-api-key`, when present, decides: the call is a
 * service call (gateways may forward the end user's `authorization` alongside their own key).
 * Otherwise a bearer token must verify and its session must be active.
 */
export class CallerAuthenticator {
  constructor(
    private readonly apiKeys: ServiceApiKeys,
    private readonly verifyBearer: BearerVerifier,
  ) {}

  /** The caller, or undefined when the call carries no credential at all. */
  async authenticate(credentials: PresentedCredentials): Promise<Caller | undefined> {
    if (credentials.apiKey !== undefined) {
      if (!this.apiKeys.matches(credentials.apiKey)) throw new DomainError('TOKEN_INVALID', 'the API key is not valid');
      return { kind: 'service' };
    }
    if (credentials.authorization === undefined) return undefined;
    const token = credentials.authorization.length <= MAX_BEARER_LENGTH + 7 ? BEARER.exec(credentials.authorization)?.[1] : undefined;
    if (!token) throw new DomainError('TOKEN_INVALID', 'the authorization metadata must be `Bearer <access token>`');
    return this.verifyBearer(token);
  }

  /** A caller of any kind; no credential is UNAUTHENTICATED. */
  /**
   * Whether the call carries a valid service API key: a cheap check (no database), used to trust
   * the end-user address a gateway reports in `client.ip_address` for fair hashing.
   */
  hasServiceKey(credentials: PresentedCredentials): boolean {
    return credentials.apiKey !== undefined && this.apiKeys.matches(credentials.apiKey);
  }

  async require(credentials: PresentedCredentials): Promise<Caller> {
    const caller = await this.authenticate(credentials);
    if (!caller) throw missingCredential();
    return caller;
  }

  /** A service credential: an API key or an admin's bearer token. A plain user is PERMISSION_DENIED. */
  async requireService(credentials: PresentedCredentials): Promise<Caller> {
    const caller = await this.require(credentials);
    if (!isService(caller)) throw permissionDenied();
    return caller;
  }

  /** A user's bearer token (an admin's too); an API key acts for no user and is PERMISSION_DENIED. */
  async requireUser(credentials: PresentedCredentials): Promise<UserCaller> {
    const caller = await this.require(credentials);
    if (caller.kind !== 'user') throw permissionDenied('this call acts for a user: use the user\'s bearer token, not an API key');
    return caller;
  }
}

export function isService(caller: Caller): boolean {
  return caller.kind === 'service' || caller.admin;
}

export function permissionDenied(message = 'the caller is not allowed to make this call'): DomainError {
  return new DomainError('PERMISSION_DENIED', message);
}
