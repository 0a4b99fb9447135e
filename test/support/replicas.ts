import { type Client, Metadata, type ServiceError } from '@grpc/grpc-js';
import { startApp, type AppOverrides, type RunningApp } from '../../src/app.js';
import type { AuthServiceClient, ValidateTokenResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import type { SessionServiceClient } from '../../src/generated/latchkey/session/v1/session_service.js';
import { createLogger } from '../../src/observability/logger.js';
import { authClient, call, errorDetails, sessionClient } from './clients.js';
import { testConfig } from './config.js';
import { metricValue } from './metrics.js';
import { StatementLog } from './statements.js';

/**
 * The follower's own reads of the feed. On PostgreSQL they go over a connection of its own (never
 * in the ORM log); on the embedded database the follower polls through the ORM's one connection,
 * so they show up in the log: they are the follower's background work, not the call's.
 */
const FOLLOWER_READ = /^select id::text, xid::text, kind, session_id, user_id, reason, roles, occurred_at, xid < pg_snapshot_xmin\(pg_current_snapshot\(\)\) as settled from revocation_events /;

/** One in-process server with a trace-level logger of its own: every SQL statement it sends is counted. */
export interface Replica {
  readonly name: string;
  readonly app: RunningApp;
  readonly log: StatementLog;
  readonly auth: AuthServiceClient;
  readonly sessions: SessionServiceClient;
  rpc<Res>(method: string, request: object, metadata?: Metadata): Promise<{ response?: Res; error?: ServiceError }>;
  sessionRpc<Res>(method: string, request: object, metadata?: Metadata): Promise<{ response?: Res; error?: ServiceError }>;
  /**
   * ValidateToken with check_revocation: the outcome ('OK' or the ErrorInfo reason) and the SQL
   * statements this server sent while the call ran (the follower's own reads left out).
   */
  checkRevocation(accessToken: string): Promise<{ outcome: string; statements: string[]; response?: ValidateTokenResponse }>;
  /** latchkey_revocation_view_fallbacks_total now. */
  fallbacks(): Promise<number>;
  close(): Promise<void>;
}

export async function startReplica(name: string, databaseUrl: string, overrides: Record<string, string> = {}, appOverrides: AppOverrides = {}): Promise<Replica> {
  const log = new StatementLog();
  const app = await startApp(
    // The database monitor's ping would otherwise land in a counted window now and then (it is
    // filtered on the embedded database, and on its own connection on PostgreSQL anyway).
    testConfig(databaseUrl, { DATABASE_HEALTH_INTERVAL: '10m', ...overrides }),
    createLogger('trace', log),
    undefined,
    appOverrides,
  );
  const auth = authClient(app.grpcPort);
  const sessions = sessionClient(app.grpcPort);
  const replica: Replica = {
    name,
    app,
    log,
    auth,
    sessions,
    rpc: (method, request, metadata) => call(auth as unknown as Client, method, request, metadata ? { metadata } : {}),
    sessionRpc: (method, request, metadata) => call(sessions as unknown as Client, method, request, metadata ? { metadata } : {}),
    async checkRevocation(accessToken) {
      log.statements = [];
      const { response, error } = await call<object, ValidateTokenResponse>(auth as unknown as Client, 'validateToken', {
        accessToken,
        checkRevocation: true,
      });
      const statements = log.statements.filter((statement) => !FOLLOWER_READ.test(statement));
      log.statements = [];
      return { outcome: error ? (errorDetails(error).reason ?? `code ${error.code}`) : 'OK', statements, response };
    },
    async fallbacks() {
      return (await metricValue(app.httpPort, 'latchkey_revocation_view_fallbacks_total')) ?? Number.NaN;
    },
    async close() {
      auth.close();
      sessions.close();
      await app.stop();
    },
  };
  return replica;
}

/** Metadata with a service API key, or a bearer token. */
export function withApiKey(apiKey: string): Metadata {
  const metadata = new Metadata();
  metadata.set('x-api-key', apiKey);
  return metadata;
}

export function withBearer(accessToken: string): Metadata {
  const metadata = new Metadata();
  metadata.set('authorization', `Bearer ${accessToken}`);
  return metadata;
}
