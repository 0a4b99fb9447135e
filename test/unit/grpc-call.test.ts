import { jest } from '@jest/globals';
import { EventEmitter } from 'node:events';
import { Writable } from 'node:stream';
import { Metadata, status, type ServerUnaryCall, type ServiceError } from '@grpc/grpc-js';
import { DomainError } from '../../src/domain/errors.js';
import { EncodedResponse, MALFORMED_REQUEST, unary, withCallCodecs } from '../../src/grpc/call.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics, GO_CODE_NAMES } from '../../src/observability/metrics.js';
import { DatabaseGate } from '../../src/persistence/call-scope.js';
import { errorDetails } from '../support/clients.js';

function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: createLogger('info', destination), lines };
}

function fakeCall<Req>(request: Req, metadata = new Metadata()): ServerUnaryCall<Req, unknown> {
  return Object.assign(new EventEmitter(), { request, metadata, getPeer: () => 'ipv4:127.0.0.1:1234', getDeadline: () => Infinity }) as unknown as ServerUnaryCall<Req, unknown>;
}

function testGate(): DatabaseGate {
  return new DatabaseGate({ maxCalls: 8, statementSlots: 2, statementTimeoutMs: 5_000, retryAfterMs: 1_000 });
}

async function invoke<Req>(
  handler: (request: Req) => Promise<unknown>,
  request: Req,
  database = { available: true, reportFailure: jest.fn(), check: jest.fn(async () => undefined) },
  usesDatabase = true,
  metadata = new Metadata(),
) {
  const { logger, lines } = capturingLogger();
  const metrics = { rpcHandled: jest.fn() };
  const wrapped = unary({ logger, database, metrics, gate: testGate() }, '/test.v1.Test/Do', { usesDatabase }, handler);
  const result = await new Promise<{ error: Partial<ServiceError> | null; response: unknown }>((resolve) =>
    wrapped(fakeCall(request, metadata), (error, response) => resolve({ error: error as Partial<ServiceError> | null, response })),
  );
  await new Promise((r) => setImmediate(r));
  return { ...result, lines, database, metrics };
}

