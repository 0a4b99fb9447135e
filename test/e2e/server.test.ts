import { Metadata, status, type handleUnaryCall, type ServerUnaryCall, type ServiceError } from '@grpc/grpc-js';
import { startApp, type RunningApp } from '../../src/app.js';
import { implementService } from '../../src/grpc/call.js';
import { DatabaseGate } from '../../src/persistence/call-scope.js';
import { createLogger } from '../../src/observability/logger.js';
import * as authProto from '../../src/generated/latchkey/auth/v1/auth_service.js';
import * as sessionProto from '../../src/generated/latchkey/session/v1/session_service.js';
import { authClient, call, errorDetails, healthClient, healthStatus, sessionClient } from '../support/clients.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { listMethods, listServices } from '../support/reflection.js';

/** The RPCs DESIGN.md's API contract lists, per service (and UnlockUser, issue 18). */
const AUTH_RPCS = [
  'Register', 'Login', 'RefreshToken', 'Logout', 'ValidateToken', 'GetJwks', 'ChangePassword', 'RequestPasswordReset',
  'ResetPassword', 'RequestEmailVerification', 'VerifyEmail', 'GetUser', 'DisableUser', 'EnableUser', 'SetUserRoles', 'UnlockUser',
].sort();
const SESSION_RPCS = ['GetSession', 'ListSessions', 'RevokeSession', 'RevokeAllSessions', 'WatchRevocations'].sort();

let db: TestDatabase;
let app: RunningApp;

beforeAll(async () => {
  db = await createTestDatabase();
  app = await startApp(testConfig(db.url, { GRPC_MAX_RECEIVE_MESSAGE_BYTES: '4096' }), createLogger('silent'));
});

afterAll(async () => {
  await app?.stop();
  await db?.drop();
});

describe('health', () => {
  it.each(['', 'latchkey.auth.v1.AuthService', 'latchkey.session.v1.SessionService'])('reports SERVING for %p', async (service) => {
    expect(await healthStatus(app.grpcPort, service)).toBe('SERVING');
  });

  it("reports SERVING for 'liveness', the name liveness probes check", async () => {
    expect(await healthStatus(app.grpcPort, 'liveness')).toBe('SERVING');
  });

  it('answers NOT_FOUND for a service it does not serve', async () => {
    expect(await healthStatus(app.grpcPort, 'latchkey.nothing.v1.Nothing')).toBe(`error:${status.NOT_FOUND}`);
  });
});

describe('reflection', () => {
  it('lists both Latchkey services, health and reflection', async () => {
    const services = await listServices(app.grpcPort);
    expect(services).toEqual(
      expect.arrayContaining(['grpc.health.v1.Health', 'latchkey.auth.v1.AuthService', 'latchkey.session.v1.SessionService']),
    );
  });

  it('describes every AuthService RPC in the design', async () => {
    expect(await listMethods(app.grpcPort, 'latchkey.auth.v1.AuthService')).toEqual(AUTH_RPCS);
  });

  it('describes every SessionService RPC in the design', async () => {
    expect(await listMethods(app.grpcPort, 'latchkey.session.v1.SessionService')).toEqual(SESSION_RPCS);
  });
});

/** Built and tested in the auth and account e2e files and session-service.test.ts. */
const BUILT = new Set([
  'Register', 'Login', 'RefreshToken', 'Logout', 'ValidateToken', 'GetJwks', 'ChangePassword', 'RequestPasswordReset', 'ResetPassword',
  'RequestEmailVerification', 'VerifyEmail', 'GetUser', 'DisableUser', 'EnableUser', 'SetUserRoles', 'UnlockUser',
  'GetSession', 'ListSessions', 'RevokeSession', 'RevokeAllSessions',
]);

