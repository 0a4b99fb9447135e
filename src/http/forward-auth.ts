import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { DomainError } from '../domain/errors.js';
import { denialFor, parseRoleList, type GatewayCheck, type GatewayDeny } from '../domain/gateway/gateway-check.js';
import type { Logger } from '../observability/logger.js';
import { CallDeadlineError, type DatabaseGate } from '../persistence/call-scope.js';
import { isDatabaseSlow, isDatabaseUnavailable, type DatabaseMonitor } from '../persistence/database.js';

/** Where gateways send their sub-request; Envoy's HTTP mode appends the original path to it (`path_prefix`). */
export const FORWARD_AUTH_PATH = '/forward-auth';

export interface ForwardAuthDependencies {
  readonly check: GatewayCheck;
  readonly database: Pick<DatabaseMonitor, 'available' | 'reportFailure' | 'check'>;
  readonly gate: Pick<DatabaseGate, 'admit'>;
  readonly logger: Logger;
  /** Counts each answer by HTTP status. */
  readonly handled?: (status: number, seconds: number) => void;
}

const one = (value: string | string[] | undefined): string | undefined => (Array.isArray(value) ? value.join(',') : value);

/**
 * HTTP forward-auth for nginx `auth_request`, Traefik `ForwardAuth` and Envoy's HTTP ext_authz:
 * the decision of `Check` as a status code. 200 with the identity headers (for the gateway to copy
 * onto the upstream request), 401/403 with the RFC 6750 challenge and a small JSON body, 503 when
 * the check needed the database and could not reach it. Any method is accepted (Envoy keeps the
 * original one) and a body is ignored. The token comes only from the `Authorization` header, never
 * from the query string; the roles a route requires from `<prefix>required-roles`, which the
 * gateway sets on the sub-request (a client that sends it can only make its own request stricter).
 */
export function createForwardAuth(deps: ForwardAuthDependencies): (request: IncomingMessage, response: ServerResponse) => void {
  const { check, database, gate, logger } = deps;
  const send = (response: ServerResponse, status: number, headers: readonly (readonly [string, string])[], body: string) => {
    response.statusCode = status;
    response.setHeader('cache-control', 'no-store');
    for (const [name, value] of headers) response.setHeader(name, value);
    if (body !== '') response.setHeader('content-type', 'application/json');
    response.setHeader('content-length', Buffer.byteLength(body));
    response.end(body);
  };
  return (request, response) => {
    const started = performance.now();
    // Whatever body came with the original method is not read, only drained.
    request.resume();
    const authorization = one(request.headers.authorization);
    let needsDatabase = false;
    const decide = () =>
      check.decide({
        authorization,
        requiredRoles: parseRoleList(one(request.headers[check.requiredRolesHeader])),
        headerNames: Object.keys(request.headers),
      });
    const run = async () => {
      needsDatabase = check.needsDatabase(authorization);
      if (!needsDatabase) return decide();
      if (!database.available) throw DomainError.unavailable();
      // Admitted like a gRPC call without a deadline: the statement timeout bounds the read.
      return gate.admit(Number.POSITIVE_INFINITY, decide);
    };
    const finish = (status: number, reason?: string, errorId?: string) => {
      const ms = performance.now() - started;
      deps.handled?.(status, ms / 1000);
      const level = status === 200 ? 'debug' : 'info';
      if (level === 'debug' && !logger.isLevelEnabled('debug')) return;
      logger[level]({ path: FORWARD_AUTH_PATH, status, reason, errorId, durationMs: Math.round(ms * 100) / 100 }, 'forward-auth');
    };
    run().then(
      (allowed) => {
        send(response, 200, allowed.headersToSet, '');
        finish(200);
      },
      (error: unknown) => {
        let denial: GatewayDeny;
        let errorId: string | undefined;
        if (error instanceof DomainError) {
          denial = denialFor(error.kind, error.reason, error.retryAfterMs);
        } else if (error instanceof CallDeadlineError || isDatabaseSlow(error)) {
          void database.check();
          denial = denialFor('unavailable', 'UNAVAILABLE');
        } else if (isDatabaseUnavailable(error)) {
          if (needsDatabase) database.reportFailure(error);
          denial = denialFor('unavailable', 'UNAVAILABLE');
        } else {
          errorId = randomUUID();
          logger.error({ path: FORWARD_AUTH_PATH, errorId, err: error }, 'unexpected error in forward-auth');
          denial = denialFor('internal', 'INTERNAL');
        }
        send(response, denial.httpStatus, denial.headers, denial.body);
        finish(denial.httpStatus, denial.reason, errorId);
      },
    );
  };
}

/**
 * The OpenID Connect discovery document, as far as Latchkey goes: it signs ES256 JWT access tokens
 * (not ID tokens, and it has no authorization or token endpoint over HTTP), so it lists the issuer,
 * the JWKS and the algorithm, which is what JWT middleware that discovers keys from the issuer reads.
 */
export function openidConfiguration(options: { issuer: string; publicUrl: string; signingAlgorithm: string }): string {
  const jwks = new URL(options.publicUrl);
  jwks.pathname = `${jwks.pathname.replace(/\/+$/, '')}/.well-known/jwks.json`;
  jwks.search = '';
  jwks.hash = '';
  return JSON.stringify({
    issuer: options.issuer,
    jwks_uri: jwks.toString(),
    id_token_signing_alg_values_supported: [options.signingAlgorithm],
    subject_types_supported: ['public'],
    claims_supported: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'sid', 'email', 'roles'],
  });
}