describe('unary handler wrapper', () => {
  it('returns the response and logs one line with method, code and duration, never the payload', async () => {
    const { error, response, lines, metrics } = await invoke(async () => ({ ok: true }), { password: 'correct horse battery staple' });
    expect(error).toBeNull();
    expect(metrics.rpcHandled).toHaveBeenCalledWith('/test.v1.Test/Do', 'OK', expect.any(Number), undefined, 'unary');
    expect(response).toEqual({ ok: true });
    const rpcLines = lines.filter((l) => l.msg === 'rpc');
    expect(rpcLines).toHaveLength(1);
    expect(rpcLines[0]).toMatchObject({ method: '/test.v1.Test/Do', code: 'OK' });
    expect(typeof rpcLines[0]!.durationMs).toBe('number');
    expect(JSON.stringify(lines)).not.toContain('correct horse');
  });

  it('logs the successes of a hot-path RPC at debug, and its failures at info, while counting every call', async () => {
    const run = async (level: 'info' | 'debug', handler: () => Promise<unknown>) => {
      const lines: Record<string, unknown>[] = [];
      const destination = new Writable({
        write(chunk: Buffer, _encoding, done) {
          for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
          done();
        },
      });
      const metrics = { rpcHandled: jest.fn() };
      const wrapped = unary(
        { logger: createLogger(level, destination), database: { available: true, reportFailure: jest.fn(), check: jest.fn(async () => undefined) }, metrics, gate: testGate() },
        '/test.v1.Test/Check',
        { usesDatabase: false, successLogLevel: 'debug' },
        handler,
      );
      await new Promise((resolve) => wrapped(fakeCall({}), resolve));
      await new Promise((r) => setImmediate(r));
      return { rpc: lines.filter((l) => l.msg === 'rpc'), metrics };
    };
    const ok = await run('info', async () => ({}));
    expect(ok.rpc).toEqual([]);
    expect(ok.metrics.rpcHandled).toHaveBeenCalledWith('/test.v1.Test/Check', 'OK', expect.any(Number), undefined, 'unary');
    const failed = await run('info', async () => {
      throw new DomainError('TOKEN_INVALID', 'the access token is invalid');
    });
    expect(failed.rpc).toEqual([expect.objectContaining({ level: 'info', code: 'UNAUTHENTICATED', reason: 'TOKEN_INVALID' })]);
    const debug = await run('debug', async () => ({}));
    expect(debug.rpc).toEqual([expect.objectContaining({ level: 'debug', code: 'OK', method: '/test.v1.Test/Check' })]);
  });

  it('logs the caller\'s x-request-id, bounded and printable, for correlation with mesh access logs', async () => {
    const metadata = new Metadata();
    metadata.set('x-request-id', 'a1b2c3-d4');
    const { lines } = await invoke(async () => ({}), {}, undefined, true, metadata);
    expect(lines.find((l) => l.msg === 'rpc')).toMatchObject({ requestId: 'a1b2c3-d4' });

    // grpc-js drops values with control characters before they reach a handler; the wrapper
    // does not depend on that (a fake Metadata hands it one directly).
    const hostile = { get: () => [`evil\u0007${'x'.repeat(500)}`] } as unknown as Metadata;
    const { lines: hostileLines } = await invoke(async () => ({}), {}, undefined, true, hostile);
    const requestId = hostileLines.find((l) => l.msg === 'rpc')!.requestId as string;
    expect(requestId).toHaveLength(128);
    expect(requestId.startsWith('evil?xxx')).toBe(true);

    const { lines: none } = await invoke(async () => ({}), {});
    expect(none.find((l) => l.msg === 'rpc')).not.toHaveProperty('requestId');
  });

  it('answers CANCELLED for work abandoned because the caller went away, without an error log line or a database report', async () => {
    const { error, lines, database } = await invoke(async () => {
      const controller = new AbortController();
      controller.abort();
      controller.signal.throwIfAborted();
    }, {});
    expect(error).toMatchObject({ code: status.CANCELLED, details: 'the call was cancelled' });
    expect(lines.filter((l) => l.level === 'error')).toEqual([]);
    expect(database.reportFailure).not.toHaveBeenCalled();
  });

  it('re-evaluates a per-request usesDatabase, failing fast only the requests that need the database', async () => {
    const { logger } = capturingLogger();
    const database = { available: false, reportFailure: jest.fn(), check: jest.fn(async () => undefined) };
    const wrapped = unary<{ db: boolean }, object>({ logger, database, metrics: { rpcHandled: jest.fn() }, gate: testGate() }, '/t.v1.T/Do', { usesDatabase: (r) => r.db }, async () => ({}));
    const run = (request: { db: boolean }) =>
      new Promise<Partial<ServiceError> | null>((resolve) => wrapped(fakeCall(request), (e) => resolve(e as Partial<ServiceError> | null)));
    expect(await run({ db: false })).toBeNull();
    expect(await run({ db: true })).toMatchObject({ code: status.UNAVAILABLE });
  });

  it('maps a domain error to its code, message, ErrorInfo and BadRequest', async () => {
    const { error, lines, metrics } = await invoke(async () => {
      throw DomainError.invalidArgument([
        { field: 'email', description: 'must be an email address' },
        { field: 'client.ip_address', description: 'must be an IP address' },
      ]);
    }, {});
    expect(error?.code).toBe(status.INVALID_ARGUMENT);
    expect(error?.details).toBe('invalid request: email, client.ip_address');
    expect(errorDetails(error as ServiceError)).toEqual({
      reason: 'INVALID_ARGUMENT',
      domain: 'latchkey',
      fields: ['email', 'client.ip_address'],
    });
    expect(lines.find((l) => l.msg === 'rpc')).toMatchObject({ code: 'INVALID_ARGUMENT', reason: 'INVALID_ARGUMENT' });
    expect(metrics.rpcHandled).toHaveBeenCalledWith('/test.v1.Test/Do', 'INVALID_ARGUMENT', expect.any(Number), 'INVALID_ARGUMENT', 'unary');
  });

  it.each([
    ['EMAIL_TAKEN', status.ALREADY_EXISTS],
    ['INVALID_CREDENTIALS', status.UNAUTHENTICATED],
    ['ACCOUNT_DISABLED', status.PERMISSION_DENIED],
    ['SESSION_NOT_FOUND', status.NOT_FOUND],
    ['RATE_LIMITED', status.RESOURCE_EXHAUSTED],
    ['CURSOR_EXPIRED', status.OUT_OF_RANGE],
    ['EMAIL_ALREADY_VERIFIED', status.FAILED_PRECONDITION],
  ] as const)('sends %s with the one code the contract gives it', async (reason, code) => {
    const { error } = await invoke(async () => {
      throw new DomainError(reason, 'x');
    }, {});
    expect(error?.code).toBe(code);
    expect(errorDetails(error as ServiceError).reason).toBe(reason);
  });

  it('turns an unexpected error into INTERNAL with a generic message and logs the original under the same id', async () => {
    const { error, lines } = await invoke(async () => {
      throw new TypeError('cannot read secret-password-123 of undefined');
    }, {});
    expect(error?.code).toBe(status.INTERNAL);
    const match = /^internal error \(reference ([0-9a-f-]{36})\)$/.exec(error!.details!);
    expect(match).not.toBeNull();
    expect(error!.details).not.toContain('secret-password-123');
    const info = errorDetails(error as ServiceError);
    expect(info.reason).toBe('INTERNAL');
    const logged = lines.find((l) => l.msg === 'unexpected error in handler');
    expect(logged).toMatchObject({ errorId: match![1], method: '/test.v1.Test/Do' });
    expect(JSON.stringify(logged)).toContain('secret-password-123');
  });

  it('turns a lost database connection into UNAVAILABLE and reports it to the monitor', async () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    const wrappedByOrm = new Error('driver failure', { cause: refused });
    const { error, database } = await invoke(async () => {
      throw wrappedByOrm;
    }, {});
    expect(error?.code).toBe(status.UNAVAILABLE);
    expect(errorDetails(error as ServiceError).reason).toBe('UNAVAILABLE');
    expect(error?.details).not.toContain('5432');
    expect(database.reportFailure).toHaveBeenCalledTimes(1);
  });

  it('fails fast with UNAVAILABLE, without running the handler, while the database is known to be down', async () => {
    const handler = jest.fn(async () => ({}));
    const { error } = await invoke(handler, {}, { available: false, reportFailure: jest.fn(), check: jest.fn(async () => undefined) });
    expect(error?.code).toBe(status.UNAVAILABLE);
    expect(handler).not.toHaveBeenCalled();
  });

  it('runs handlers that do not need the database while it is down', async () => {
    const { error, response } = await invoke(async () => ({ fine: 1 }), {}, { available: false, reportFailure: jest.fn(), check: jest.fn(async () => undefined) }, false);
    expect(error).toBeNull();
    expect(response).toEqual({ fine: 1 });
  });

  it('rejects an undecodable request with INVALID_ARGUMENT before the handler runs', async () => {
    const handler = jest.fn(async () => ({}));
    const { error } = await invoke(handler, MALFORMED_REQUEST as unknown as object);
    expect(error?.code).toBe(status.INVALID_ARGUMENT);
    expect(handler).not.toHaveBeenCalled();
  });
});

