import { fileURLToPath } from 'node:url';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatus } from 'grpc-health-check';
import type { AccountService } from '../domain/accounts/account-service.js';
import type { AuthService } from '../domain/auth/auth-service.js';
import type { CallerAuthenticator } from '../domain/callers.js';
import type { SessionService } from '../domain/sessions/session-service.js';
import { AuthServiceService } from '../generated/latchkey/auth/v1/auth_service.js';
import { SessionServiceService } from '../generated/latchkey/session/v1/session_service.js';
import { implementService, withCallCodecs, type CallDependencies } from './call.js';
import { createAuthHandlers } from './handlers/auth.js';
import type { SourceLimits, TrustedProxies } from '../domain/rate-limit.js';
import { AUTHORIZATION_SERVICE, authorizationServiceDefinition, createExtAuthzHandlers } from './handlers/ext-authz.js';
import type { GatewayCheck } from '../domain/gateway/gateway-check.js';
import { createSessionHandlers, type RevocationStreaming } from './handlers/session.js';
import { addHealthService } from './health.js';
import { OpenStreams } from './stream.js';
import { DomainError } from '../domain/errors.js';

export const AUTH_SERVICE = 'latchkey.auth.v1.AuthService';
export const SESSION_SERVICE = 'latchkey.session.v1.SessionService';
/** The health names Latchkey reports: overall ('') and each service. NOT_SERVING while the database is unreachable. */
export const HEALTH_SERVICES = ['', AUTH_SERVICE, SESSION_SERVICE, AUTHORIZATION_SERVICE] as const;
/**
 * A health name for liveness probes: SERVING from the moment the server listens until shutdown,
 * whatever the database does. Restarting a pod never brings a database back, so a liveness probe
 * must not follow readiness.
 */
export const LIVENESS_SERVICE = 'liveness';

/** Resolved from this file, which sits at the same depth under src/ and dist/. */
const PROTO_ROOT = fileURLToPath(new URL('../../proto', import.meta.url));

export interface GrpcServerOptions {
  readonly maxReceiveMessageBytes: number;
  readonly maxSendMessageBytes: number;
  readonly maxConcurrentStreams: number;
  readonly maxSessionMemoryMb: number;
  readonly keepaliveTimeMs: number;
  readonly keepaliveTimeoutMs: number;
  readonly maxConnectionAgeMs: number;
  readonly maxConnectionAgeGraceMs: number;
}

export interface GrpcServer {
  readonly server: Server;
  /** Readiness: the overall and per-service health names. */
  setServing(status: ServingStatus): void;
  /** Liveness: the `liveness` health name. */
  setAlive(alive: boolean): void;
  listen(host: string, port: number): Promise<number>;
  /**
   * Refuses new calls at once, ends open streams (WatchRevocations, health Watch) with UNAVAILABLE,
   * lets in-flight calls finish for up to `timeoutMs`, then cancels them.
   */
  shutdown(timeoutMs: number): Promise<{ forced: boolean }>;
}

export interface GrpcServices {
  /** The replica's revocation view: `check_revocation` needs no database while it is fresh. */
  readonly revocationView?: { readonly fresh: boolean };
  /** The revocation feed for WatchRevocations: ordered catch-up reads and this replica's live follower. */
  readonly revocations?: RevocationStreaming;
  readonly auth: AuthService;
  readonly accounts: AccountService;
  readonly sessions: SessionService;
  readonly callers: CallerAuthenticator;
  /** Per-source token buckets (RATE_LIMIT_*); none means no limit. */
  readonly sourceLimits?: SourceLimits;
  /** Peers trusted to report the end user's address (TRUSTED_PROXIES). */
  readonly trustedProxies?: TrustedProxies;
  /** Counts a failed Login by its reason (latchkey_login_failures_total). */
  readonly loginFailed?: (reason: string) => void;
  /** Gateway checks: `envoy.service.auth.v3.Authorization/Check` is served when given. */
  readonly gateway?: GatewayCheck;
}

