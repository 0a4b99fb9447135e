import type { AuthService } from '../auth/auth-service.js';
import { DomainError, type ErrorKind, type ErrorReason } from '../errors.js';
import type { AccessTokenClaims } from '../tokens/access-tokens.js';

/**
 * The decision a gateway asks for before it forwards a request (Envoy/Istio ext_authz `Check`,
 * nginx `auth_request`, Traefik `ForwardAuth`): one implementation, two transports
 * (src/grpc/handlers/ext-authz.ts, src/http/forward-auth.ts). The token is verified locally and
 * its revocation answered from the replica's revocation view, exactly as ValidateToken with
 * `check_revocation` (the database only when the view is not fresh).
 */

export interface GatewayAllow {
  readonly claims: AccessTokenClaims;
  /** Identity headers for the upstream, lower-case names (only those with a value). */
  readonly headersToSet: readonly (readonly [string, string])[];
  /** Headers of the client's request the upstream must not see (client-sent prefix headers, `authorization` if not passed on). */
  readonly headersToRemove: readonly string[];
}

export interface GatewayDeny {
  readonly httpStatus: 400 | 401 | 403 | 500 | 503;
  readonly reason: ErrorReason;
  /** Response headers for the client: `www-authenticate` (RFC 6750), `retry-after`. */
  readonly headers: readonly (readonly [string, string])[];
  /** `{"error": …, "reason": …}`: never the token, never a database message. */
  readonly body: string;
}

export interface GatewayCheckOptions {
  /** GATEWAY_HEADER_PREFIX: lower case, e.g. `x-latchkey-`. */
  readonly headerPrefix: string;
  /** GATEWAY_PASS_AUTHORIZATION. */
  readonly passAuthorization: boolean;
}

export interface GatewayRequest {
  /** The request's `authorization` header, if any. */
  readonly authorization: string | undefined;
  /** Roles the route requires (all of them), as the gateway configured them. */
  readonly requiredRoles: readonly string[];
  /** Lower-case names of every header the client sent (to remove the prefixed ones). */
  readonly headerNames: Iterable<string>;
}

/** Context extension (Check) naming the roles a route requires, comma-separated. */
export const REQUIRED_ROLES_EXTENSION = 'latchkey-required-roles';

/** RFC 6750 `b64token` after the `Bearer` scheme (case-insensitive), one or more spaces between. */
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;
const HAS_SCHEME_BEARER = /^bearer(?: |$)/i;

/** A comma-separated role list (a context extension or a header), blanks dropped. */
export function parseRoleList(text: string | undefined): string[] {
  if (!text) return [];
  return text
    .split(',')
    .map((role) => role.trim())
    .filter((role) => role !== '');
}

/**
 * A header value from an identity field: printable ASCII as is, anything else percent-encoded
 * (UTF-8), since neither Node nor Envoy passes arbitrary bytes in a header value.
 */
function headerValue(text: string): string {
  return /^[\x20-\x7e]*$/.test(text) ? text : encodeURIComponent(text);
}

function json(error: string, reason: ErrorReason): string {
  return JSON.stringify({ error, reason });
}

const missing = () => new DomainError('TOKEN_MISSING', 'the request carries no bearer token');
const malformed = () => new DomainError('TOKEN_INVALID', 'the access token is invalid');
const roleRequired = () => new DomainError('ROLE_REQUIRED', 'the access token lacks a role this route requires');

/**
 * The response a gateway sends the client for a check that did not allow. Token and session
 * problems: 401 with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750), or the plain
 * `Bearer` challenge when there was no token at all; a missing role: 403 `insufficient_scope`.
 * A check that could not be decided (the database was needed, because the revocation view was
 * not fresh, and is unreachable or too busy) is never allowed: 503, with Retry-After when known,
 * and never 401, so that clients do not throw away a good token. Anything else: 500.
 */
