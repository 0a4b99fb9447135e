import { status, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { DomainError } from '../../domain/errors.js';
import { denialFor, parseRoleList, type GatewayAllow, type GatewayCheck, type GatewayDeny } from '../../domain/gateway/gateway-check.js';
import type { AccessTokenClaims } from '../../domain/tokens/access-tokens.js';
import { HeaderValueOption_HeaderAppendAction, type HeaderValueOption } from '../../generated/envoy/config/core/v3/base.js';
import { AuthorizationService, CheckResponse as CheckResponseCodec, type CheckResponse } from '../../generated/envoy/service/auth/v3/external_auth.js';
import { readCheckRequest, type CheckRequestView } from './check-request.js';
import { EncodedResponse, unary, type CallDependencies } from '../call.js';

export const AUTHORIZATION_SERVICE = 'envoy.service.auth.v3.Authorization';

function headerOption(key: string, value: string): HeaderValueOption {
  // Replaces a header of the same name that the client sent (never appends to it).
  return { header: { key, value, rawValue: Buffer.alloc(0) }, append: undefined, appendAction: HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD, keepEmptyValue: false };
}

function allowed(decision: GatewayAllow): CheckResponse {
  return {
    status: { code: status.OK, message: '', details: [] },
    okResponse: {
      headers: decision.headersToSet.map(([key, value]) => headerOption(key, value)),
      headersToRemove: [...decision.headersToRemove],
      dynamicMetadata: undefined,
      responseHeadersToAdd: [],
      queryParametersToSet: [],
      queryParametersToRemove: [],
    },
    dynamicMetadata: undefined,
  };
}

function denied(code: status, message: string, denial: GatewayDeny): CheckResponse {
  return {
    status: { code, message, details: [] },
    deniedResponse: {
      status: { code: denial.httpStatus },
      headers: [...denial.headers, ['content-type', 'application/json']].map(([key, value]) => headerOption(key!, value!)),
      body: denial.body,
    },
    dynamicMetadata: undefined,
  };
}

/** Allow answers by claims object, for requests with nothing of the client's to remove (the usual case). */
const plainAllows = new WeakMap<AccessTokenClaims, EncodedResponse>();

/**
 * `envoy.service.auth.v3.Authorization/Check` for Envoy's and Istio's ext_authz (gRPC mode). The
 * decision is carried in the response, never as a gRPC error: status OK with an OkHttpResponse
 * (identity headers to set, client-sent prefix headers to remove), or UNAUTHENTICATED /
 * PERMISSION_DENIED / UNAVAILABLE / INTERNAL with a DeniedHttpResponse (401 / 403 / 503 / 500) the
 * gateway sends to the client. A check that could not be decided is so a deny, whatever the
 * gateway's `failure_mode_allow` says. A request without an `http` attribute (Envoy's network
 * filter, or a malformed check) has no token: UNAUTHENTICATED with the plain `Bearer` challenge.
 */
export function createExtAuthzHandlers(deps: CallDependencies, check: GatewayCheck): UntypedServiceImplementation {
  const authorizationOf = (request: CheckRequestView) => request.authorization;
  const baseRemovals = check.options.passAuthorization ? 0 : 1;
  return {
    check: unary<CheckRequestView, CheckResponse | EncodedResponse>(
      deps,
      `/${AUTHORIZATION_SERVICE}/Check`,
      {
        // As ValidateToken with check_revocation: the database only while the revocation view is not fresh.
        usesDatabase: (request) => check.needsDatabase(authorizationOf(request)),
        successLogLevel: 'debug',
        answerFailure: (error, code) => {
          if (error instanceof DomainError) return denied(code, error.message, denialFor(error.kind, error.reason, error.retryAfterMs));
          // Not a domain error: already mapped (a lost or slow database is UNAVAILABLE; anything else INTERNAL, logged with an id).
          if (code === status.UNAVAILABLE) return denied(code, 'the service is temporarily unavailable', denialFor('unavailable', 'UNAVAILABLE'));
          return denied(status.INTERNAL, 'internal error', denialFor('internal', 'INTERNAL'));
        },
      },
      async (request) => {
        const decision = await check.decide({
          authorization: request.authorization,
          requiredRoles: parseRoleList(request.requiredRoles),
          headerNames: request.prefixed,
        });
        if (decision.headersToRemove.length !== baseRemovals) return allowed(decision);
        // The same token's answer is the same bytes every time: encoded once.
        let encoded = plainAllows.get(decision.claims);
        if (!encoded) {
          encoded = new EncodedResponse(Buffer.from(CheckResponseCodec.encode(allowed(decision)).finish()));
          plainAllows.set(decision.claims, encoded);
        }
        return encoded;
      },
    ),
  };
}

/**
 * The Authorization service definition with the request read by `readCheckRequest` (only what a
 * check needs) instead of the generated decoder; responses stay generated.
 */
export function authorizationServiceDefinition(headerPrefix: string) {
  const prefix = Buffer.from(headerPrefix.toLowerCase());
  return {
    ...AuthorizationService,
    check: { ...AuthorizationService.check, requestDeserialize: (bytes: Buffer): CheckRequestView => readCheckRequest(bytes, prefix) },
  };
}
