/**
 * End-to-end, under load (DESIGN.md "Staying up under load"): the compiled `latchkey serve`, run
 * with the image's V8 flags, takes 10,000 simultaneous calls of each kind that needs the database
 * or a hash, over several HTTP/2 connections, and stays up: alive, within a memory bound, ready on
 * every probe, every call answered with a status a client can act on (never INTERNAL), and normal
 * work succeeds afterwards. Nothing here asserts how long anything took.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { status, type Client } from '@grpc/grpc-js';
import { LoginRequest, RefreshTokenRequest, type LoginResponse, type RefreshTokenResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { ListSessionsRequest } from '../../src/generated/latchkey/session/v1/session_service.js';
import { register } from '../support/auth.js';
import { Children } from '../support/children.js';
import { authClient, call } from '../support/clients.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { flood, imageNodeOptions, residentBytes, tally, type FloodOutcome } from '../support/flood.js';
import { httpGet } from '../support/probes.js';
import { processEnv } from '../support/process-env.js';
import { startLatchkey, type LatchkeyProcess } from '../support/process.js';

const CALLS = 10_000;
/** Ten connections of 1,000 streams each (the server's GRPC_MAX_CONCURRENT_STREAMS): all 10,000 calls open at once. */
const CONNECTIONS = 10;
/** Each call's gRPC deadline, and the cap on a whole flood: safety nets, not expectations. */
const CALL_DEADLINE_MS = 30_000;
const FLOOD_CAP_MS = 60_000;
const TEST_TIMEOUT_MS = 120_000;
/**
 * The RSS the server must stay under during a flood. Measured on a 2-core machine over loopback
 * with the image's NODE_OPTIONS (`--max-semi-space-size=16 --max-old-space-size=128`), the client
 * in the same machine: the peak was 222-248 MB across 33 floods of 10,000 calls (each test prints
 * its peak). The Dockerfile notes that without those flags the RSS grows past 400 MB under load:
 * 400 MB is the bound the flags are there to keep, with a wide margin over what was measured, so
 * the test fails on a leak or on per-call memory growing, not on noise.
 */
const RSS_LIMIT_BYTES = 400 * 1024 * 1024;
const PASSWORD = 'correct horse battery';
const API_KEY = 'overload-test-service-key-0123456789abcdef';

const AUTH = '/latchkey.auth.v1.AuthService';
const SESSIONS = '/latchkey.session.v1.SessionService';

const children = new Children();
let database: TestDatabase;
let server: LatchkeyProcess & { grpcPort: number; httpPort: number };

beforeAll(async () => {
  database = await createTestDatabase();
  server = children.track(
    await startLatchkey(
      processEnv(database, {
        NODE_OPTIONS: imageNodeOptions(),
        GRPC_MAX_CONCURRENT_STREAMS: '1000',
        SERVICE_API_KEYS: API_KEY,
        BCRYPT_COST: '4',
        // The login flood's wrong passwords would lock its account (issue 18, tested in
        // lockout.test.ts): this file is about shedding load.
        LOGIN_LOCKOUT_THRESHOLD: '0',
      }),
    ),
  );
}, 60_000);

afterAll(async () => {
  await children.killAll();
  await database?.drop();
});

interface FloodReport {
  /** The server's own event-loop delay during the flood (prom-client's, reset by the scrape before it). */
  eventLoopLagMaxSeconds: number | undefined;
  outcomes: FloodOutcome[];
  /** The server's log lines about the database's status written during the flood (it logs every change). */
  databaseLines: unknown[];
  peakRssBytes: number;
  rssSamples: number;
  readyz: string[];
}

/**
 * Runs `send` while sampling the server's RSS (every 100 ms) and /readyz (one probe at a time,
 * every 200 ms), and returns what was seen. The samplers run until `send` has settled.
 */
async function metric(name: string): Promise<number | undefined> {
  const body = (await httpGet(server.httpPort, '/metrics')).body;
  const value = new RegExp(`^${name} (\\S+)$`, 'm').exec(body)?.[1];
  return value === undefined ? undefined : Number(value);
}