describe('RPCs not built yet', () => {
  const unary = [
    ...Object.entries(authProto.AuthServiceService).map(([key, m]) => ({ key, path: m.path, client: 'auth' as const, stream: m.responseStream })),
    ...Object.entries(sessionProto.SessionServiceService).map(([key, m]) => ({ key, path: m.path, client: 'session' as const, stream: m.responseStream })),
  ].filter((m) => !m.stream && !BUILT.has(m.path.split('/').pop()!));

  it('leaves no unary RPC of the contract unbuilt', () => {
    expect(unary.map((m) => m.path)).toEqual([]);
  });

  it('answers a unary RPC that has no handler with UNIMPLEMENTED naming the RPC', async () => {
    const deps = {
      logger: createLogger('silent'),
      database: { available: true, reportFailure: () => undefined, check: async () => undefined },
      metrics: { rpcHandled: () => undefined },
      gate: new DatabaseGate({ maxCalls: 8, statementSlots: 1, statementTimeoutMs: 5_000, retryAfterMs: 1_000 }),
    };
    const service = implementService(deps, { getUser: authProto.AuthServiceService.getUser }, {});
    const handler = service.getUser as handleUnaryCall<unknown, unknown>;
    const error = await new Promise<ServiceError | null>((resolve) =>
      handler({ request: {}, metadata: new Metadata() } as ServerUnaryCall<unknown, unknown>, (e) => resolve(e as ServiceError | null)),
    );
    expect(error?.code).toBe(status.UNIMPLEMENTED);
    expect(error?.details).toBe('latchkey.auth.v1.AuthService.GetUser is not implemented yet');
    expect(errorDetails(error)).toEqual({ reason: 'UNIMPLEMENTED', domain: 'latchkey', fields: [] });
  });
});

