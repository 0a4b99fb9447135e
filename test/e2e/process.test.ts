/**
 * End-to-end: the compiled `latchkey serve` as an orchestrator runs it — started, probed,
 * stopped with SIGTERM while calls are in flight, restarted on the same data.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { RegisterRequest, RegisterResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { Children, tryConnect, within } from '../support/children.js';
import { healthStatus } from '../support/clients.js';
import { testEnv } from '../support/config.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { httpGet, watchHealth } from '../support/probes.js';
import { processEnv } from '../support/process-env.js';
import { startLatchkey, type LatchkeyProcess } from '../support/process.js';
import { grpcFrame, openRawGrpcCall, type RawGrpcCall } from '../support/raw-grpc.js';
import { migrationsList } from '../../src/persistence/migrations/index.js';

const AUTH_SERVICE = 'latchkey.auth.v1.AuthService';
const SESSION_SERVICE = 'latchkey.session.v1.SessionService';
const REGISTER_PATH = `/${AUTH_SERVICE}/Register`;
/** Safety net for anything that should happen promptly; never an assertion on duration. */
const PROMPTLY = 15_000;

const children = new Children();
const rawCalls: RawGrpcCall[] = [];
const sockets: net.Socket[] = [];
afterEach(async () => {
  for (const raw of rawCalls.splice(0)) raw.destroy();
  for (const socket of sockets.splice(0)) socket.destroy();
  await children.killAll();
});

function logLine(proc: LatchkeyProcess, msg: string): Record<string, unknown> | undefined {
  return proc.logs().find((line) => line.msg === msg);
}

/** The index of the first log line matching `predicate`, to check the order things happened in. */
function logIndex(proc: LatchkeyProcess, predicate: (line: Record<string, unknown>) => boolean): number {
  return proc.logs().findIndex(predicate);
}

/** A Register request whose encoding is comfortably longer than one byte, so it can be split. */
const registerMessage = Buffer.from(
  RegisterRequest.encode({ email: 'in-flight@example.com', password: 'correct horse battery staple', displayName: 'In Flight' }).finish(),
);