async function underFlood(send: () => Promise<FloodOutcome[]>): Promise<FloodReport> {
  const pid = server.child.pid!;
  await metric('latchkey_nodejs_eventloop_lag_max_seconds'); // resets the event-loop delay histogram
  const linesBefore = databaseLines().length;
  let peakRssBytes = residentBytes(pid) ?? 0;
  let rssSamples = 0;
  const rssTimer = setInterval(() => {
    const rss = residentBytes(pid);
    if (rss === undefined) return;
    rssSamples += 1;
    peakRssBytes = Math.max(peakRssBytes, rss);
  }, 100);
  const readyz: string[] = [];
  let flooding = true;
  const prober = (async () => {
    while (flooding) {
      try {
        const { status: code } = await httpGet(server.httpPort, '/readyz');
        readyz.push(String(code));
      } catch (error) {
        readyz.push(`error:${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  })();
  try {
    const outcomes = await send();
    const eventLoopLagMaxSeconds = await metric('latchkey_nodejs_eventloop_lag_max_seconds');
    // Let the server's buffered log lines (flushed every 250 ms) arrive before reading them.
    await new Promise((resolve) => setTimeout(resolve, 500));
    return { outcomes, peakRssBytes, rssSamples, readyz, eventLoopLagMaxSeconds, databaseLines: databaseLines().slice(linesBefore) };
  } finally {
    flooding = false;
    clearInterval(rssTimer);
    await prober;
  }
}

/** The server's log lines about the database's status so far (the monitor's, at warn and above). */
function databaseLines(): unknown[] {
  return server.logs().filter((line) => line.component === 'database' || /^database /.test(String(line.msg)));
}

/** `code/reason` keys a flood may end with: the domain's answers for the input, plus shedding. */
const SHEDDING = [`${status.RESOURCE_EXHAUSTED}/OVERLOADED`, `${status.RESOURCE_EXHAUSTED}/RATE_LIMITED`, `${status.UNAVAILABLE}/UNAVAILABLE`];

function expectStillUp(name: string, report: FloodReport, allowed: string[]): void {
  const counts = tally(report.outcomes);
  // Printed for the record (RSS bound, what the server answered); the assertions follow.
  console.log(
    `${name}: peak RSS ${(report.peakRssBytes / 1024 / 1024).toFixed(1)} MB over ${report.rssSamples} samples; server event-loop delay max ${report.eventLoopLagMaxSeconds}s; ` +
      `/readyz ${report.readyz.length} probes ${JSON.stringify(tally(report.readyz.map((r) => ({ code: undefined, reason: r }))))}; ` +
      `outcomes ${JSON.stringify(counts)}; database log lines ${JSON.stringify(report.databaseLines)}`,
  );
  expect(server.child.exitCode).toBeNull();
  expect(server.child.signalCode).toBeNull();
  expect(report.outcomes).toHaveLength(CALLS);
  // Every call ended with a status, and only with one a client can act on: never INTERNAL, never
  // cut off without a status.
  expect(Object.keys(counts).filter((key) => ![...allowed, ...SHEDDING].includes(key))).toEqual([]);
  // Refusals for capacity say when to retry.
  const refused = report.outcomes.filter((o) => o.code === status.RESOURCE_EXHAUSTED);
  expect(refused.filter((o) => o.retryDelayMs !== 1_000)).toEqual([]);
  expect(report.rssSamples).toBeGreaterThan(0);
  expect(report.peakRssBytes).toBeLessThan(RSS_LIMIT_BYTES);
}

/** Readiness during the flood: a busy server is not a server whose database is down. */
function expectStayedReady(report: FloodReport): void {
  expect(report.readyz.length).toBeGreaterThan(0);
  expect(report.readyz.filter((s) => s !== '200')).toEqual([]);
  // Readiness never changed during the flood: the monitor logs every change ("database
  // unavailable" / "database available again"), so this sees what sparse /readyz samples can miss.
  expect(report.databaseLines).toEqual([]);
}

/** After a flood: the process still does normal work, a login and a refresh of the new session. */
async function expectNormalWork(email: string): Promise<void> {
  const client = authClient(server.grpcPort);
  try {
    const signedIn = await call<object, LoginResponse>(client as unknown as Client, 'login', { email, password: PASSWORD });
    expect(signedIn.error?.code).toBeUndefined();
    const refreshed = await call<object, RefreshTokenResponse>(client as unknown as Client, 'refreshToken', {
      refreshToken: signedIn.response!.tokens!.refreshToken,
    });
    expect(refreshed.error?.code).toBeUndefined();
    expect(refreshed.response!.tokens!.refreshToken).not.toBe(signedIn.response!.tokens!.refreshToken);
  } finally {
    client.close();
  }
  expect(server.child.exitCode).toBeNull();
}

async function signIn(email: string): Promise<LoginResponse> {
  const client = authClient(server.grpcPort);
  try {
    const { response, error } = await call<object, LoginResponse>(client as unknown as Client, 'login', { email, password: PASSWORD });
    if (error) throw new Error(`login failed: ${error.code} ${error.details}`);
    return response!;
  } finally {
    client.close();
  }
}

async function registerUser(email: string): Promise<void> {
  const client = authClient(server.grpcPort);
  try {
    await register(client, email, PASSWORD);
  } finally {
    client.close();
  }
}

/** A well-formed refresh token (`<uuid>.<43 base64url chars>`) whose secret is random. */
const madeUpRefreshToken = (sessionId: string = randomUUID()) => `${sessionId}.${randomBytes(32).toString('base64url')}`;

describe('a spawned server with the image\'s NODE_OPTIONS under 10,000 calls in flight', () => {
  it('RefreshToken with made-up tokens (some for real sessions): stays up, answers every call', async () => {
    await registerUser('refresh-flood@example.com');
    const realSessions: string[] = [];
    for (let i = 0; i < 3; i++) realSessions.push((await signIn('refresh-flood@example.com')).sessionId);
    const requests = Array.from({ length: CALLS }, (_, i) =>
      RefreshTokenRequest.encode({ refreshToken: madeUpRefreshToken(i % 10 === 0 ? realSessions[i % 3] : undefined), client: undefined }).finish(),
    );

    const report = await underFlood(() =>
      flood(server.grpcPort, `${AUTH}/RefreshToken`, requests, { connections: CONNECTIONS, deadlineMs: CALL_DEADLINE_MS, capMs: FLOOD_CAP_MS }),
    );

    expectStillUp('RefreshToken', report, [`${status.UNAUTHENTICATED}/TOKEN_INVALID`]);
    await expectNormalWork('refresh-flood@example.com');
    expectStayedReady(report);
  }, TEST_TIMEOUT_MS);

  it('Login with mixed wrong and right passwords, from the peer and through a gateway for many sources: stays up, answers every call', async () => {
    await registerUser('login-flood@example.com');
    // Half straight from the peer (one source), half through a gateway with a service key that
    // reports 50 different end-user addresses: both the per-source share and the whole queue fill.
    const half = CALLS / 2;
    const request = (i: number, ipAddress = '') =>
      LoginRequest.encode({
        email: i % 7 === 0 ? `nobody-${i}@example.com` : 'login-flood@example.com',
        password: i % 10 === 0 ? PASSWORD : `wrong password ${i}`,
        client: { ipAddress, userAgent: 'flood', deviceName: '' },
      }).finish();
    const direct = Array.from({ length: half }, (_, i) => request(i));
    const gateway = Array.from({ length: half }, (_, i) => request(i, `198.51.100.${i % 50}`));

    const report = await underFlood(async () => {
      const [a, b] = await Promise.all([
        flood(server.grpcPort, `${AUTH}/Login`, direct, { connections: CONNECTIONS / 2, deadlineMs: CALL_DEADLINE_MS, capMs: FLOOD_CAP_MS }),
        flood(server.grpcPort, `${AUTH}/Login`, gateway, {
          connections: CONNECTIONS / 2,
          headers: { 'x-api-key': API_KEY },
          deadlineMs: CALL_DEADLINE_MS,
          capMs: FLOOD_CAP_MS,
        }),
      ]);
      return [...a, ...b];
    });

    expectStillUp('Login', report, [`${status.OK}/`, `${status.UNAUTHENTICATED}/INVALID_CREDENTIALS`]);
    // The hash queue was actually full: the flood was shed, per source and globally.
    const counts = tally(report.outcomes);
    expect((counts[`${status.RESOURCE_EXHAUSTED}/RATE_LIMITED`] ?? 0) + (counts[`${status.RESOURCE_EXHAUSTED}/OVERLOADED`] ?? 0)).toBeGreaterThan(0);
    await expectNormalWork('login-flood@example.com');
    expectStayedReady(report);
  }, TEST_TIMEOUT_MS);

  it('SessionService ListSessions with a valid bearer token: stays up, answers every call', async () => {
    await registerUser('sessions-flood@example.com');
    const signedIn = await signIn('sessions-flood@example.com');
    const requests = Array.from({ length: CALLS }, () => ListSessionsRequest.encode({ userId: '', pageSize: 0, pageToken: '', state: 0 }).finish());

    const report = await underFlood(() =>
      flood(server.grpcPort, `${SESSIONS}/ListSessions`, requests, {
        connections: CONNECTIONS,
        headers: { authorization: `Bearer ${signedIn.tokens!.accessToken}` },
        deadlineMs: CALL_DEADLINE_MS,
        capMs: FLOOD_CAP_MS,
      }),
    );

    expectStillUp('ListSessions', report, [`${status.OK}/`]);
    expect(tally(report.outcomes)[`${status.OK}/`]).toBeGreaterThan(0);
    await expectNormalWork('sessions-flood@example.com');
    expectStayedReady(report);
  }, TEST_TIMEOUT_MS);

  it('logged no unexpected handler error across the floods', () => {
    expect(server.logs().filter((line) => line.msg === 'unexpected error in handler')).toEqual([]);
    expect(server.stderr()).toBe('');
  });
});
