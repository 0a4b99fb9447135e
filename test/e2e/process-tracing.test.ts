/**
 * End-to-end: OpenTelemetry traces from the compiled `latchkey serve`, exported over OTLP/HTTP
 * (protobuf) to an in-process receiver, as a collector would get them.
 */
import { randomBytes } from 'node:crypto';
import { Metadata, status, type Client, type ServiceError } from '@grpc/grpc-js';
import type { LoginResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { register } from '../support/auth.js';
import { Children, within } from '../support/children.js';
import { authClient, call, errorDetails } from '../support/clients.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { startOtlpReceiver, SPAN_KIND_SERVER, type OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.js';
import { processEnv } from '../support/process-env.js';
import { startLatchkey, type LatchkeyProcess } from '../support/process.js';

const LOGIN = '/latchkey.auth.v1.AuthService/Login';
const EMAIL = 'traced@example.com';
const PASSWORD = 'correct horse battery';
/** Safety net for anything that should happen promptly; never an assertion on duration. */
const PROMPTLY = 20_000;

const children = new Children();
let database: TestDatabase;
let receiver: OtlpReceiver;

beforeAll(async () => {
  database = await createTestDatabase();
  receiver = await startOtlpReceiver();
});
afterAll(async () => {
  await children.killAll();
  await receiver?.close();
  await database?.drop();
});

/** A caller's W3C trace context: `traceparent` with a fresh trace id and parent span id, sampled. */
function callerContext(): { traceId: string; parentId: string; metadata: Metadata } {
  const traceId = randomBytes(16).toString('hex');
  const parentId = randomBytes(8).toString('hex');
  const metadata = new Metadata();
  metadata.set('traceparent', `00-${traceId}-${parentId}-01`);
  return { traceId, parentId, metadata };
}

async function eventually<T>(what: string, proc: LatchkeyProcess, find: () => T | undefined): Promise<T> {
  return within(
    (async () => {
      for (;;) {
        const found = find();
        if (found !== undefined) return found;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })(),
    PROMPTLY,
    what,
    proc,
  );
}

function login(port: number, password: string, metadata: Metadata): Promise<{ response?: LoginResponse; error?: ServiceError }> {
  const client = authClient(port);
  return call<object, LoginResponse>(client as unknown as Client, 'login', { email: EMAIL, password, client: { ipAddress: '203.0.113.7', userAgent: 'jest' } }, { metadata }).finally(() =>
    client.close(),
  );
}

describe('with OTEL_TRACES_EXPORTER=otlp', () => {
  let server: LatchkeyProcess & { grpcPort: number; httpPort: number };

  beforeAll(async () => {
    server = children.track(
      await startLatchkey(
        processEnv(database, {
          OTEL_TRACES_EXPORTER: 'otlp',
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
          OTEL_SERVICE_NAME: 'latchkey-under-test',
          OTEL_BSP_SCHEDULE_DELAY: '50',
        }),
      ),
    );
    const client = authClient(server.grpcPort);
    await register(client, EMAIL, PASSWORD);
    client.close();
  });

  it("exports a server span for Login whose parent is the caller's span, and the call's log line carries its trace_id and span_id", async () => {
    const caller = callerContext();
    const { response, error } = await login(server.grpcPort, PASSWORD, caller.metadata);
    expect(error).toBeUndefined();
    expect(response?.tokens?.accessToken).toBeTruthy();

    const span = await eventually('the Login server span', server, () =>
      receiver.spans.find((s) => s.traceId === caller.traceId && s.kind === SPAN_KIND_SERVER),
    );
    expect(span).toMatchObject({
      name: 'grpc.latchkey.auth.v1.AuthService/Login',
      parentSpanId: caller.parentId,
      service: 'latchkey-under-test',
      scope: '@opentelemetry/instrumentation-grpc',
    });
    expect(span.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(span.attributes).toMatchObject({ 'rpc.grpc.status_code': status.OK, 'rpc.response.status_code': 'OK' });
    expect(span.attributes['error.type']).toBeUndefined();

    // The call's one log line names the same trace and the server span.
    const line = await eventually('the Login log line', server, () => server.logs().find((l) => l.msg === 'rpc' && l.method === LOGIN && l.trace_id === caller.traceId));
    expect(line).toMatchObject({ code: 'OK', trace_id: caller.traceId, span_id: span.spanId });
  });

  it('exports the statements of the call as pg spans in the same trace, with no parameter values', async () => {
    const caller = callerContext();
    const { error } = await login(server.grpcPort, PASSWORD, caller.metadata);
    expect(error).toBeUndefined();

    const server_span = await eventually('the Login server span', server, () =>
      receiver.spans.find((s) => s.traceId === caller.traceId && s.kind === SPAN_KIND_SERVER),
    );
    // The user lookup, the session insert, the audit event...: wait until the server span and the
    // statements under it have all arrived (spans are exported as they end, the server's last).
    const statements = await eventually('pg spans', server, () => {
      const found = receiver.spans.filter((s) => s.traceId === caller.traceId && s.scope === '@opentelemetry/instrumentation-pg');
      return found.length >= 2 ? found : undefined;
    });
    const inTrace = new Set(receiver.spans.filter((s) => s.traceId === caller.traceId).map((s) => s.spanId));
    for (const statement of statements) {
      expect(inTrace.has(statement.parentSpanId) || statement.parentSpanId === server_span.spanId).toBe(true);
      expect(statement.attributes).toMatchObject({ 'db.system.name': 'postgresql', 'db.query.text': expect.any(String) });
      // No parameter attribute at all, and none of the call's values anywhere in the span.
      expect(Object.keys(statement.attributes).filter((key) => /param|values|bind/i.test(key))).toEqual([]);
      const text = JSON.stringify(statement);
      expect(text).not.toContain(EMAIL);
      expect(text).not.toContain(PASSWORD);
      expect(text).not.toContain('203.0.113.7');
    }
    expect(statements.map((s) => String(s.attributes['db.query.text']))).toEqual(expect.arrayContaining([expect.stringMatching(/\b(from|join) "?users"?/i)]));
  });

  it('marks a failed Login span with its gRPC code and ErrorInfo reason', async () => {
    const caller = callerContext();
    const { error } = await login(server.grpcPort, 'wrong password entirely', caller.metadata);
    expect(error?.code).toBe(status.UNAUTHENTICATED);
    expect(errorDetails(error).reason).toBe('INVALID_CREDENTIALS');

    const span = await eventually('the failed Login server span', server, () =>
      receiver.spans.find((s) => s.traceId === caller.traceId && s.kind === SPAN_KIND_SERVER),
    );
    expect(span.parentSpanId).toBe(caller.parentId);
    expect(span.attributes).toMatchObject({
      'rpc.grpc.status_code': status.UNAUTHENTICATED,
      'rpc.response.status_code': 'UNAUTHENTICATED',
      'error.type': 'INVALID_CREDENTIALS',
    });
    expect(span.status.code).toBe(2); // ERROR
    const line = await eventually('the failed Login log line', server, () => server.logs().find((l) => l.msg === 'rpc' && l.trace_id === caller.traceId));
    expect(line).toMatchObject({ method: LOGIN, code: 'UNAUTHENTICATED', reason: 'INVALID_CREDENTIALS', span_id: span.spanId });
    expect(receiver.rejected).toEqual([]);
  });

  it('counts failed logins by reason in latchkey_login_failures_total and latchkey_grpc_server_errors_total', async () => {
    const scrape = async () => (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
    const LOGIN_LABELS = 'grpc_service="latchkey.auth.v1.AuthService",grpc_method="Login"';
    // The earlier test's one wrong password.
    let body = await scrape();
    expect(body).toMatch(/^latchkey_login_failures_total\{reason="INVALID_CREDENTIALS"\} 1$/m);
    expect(body).toMatch(/^latchkey_login_failures_total\{reason="ACCOUNT_DISABLED"\} 0$/m);
    expect(body).toContain(`latchkey_grpc_server_errors_total{${LOGIN_LABELS},grpc_code="Unauthenticated",reason="INVALID_CREDENTIALS"} 1`);
    expect(body).toContain(`grpc_server_handled_total{grpc_type="unary",${LOGIN_LABELS},grpc_code="Unauthenticated"} 1`);

    await query(database.url, 'update users set disabled_at = now() where email = $1', [EMAIL]);
    const caller = callerContext();
    const { error } = await login(server.grpcPort, PASSWORD, caller.metadata);
    expect(error?.code).toBe(status.PERMISSION_DENIED);
    expect(errorDetails(error).reason).toBe('ACCOUNT_DISABLED');
    body = await scrape();
    expect(body).toMatch(/^latchkey_login_failures_total\{reason="ACCOUNT_DISABLED"\} 1$/m);
    expect(body).toMatch(/^latchkey_login_failures_total\{reason="INVALID_CREDENTIALS"\} 1$/m);
    expect(body).toContain(`grpc_server_handled_total{grpc_type="unary",${LOGIN_LABELS},grpc_code="PermissionDenied"} 1`);
    const span = await eventually('the refused Login server span', server, () => receiver.spans.find((s) => s.traceId === caller.traceId && s.kind === SPAN_KIND_SERVER));
    expect(span.attributes).toMatchObject({ 'rpc.response.status_code': 'PERMISSION_DENIED', 'error.type': 'ACCOUNT_DISABLED' });
  });
});

describe('without a trace exporter', () => {
  it('exports nothing and logs no trace ids, even with an endpoint and a caller traceparent', async () => {
    const server = children.track(await startLatchkey(processEnv(database, { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY: '50' })));
    const client = authClient(server.grpcPort);
    await register(client, 'untraced@example.com', PASSWORD).finally(() => client.close());
    const caller = callerContext();
    const before = receiver.spans.length;
    const { error } = await login(server.grpcPort, 'wrong password entirely', caller.metadata);
    expect(error?.code).toBe(status.UNAUTHENTICATED);
    const line = await eventually('the Login log line', server, () => server.logs().find((l) => l.msg === 'rpc' && l.method === LOGIN));
    expect(line.trace_id).toBeUndefined();
    expect(line.span_id).toBeUndefined();
    // Stop the server (SIGTERM flushes whatever it would export), then look.
    server.child.kill('SIGTERM');
    await within(server.exited, PROMPTLY, 'the process to exit', server);
    expect(receiver.spans.slice(before).filter((s) => s.traceId === caller.traceId)).toEqual([]);
    expect(server.logs().some((l) => 'trace_id' in l)).toBe(false);
  });
});