describe('hostile transport input', () => {
  it('refuses a request above GRPC_MAX_RECEIVE_MESSAGE_BYTES with RESOURCE_EXHAUSTED and keeps serving', async () => {
    const c = authClient(app.grpcPort);
    try {
      const { error } = await call(c, 'register', { email: 'a@example.com', password: 'x'.repeat(8192), displayName: '' });
      expect(error?.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(await healthStatus(app.grpcPort)).toBe('SERVING');
    } finally {
      c.close();
    }
  });

  it('answers an unknown method with UNIMPLEMENTED', async () => {
    const c = authClient(app.grpcPort);
    try {
      const error = await new Promise<ServiceError | null>((resolve) =>
        c.makeUnaryRequest('/latchkey.auth.v1.AuthService/Nope', (x: Buffer) => x, (x: Buffer) => x, Buffer.alloc(0), (e) => resolve(e)),
      );
      expect(error?.code).toBe(status.UNIMPLEMENTED);
    } finally {
      c.close();
    }
  });

  it('answers a request whose bytes are not a valid message with INVALID_ARGUMENT and no parser text', async () => {
    const c = authClient(app.grpcPort);
    try {
      // A field-1 string that claims 100 bytes but carries 2: undecodable protobuf.
      const garbage = Buffer.from([0x0a, 100, 0x41, 0x42]);
      const error = await new Promise<ServiceError | null>((resolve) =>
        c.makeUnaryRequest('/latchkey.auth.v1.AuthService/Register', (x: Buffer) => x, (x: Buffer) => x, garbage, (e) => resolve(e)),
      );
      expect(error?.code).toBe(status.INVALID_ARGUMENT);
      expect(error?.details).toBe('the request is not a valid protobuf message for /latchkey.auth.v1.AuthService/Register');
      expect(errorDetails(error)).toEqual({ reason: 'INVALID_ARGUMENT', domain: 'latchkey', fields: [] });
      expect(await healthStatus(app.grpcPort)).toBe('SERVING');
    } finally {
      c.close();
    }
  });
});

describe('health with request bytes that are not a valid message', () => {
  // Field 2 with wire type 7, which does not exist. (The truncated string used above does not do:
  // protobufjs, which decodes health requests, reads a string past the end without complaint.)
  const garbage = Buffer.from([0x17, 0x00]);
  const MALFORMED = { reason: 'INVALID_ARGUMENT', domain: 'latchkey', fields: [] };

  it.each(['Check', 'List'])('%s answers INVALID_ARGUMENT (not INTERNAL), and health keeps answering', async (method) => {
    const c = healthClient(app.grpcPort);
    try {
      const path = `/grpc.health.v1.Health/${method}`;
      const error = await new Promise<ServiceError | null>((resolve) =>
        c.makeUnaryRequest(path, (x: Buffer) => x, (x: Buffer) => x, garbage, (e) => resolve(e)),
      );
      expect(error?.code).toBe(status.INVALID_ARGUMENT);
      expect(error?.details).toBe(`the request is not a valid protobuf message for ${path}`);
      expect(errorDetails(error)).toEqual(MALFORMED);
      expect(await healthStatus(app.grpcPort)).toBe('SERVING');
      expect(await healthStatus(app.grpcPort, 'liveness')).toBe('SERVING');
    } finally {
      c.close();
    }
  });

  it('Watch ends the stream with INVALID_ARGUMENT (not INTERNAL), and a well-formed Watch still streams the status', async () => {
    const c = healthClient(app.grpcPort);
    try {
      const path = '/grpc.health.v1.Health/Watch';
      const bad = c.makeServerStreamRequest(path, (x: Buffer) => x, (x: Buffer) => x, garbage);
      const messages: Buffer[] = [];
      bad.on('data', (m: Buffer) => messages.push(m));
      const error = await new Promise<ServiceError>((resolve) => bad.on('error', resolve));
      expect(messages).toEqual([]);
      expect(error.code).toBe(status.INVALID_ARGUMENT);
      expect(error.details).toBe(`the request is not a valid protobuf message for ${path}`);
      expect(errorDetails(error)).toEqual(MALFORMED);

      const good = c.makeServerStreamRequest(path, (x: { service: string }) => Buffer.from([0x0a, x.service.length, ...Buffer.from(x.service)]), (x: Buffer) => x, {
        service: 'liveness',
      });
      good.on('error', () => undefined);
      const first = await new Promise<Buffer>((resolve) => good.once('data', resolve));
      good.cancel();
      // HealthCheckResponse{status: SERVING (1)}
      expect(first).toEqual(Buffer.from([0x08, 0x01]));
    } finally {
      c.close();
    }
  });
});

describe('HTTP probes', () => {
  const get = (path: string, method = 'GET') => fetch(`http://127.0.0.1:${app.httpPort}${path}`, { method });

  it('/healthz and /readyz answer 200 while serving', async () => {
    const healthz = await get('/healthz');
    expect(healthz.status).toBe(200);
    expect(await healthz.json()).toEqual({ status: 'ok' });
    const readyz = await get('/readyz');
    expect(readyz.status).toBe(200);
    expect(await readyz.json()).toEqual({ status: 'ready' });
  });

  it('/metrics exposes per-RPC counts by code, latency histograms and database status', async () => {
    const c = authClient(app.grpcPort);
    try {
      await call(c, 'getJwks', {});
    } finally {
      c.close();
    }
    const response = await get('/metrics');
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const body = await response.text();
    // go-grpc-prometheus's names and labels, which the stock Grafana gRPC dashboards query.
    expect(body).toMatch(/^grpc_server_started_total\{grpc_type="unary",grpc_service="latchkey\.auth\.v1\.AuthService",grpc_method="GetJwks"\} [1-9]\d*$/m);
    expect(body).toMatch(/^grpc_server_handled_total\{grpc_type="unary",grpc_service="latchkey\.auth\.v1\.AuthService",grpc_method="GetJwks",grpc_code="OK"\} [1-9]\d*$/m);
    expect(body).toMatch(/^grpc_server_handling_seconds_count\{grpc_type="unary",grpc_service="latchkey\.auth\.v1\.AuthService",grpc_method="GetJwks"\} [1-9]\d*$/m);
    expect(body).toMatch(/^latchkey_login_failures_total\{reason="INVALID_CREDENTIALS"\} 0$/m);
    expect(body).not.toMatch(/^latchkey_grpc_server_handled_total/m);
    expect(body).toMatch(/^latchkey_database_up 1$/m);
    expect(body).toMatch(/^latchkey_password_hashes_running 0$/m);
    expect(body).toMatch(/^latchkey_password_hashes_queued 0$/m);
    expect(body).toMatch(/^latchkey_process_resident_memory_bytes \d+$/m);
  });

  it('answers 404 for unknown paths and 405 for other methods', async () => {
    expect((await get('/nope')).status).toBe(404);
    const post = await get('/readyz', 'POST');
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });
});