/**
 * How long shutdown waits for open streams to deliver their UNAVAILABLE before resetting them: a
 * client that stopped reading never takes its status, and must not hold the shutdown.
 */
const STREAM_END_GRACE_MS = 500;

export function createGrpcServer(deps: CallDependencies, services: GrpcServices, options: GrpcServerOptions): GrpcServer {
  const server = new Server({
    'grpc.max_receive_message_length': options.maxReceiveMessageBytes,
    'grpc.max_send_message_length': options.maxSendMessageBytes,
    // Transport limits (docs/architecture.md, "Overload and deadlines"): what one connection can
    // make the server hold, dead peers detected by the server's own pings, and connections
    // recycled so that a mesh's long-lived ones rebalance across replicas.
    'grpc.max_concurrent_streams': options.maxConcurrentStreams,
    'grpc-node.max_session_memory': options.maxSessionMemoryMb,
    'grpc.keepalive_time_ms': options.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': options.keepaliveTimeoutMs,
    'grpc.max_connection_age_ms': options.maxConnectionAgeMs,
    'grpc.max_connection_age_grace_ms': options.maxConnectionAgeGraceMs,
    // Channelz stays on although nothing serves it: with 'grpc.enable_channelz': 0, grpc-js 1.14
    // stops tracking connections in the set forceShutdown() cancels, so a forced shutdown would
    // drop in-flight calls as UNAVAILABLE instead of CANCELLED (test/e2e/process.test.ts).
  });

  // Server streams never end by themselves: shutdown ends every one of them (see shutdown below).
  const streams = new OpenStreams();
  server.addService(withCallCodecs(AuthServiceService), implementService(deps, AuthServiceService, createAuthHandlers(deps, services)));
  server.addService(
    withCallCodecs(SessionServiceService),
    implementService(deps, SessionServiceService, createSessionHandlers({ ...deps, streams }, services)),
  );

  if (services.gateway) {
    const definition = authorizationServiceDefinition(services.gateway.options.headerPrefix);
    server.addService(withCallCodecs(definition), implementService(deps, definition, createExtAuthzHandlers(deps, services.gateway)));
  }

  const health = new HealthImplementation(Object.fromEntries([...HEALTH_SERVICES, LIVENESS_SERVICE].map((name) => [name, 'NOT_SERVING'])));
  addHealthService(server, health, { ...deps, streams });

  const reflectionDefinition = loadSync(
    [`${PROTO_ROOT}/latchkey/auth/v1/auth_service.proto`, `${PROTO_ROOT}/latchkey/session/v1/session_service.proto`, healthProtoPath],
    { includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
  );
  new ReflectionService(reflectionDefinition).addToServer(server);

  return {
    server,
    setServing(status) {
      for (const name of HEALTH_SERVICES) health.setStatus(name, status);
    },
    setAlive(alive) {
      health.setStatus(LIVENESS_SERVICE, alive ? 'SERVING' : 'NOT_SERVING');
    },
    listen(host, port) {
      return new Promise((resolve, reject) => {
        server.bindAsync(`${host}:${port}`, ServerCredentials.createInsecure(), (error, boundPort) => {
          if (error) reject(new Error(`cannot listen for gRPC on ${host}:${port} (GRPC_HOST, GRPC_PORT): ${error.message}`));
          else resolve(boundPort);
        });
      });
    },
    shutdown(timeoutMs) {
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve({ forced: true });
        }, timeoutMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve({ forced: false });
        });
        // After tryShutdown, so that no stream starts unseen: every open stream (WatchRevocations,
        // health Watch) ends now with UNAVAILABLE instead of holding the drain until the timeout.
        void streams.endAll(
          DomainError.unavailable('the server is shutting down; reconnect, to another replica if there is one (WatchRevocations: resume from the last cursor)'),
          Math.min(timeoutMs, STREAM_END_GRACE_MS),
        );
      });
    },
  };
}
