import type { UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Caller, CallerAuthenticator } from '../../domain/callers.js';
import type { RevocationReason as StoredRevocationReason } from '../../domain/sessions/revocation.js';
import type { SessionStateFilter, SessionStatus } from '../../domain/sessions/session-state.js';
import type { RequestedStateFilter, SessionService, SessionView } from '../../domain/sessions/session-service.js';
import {
  RevocationReason,
  SessionState,
  type GetSessionRequest,
  type GetSessionResponse,
  type ListSessionsRequest,
  type ListSessionsResponse,
  type RevokeAllSessionsRequest,
  type RevokeAllSessionsResponse,
  type RevokeSessionRequest,
  type RevokeSessionResponse,
  type Session,
} from '../../generated/latchkey/session/v1/session_service.js';
import { unary, type CallContext, type CallDependencies } from '../call.js';
import { credentialsOf } from '../credentials.js';

const PREFIX = '/latchkey.session.v1.SessionService/';

/** Request filters by wire value; anything else (ts-proto passes unknown values as numbers) is UNRECOGNIZED. */
const STATE_FILTERS: ReadonlyMap<number, SessionStateFilter> = new Map([
  [SessionState.SESSION_STATE_UNSPECIFIED, 'UNSPECIFIED'],
  [SessionState.SESSION_STATE_ACTIVE, 'ACTIVE'],
  [SessionState.SESSION_STATE_REVOKED, 'REVOKED'],
  [SessionState.SESSION_STATE_EXPIRED, 'EXPIRED'],
]);

const STATES: Record<SessionStatus, SessionState> = {
  ACTIVE: SessionState.SESSION_STATE_ACTIVE,
  REVOKED: SessionState.SESSION_STATE_REVOKED,
  EXPIRED: SessionState.SESSION_STATE_EXPIRED,
};

const REASONS: Record<StoredRevocationReason, RevocationReason> = {
  LOGOUT: RevocationReason.REVOCATION_REASON_LOGOUT,
  REVOKED_BY_USER: RevocationReason.REVOCATION_REASON_REVOKED_BY_USER,
  REVOKED_BY_SERVICE: RevocationReason.REVOCATION_REASON_REVOKED_BY_SERVICE,
  REFRESH_TOKEN_REUSED: RevocationReason.REVOCATION_REASON_REFRESH_TOKEN_REUSED,
  PASSWORD_CHANGED: RevocationReason.REVOCATION_REASON_PASSWORD_CHANGED,
  PASSWORD_RESET: RevocationReason.REVOCATION_REASON_PASSWORD_RESET,
  USER_DISABLED: RevocationReason.REVOCATION_REASON_USER_DISABLED,
  SESSION_LIMIT: RevocationReason.REVOCATION_REASON_SESSION_LIMIT,
};

function stateFilterOf(state: SessionState): RequestedStateFilter {
  return STATE_FILTERS.get(state) ?? 'UNRECOGNIZED';
}

function toSessionMessage(session: SessionView): Session {
  return {
    id: session.id,
    userId: session.userId,
    ipAddress: session.ipAddress,
    userAgent: session.userAgent,
    deviceName: session.deviceName,
    createdAt: session.createdAt,
    lastUsedAt: session.lastUsedAt,
    idleExpiresAt: session.idleExpiresAt,
    absoluteExpiresAt: session.absoluteExpiresAt,
    revokedAt: session.revokedAt ?? undefined,
    current: session.current,
    state: STATES[session.status],
    revocationReason: session.revocationReason ? REASONS[session.revocationReason] : RevocationReason.REVOCATION_REASON_UNSPECIFIED,
  };
}

/**
 * SessionService handlers: they translate protobuf messages to domain calls and back, nothing more.
 * Every one needs a credential; who may do what is the domain's rule. Methods not returned here
 * answer UNIMPLEMENTED naming the RPC (see implementService).
 */
export function createSessionHandlers(
  deps: CallDependencies,
  services: { sessions: SessionService; callers: CallerAuthenticator },
): UntypedServiceImplementation {
  const { sessions, callers } = services;
  const callerOf = (context: CallContext): Promise<Caller> => callers.require(credentialsOf(context.metadata));

  return {
    getSession: unary<GetSessionRequest, GetSessionResponse>(deps, `${PREFIX}GetSession`, { usesDatabase: true }, async (request, context) => {
      const session = await sessions.getSession(await callerOf(context), { sessionId: request.sessionId });
      return { session: toSessionMessage(session) };
    }),

    listSessions: unary<ListSessionsRequest, ListSessionsResponse>(deps, `${PREFIX}ListSessions`, { usesDatabase: true }, async (request, context) => {
      const page = await sessions.listSessions(await callerOf(context), {
        userId: request.userId,
        pageSize: request.pageSize,
        pageToken: request.pageToken,
        state: stateFilterOf(request.state),
      });
      return { sessions: page.sessions.map(toSessionMessage), nextPageToken: page.nextPageToken };
    }),

    revokeSession: unary<RevokeSessionRequest, RevokeSessionResponse>(deps, `${PREFIX}RevokeSession`, { usesDatabase: true }, async (request, context) => {
      const session = await sessions.revokeSession(await callerOf(context), { sessionId: request.sessionId });
      return { session: toSessionMessage(session) };
    }),

    revokeAllSessions: unary<RevokeAllSessionsRequest, RevokeAllSessionsResponse>(
      deps,
      `${PREFIX}RevokeAllSessions`,
      { usesDatabase: true },
      async (request, context) => {
        const revokedCount = await sessions.revokeAllSessions(await callerOf(context), {
          userId: request.userId,
          exceptSessionId: request.exceptSessionId,
        });
        return { revokedCount };
      },
    ),
  };
}