describe('call context', () => {
  it('gives the handler an abort signal that fires when the client cancels', async () => {
    const { logger } = capturingLogger();
    const call = fakeCall({});
    let seen: AbortSignal | undefined;
    let release!: () => void;
    const wrapped = unary(
      { logger, database: { available: true, reportFailure: jest.fn(), check: jest.fn(async () => undefined) }, metrics: { rpcHandled: jest.fn() }, gate: testGate() },
      '/test.v1.Test/Do',
      { usesDatabase: false },
      async (_request, context) => {
        seen = context.signal;
        await new Promise<void>((resolve) => (release = resolve));
        return {};
      },
    );
    const done = new Promise((resolve) => wrapped(call, resolve));
    await new Promise((r) => setImmediate(r));
    expect(seen?.aborted).toBe(false);
    call.emit('cancelled');
    expect(seen?.aborted).toBe(true);
    release();
    await done;
  });

  it('gives an already-aborted signal when the call was cancelled before the handler asked', async () => {
    const { logger } = capturingLogger();
    const call = Object.assign(fakeCall({}), { cancelled: true });
    let aborted: boolean | undefined;
    const wrapped = unary(
      { logger, database: { available: true, reportFailure: jest.fn(), check: jest.fn(async () => undefined) }, metrics: { rpcHandled: jest.fn() }, gate: testGate() },
      '/test.v1.Test/Do',
      { usesDatabase: false },
      async (_request, context) => {
        aborted = context.signal.aborted;
        return {};
      },
    );
    await new Promise((resolve) => wrapped(call, resolve));
    expect(aborted).toBe(true);
  });
});