export function denialFor(kind: ErrorKind, reason: ErrorReason, retryAfterMs?: number): GatewayDeny {
  if (reason === 'TOKEN_MISSING') {
    // RFC 6750 §3.1: a request without credentials gets the challenge without an error code.
    return { httpStatus: 401, reason, headers: [['www-authenticate', 'Bearer']], body: json('invalid_request', reason) };
  }
  if (kind === 'unauthenticated') {
    return { httpStatus: 401, reason, headers: [['www-authenticate', 'Bearer error="invalid_token"']], body: json('invalid_token', reason) };
  }
  if (kind === 'invalid_argument') {
    // Only a check request that is not a valid message gets here (decide turns a token that is
    // too long or not text into TOKEN_INVALID).
    return { httpStatus: 400, reason, headers: [], body: json('invalid_request', reason) };
  }
  if (reason === 'ROLE_REQUIRED') {
    return { httpStatus: 403, reason, headers: [['www-authenticate', 'Bearer error="insufficient_scope"']], body: json('insufficient_scope', reason) };
  }
  if (kind === 'unavailable' || kind === 'resource_exhausted') {
    const headers: [string, string][] = [];
    if (retryAfterMs !== undefined) headers.push(['retry-after', String(Math.max(1, Math.ceil(retryAfterMs / 1000)))]);
    return { httpStatus: 503, reason, headers, body: json('temporarily_unavailable', reason) };
  }
  return { httpStatus: 500, reason: 'INTERNAL', headers: [], body: json('server_error', 'INTERNAL') };
}

export class GatewayCheck {
  readonly #names: { userId: string; sessionId: string; roles: string; email: string; requiredRoles: string };

  constructor(
    private readonly auth: Pick<AuthService, 'validate'>,
    private readonly view: { readonly fresh: boolean } | undefined,
    readonly options: GatewayCheckOptions,
  ) {
    const prefix = options.headerPrefix.toLowerCase();
    this.#names = {
      userId: `${prefix}user-id`,
      sessionId: `${prefix}session-id`,
      roles: `${prefix}roles`,
      email: `${prefix}email`,
      requiredRoles: `${prefix}required-roles`,
    };
  }

  /** The header a forward-auth gateway sets to ask for roles (`<prefix>required-roles`). */
  get requiredRolesHeader(): string {
    return this.#names.requiredRoles;
  }

  /**
   * Whether a check of this request would read the database: it carries a bearer token and the
   * revocation view is not fresh. The transports admit such checks (and refuse them at once while
   * the database is known down) before deciding.
   */
  needsDatabase(authorization: string | undefined): boolean {
    return authorization !== undefined && HAS_SCHEME_BEARER.test(authorization) && !(this.view?.fresh ?? false);
  }

  /**
   * Allows (the identity headers to set and the client headers to remove), or throws the
   * DomainError that says why not: TOKEN_MISSING, a token or session reason (TOKEN_EXPIRED,
   * TOKEN_INVALID, TOKEN_STALE, SESSION_REVOKED, SESSION_EXPIRED), ROLE_REQUIRED, or whatever kept
   * the check from being decided (the database unreachable during a fallback read). The
   * transports turn any of them into a response with `denialFor`.
   */
  async decide(request: GatewayRequest): Promise<GatewayAllow> {
    const authorization = request.authorization;
    // No credentials, or credentials of another scheme (Basic, say): the plain challenge.
    if (authorization === undefined || !HAS_SCHEME_BEARER.test(authorization)) throw missing();
    const token = BEARER.exec(authorization)?.[1];
    if (token === undefined) throw malformed();
    let claims: AccessTokenClaims;
    try {
      claims = await this.auth.validate({ accessToken: token, checkRevocation: true });
    } catch (error) {
      // Too long or not text: a token that cannot be valid, as far as the client is concerned.
      if (error instanceof DomainError && error.kind === 'invalid_argument') throw malformed();
      throw error;
    }
    if (request.requiredRoles.some((role) => !claims.roles.includes(role))) throw roleRequired();

    const names = this.#names;
    const headersToSet: [string, string][] = [
      [names.userId, headerValue(claims.userId)],
      [names.sessionId, headerValue(claims.sessionId)],
      [names.email, headerValue(claims.email)],
    ];
    // An empty value would be dropped (Envoy) or not sent (nginx): a user without roles gets no
    // roles header at all, and a client-sent one is removed below like any other.
    if (claims.roles.length > 0) headersToSet.push([names.roles, claims.roles.map(headerValue).join(',')]);
    const set = new Set(headersToSet.map(([name]) => name));
    const headersToRemove: string[] = [];
    const prefix = this.options.headerPrefix;
    for (const name of request.headerNames) {
      const lower = name.toLowerCase();
      if (lower.startsWith(prefix) && !set.has(lower) && !headersToRemove.includes(lower)) headersToRemove.push(lower);
    }
    if (!this.options.passAuthorization) headersToRemove.push('authorization');
    return { claims, headersToSet, headersToRemove };
  }
}
