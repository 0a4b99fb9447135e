import type { UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Caller, CallerAuthenticator } from '../../domain/callers.js';
import { variables } from '../../config/schema.js';
import { systemClock, type Clock } from '../../domain/clock.js';
import type { RevocationEvent as FeedEvent, RevocationFeedFollower } from '../../domain/revocations/events.js';
import { RevocationWatch, type WatchFeedReader, type WatchMessage } from '../../domain/revocations/watch.js';
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
  type WatchRevocationsRequest,
  type WatchRevocationsResponse,
} from '../../generated/latchkey/session/v1/session_service.js';
import { unary, type CallContext, type CallDependencies } from '../call.js';
import { credentialsOf } from '../credentials.js';
import { mapSource, serverStream, type OpenStreams } from '../stream.js';

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

/**
 * What WatchRevocations streams from (wired in app.ts). The limits come from the configuration
 * (MAX_REVOCATION_WATCHERS, REVOCATION_WATCH_BUFFER, OVERLOAD_RETRY_AFTER); left out, they take
 * those variables' defaults.
 */
// TODO(watch): app.ts should pass `maxWatchers: config.MAX_REVOCATION_WATCHERS`,
// `bufferLimit: config.REVOCATION_WATCH_BUFFER`, `retryAfterMs: config.OVERLOAD_RETRY_AFTER` and
// `clock` here (GrpcServices.revocations can simply be typed as RevocationStreaming).
export interface RevocationStreaming {
  readonly reader: WatchFeedReader;
  readonly follower: RevocationFeedFollower;
  /** Without a cursor, events that occurred within this long are sent first: ACCESS_TOKEN_TTL plus clock skew. */
  readonly relevanceMs: number;
  /** MAX_REVOCATION_WATCHERS: streams open at once. */
  readonly maxWatchers?: number;
  /** REVOCATION_WATCH_BUFFER: live events held for a consumer before its stream ends. */
  readonly bufferLimit?: number;
  /** OVERLOAD_RETRY_AFTER: the RetryInfo of a stream refused beyond `maxWatchers`. */
  readonly retryAfterMs?: number;
  readonly clock?: Clock;
}

const defaultOf = <N extends 'MAX_REVOCATION_WATCHERS' | 'REVOCATION_WATCH_BUFFER' | 'OVERLOAD_RETRY_AFTER'>(name: N): number =>
  variables[name].schema.parse(variables[name].default);

function toWatchResponse(message: WatchMessage): WatchRevocationsResponse {
  if (message.kind === 'in_sync') return { inSync: true, cursor: message.cursor, event: undefined };
  return { inSync: false, cursor: message.cursor, event: toRevocationEventMessage(message.event, message.cursor) };
}

function toRevocationEventMessage(event: FeedEvent, cursor: string) {
  if (event.kind === 'user') {
    return {
      cursor,
      sessionId: '',
      userId: event.userId,
      reason: RevocationReason.REVOCATION_REASON_ROLES_REMOVED,
      revokedAt: event.occurredAt,
      roles: [...event.roles],
    };
  }
  return { cursor, sessionId: event.sessionId, userId: event.userId, reason: REASONS[event.reason], revokedAt: event.occurredAt, roles: [] };
}

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
  deps: CallDependencies & { readonly streams: OpenStreams },
  services: { sessions: SessionService; callers: CallerAuthenticator; revocations?: RevocationStreaming },
): UntypedServiceImplementation {
  const { sessions, callers, revocations } = services;
  const callerOf = (context: CallContext): Promise<Caller> => callers.require(credentialsOf(context.metadata));

  return {
    ...(revocations && { watchRevocations: watchRevocationsHandler(deps, callers, revocations) }),

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

function watchRevocationsHandler(deps: CallDependencies & { readonly streams: OpenStreams }, callers: CallerAuthenticator, revocations: RevocationStreaming) {
  const bufferLimit = revocations.bufferLimit ?? defaultOf('REVOCATION_WATCH_BUFFER');
  const limits = {
    maxOpen: revocations.maxWatchers ?? defaultOf('MAX_REVOCATION_WATCHERS'),
    retryAfterMs: revocations.retryAfterMs ?? defaultOf('OVERLOAD_RETRY_AFTER'),
  };
  return serverStream<WatchRevocationsRequest, WatchRevocationsResponse>(
    deps,
    `${PREFIX}WatchRevocations`,
    { usesDatabase: true, ...limits, what: 'revocation watchers' },
    async (request, context) => {
      await callers.requireService(credentialsOf(context.metadata));
      const watch = new RevocationWatch(
        {
          reader: revocations.reader,
          follower: revocations.follower,
          relevanceMs: revocations.relevanceMs,
          bufferLimit,
          clock: revocations.clock ?? systemClock,
        },
        request.sinceCursor,
      );
      return mapSource(watch, toWatchResponse);
    },
  );
}