describe('graceful shutdown', () => {
  let database: TestDatabase;
  let env: Record<string, string>;

  beforeAll(async () => {
    database = await createTestDatabase();
    env = processEnv(database);
  });
  afterAll(async () => {
    await children.killAll();
    await database?.drop();
  });

  it('SIGTERM lets a call that is mid-request finish with its real status, refuses new work, and exits 0', async () => {
    // SHUTDOWN_TIMEOUT far above anything this test waits for, so "not forced" is meaningful.
    const server = children.track(await startLatchkey({ ...env, SHUTDOWN_TIMEOUT: '60s' }));
    const watch = watchHealth(server.grpcPort);
    expect(await watch.until('SERVING')).toBe(true);

    // Half a request: the 5-byte prefix announces the whole message, only part of it follows.
    const frame = grpcFrame(registerMessage);
    const split = 5 + Math.floor(registerMessage.length / 2);
    const raw = await openRawGrpcCall(server.grpcPort, REGISTER_PATH);
    rawCalls.push(raw);
    await raw.write(frame.subarray(0, split));
    await raw.flush(); // the server has now seen the stream and its partial message

    server.child.kill('SIGTERM');

    // Shutdown has begun: the open Watch hears NOT_SERVING, the half-done call's connection gets
    // a graceful GOAWAY that still covers its stream, and the listener refuses new connections.
    expect(await watch.until('NOT_SERVING', PROMPTLY)).toBe(true);
    expect(watch.statuses).toEqual(['SERVING', 'NOT_SERVING']);
    const goaway = await within(raw.goaway, PROMPTLY, 'GOAWAY on the in-flight connection', server);
    expect(goaway.code).toBe(0); // NO_ERROR: graceful
    expect(goaway.lastStreamId).toBeGreaterThanOrEqual(raw.stream.id!);
    expect(await tryConnect(server.grpcPort)).toBe('ECONNREFUSED');
    expect(await healthStatus(server.grpcPort)).toBe(`error:${status.UNAVAILABLE}`);
    // Plain-HTTP readiness says the same while the in-flight call drains.
    expect(await httpGet(server.httpPort, '/readyz')).toEqual({ status: 503, body: '{"status":"not ready"}' });
    expect(server.child.exitCode).toBeNull();
    expect(logLine(server, 'latchkey stopped')).toBeUndefined();

    // Shutdown ended the Watch stream itself (UNAVAILABLE), so it does not hold the drain.
    expect((await within(watch.ended, PROMPTLY, 'the Watch stream to end', server)).code).toBe(status.UNAVAILABLE);
    watch.cancel();

    // The rest of the request arrives after SIGTERM; the call completes with a real status.
    await raw.end(frame.subarray(split));
    const outcome = await within(raw.outcome, PROMPTLY, 'the in-flight call to complete', server);
    expect(outcome.rstCode).toBe(0); // closed normally, not reset/cancelled
    expect(outcome.headers?.[':status']).toBe(200);
    // The call did its real work after SIGTERM: the user exists.
    expect(outcome.status).toMatchObject({ code: status.OK });
    const registered = RegisterResponse.decode(outcome.data.subarray(5));
    expect(registered.user).toMatchObject({ email: 'in-flight@example.com', displayName: 'In Flight' });

    const exit = await within(server.exited, PROMPTLY, 'the process to exit', server);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(logLine(server, 'shutting down')).toMatchObject({ signal: 'SIGTERM', shutdownTimeoutMs: 60_000 });
    expect(logLine(server, 'latchkey stopped')).toMatchObject({ forced: false });

    // Order, not timing: SIGTERM was handled, then the call ran to completion, then the process stopped.
    const shuttingDown = logIndex(server, (line) => line.msg === 'shutting down');
    const rpc = logIndex(server, (line) => line.msg === 'rpc' && line.method === REGISTER_PATH);
    const stopped = logIndex(server, (line) => line.msg === 'latchkey stopped');
    expect(server.logs()[rpc]).toMatchObject({ code: 'OK' });
    expect(shuttingDown).toBeGreaterThanOrEqual(0);
    expect(rpc).toBeGreaterThan(shuttingDown);
    expect(stopped).toBeGreaterThan(rpc);
    expect(server.logs().filter((line) => ['error', 'fatal'].includes(line.level as string))).toEqual([]);
    expect(server.stderr()).toBe('');
  });

  it('SHUTDOWN_TIMEOUT bounds shutdown when streams never finish: still exit 0, logged as forced', async () => {
    const server = children.track(await startLatchkey({ ...env, SHUTDOWN_TIMEOUT: '1s' }));

    // Two calls that will never finish on their own: a health Watch, and a request whose body
    // never completes.
    const watch = watchHealth(server.grpcPort);
    expect(await watch.until('SERVING')).toBe(true);
    const raw = await openRawGrpcCall(server.grpcPort, REGISTER_PATH);
    rawCalls.push(raw);
    await raw.write(grpcFrame(registerMessage).subarray(0, 5 + 3));
    await raw.flush();

    server.child.kill('SIGTERM');

    expect(await watch.until('NOT_SERVING', PROMPTLY)).toBe(true);
    expect(watch.statuses).toEqual(['SERVING', 'NOT_SERVING']);

    const exit = await within(server.exited, PROMPTLY, 'the process to exit after SHUTDOWN_TIMEOUT', server);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(logLine(server, 'shutting down')).toMatchObject({ signal: 'SIGTERM', shutdownTimeoutMs: 1_000 });
    expect(logLine(server, 'latchkey stopped')).toMatchObject({ forced: true });

    // The Watch was ended by shutdown at once (UNAVAILABLE); the half-sent request was cut off
    // rather than completed: it never got a gRPC status, and its handler never ran.
    const watchEnd = await within(watch.ended, PROMPTLY, 'the Watch stream to end');
    expect(watchEnd.code).toBe(status.UNAVAILABLE);
    const outcome = await within(raw.outcome, PROMPTLY, 'the unfinished call to be cut off');
    expect(outcome.headers).toBeUndefined();
    expect(outcome.status).toBeUndefined();
    expect(outcome.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(server.logs().some((line) => line.msg === 'rpc' && line.method === REGISTER_PATH)).toBe(false);
    expect(server.logs().filter((line) => ['error', 'fatal'].includes(line.level as string))).toEqual([]);
  });

  // KNOWN BUG (src/app.ts stop() → src/http/server.ts close()): SHUTDOWN_TIMEOUT bounds only the
  // gRPC drain. `server.close()` waits for every HTTP connection, `closeIdleConnections()` spares
  // one whose request is still arriving, and close() also stops the periodic check that enforces
  // headersTimeout/requestTimeout, so one half-sent probe request keeps the process alive forever.
  it('SHUTDOWN_TIMEOUT also bounds a half-sent HTTP probe request', async () => {
    const server = children.track(await startLatchkey({ ...env, SHUTDOWN_TIMEOUT: '1s' }));
    const socket = net.connect(server.httpPort, '127.0.0.1');
    socket.on('error', () => undefined);
    sockets.push(socket);
    await within(new Promise((resolve) => socket.once('connect', resolve)), PROMPTLY, 'the HTTP connection', server);
    await new Promise<void>((resolve) => socket.write('GET /readyz HTTP/1.1\r\nHost: latchkey\r\n', () => resolve()));
    // A full request on a second connection, answered: the server has accepted the first
    // connection and read its partial headers by then (earlier in the same event loop).
    expect(await httpGet(server.httpPort, '/healthz')).toEqual({ status: 200, body: '{"status":"ok"}' });

    server.child.kill('SIGTERM');

    // A safety net well past SHUTDOWN_TIMEOUT=1s, after which the process counts as hung.
    expect(await within(server.exited, 10_000, 'the process to exit', server)).toEqual({ code: 0, signal: null });
    expect(logLine(server, 'latchkey stopped')).toBeDefined();
  });
});

describe('embedded database (DATABASE_URL unset)', () => {
  let dataDir: string;

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'latchkey-e2e-'));
  });
  afterAll(async () => {
    await children.killAll();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  async function serveEmbedded(): Promise<LatchkeyProcess & { grpcPort: number; httpPort: number }> {
    const env = testEnv(undefined, { LOG_LEVEL: 'info', LATCHKEY_DATA_DIR: dataDir, DATABASE_MIGRATE_ON_START: 'false' });
    expect(env.DATABASE_URL).toBeUndefined();
    return children.track(await startLatchkey(env));
  }

  async function stop(server: LatchkeyProcess): Promise<void> {
    server.child.kill('SIGTERM');
    expect(await within(server.exited, PROMPTLY, 'the process to exit', server)).toEqual({ code: 0, signal: null });
    expect(logLine(server, 'latchkey stopped')).toMatchObject({ forced: false });
  }

  function embeddedWarnings(server: LatchkeyProcess) {
    return server.logs().filter((line) => line.level === 'warn');
  }

  it('starts with one warning, migrates, serves health and readiness, and stops on SIGTERM', async () => {
    const server = await serveEmbedded();

    const warnings = embeddedWarnings(server);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ dataDir });
    expect(warnings[0]!.msg).toMatch(/embedded PGlite database/);
    // The embedded database always migrates at start-up, whatever DATABASE_MIGRATE_ON_START says.
    expect(server.logs().filter((line) => line.msg === 'migrations applied').map((line) => line.migrations)).toEqual([
      migrationsList.map((m) => m.name),
    ]);
    expect(logLine(server, 'latchkey serving')).toMatchObject({ database: 'embedded' });

    expect(await healthStatus(server.grpcPort)).toBe('SERVING');
    expect(await healthStatus(server.grpcPort, AUTH_SERVICE)).toBe('SERVING');
    expect(await healthStatus(server.grpcPort, SESSION_SERVICE)).toBe('SERVING');
    expect(await healthStatus(server.grpcPort, 'no.such.Service')).toBe(`error:${status.NOT_FOUND}`);
    expect(await httpGet(server.httpPort, '/readyz')).toEqual({ status: 200, body: '{"status":"ready"}' });
    expect(await httpGet(server.httpPort, '/healthz')).toEqual({ status: 200, body: '{"status":"ok"}' });

    await stop(server);
    expect(server.logs().filter((line) => ['error', 'fatal'].includes(line.level as string))).toEqual([]);
    expect(server.stderr()).toBe('');
  });

  it('starts again on the same data directory without applying any migration', async () => {
    const server = await serveEmbedded();

    expect(embeddedWarnings(server)).toHaveLength(1);
    expect(logLine(server, 'migrations applied')).toBeUndefined();
    expect(await healthStatus(server.grpcPort)).toBe('SERVING');
    expect(await httpGet(server.httpPort, '/readyz')).toEqual({ status: 200, body: '{"status":"ready"}' });

    await stop(server);
  });
});