describe('withCallCodecs', () => {
  const definition = {
    Do: {
      path: '/test.v1.Test/Do',
      requestStream: false,
      responseStream: false,
      requestDeserialize: (bytes: Buffer) => {
        if (bytes.length === 0) throw new Error('truncated');
        return { size: bytes.length };
      },
      responseSerialize: (value: { text: string }) => Buffer.from(value.text),
    },
  };

  it('turns undecodable requests into the malformed-request marker, and passes good ones through', () => {
    const wrapped = withCallCodecs(definition).Do;
    expect(wrapped.requestDeserialize(Buffer.alloc(0))).toBe(MALFORMED_REQUEST);
    expect(wrapped.requestDeserialize(Buffer.from('ab'))).toEqual({ size: 2 });
  });

  it('sends a pre-encoded response as it is, and encodes any other', () => {
    const wrapped = withCallCodecs(definition).Do;
    const bytes = Buffer.from([8, 1]);
    expect(wrapped.responseSerialize(new EncodedResponse(bytes) as never)).toBe(bytes);
    expect(wrapped.responseSerialize({ text: 'hi' } as never)).toEqual(Buffer.from('hi'));
  });
});

describe('RPC metrics in the go-grpc-prometheus shape', () => {
  it('labels calls by type, service, method and Go code name, and keeps the reason in latchkey_grpc_server_errors_total', async () => {
    const metrics = createMetrics();
    metrics.rpcStarted('/latchkey.auth.v1.AuthService/Login');
    metrics.rpcHandled('/latchkey.auth.v1.AuthService/Login', 'UNAUTHENTICATED', 0.2, 'INVALID_CREDENTIALS');
    metrics.rpcStarted('/latchkey.session.v1.SessionService/WatchRevocations', 'server_stream');
    metrics.rpcHandled('/latchkey.session.v1.SessionService/WatchRevocations', 'RESOURCE_EXHAUSTED', 0.001, 'OVERLOADED', 'server_stream');
    metrics.loginFailed('INVALID_CREDENTIALS');
    const body = await metrics.registry.metrics();
    expect(body).toContain('grpc_server_started_total{grpc_type="unary",grpc_service="latchkey.auth.v1.AuthService",grpc_method="Login"} 1');
    expect(body).toContain('grpc_server_handled_total{grpc_type="unary",grpc_service="latchkey.auth.v1.AuthService",grpc_method="Login",grpc_code="Unauthenticated"} 1');
    expect(body).toContain('grpc_server_handling_seconds_bucket{le="0.25",grpc_type="unary",grpc_service="latchkey.auth.v1.AuthService",grpc_method="Login"} 1');
    expect(body).toContain(
      'grpc_server_handled_total{grpc_type="server_stream",grpc_service="latchkey.session.v1.SessionService",grpc_method="WatchRevocations",grpc_code="ResourceExhausted"} 1',
    );
    expect(body).toContain(
      'latchkey_grpc_server_errors_total{grpc_service="latchkey.auth.v1.AuthService",grpc_method="Login",grpc_code="Unauthenticated",reason="INVALID_CREDENTIALS"} 1',
    );
    expect(body).toContain('latchkey_login_failures_total{reason="INVALID_CREDENTIALS"} 1');
    expect(body).toContain('latchkey_login_failures_total{reason="ACCOUNT_DISABLED"} 0');
  });

  it('names every gRPC status code as Go does', () => {
    const names = Object.keys(status).filter((key) => Number.isNaN(Number(key)));
    expect(Object.keys(GO_CODE_NAMES).sort()).toEqual(names.sort());
    expect(GO_CODE_NAMES.CANCELLED).toBe('Canceled');
    expect(GO_CODE_NAMES.DEADLINE_EXCEEDED).toBe('DeadlineExceeded');
  });
});
