/**
 * `npm run bench`: starts the real server, seeds users and sessions through the API, and measures
 * login, refresh and token validation from separate processes (h2load for throughput, worker.ts
 * for latency), each beside its physical limit measured in the same run. A full run rewrites
 * BENCHMARKS.md, which lists the scenarios, the targets and what was reached.
 *
 *   npm run bench                 full run (about 8 minutes); rewrites BENCHMARKS.md
 *   npm run bench -- --quick      seconds per figure, small data, cost-4 hashes; for CI
 *   npm run bench -- --only=validate,refresh   some scenarios (validate, refresh, login, saturation, overload, sweep, sweep2, tracing,
 *                                              propagation, revocation-memory, login-cost, check, forward-auth)
 */
import bcrypt from 'bcrypt';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { LoginRequest, LoginResponse, RegisterRequest, ValidateTokenRequest } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { ensureH2load, h2load } from './h2load.js';
import { renderMarkdown, renderTable, type BenchReport, type Figure } from './report.js';
import { ADVISORY_LOCK_NAMESPACE } from '../../src/scheduler/sweep.js';
import { sweepSessions } from '../../src/scheduler/jobs/index.js';
import { cpuBetween, cpuSnapshot, dbBetween, dbSnapshot, sampleWaits, waitsBetween, type CpuSnapshot, type DbSnapshot } from './probe.js';
import { startServer, type BenchServer } from './server.js';
import { latencyBetween, latencyOf, merged, perSecond, type Latency } from './stats.js';
import { UnaryClient, grpcFrame } from './wire.js';
import { CheckRequest } from '../../src/generated/envoy/service/auth/v3/external_auth.js';
import { envoyCheckRequest } from '../support/gateway.js';
import { EchoUpstream, Nginx, nginxBinary } from '../support/nginx.js';
import { CHECK, HEALTH_CHECK, LOGIN, NOT_PROPAGATED, VALIDATE, type Gateway, type PropagationResult, type PropagationSpec, type WorkerResult, type WorkerSpec } from './worker.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));
const PASSWORD = 'correct horse battery staple 42';
/** One key for the run: the sweep scenario's server reads the signing keys the first server made. */
const KEY_ENCRYPTION_KEY = randomBytes(32).toString('base64');

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    out: { type: 'string', default: path.join(ROOT, 'bench-results') },
    'no-doc': { type: 'boolean', default: false },
    /** A server setting for an experiment, e.g. --set LOG_LEVEL=warn (repeatable); such a run never rewrites BENCHMARKS.md. */
    set: { type: 'string', multiple: true, default: [] },
  },
});
const quick = args.quick!;
/** Extra Node flags for the server, to profile it: BENCH_SERVER_NODE_ARGS='--cpu-prof --cpu-prof-dir=bench-results/profiles'. */
const overrides = Object.fromEntries(
  args.set!.map((pair) => {
    const at = pair.indexOf('=');
    if (at <= 0) throw new Error(`--set expects NAME=VALUE, got ${pair}`);
    return [pair.slice(0, at), pair.slice(at + 1)];
  }),
);
const serverNodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
/** The server runs with the image's NODE_OPTIONS (V8 heap flags), read from the Dockerfile so the two cannot drift. */
const imageNodeOptions = /^ENV NODE_OPTIONS="([^"]*)"$/m.exec(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'))?.[1] ?? '';
const SCENARIOS = 'validate,refresh,login,saturation,overload,sweep,sweep2,propagation,revocation-memory,login-cost,tracing,check,forward-auth';
const only = new Set((args.only ?? SCENARIOS).split(','));

/** How long each figure is measured for, and how much data: seconds in --quick, minutes in full. */
const plan = quick
  ? { warmupMs: 300, latencyMs: 1_500, h2loadSeconds: 2, h2loadWarmup: 1, h2loadRounds: 1, loginRounds: 1, loginMs: 3_000, users: 8, sessions: 32, sweepRows: 20_000, sweepBaselineMs: 3_000, bcryptCost: 4 }
  : { warmupMs: 1_000, latencyMs: 10_000, h2loadSeconds: 5, h2loadWarmup: 1, h2loadRounds: 3, loginRounds: 4, loginMs: 40_000, users: 16, sessions: 64, sweepRows: 1_000_000, sweepBaselineMs: 30_000, bcryptCost: 12 };
/**
 * The overload scenario: alternating rounds of bare bcrypt and of logins from a quiet source during
 * a login flood (each round `bareMs` + `loginMs`), then ValidateToken without and during a refresh
 * flood (`validateMs` each: under that flood single calls take seconds, so even --quick needs a few
 * to record any). A flood runs `floodRampMs` before the measurement starts.
 */
const overloadPlan = quick
  ? { rounds: 1, bareMs: 1_000, loginMs: 2_500, floodRampMs: 500, validateMs: 4_000 }
  : { rounds: 3, bareMs: 5_000, loginMs: 15_000, floodRampMs: 2_000, validateMs: 8_000 };
/**
 * Issue 15's revocation reach: `revocations` sessions logged out on one replica, each polled on
 * the other every `pollIntervalMs` until refused (given up after `timeoutMs`); and `viewRows`
 * revocation events loaded into a fresh server's view, for its memory.
 */
const revocationPlan = quick
  ? { revocations: 24, pollIntervalMs: 2, timeoutMs: 5_000, maxGapMs: 20, viewRows: 20_000, settleMs: 1_000 }
  : { revocations: 240, pollIntervalMs: 2, timeoutMs: 5_000, maxGapMs: 20, viewRows: 1_000_000, settleMs: 3_000 };
/** Sessions per user for the propagation scenario: under MAX_SESSIONS_PER_USER (10), so the limit revokes none of them. */
const PROPAGATION_SESSIONS_PER_USER = 8;

const VALIDATE_LEVELS = [1, 16, 64, 256];
const SESSIONS_LOCK_KEY = sweepSessions({ revokedRetentionMs: 0 }).lockKey;
/** Calls in flight → HTTP/2 connections: a few connections, as a mesh sidecar or gateway keeps, with the rest multiplexed. */
const connectionsFor = (inFlight: number) => Math.min(inFlight, 4);

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

function runWorkerProcess(spec: WorkerSpec | PropagationSpec): { result: Promise<WorkerResult>; stop(): void; pid: number } {
  // A large spec (the propagation scenario's tokens) goes through a file: one argument may not exceed 128 KiB.
  let arg = JSON.stringify(spec);
  let specFile: string | undefined;
  if (arg.length > 64 << 10) {
    specFile = path.join(mkdtempSync(path.join(os.tmpdir(), 'latchkey-bench-spec-')), 'spec.json');
    writeFileSync(specFile, arg);
    arg = `@${specFile}`;
  }
  const child = execFile(process.execPath, [WORKER, arg], { maxBuffer: 256 << 20, env: process.env }, () => undefined);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: string) => (stdout += chunk));
  child.stderr!.on('data', (chunk: string) => (stderr += chunk));
  // 'close', not 'exit': the output may still be in the pipe when the process has exited.
  const result = new Promise<WorkerResult>((resolve, reject) =>
    child.once('close', (code) => {
      if (specFile) rmSync(path.dirname(specFile), { recursive: true, force: true });
      try {
        if (code !== 0) throw new Error(`exited with ${code}`);
        resolve(JSON.parse(stdout) as WorkerResult);
      } catch (error) {
        reject(new Error(`worker ${spec.kind}: ${(error as Error).message}\n${stderr}`));
      }
    }),
  );
  return { result, stop: () => child.kill('SIGTERM'), pid: child.pid! };
}

const work = (spec: WorkerSpec | PropagationSpec) => runWorkerProcess(spec).result;

/** A run whose calls failed is not a measurement: it stops the bench with the failures. */
function checked(what: string, result: WorkerResult): WorkerResult {
  if (result.calls === 0 || result.ok !== result.calls) {
    throw new Error(`${what}: ${result.ok} of ${result.calls} calls succeeded: ${JSON.stringify(result.failures)}`);
  }
  return result;
}

interface Target {
  readonly url?: string;
  readonly kind: 'postgresql' | 'embedded';
  readonly label: string;
  readonly version?: string;
  drop(): Promise<void>;
}

async function reachable(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.end();
    return true;
  } catch {
    return false;
  }
}

/** A fresh database on BENCH_DATABASE_URL's server, else on the local PostgreSQL; else the embedded one. */
async function chooseDatabase(): Promise<Target> {
  const given = process.env.BENCH_DATABASE_URL;
  const local = 'postgres://postgres@127.0.0.1:5432/postgres';
  const serverUrl = given ?? ((await reachable(local)) ? local : undefined);
  if (!serverUrl) {
    return { kind: 'embedded', label: 'embedded PGlite (no PostgreSQL reachable; BENCH_DATABASE_URL unset)', drop: async () => undefined };
  }
  const name = `latchkey_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  const version = String((await admin.query('show server_version')).rows[0].server_version);
  await admin.query(`create database "${name}"`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const where = given ? 'BENCH_DATABASE_URL' : 'the local PostgreSQL at 127.0.0.1:5432';
  return {
    kind: 'postgresql',
    url: url.toString(),
    label: `PostgreSQL ${version} (${where}; a fresh database)`,
    version,
    async drop() {
      const client = new pg.Client({ connectionString: serverUrl });
      await client.connect();
      await client.query(`drop database if exists "${name}" with (force)`);
      await client.end();
    },
  };
}

async function sql(target: Target, text: string, values: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: target.url });
  await client.connect();
  try {
    return await client.query(text, values);
  } finally {
    await client.end();
  }
}

function serverEnv(target: Target, dataDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    // Production settings, as a platform team deploys it, with the default log level (one JSON line per call).
    NODE_ENV: quick ? 'development' : 'production',
    PUBLIC_URL: 'https://auth.bench.invalid',
    KEY_ENCRYPTION_KEY,
    BCRYPT_COST: String(plan.bcryptCost),
    DATABASE_MIGRATE_ON_START: 'true',
    LATCHKEY_DATA_DIR: dataDir,
    SCHEDULER_ENABLED: 'false',
    // The scenarios measure capacity from one client address, with floods of wrong passwords for
    // one account: the brute-force protection (issue 18) would refuse them, so it is off here.
    RATE_LIMIT_LOGIN: '0',
    RATE_LIMIT_REGISTER: '0',
    RATE_LIMIT_PASSWORD_RESET: '0',
    RATE_LIMIT_VERIFY_EMAIL: '0',
    LOGIN_LOCKOUT_THRESHOLD: '0',
    NODE_OPTIONS: imageNodeOptions,
    ...(target.url ? { DATABASE_URL: target.url } : {}),
    ...extra,
    ...overrides,
  };
}

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await fn(items[i]!);
      }
    }),
  );
  return results;
}

interface Seed {
  readonly emails: string[];
  readonly accessToken: string;
  readonly refreshTokens: string[];
}

/** Users through Register, sessions through Login: the same calls a client makes (not timed). */
async function seed(server: BenchServer): Promise<Seed> {
  const client = await UnaryClient.connect(server.grpcPort);
  const emails = Array.from({ length: plan.users }, (_, i) => `bench-user-${i}@example.com`);
  await mapLimit(emails, 4, async (email) => {
    const r = await client.call('/latchkey.auth.v1.AuthService/Register', grpcFrame(RegisterRequest.encode(RegisterRequest.fromPartial({ email, password: PASSWORD })).finish()));
    if (r.code !== 0) throw new Error(`seeding: Register failed with ${r.code} ${r.statusMessage}`);
  });
  client.close();
  const logins = await newSessions(server, emails, plan.sessions);
  return { emails, accessToken: logins[0]!.accessToken, refreshTokens: logins.map((t) => t.refreshToken) };
}

/** `count` new sessions, their users taken in turn from `emails`, through Login (not timed). */
async function newSessions(server: BenchServer, emails: string[], count: number): Promise<Array<{ accessToken: string; refreshToken: string }>> {
  const client = await UnaryClient.connect(server.grpcPort);
  try {
    return await mapLimit(
      Array.from({ length: count }, (_, i) => emails[i % emails.length]!),
      4,
      async (email) => {
        const r = await client.call(LOGIN, grpcFrame(LoginRequest.encode(LoginRequest.fromPartial({ email, password: PASSWORD })).finish()));
        if (r.code !== 0) throw new Error(`seeding: Login failed with ${r.code} ${r.statusMessage}`);
        return LoginResponse.decode(r.message).tokens!;
      },
    );
  } finally {
    client.close();
  }
}

const common = (server: BenchServer, concurrency: number, durationMs = plan.latencyMs) => ({
  port: server.grpcPort,
  concurrency,
  connections: connectionsFor(concurrency),
  durationMs,
  warmupMs: plan.warmupMs,
});

const figures: Figure[] = [];
function record(figure: Figure): void {
  figures.push(figure);
  log(`${figure.scenario} · ${figure.name}: ${figure.display}`);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const fmtLatency = (l: Latency) => `p50 ${l.p50} ms · p95 ${l.p95} ms · p99 ${l.p99} ms (${l.samples} calls)`;

async function handled(server: BenchServer, method: string): Promise<{ ok: number; all: number }> {
  const slash = method.lastIndexOf('/');
  const labels = { grpc_service: method.slice(1, slash), grpc_method: method.slice(slash + 1) };
  return {
    ok: await server.metric('grpc_server_handled_total', { ...labels, grpc_code: 'OK' }),
    all: await server.metric('grpc_server_handled_total', labels),
  };
}

async function validateScenario(server: BenchServer, s: Seed, dataFile: string): Promise<void> {
  const validateFrame = grpcFrame(ValidateTokenRequest.encode({ accessToken: s.accessToken, checkRevocation: false }).finish());
  const revocationFrame = grpcFrame(ValidateTokenRequest.encode({ accessToken: s.accessToken, checkRevocation: true }).finish());
  const healthFrame = grpcFrame(new Uint8Array(0));
  /** ValidateToken under h2load: its calls/s, after the server's own count says every call was OK. */
  const validateRun = async (shape: Omit<Parameters<typeof h2load>[0], 'path' | 'frame'>, frame: Buffer, what: string) => {
    const before = await handled(server, VALIDATE);
    const run = await h2load({ ...shape, path: VALIDATE, frame });
    const after = await handled(server, VALIDATE);
    // h2load sees HTTP 200 for every gRPC call; the server's own count says whether they succeeded.
    const notOk = after.all - before.all - (after.ok - before.ok);
    if (run.failed > 0 || notOk > 0 || after.ok - before.ok < run.completed) {
      throw new Error(`${what} under h2load: ${run.failed} failed at HTTP/2, ${notOk} not OK on the server`);
    }
    return run.perSecond;
  };
  /** At 64 in flight, ValidateToken with check_revocation too, in the same rounds (issue 15). */
  const revocationRuns: number[] = [];
  let revocationValidateRuns: number[] = [];
  let revocationFallbacks = 0;
  let withoutLatency: Latency | undefined;
  for (const inFlight of VALIDATE_LEVELS) {
    const connections = connectionsFor(inFlight);
    const streams = Math.ceil(inFlight / connections);
    const shape = { port: server.grpcPort, connections, streams, seconds: plan.h2loadSeconds, warmupSeconds: plan.h2loadWarmup, dataFile };

    // Rounds alternate the limit and the figure, so that a slower stretch of the machine (a
    // neighbour, a collection) does not land on one of them only; the medians are compared.
    const emptyRuns: number[] = [];
    const validateRuns: number[] = [];
    for (let round = 0; round < plan.h2loadRounds; round++) {
      const empty = await h2load({ ...shape, path: HEALTH_CHECK, frame: healthFrame });
      if (empty.failed > 0) throw new Error(`Health/Check under h2load: ${empty.failed} failed`);
      emptyRuns.push(empty.perSecond);
      if (inFlight !== 64) {
        validateRuns.push(await validateRun(shape, validateFrame, 'ValidateToken'));
        continue;
      }
      // With and without check_revocation in turn, the order swapped every round, so that
      // neither always runs second (after a warmer or a busier stretch).
      const revocationRun = async () => {
        const fallbacks = await server.metric('latchkey_revocation_view_fallbacks_total');
        revocationRuns.push(await validateRun(shape, revocationFrame, 'ValidateToken with check_revocation'));
        revocationFallbacks += (await server.metric('latchkey_revocation_view_fallbacks_total')) - fallbacks;
      };
      if (round % 2 === 1) await revocationRun();
      validateRuns.push(await validateRun(shape, validateFrame, 'ValidateToken'));
      if (round % 2 === 0) await revocationRun();
    }
    if (inFlight === 64) revocationValidateRuns = [...validateRuns];
    const empty = { perSecond: median(emptyRuns) };
    const validate = { perSecond: median(validateRuns) };
    const emptyLatency = latencyOf(checked('Health/Check', await work({ kind: 'health', ...common(server, inFlight) })));
    const validateLatency = latencyOf(checked('ValidateToken', await work({ kind: 'validate', accessToken: s.accessToken, checkRevocation: false, ...common(server, inFlight) })));
    if (inFlight === 64) withoutLatency = validateLatency;
    record({
      scenario: 'validate',
      name: `ValidateToken, ${inFlight} in flight`,
      inFlight,
      throughput: validate.perSecond,
      limit: { name: 'empty unary (Health/Check)', throughput: empty.perSecond, latency: emptyLatency },
      ratio: validate.perSecond / empty.perSecond,
      latency: validateLatency,
      display: `${Math.round(validate.perSecond)}/s (empty unary ${Math.round(empty.perSecond)}/s, ratio ${(validate.perSecond / empty.perSecond).toFixed(2)}); ${fmtLatency(validateLatency)}`,
    });
  }
  // ValidateToken with check_revocation at 64 in flight (issue 15: answered from the replica's
  // revocation view, no database read, while the view is fresh), against ValidateToken without it:
  // both from h2load in the same alternating rounds above; latency from the Node client for both.
  if (revocationRuns.length > 0) {
    const withRevocation = median(revocationRuns);
    const without = median(revocationValidateRuns);
    const fallbacksBefore = await server.metric('latchkey_revocation_view_fallbacks_total');
    const revocationLatency = latencyOf(checked('ValidateToken check_revocation', await work({ kind: 'validate', accessToken: s.accessToken, checkRevocation: true, ...common(server, 64) })));
    revocationFallbacks += (await server.metric('latchkey_revocation_view_fallbacks_total')) - fallbacksBefore;
    const entries = await server.metric('latchkey_revocation_view_entries');
    const ratio = withRevocation / without;
    record({
      scenario: 'validate',
      name: 'ValidateToken with check_revocation, 64 in flight',
      inFlight: 64,
      throughput: withRevocation,
      latency: revocationLatency,
      limit: { name: 'ValidateToken without check_revocation, same rounds', throughput: without, latency: withoutLatency! },
      ratio,
      notes: `h2load medians of ${revocationRuns.length} alternating round(s): ${revocationRuns.map(Math.round).join(', ')} with / ${revocationValidateRuns.map(Math.round).join(', ')} without calls/s; view fallbacks to the database during the check_revocation runs: ${revocationFallbacks}; view entries: ${entries}`,
      diagnostics: { withRuns: revocationRuns, withoutRuns: revocationValidateRuns, viewFallbacks: revocationFallbacks, viewEntries: entries },
      display: `${Math.round(withRevocation)}/s (without check_revocation ${Math.round(without)}/s, ratio ${ratio.toFixed(2)}); ${fmtLatency(revocationLatency)}; without p50 ${withoutLatency!.p50} ms, p99 ${withoutLatency!.p99} ms; view fallbacks ${revocationFallbacks}`,
    });
  }
}

async function refreshScenario(server: BenchServer, s: Seed, target: Target): Promise<void> {
  // The limit: the same UPDATE, bare, on sessions of a user of its own (so logins never evict them).
  const bareIds = target.url ? await bareSessions(target, s.refreshTokens.length) : [];
  let tokens = s.refreshTokens;
  for (const inFlight of [1, 32]) {
    const bare = target.url
      ? checked(
          `bare UPDATE at ${inFlight}`,
          await work({ kind: 'statement', databaseUrl: target.url, sessionIds: bareIds, hash: BARE_HASH, poolMax: Math.min(inFlight, 10), ...common(server, inFlight) }),
        )
      : undefined;
    const result = checked(`RefreshToken at ${inFlight}`, await work({ kind: 'refresh', refreshTokens: tokens, ...common(server, inFlight) }));
    // The worker rotated the tokens; the next level starts from fresh sessions' current tokens.
    if (inFlight === 1) tokens = (await newSessions(server, s.emails, tokens.length)).map((t) => t.refreshToken);
    const latency = latencyOf(result);
    const limit = bare && { name: 'the same UPDATE, bare, from node-postgres (pool of up to 10, as the server\'s)', throughput: perSecond(bare), latency: latencyOf(bare) };
    record({
      scenario: 'refresh',
      name: `RefreshToken, ${inFlight} in flight (${s.refreshTokens.length} sessions, each refresh presenting the previous refresh's token)`,
      inFlight,
      throughput: perSecond(result),
      latency,
      ...(limit ? { limit, ratio: perSecond(result) / limit.throughput } : {}),
      display: `${Math.round(perSecond(result))}/s; ${fmtLatency(latency)}${limit ? `; bare UPDATE ${Math.round(limit.throughput)}/s, p50 ${limit.latency.p50} ms` : ''}`,
    });
  }
}

const BARE_HASH = 'b0'.repeat(32);

async function bareSessions(target: Target, count: number): Promise<string[]> {
  await sql(
    target,
    `insert into users (id, email, password_hash, password_changed_at, created_at, updated_at)
     values (gen_random_uuid(), 'bench-bare-statement@example.com', 'x', now(), now(), now())`,
  );
  const rows = await sql(
    target,
    `insert into sessions (id, user_id, refresh_secret_hash, created_at, last_used_at, idle_expires_at, absolute_expires_at)
     select gen_random_uuid(), (select id from users where email = 'bench-bare-statement@example.com'), decode($2, 'hex'),
            now(), now(), now() + interval '14 days', now() + interval '30 days'
     from generate_series(1, $1::int)
     returning id`,
    [count, BARE_HASH],
  );
  return rows.rows.map((r: { id: string }) => r.id);
}


/**
 * The login-cost scenario (issue 18): users registered at one bcrypt cost, the server restarted
 * with a higher BCRYPT_COST, then wrong-password logins (stored hashes still at the old cost) and
 * unknown-email logins, alternating one by one, one in flight. Before the fix the unknown email was
 * compared against a dummy at the new cost; now its dummy follows the stored hashes' costs. Bare
 * bcrypt.compare at both costs is measured beside them, in this process, for reference. Its own
 * database, so that the stored costs are exactly the old one.
 */
async function loginCostScenario(dataDir: string, outDir: string): Promise<void> {
  const [oldCost, newCost] = quick ? [4, 6] : [10, 12];
  const users = quick ? 8 : 24;
  const samples = quick ? 40 : 200;
  const target = await chooseDatabase();
  const dir = mkdtempSync(path.join(dataDir, 'login-cost-'));
  const emails = Array.from({ length: users }, (_, i) => `bench-cost-${i}@example.com`);
  try {
    const before = await startServer(serverEnv(target, dir, { BCRYPT_COST: String(oldCost) }), path.join(outDir, 'server-login-cost-before.log'), serverNodeArgs);
    try {
      const client = await UnaryClient.connect(before.grpcPort);
      for (const email of emails) {
        const r = await client.call('/latchkey.auth.v1.AuthService/Register', grpcFrame(RegisterRequest.encode(RegisterRequest.fromPartial({ email, password: PASSWORD })).finish()));
        if (r.code !== 0) throw new Error(`seeding: Register failed with ${r.code} ${r.statusMessage}`);
      }
      client.close();
    } finally {
      await before.stop();
    }
    const server = await startServer(serverEnv(target, dir, { BCRYPT_COST: String(newCost) }), path.join(outDir, 'server-login-cost-after.log'), serverNodeArgs);
    try {
      const client = await UnaryClient.connect(server.grpcPort);
      const timed = async (email: string, password: string): Promise<number> => {
        const started = performance.now();
        const r = await client.call('/latchkey.auth.v1.AuthService/Login', grpcFrame(LoginRequest.encode(LoginRequest.fromPartial({ email, password, client: { userAgent: 'bench' } })).finish()));
        const ms = performance.now() - started;
        // UNAUTHENTICATED (INVALID_CREDENTIALS) for both: anything else is not what is measured.
        if (r.code !== 16) throw new Error(`login-cost: expected UNAUTHENTICATED, got ${r.code} ${r.statusMessage}`);
        return ms;
      };
      const wrong: number[] = [];
      const unknown: number[] = [];
      for (let i = 0; i < 4; i++) await timed(emails[i % users]!, 'warm-up guess');
      for (let i = 0; i < samples; i++) {
        wrong.push(await timed(emails[i % users]!, `wrong guess ${i}`));
        unknown.push(await timed(`bench-cost-nobody-${i}@example.com`, `wrong guess ${i}`));
      }
      client.close();
      const bare = async (cost: number) => {
        const hash = await bcrypt.hash(PASSWORD, cost);
        const times: number[] = [];
        for (let i = 0; i < Math.min(samples, 40); i++) {
          const started = performance.now();
          await bcrypt.compare(`guess ${i}`, hash);
          times.push(performance.now() - started);
        }
        return median(times);
      };
      const [bareOld, bareNew] = [await bare(oldCost), await bare(newCost)];
      const pct = (values: number[], q: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))]!;
      const figure = (values: number[]) => ({ p50: Number(median(values).toFixed(1)), p95: Number(pct(values, 0.95).toFixed(1)) });
      const w = figure(wrong);
      const u = figure(unknown);
      record({
        scenario: 'login-cost',
        name: `Login after BCRYPT_COST ${oldCost} → ${newCost}: unknown email vs wrong password (stored hashes at ${oldCost}), 1 in flight`,
        notes: JSON.stringify({ oldCost, newCost, samples, wrong: w, unknown: u, bareCompareMs: { [oldCost]: bareOld, [newCost]: bareNew } }),
        display:
          `unknown email p50 ${u.p50} ms (p95 ${u.p95}) vs wrong password p50 ${w.p50} ms (p95 ${w.p95}); ratio ${(u.p50 / w.p50).toFixed(2)}. ` +
          `Bare compare: cost ${oldCost} ${bareOld.toFixed(1)} ms, cost ${newCost} ${bareNew.toFixed(1)} ms (what an unknown email cost before the fix)`,
      });
    } finally {
      await server.stop();
    }
  } finally {
    await target.drop();
  }
}

async function loginScenario(server: BenchServer, s: Seed, hash: string): Promise<void> {
  for (const inFlight of [1, 8]) {
    // Alternating rounds, as for validation: the difference looked for (a few ms on a hash of
    // a few hundred) is smaller than the drift of the machine between two long runs.
    const bareRuns: WorkerResult[] = [];
    const loginRuns: WorkerResult[] = [];
    for (let round = 0; round < plan.loginRounds; round++) {
      const roundMs = plan.loginMs / plan.loginRounds;
      bareRuns.push(checked('bcrypt.compare', await work({ kind: 'bcrypt', password: PASSWORD, hash, ...common(server, inFlight, roundMs) })));
      loginRuns.push(checked(`Login at ${inFlight}`, await work({ kind: 'login', emails: s.emails, password: PASSWORD, ...common(server, inFlight, roundMs) })));
    }
    const bare = merged(bareRuns);
    const login = merged(loginRuns);
    const bareLatency = latencyOf(bare);
    const latency = latencyOf(login);
    record({
      scenario: 'login',
      name: `Login, ${inFlight} in flight`,
      inFlight,
      throughput: perSecond(login),
      latency,
      limit: { name: `bare bcrypt.compare, cost ${plan.bcryptCost}, ${inFlight} in flight`, throughput: perSecond(bare), latency: bareLatency },
      ratio: perSecond(login) / perSecond(bare),
      display: `${perSecond(login).toFixed(2)}/s (bare bcrypt ${perSecond(bare).toFixed(2)}/s, ratio ${(perSecond(login) / perSecond(bare)).toFixed(2)}); ${fmtLatency(latency)}; bare bcrypt p50 ${bareLatency.p50} ms`,
    });
  }
}

/**
 * Gateways (issue 16): envoy.service.auth.v3.Authorization/Check at 64 in flight with a CheckRequest
 * shaped as Envoy sends one (a dozen headers, the bearer token), against the empty unary in the
 * same alternating rounds; the server's own count says every check allowed (a deny is counted
 * under UNAUTHENTICATED).
 */
async function checkScenario(server: BenchServer, s: Seed, dataFile: string): Promise<void> {
  // A session of its own: the login scenarios before it evict the seeded ones (MAX_SESSIONS_PER_USER).
  const { accessToken } = (await newSessions(server, [s.emails[0]!], 1))[0]!;
  const request = envoyCheckRequest({
    authorization: `Bearer ${accessToken}`,
    accept: 'application/json',
    'accept-encoding': 'gzip, br',
    'content-length': '0',
    'x-forwarded-for': '203.0.113.7',
    'x-forwarded-proto': 'https',
    'x-envoy-internal': 'true',
  });
  const frame = grpcFrame(CheckRequest.encode(request).finish());
  const healthFrame = grpcFrame(new Uint8Array(0));
  const inFlight = 64;
  const connections = connectionsFor(inFlight);
  const shape = { port: server.grpcPort, connections, streams: Math.ceil(inFlight / connections), seconds: plan.h2loadSeconds, warmupSeconds: plan.h2loadWarmup, dataFile };
  const emptyRuns: number[] = [];
  const checkRuns: number[] = [];
  for (let round = 0; round < plan.h2loadRounds; round++) {
    const checkRun = async () => {
      const before = await handled(server, CHECK);
      const run = await h2load({ ...shape, path: CHECK, frame });
      const after = await handled(server, CHECK);
      const notOk = after.all - before.all - (after.ok - before.ok);
      if (run.failed > 0 || notOk > 0 || after.ok - before.ok < run.completed) throw new Error(`Check under h2load: ${run.failed} failed at HTTP/2, ${notOk} not allowed on the server`);
      checkRuns.push(run.perSecond);
    };
    if (round % 2 === 1) await checkRun();
    const empty = await h2load({ ...shape, path: HEALTH_CHECK, frame: healthFrame });
    if (empty.failed > 0) throw new Error(`Health/Check under h2load: ${empty.failed} failed`);
    emptyRuns.push(empty.perSecond);
    if (round % 2 === 0) await checkRun();
  }
  const emptyLatency = latencyOf(checked('Health/Check', await work({ kind: 'health', ...common(server, inFlight) })));
  const checkLatency = latencyOf(checked('Check', await work({ kind: 'check', requestBase64: Buffer.from(CheckRequest.encode(request).finish()).toString('base64'), ...common(server, inFlight) })));
  const throughput = median(checkRuns);
  const empty = median(emptyRuns);
  record({
    scenario: 'gateway',
    name: `ext_authz Check (Envoy-shaped request, allowed), ${inFlight} in flight`,
    inFlight,
    throughput,
    limit: { name: 'empty unary (Health/Check), same rounds', throughput: empty, latency: emptyLatency },
    ratio: throughput / empty,
    latency: checkLatency,
    notes: `h2load medians of ${checkRuns.length} alternating round(s): ${checkRuns.map(Math.round).join(', ')} Check / ${emptyRuns.map(Math.round).join(', ')} empty calls/s`,
    display: `${Math.round(throughput)}/s (empty unary ${Math.round(empty)}/s, ratio ${(throughput / empty).toFixed(2)}); ${fmtLatency(checkLatency)}`,
  });
}

/** HTTP/1.1 load from h2load (`--h1`): requests per second, after checking every answer was a 2xx. */
async function h1load(url: string, headers: Record<string, string>, connections: number): Promise<number> {
  const args = [url, '--h1', '-t', '1', '-c', String(connections), '-D', String(plan.h2loadSeconds), '--warm-up-time', String(plan.h2loadWarmup)];
  for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}: ${value}`);
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile('h2load', args, { maxBuffer: 16 << 20 }, (error, out) => (error ? reject(error) : resolve(String(out)))),
  );
  const finished = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(stdout);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
  const requests = /requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed, (\d+) errored/.exec(stdout);
  if (!finished || !codes || !requests) throw new Error(`could not read h2load's output:\n${stdout}`);
  const bad = Number(codes[2]) + Number(codes[3]) + Number(codes[4]) + Number(requests[2]) + Number(requests[3]);
  if (bad > 0 || Number(codes[1]) === 0) throw new Error(`${url} under h2load: ${codes[0]}, ${requests[2]} failed, ${requests[3]} errored`);
  return Number(finished[1]);
}

/**
 * Forward-auth through a real nginx (`auth_request`, the README's configuration, one worker)
 * against Latchkey's `/forward-auth` called directly, and nginx proxying the same upstream without
 * the check: 64 in flight each, over keep-alive HTTP/1.1 connections, in alternating rounds.
 */
async function forwardAuthScenario(server: BenchServer, s: Seed): Promise<void> {
  const binary = nginxBinary();
  if (!binary) {
    log('forward-auth scenario skipped: nginx is not installed (apt-get install nginx-light)');
    return;
  }
  const upstream = new EchoUpstream(false);
  const nginx = new Nginx(binary);
  try {
    await nginx.start({ latchkey: server.httpPort, upstream: await upstream.start() }, { unprotected: true });
    const inFlight = 64;
    // A session of its own: the login scenarios before it evict the seeded ones (MAX_SESSIONS_PER_USER).
    const { accessToken } = (await newSessions(server, [s.emails[0]!], 1))[0]!;
    const headers = { authorization: `Bearer ${accessToken}` };
    const targets = {
      direct: `http://127.0.0.1:${server.httpPort}/forward-auth`,
      nginx: `http://127.0.0.1:${nginx.port}/orders`,
      open: `http://127.0.0.1:${nginx.port}/open/orders`,
    };
    const runs: Record<keyof typeof targets, number[]> = { direct: [], nginx: [], open: [] };
    const order: (keyof typeof targets)[] = ['direct', 'nginx', 'open'];
    for (let round = 0; round < plan.h2loadRounds; round++) {
      for (const which of round % 2 === 0 ? order : [...order].reverse()) runs[which].push(await h1load(targets[which], headers, inFlight));
    }
    const latency = async (which: keyof typeof targets) =>
      latencyOf(checked(`GET ${which}`, await work({ kind: 'http', url: targets[which], headers, ...common(server, inFlight) })));
    const direct = { throughput: median(runs.direct), latency: await latency('direct') };
    const open = { throughput: median(runs.open), latency: await latency('open') };
    const through = { throughput: median(runs.nginx), latency: await latency('nginx') };
    const notes = `h2load --h1 medians of ${plan.h2loadRounds} alternating round(s): direct ${runs.direct.map(Math.round).join(', ')}; through nginx ${runs.nginx.map(Math.round).join(', ')}; nginx without the check ${runs.open.map(Math.round).join(', ')} req/s`;
    record({
      scenario: 'gateway',
      name: `forward-auth called directly (GET /forward-auth, HTTP/1.1 keep-alive), ${inFlight} in flight`,
      inFlight,
      throughput: direct.throughput,
      latency: direct.latency,
      notes,
      display: `${Math.round(direct.throughput)}/s; ${fmtLatency(direct.latency)}`,
    });
    record({
      scenario: 'gateway',
      name: `forward-auth through nginx (auth_request, then a trivial upstream), ${inFlight} in flight`,
      inFlight,
      throughput: through.throughput,
      latency: through.latency,
      limit: { name: 'the same nginx and upstream without auth_request', throughput: open.throughput, latency: open.latency },
      ratio: through.throughput / open.throughput,
      notes,
      display: `${Math.round(through.throughput)}/s (direct ${Math.round(direct.throughput)}/s; nginx without the check ${Math.round(open.throughput)}/s); ${fmtLatency(through.latency)}; direct p99 ${direct.latency.p99} ms, without the check p99 ${open.latency.p99} ms`,
    });
  } finally {
    await nginx.stop();
    await upstream.stop();
  }
}

/** The service key the overload scenario's gateway presents (its server is started with it in SERVICE_API_KEYS). */
const SERVICE_API_KEY = `bench-gateway-key-${randomBytes(16).toString('hex')}`;
/** Two end-user addresses a gateway reports in `client.ip_address` (documentation ranges): two sources. */
const FLOOD_SOURCE: Gateway = { apiKey: SERVICE_API_KEY, ipAddress: '198.51.100.66' };
const QUIET_SOURCE: Gateway = { apiKey: SERVICE_API_KEY, ipAddress: '203.0.113.20' };
const LOGIN_FLOOD_IN_FLIGHT = 100;
/**
 * After a refusal (RESOURCE_EXHAUSTED), a login-flood slot waits this long before its next attempt,
 * ignoring the RetryInfo's 1 s: short enough that the flood's share of the queue is full at every
 * moment, long enough that the load generator does not spend a core in a hot loop of refusals on
 * the same two cores as the server's hashes (that would measure the bench client, not the server).
 */
const LOGIN_FLOOD_PAUSE_MS = Number(process.env.BENCH_LOGIN_FLOOD_PAUSE_MS ?? 50);
const REFRESH_FLOOD_IN_FLIGHT = 10_000;
/** 1,000 streams each: the server's GRPC_MAX_CONCURRENT_STREAMS, so every call is open at once. */
const REFRESH_FLOOD_CONNECTIONS = 10;
const VALIDATE_IN_FLIGHT_UNDER_FLOOD = 16;

/** The server's resident set (VmRSS) sampled every `everyMs` until stop(); stop() gives the peak. */
function sampleRss(pid: number, everyMs = 100): { stop(): { peakBytes: number; samples: number } } {
  let peakBytes = 0;
  let samples = 0;
  const read = () => {
    try {
      const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
      if (kb === undefined) return;
      samples += 1;
      peakBytes = Math.max(peakBytes, Number(kb) * 1024);
    } catch {
      // the process is gone; the caller finds out from its own calls
    }
  };
  read();
  const timer = setInterval(read, everyMs);
  return {
    stop() {
      clearInterval(timer);
      read();
      return { peakBytes, samples };
    },
  };
}

/** Answers by `code/reason`, summed over runs, most frequent first. */
function outcomesOf(results: WorkerResult[]): Record<string, number> {
  const sum: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.outcomes ?? {})) sum[k] = (sum[k] ?? 0) + v;
  return Object.fromEntries(Object.entries(sum).sort(([, a], [, b]) => b - a));
}

const fmtOutcomes = (outcomes: Record<string, number>) =>
  Object.entries(outcomes)
    .map(([k, v]) => `${k} ${v.toLocaleString('en')}`)
    .join(', ');

/**
 * While `flood` runs (started here, stopped after `measure`): the server's RSS is sampled, the
 * flood ramps up for `floodRampMs`, then `measure` runs. A flood that answered nothing stops the run.
 */
async function underFlood<T>(server: BenchServer, what: string, flood: WorkerSpec, measure: () => Promise<T>): Promise<{ measured: T; flood: WorkerResult; rss: { peakBytes: number; samples: number } }> {
  const rss = sampleRss(server.pid);
  const running = runWorkerProcess(flood);
  let measured: T;
  try {
    await new Promise((r) => setTimeout(r, overloadPlan.floodRampMs));
    measured = await measure();
  } catch (error) {
    running.stop();
    const result = await running.result.catch((e: unknown) => (e as Error).message);
    const peak = rss.stop();
    log(`${what} when the measurement failed: ${typeof result === 'string' ? result : `answers ${fmtOutcomes(outcomesOf([result]))} in ${(result.elapsedMs / 1000).toFixed(1)} s`}; server peak RSS ${(peak.peakBytes / 1e6).toFixed(0)} MB`);
    throw error;
  }
  running.stop();
  // The flood's last calls finish after SIGTERM: the sampling goes on until the worker is done.
  const result = await running.result;
  const peak = rss.stop();
  if (result.calls === 0) throw new Error(`${what}: the flood got no answer at all`);
  return { measured, flood: result, rss: peak };
}

/**
 * Issue 13's overload behaviour, on a server of its own started with SERVICE_API_KEYS: (1) logins
 * from one end-user address while another floods wrong passwords for one account through the same
 * gateway, against bare bcrypt in alternating rounds; (2) ValidateToken without and during a
 * RefreshToken flood of 10,000 calls in flight; (3) the server's RSS during both floods.
 */
async function overloadScenario(target: Target, dataDir: string, outDir: string, hash: string): Promise<BenchServer> {
  const server = await startServer(serverEnv(target, dataDir, { SERVICE_API_KEYS: SERVICE_API_KEY }), path.join(outDir, 'server-overload.log'), serverNodeArgs);
  try {
    const victim = 'bench-overload-victim@example.com';
    const user = 'bench-overload-user@example.com';
    const client = await UnaryClient.connect(server.grpcPort);
    for (const email of [victim, user]) {
      const r = await client.call('/latchkey.auth.v1.AuthService/Register', grpcFrame(RegisterRequest.encode(RegisterRequest.fromPartial({ email, password: PASSWORD })).finish()));
      if (r.code !== 0) throw new Error(`seeding: Register failed with ${r.code} ${r.statusMessage}`);
    }
    client.close();
    const accessToken = (await newSessions(server, [user], 1))[0]!.accessToken;

    // 1. A quiet source's logins during a login flood from another source, against bare bcrypt.
    const bareRuns: WorkerResult[] = [];
    const loginRuns: WorkerResult[] = [];
    const loginFloods: WorkerResult[] = [];
    let loginFloodRss = 0;
    const queue: string[] = [];
    for (let round = 0; round < overloadPlan.rounds; round++) {
      bareRuns.push(checked('bcrypt.compare', await work({ kind: 'bcrypt', password: PASSWORD, hash, ...common(server, 1, overloadPlan.bareMs) })));
      const run = await underFlood(
        server,
        'login flood',
        { kind: 'login-flood', email: victim, via: FLOOD_SOURCE, pauseAfterRefusalMs: LOGIN_FLOOD_PAUSE_MS, ...common(server, LOGIN_FLOOD_IN_FLIGHT, 0), warmupMs: 0 },
        async () => {
          const login = work({ kind: 'login', emails: [user], password: PASSWORD, via: QUIET_SOURCE, ...common(server, 1, overloadPlan.loginMs) });
          await new Promise((r) => setTimeout(r, overloadPlan.loginMs / 2));
          queue.push(`running ${await server.metric('latchkey_password_hashes_running')}, queued ${await server.metric('latchkey_password_hashes_queued')}`);
          // Every login of the quiet source must succeed: a refusal or a failure stops the run.
          return checked('Login from a quiet source during a login flood', await login);
        },
      );
      loginRuns.push(run.measured);
      loginFloods.push(run.flood);
      loginFloodRss = Math.max(loginFloodRss, run.rss.peakBytes);
    }
    const bare = merged(bareRuns);
    const login = merged(loginRuns);
    const bareLatency = latencyOf(bare);
    const latency = latencyOf(login);
    const loginOutcomes = outcomesOf(loginFloods);
    const loginFloodSeconds = loginFloods.reduce((n, r) => n + r.elapsedMs, 0) / 1000;
    const loginRatio = latency.p50 / bareLatency.p50;
    record({
      scenario: 'overload',
      name: `Login, 1 in flight, from one source while another floods wrong-password logins (${LOGIN_FLOOD_IN_FLIGHT} in flight)`,
      inFlight: 1,
      throughput: perSecond(login),
      latency,
      limit: { name: `bare bcrypt.compare, cost ${plan.bcryptCost}, 1 in flight`, throughput: perSecond(bare), latency: bareLatency },
      ratio: loginRatio,
      notes: `ratio is p50 / bare bcrypt p50; flood pauses ${LOGIN_FLOOD_PAUSE_MS} ms after a refusal; flood answers (${loginFloodSeconds.toFixed(1)} s): ${fmtOutcomes(loginOutcomes)}; hashes mid-window: ${queue.join(' / ')}`,
      diagnostics: { floodOutcomes: loginOutcomes, floodSeconds: loginFloodSeconds, hashesMidWindow: queue },
      display: `${fmtLatency(latency)}; bare bcrypt p50 ${bareLatency.p50} ms; p50 ratio ${loginRatio.toFixed(2)}; flood answers ${fmtOutcomes(loginOutcomes)} in ${loginFloodSeconds.toFixed(1)} s; hashes ${queue.join(' / ')}`,
    });

    // 2. ValidateToken at the same in-flight count without, then during, a refresh flood.
    const validate = (label: string) =>
      // Calls started in the window count even if they end after it: under the flood one takes seconds.
      work({ kind: 'validate', accessToken, checkRevocation: false, ...common(server, VALIDATE_IN_FLIGHT_UNDER_FLOOD, overloadPlan.validateMs), finishInFlight: true }).then((r) => checked(label, r));
    const quiet = latencyOf(await validate('ValidateToken without a flood'));
    record({
      scenario: 'overload',
      name: `ValidateToken, ${VALIDATE_IN_FLIGHT_UNDER_FLOOD} in flight, no flood (overload scenario's server)`,
      inFlight: VALIDATE_IN_FLIGHT_UNDER_FLOOD,
      latency: quiet,
      display: fmtLatency(quiet),
    });
    const refresh = await underFlood(
      server,
      'refresh flood',
      { kind: 'refresh-flood', port: server.grpcPort, concurrency: REFRESH_FLOOD_IN_FLIGHT, connections: REFRESH_FLOOD_CONNECTIONS, durationMs: 0, warmupMs: 0 },
      () => validate('ValidateToken during a refresh flood'),
    );
    const during = latencyOf(refresh.measured);
    const refreshOutcomes = outcomesOf([refresh.flood]);
    const refreshSeconds = refresh.flood.elapsedMs / 1000;
    record({
      scenario: 'overload',
      name: `ValidateToken, ${VALIDATE_IN_FLIGHT_UNDER_FLOOD} in flight, during a RefreshToken flood (${REFRESH_FLOOD_IN_FLIGHT.toLocaleString('en')} in flight, random tokens)`,
      inFlight: VALIDATE_IN_FLIGHT_UNDER_FLOOD,
      throughput: perSecond(refresh.measured),
      latency: during,
      ratio: during.p99 / quiet.p99,
      notes: `ratio is p99 / p99 without the flood; flood answers (${refreshSeconds.toFixed(1)} s): ${fmtOutcomes(refreshOutcomes)}`,
      diagnostics: { floodOutcomes: refreshOutcomes, floodSeconds: refreshSeconds, withoutFlood: quiet },
      display: `${fmtLatency(during)}; without the flood p99 ${quiet.p99} ms (ratio ${(during.p99 / quiet.p99).toFixed(2)}); flood answers ${fmtOutcomes(refreshOutcomes)} in ${refreshSeconds.toFixed(1)} s`,
    });

    // 3. The server's memory during the floods.
    const peakBytes = Math.max(loginFloodRss, refresh.rss.peakBytes);
    const hwm = await server.peakRss();
    record({
      scenario: 'overload',
      name: 'Server peak RSS during the floods (VmRSS sampled every 100 ms)',
      peakRssBytes: peakBytes,
      notes: `login flood ${(loginFloodRss / 1e6).toFixed(0)} MB, refresh flood ${(refresh.rss.peakBytes / 1e6).toFixed(0)} MB (${refresh.rss.samples} samples); this server's VmHWM ${(hwm / 1e6).toFixed(0)} MB`,
      display: `${(peakBytes / 1e6).toFixed(0)} MB (login flood ${(loginFloodRss / 1e6).toFixed(0)} MB, refresh flood ${(refresh.rss.peakBytes / 1e6).toFixed(0)} MB; VmHWM ${(hwm / 1e6).toFixed(0)} MB)`,
    });
    return server;
  } catch (error) {
    await server.stop().catch(() => undefined);
    throw error;
  }
}

async function saturationScenario(server: BenchServer, s: Seed): Promise<void> {
  // More logins in flight than hash slots, fewer than the queue limit: every slot stays busy.
  const logins = runWorkerProcess({ kind: 'login', emails: s.emails, password: PASSWORD, ...common(server, 16, 0), warmupMs: 0 });
  try {
    await new Promise((r) => setTimeout(r, 1_000));
    for (const inFlight of [1, 16]) {
      const running = await server.metric('latchkey_password_hashes_running');
      const queued = await server.metric('latchkey_password_hashes_queued');
      const validate = checked('ValidateToken under login load', await work({ kind: 'validate', accessToken: s.accessToken, checkRevocation: false, ...common(server, inFlight) }));
      const latency = latencyOf(validate);
      record({
        scenario: 'saturation',
        name: `ValidateToken, ${inFlight} in flight, while 16 logins in flight keep every hash slot busy`,
        inFlight,
        throughput: perSecond(validate),
        latency,
        notes: `password hashes running ${running}, queued ${queued}`,
        display: `${fmtLatency(latency)}; ${Math.round(perSecond(validate))}/s; hashes running ${running}, queued ${queued}`,
      });
    }
  } finally {
    logins.stop();
  }
  const loginResult = await logins.result;
  if (loginResult.ok === 0) throw new Error(`no login succeeded during the saturation scenario: ${JSON.stringify(loginResult.failures)}`);
}

/**
 * Login latency while `sweep-sessions` deletes `sweepRows` expired sessions, then with nothing to
 * sweep, on `replicas` servers sharing the database, each with a scheduler that runs that sweep
 * every second (as its cron would, sooner). Logins go to the first server. The rows are inserted
 * and vacuumed before the servers start, so that what the insert leaves for autovacuum is not
 * counted against the sweep; the baseline is measured once autovacuum has also finished with what
 * the sweep left (dead rows are part of deleting, and would be counted against the baseline).
 *
 * Alongside: CPU by process, PostgreSQL's WAL/checkpoint/buffer counters, and the wait events
 * and lock waits of the database's backends sampled every 200 ms, for both windows.
 */
async function sweepScenario(target: Target, dataDir: string, outDir: string, s: Seed, replicas: 1 | 2): Promise<BenchServer[]> {
  const userIds = (await sql(target, 'select id from users order by email')).rows.map((r: { id: string }) => r.id);
  await sql(
    target,
    `insert into sessions (id, user_id, refresh_secret_hash, created_at, last_used_at, idle_expires_at, absolute_expires_at)
     select gen_random_uuid(), ($2::uuid[])[1 + i % array_length($2::uuid[], 1)], '\\x00',
            now() - interval '40 days', now() - interval '20 days', now() - interval '6 days', now() - interval '10 days'
     from generate_series(1, $1::int) as i`,
    [plan.sweepRows, userIds],
  );
  await sql(target, 'vacuum analyze sessions');
  log(`inserted and vacuumed ${plan.sweepRows} expired sessions; starting ${replicas} server(s) that sweep every second`);

  const dbName = new URL(target.url!).pathname.slice(1);
  const probe = new pg.Client({ connectionString: target.url, application_name: 'bench-probe' });
  await probe.connect();
  const servers: BenchServer[] = [];
  const cpu: CpuSnapshot[] = [];
  const counters: DbSnapshot[] = [];
  const waits = sampleWaits(target.url!, dbName);
  let samples: Awaited<ReturnType<typeof waits.stop>> = [];
  const inFlight = 1;
  let logins: ReturnType<typeof runWorkerProcess> | undefined;
  let finishedAt = 0;
  let baselineFrom = 0;
  let baselineTo = 0;
  let runs: Array<Record<string, unknown>> = [];
  const snapshot = async () => {
    cpu.push(cpuSnapshot(Object.fromEntries([...servers.map((srv, i) => [`server${i + 1}`, srv.pid] as const), ['loginClient', logins?.pid ?? 0]])));
    counters.push(await dbSnapshot(probe, dbName));
  };
  try {
    // The job's lock, held here while the servers start and the logins warm up, keeps every
    // replica's sweep off (skipped_lock) until all of them are running; then it is let go.
    await probe.query('select pg_advisory_lock($1, $2)', [ADVISORY_LOCK_NAMESPACE, SESSIONS_LOCK_KEY]);
    for (let i = 0; i < replicas; i++) {
      const env = serverEnv(target, dataDir, { SCHEDULER_ENABLED: 'true', SESSION_SWEEP_CRON: '* * * * * *', SWEEP_MAX_DURATION: '10m' });
      servers.push(await startServer(env, path.join(outDir, replicas === 1 ? 'server-sweep.log' : `server-sweep2-${i + 1}.log`), serverNodeArgs));
    }
    const first = servers[0]!;
    logins = runWorkerProcess({ kind: 'login', emails: s.emails, password: PASSWORD, ...common(first, inFlight, 0), samples: true });
    await new Promise((r) => setTimeout(r, plan.warmupMs + 1_000));
    await snapshot();
    await probe.query('select pg_advisory_unlock($1, $2)', [ADVISORY_LOCK_NAMESPACE, SESSIONS_LOCK_KEY]);
    const deadline = Date.now() + 15 * 60_000;
    const sweepRuns = () =>
      servers.flatMap((srv) => srv.logs().filter((l) => l.msg === 'sweep run finished' && l.job === 'sweep-sessions' && Number(l.rowsDeleted) > 0));
    for (;;) {
      if (Date.now() > deadline) throw new Error('the sweep did not finish within 15 minutes');
      await new Promise((r) => setTimeout(r, 500));
      runs = sweepRuns();
      if (runs.reduce((n, l) => n + Number(l.rowsDeleted), 0) >= plan.sweepRows) break;
    }
    finishedAt = Math.max(...runs.map((l) => Date.parse(String(l.time))));
    await snapshot();
    log(`sweep finished; waiting for autovacuum, then measuring logins with nothing to sweep`);
    for (;;) {
      const busy = await sql(target, `select count(*)::int as n from pg_stat_activity where backend_type = 'autovacuum worker' and datname = $1`, [dbName]);
      if (busy.rows[0].n === 0) break;
      await new Promise((r) => setTimeout(r, 1_000));
    }
    baselineFrom = Date.now();
    await snapshot();
    await new Promise((r) => setTimeout(r, plan.sweepBaselineMs));
    baselineTo = Date.now();
    await snapshot();
  } catch (error) {
    await Promise.all(servers.map((srv) => srv.stop().catch(() => undefined)));
    throw error;
  } finally {
    logins?.stop();
    samples = await waits.stop();
    await probe.end();
  }
  const result = await logins.result;
  const sweepFrom = Math.min(...runs.map((l) => Date.parse(String(l.time)) - Number(l.durationMs)));
  const sweepTo = finishedAt;
  const durationMs = sweepTo - sweepFrom;
  const rowsDeleted = runs.reduce((n, l) => n + Number(l.rowsDeleted), 0);
  const batches = runs.reduce((n, l) => n + Number(l.batches), 0);
  const byServer = servers.map((srv) =>
    srv.logs().filter((l) => l.msg === 'sweep run finished' && l.job === 'sweep-sessions').reduce((n, l) => n + Number(l.rowsDeleted), 0),
  );
  const baseline = latencyBetween(result.samples!, baselineFrom, baselineTo);
  const during = latencyBetween(result.samples!, sweepFrom, sweepTo);
  const rowsPerSecond = (rowsDeleted / durationMs) * 1000;
  const slowest = result
    .samples!.filter(([start]) => start >= sweepFrom && start < sweepTo)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3)
    .map(([start, ms]) => `${Math.round(ms)} ms at +${((start - sweepFrom) / 1000).toFixed(1)} s`);
  const diagnostics = {
    replicas,
    rowsDeletedByServer: byServer,
    runsWithRows: runs.length,
    slowest,
    sweep: { cpuCores: cpuBetween(cpu[0]!, cpu[1]!), database: dbBetween(counters[0]!, counters[1]!), waits: waitsBetween(samples, sweepFrom, sweepTo) },
    baseline: { cpuCores: cpuBetween(cpu[2]!, cpu[3]!), database: dbBetween(counters[2]!, counters[3]!), waits: waitsBetween(samples, baselineFrom, baselineTo) },
  };
  log(`sweep diagnostics (${replicas} server(s)): ${JSON.stringify(diagnostics)}`);
  const label = replicas === 1 ? '' : `, ${replicas} servers sharing the database`;
  record({
    scenario: 'sweep',
    name: `Login, ${inFlight} in flight, with no sweep${label}`,
    inFlight,
    latency: baseline,
    display: fmtLatency(baseline),
  });
  record({
    scenario: 'sweep',
    name: `Login, ${inFlight} in flight, while sweep-sessions deletes ${rowsDeleted.toLocaleString('en')} expired sessions${label}`,
    inFlight,
    latency: during,
    ratio: during.p99 / baseline.p99,
    notes: `sweep: ${rowsDeleted} rows in ${batches} batches, ${durationMs} ms (${Math.round(rowsPerSecond)} rows/s)${replicas > 1 ? `; rows deleted by each server: ${byServer.join(' / ')}` : ''}`,
    sweep: { rows: rowsDeleted, batches, durationMs, rowsPerSecond, replicas },
    diagnostics,
    display: `${fmtLatency(during)}; p99 ratio ${(during.p99 / baseline.p99).toFixed(2)}; sweep ${Math.round(rowsPerSecond)} rows/s over ${durationMs} ms`,
  });
  return servers;
}

/** Users through Register (not timed). */
async function register(server: BenchServer, emails: string[]): Promise<void> {
  const client = await UnaryClient.connect(server.grpcPort);
  try {
    await mapLimit(emails, 4, async (email) => {
      const r = await client.call('/latchkey.auth.v1.AuthService/Register', grpcFrame(RegisterRequest.encode(RegisterRequest.fromPartial({ email, password: PASSWORD })).finish()));
      if (r.code !== 0) throw new Error(`seeding: Register failed with ${r.code} ${r.statusMessage}`);
    });
  } finally {
    client.close();
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Issue 15's propagation: two servers on the one database (default settings), sessions made by
 * Login beforehand (not timed), then one at a time: Logout on server A, and ValidateToken with
 * check_revocation polled on server B every `pollIntervalMs` until it refuses with SESSION_REVOKED
 * (worker.ts, `propagation`). B's view must answer from memory the whole time: its fallbacks to the
 * database are read before and after and reported (a fallback refuses at once, from the row).
 */
async function propagationScenario(target: Target, dataDir: string, outDir: string): Promise<BenchServer[]> {
  const servers: BenchServer[] = [];
  try {
    for (const name of ['a', 'b']) servers.push(await startServer(serverEnv(target, dataDir), path.join(outDir, `server-propagation-${name}.log`), serverNodeArgs));
    const [a, b] = servers as [BenchServer, BenchServer];
    const emails = Array.from({ length: Math.ceil(revocationPlan.revocations / PROPAGATION_SESSIONS_PER_USER) }, (_, i) => `bench-propagation-${i}@example.com`);
    log(`propagation: ${emails.length} users, ${revocationPlan.revocations} sessions through Login on server A (not timed)`);
    await register(a, emails);
    const sessions = await newSessions(a, emails, revocationPlan.revocations);
    const fallbacksBefore = await b.metric('latchkey_revocation_view_fallbacks_total');
    const spec: PropagationSpec = {
      kind: 'propagation',
      revokePort: a.grpcPort,
      pollPort: b.grpcPort,
      sessions: sessions.map((t) => ({ accessToken: t.accessToken, refreshToken: t.refreshToken })),
      pollIntervalMs: revocationPlan.pollIntervalMs,
      timeoutMs: revocationPlan.timeoutMs,
      maxGapMs: revocationPlan.maxGapMs,
    };
    const result = (await work(spec)) as PropagationResult;
    const fallbacks = (await b.metric('latchkey_revocation_view_fallbacks_total')) - fallbacksBefore;
    const lag = await b.metric('latchkey_revocation_view_lag_seconds');
    const entries = await b.metric('latchkey_revocation_view_entries');
    // A revocation B never refused is reported (at the timeout, in the percentiles); anything
    // else that failed (a refusal before the revocation, a Logout that failed, another code) is
    // not a measurement and stops the run.
    const notPropagated = result.failures[NOT_PROPAGATED] ?? 0;
    const otherFailures = Object.entries(result.failures).filter(([key]) => key !== NOT_PROPAGATED);
    if (otherFailures.length > 0 || result.ok + notPropagated !== result.calls) {
      throw new Error(`propagation: ${result.ok} of ${result.calls} revocations refused on B: ${JSON.stringify(result.failures)}`);
    }
    const latency = latencyOf(result);
    const sent = latencyOf({ ...result, histogram: result.sentHistogram });
    const revoke = latencyOf({ ...result, histogram: result.revokeHistogram });
    const fromSend = latencyOf({ ...result, histogram: result.fromSendHistogram });
    const spacing = result.meanPollSpacingMs > 0 ? `${result.meanPollSpacingMs.toFixed(2)} ms` : '— (every revocation refused at the first poll)';
    const polls = `${result.polls.toLocaleString('en')} polls (${(result.polls / result.calls).toFixed(1)} per revocation), mean spacing ${spacing}`;
    record({
      scenario: 'revocation',
      name: `Revocation propagation, Logout on server A → ValidateToken with check_revocation refused on server B (${result.calls} revocations, B polled every ${revocationPlan.pollIntervalMs} ms)`,
      latency,
      notes: `time from the Logout's response to the refusal's response; to the refused poll's sending p50 ${sent.p50} / p99 ${sent.p99} ms; from the Logout's sending p50 ${fromSend.p50} / p99 ${fromSend.p99} ms (Logout on A p50 ${revoke.p50} ms); ${polls}; not refused within ${revocationPlan.timeoutMs} ms: ${notPropagated}; B's view fallbacks to the database: ${fallbacks}`,
      diagnostics: { refusedPollSent: sent, fromLogoutSent: fromSend, logout: revoke, polls: result.polls, meanPollSpacingMs: result.meanPollSpacingMs, notPropagated, viewFallbacksOnB: fallbacks, viewLagOnBSeconds: lag, viewEntriesOnB: entries, samples: result.samples },
      display: `${fmtLatency(latency)}; to the refused poll's sending p50 ${sent.p50} / p99 ${sent.p99} ms; from the Logout's sending p50 ${fromSend.p50} / p99 ${fromSend.p99} ms (Logout on A p50 ${revoke.p50} ms); ${polls}; not refused within ${revocationPlan.timeoutMs} ms: ${notPropagated}; B's view fallbacks ${fallbacks}`,
    });
    return servers;
  } catch (error) {
    await Promise.all(servers.map((srv) => srv.stop().catch(() => undefined)));
    throw error;
  }
}

/**
 * Issue 15's memory: a server's resident set with `viewRows` revocation events in its view,
 * against a server started the same way on the same database without them. The rows are inserted
 * with SQL (one statement: kind 'session', random session and user ids, reason LOGOUT, now)
 * while no server runs; the server loads them before it serves, so the load time is the
 * difference of the two start-ups (to /readyz, polled every 100 ms). If the server dies (for
 * instance at the image's V8 heap limit), that is the figure.
 */
async function revocationMemoryScenario(target: Target, dataDir: string, outDir: string): Promise<void> {
  const rows = revocationPlan.viewRows;
  /** V8 heap used, and memory outside it that V8 knows of (ArrayBuffers: where a typed-array table would be). */
  const heap = async (srv: BenchServer) => ({ used: await srv.metric('latchkey_nodejs_heap_size_used_bytes'), external: await srv.metric('latchkey_nodejs_external_memory_bytes') });
  const start = async (logName: string) => {
    const t0 = Date.now();
    const srv = await startServer(serverEnv(target, dataDir), path.join(outDir, logName), serverNodeArgs, 240_000);
    return { srv, readyMs: Date.now() - t0 };
  };

  // Without: the same start-up on the same database, with the few events earlier scenarios left.
  const base = await start('server-revocation-memory-0.log');
  let without: { rss: number; heap: { used: number; external: number }; entries: number; readyMs: number };
  try {
    await sleep(revocationPlan.settleMs);
    without = { rss: await base.srv.rss(), heap: await heap(base.srv), entries: await base.srv.metric('latchkey_revocation_view_entries'), readyMs: base.readyMs };
  } finally {
    await base.srv.stop();
  }

  const insertFrom = Date.now();
  const { rows: [range] } = await sql(
    target,
    `with inserted as (
       insert into revocation_events (kind, session_id, user_id, reason, occurred_at)
       select 'session', gen_random_uuid(), gen_random_uuid(), 'LOGOUT', now() from generate_series(1, $1::int)
       returning id)
     select min(id)::text as first, max(id)::text as last from inserted`,
    [rows],
  );
  await sql(target, 'analyze revocation_events');
  const insertMs = Date.now() - insertFrom;
  log(`revocation-memory: inserted ${rows.toLocaleString('en')} revocation events in ${insertMs} ms; starting a server that loads them`);

  const name = `Server RSS with ${rows.toLocaleString('en')} revocations in the view (VmRSS once loaded)`;
  const logFile = 'server-revocation-memory-1.log';
  const t0 = Date.now();
  let srv: BenchServer | undefined;
  try {
    try {
      ({ srv } = await start(logFile));
    } catch (error) {
      // The server did not come up: that (its log's and stderr's end says why) is the finding.
      const why = String((error as Error).message).split('\n').filter((l) => /heap|memory|FATAL|timed out|error/i.test(l)).slice(-3).join(' | ').slice(0, 400);
      record({
        scenario: 'revocation',
        name,
        notes: `the server did not start after ${Math.round((Date.now() - t0) / 1000)} s: ${why || 'see ' + logFile}; without the events: ${(without.rss / 1e6).toFixed(0)} MB`,
        diagnostics: { rows, died: true, message: String((error as Error).message).slice(-4000), without },
        display: `the server did not start (${why || 'see ' + logFile}); without the events VmRSS ${(without.rss / 1e6).toFixed(0)} MB`,
      });
      return;
    }
    const readyMs = Date.now() - t0;
    // The view is loaded before the server serves; the loop waits in case that load failed (the
    // server then serves and loads on the follower's next reads) or the process dies meanwhile.
    const deadline = Date.now() + 240_000;
    let entries = 0;
    for (;;) {
      const ended = srv.exited();
      if (ended) {
        record({
          scenario: 'revocation',
          name,
          notes: `the server died while loading (exit ${ended.code ?? ended.signal}, last entries ${entries}): ${ended.stderr.split('\n').filter(Boolean).slice(-2).join(' | ').slice(0, 300)}`,
          diagnostics: { rows, died: true, exit: ended, without },
          display: `the server died while loading (exit ${ended.code ?? ended.signal}); stderr: ${ended.stderr.slice(-300)}`,
        });
        return;
      }
      entries = await srv.metric('latchkey_revocation_view_entries').catch(() => entries);
      if (entries >= without.entries + rows) break;
      if (Date.now() > deadline) throw new Error(`revocation-memory: the view held ${entries} entries after 240 s (expected ${without.entries + rows})`);
      await sleep(100);
    }
    const loadedMs = Date.now() - t0;
    const notLoadedAtStart = srv.logs().some((l) => String(l.msg).startsWith('revocation view not loaded yet'));
    const hwm = await srv.peakRss();
    await sleep(revocationPlan.settleMs);
    const rss = await srv.rss();
    const heapNow = await heap(srv);
    const added = entries - without.entries;
    const perEntry = (rss - without.rss) / added;
    const heapPerEntry = (heapNow.used - without.heap.used) / added;
    const externalPerEntry = (heapNow.external - without.heap.external) / added;
    const inside = `V8 heap used ${heapPerEntry >= 0 ? '+' : ''}${Math.round(heapPerEntry)}, external ${externalPerEntry >= 0 ? '+' : ''}${Math.round(externalPerEntry)} bytes per entry`;
    const loadMs = notLoadedAtStart ? loadedMs - without.readyMs : readyMs - without.readyMs;
    record({
      scenario: 'revocation',
      name,
      peakRssBytes: rss,
      notes: `${(rss / 1e6).toFixed(0)} MB against ${(without.rss / 1e6).toFixed(0)} MB without (${Math.round(perEntry)} bytes per entry; ${inside}); VmHWM ${(hwm / 1e6).toFixed(0)} MB; load about ${(loadMs / 1000).toFixed(1)} s${notLoadedAtStart ? ' (not loaded before serving: finished by the follower afterwards)' : ''}`,
      diagnostics: { rows, entries, without, rssBytes: rss, vmHwmBytes: hwm, heap: heapNow, bytesPerEntry: perEntry, heapBytesPerEntry: heapPerEntry, externalBytesPerEntry: externalPerEntry, loadMs, readyMs, loadedMs, insertMs, notLoadedAtStart, nodeOptions: overrides.NODE_OPTIONS ?? imageNodeOptions },
      display: `VmRSS ${(rss / 1e6).toFixed(0)} MB (without ${(without.rss / 1e6).toFixed(0)} MB: ${Math.round(perEntry)} bytes per entry; ${inside}); VmHWM ${(hwm / 1e6).toFixed(0)} MB; ${entries.toLocaleString('en')} entries loaded in about ${(loadMs / 1000).toFixed(1)} s`,
    });
  } finally {
    await srv?.stop().catch((error: unknown) => log(`revocation-memory: ${(error as Error).message.split('\n')[0]}`));
    // The events would be loaded by every later server on this database.
    await sql(target, 'delete from revocation_events where id between $1 and $2', [range.first, range.last]);
  }
}

/** An OTLP/HTTP receiver that takes every export and throws it away, counting requests and bytes. */
async function startOtlpSink(): Promise<{ endpoint: string; requests: number; bytes: number; close(): Promise<void> }> {
  const sink = { endpoint: '', requests: 0, bytes: 0, close: () => Promise.resolve() };
  const server = http.createServer((req, res) => {
    req.on('data', (chunk: Buffer) => (sink.bytes += chunk.length));
    req.on('end', () => {
      sink.requests += 1;
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  sink.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  sink.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return sink;
}

/**
 * The cost of tracing: the same calls against a server without it (the default: the SDK is not
 * even loaded) and one exporting every call's spans (OTLP/HTTP to a sink in this process, every
 * root sampled: the most it can cost), on the same database, in alternating rounds.
 */
async function tracingScenario(target: Target, dataDir: string, outDir: string, s: Seed): Promise<BenchServer[]> {
  const sink = await startOtlpSink();
  const off = await startServer(serverEnv(target, dataDir), path.join(outDir, 'server-tracing-off.log'), serverNodeArgs);
  const on = await startServer(
    serverEnv(target, dataDir, { OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint, OTEL_TRACES_SAMPLER: 'always_on' }),
    path.join(outDir, 'server-tracing-on.log'),
    serverNodeArgs,
  );
  try {
    const frame = grpcFrame(ValidateTokenRequest.encode({ accessToken: s.accessToken, checkRevocation: false }).finish());
    const inFlight = 64;
    const connections = connectionsFor(inFlight);
    const validate = { off: [] as number[], on: [] as number[] };
    const logins = { off: [] as WorkerResult[], on: [] as WorkerResult[] };
    for (let round = 0; round < plan.h2loadRounds; round++) {
      for (const which of round % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
        const server = which === 'on' ? on : off;
        const before = await handled(server, VALIDATE);
        const run = await h2load({
          port: server.grpcPort,
          connections,
          streams: Math.ceil(inFlight / connections),
          seconds: plan.h2loadSeconds,
          warmupSeconds: plan.h2loadWarmup,
          dataFile: path.join(dataDir, 'request.bin'),
          path: VALIDATE,
          frame,
        });
        const after = await handled(server, VALIDATE);
        if (run.failed > 0 || after.all - before.all !== after.ok - before.ok) throw new Error(`tracing ${which}: ValidateToken calls failed`);
        validate[which].push(run.perSecond);
        const roundMs = plan.loginMs / plan.loginRounds;
        logins[which].push(checked(`Login, tracing ${which}`, await work({ kind: 'login', emails: s.emails, password: PASSWORD, ...common(server, 8, roundMs) })));
      }
    }
    const validateLatency = {
      off: latencyOf(checked('ValidateToken, tracing off', await work({ kind: 'validate', accessToken: s.accessToken, checkRevocation: false, ...common(off, inFlight) }))),
      on: latencyOf(checked('ValidateToken, tracing on', await work({ kind: 'validate', accessToken: s.accessToken, checkRevocation: false, ...common(on, inFlight) }))),
    };
    const v = { off: median(validate.off), on: median(validate.on) };
    record({
      scenario: 'tracing',
      name: `ValidateToken, ${inFlight} in flight, tracing on (every call exported) vs off`,
      inFlight,
      throughput: v.on,
      latency: validateLatency.on,
      limit: { name: 'the same, tracing off (SDK not loaded)', throughput: v.off, latency: validateLatency.off },
      ratio: v.on / v.off,
      notes: `h2load medians of ${validate.on.length} alternating round(s): ${validate.on.map(Math.round).join(', ')} on / ${validate.off.map(Math.round).join(', ')} off calls/s; OTLP exports received ${sink.requests} (${(sink.bytes / 1e6).toFixed(1)} MB)`,
      display: `${Math.round(v.on)}/s on, ${Math.round(v.off)}/s off (ratio ${(v.on / v.off).toFixed(2)}); on ${fmtLatency(validateLatency.on)}; off p50 ${validateLatency.off.p50} ms, p99 ${validateLatency.off.p99} ms`,
    });
    const l = { off: merged(logins.off), on: merged(logins.on) };
    const loginLatency = { off: latencyOf(l.off), on: latencyOf(l.on) };
    record({
      scenario: 'tracing',
      name: 'Login, 8 in flight, tracing on (server and statement spans exported) vs off',
      inFlight: 8,
      throughput: perSecond(l.on),
      latency: loginLatency.on,
      limit: { name: 'the same, tracing off', throughput: perSecond(l.off), latency: loginLatency.off },
      ratio: perSecond(l.on) / perSecond(l.off),
      display: `${perSecond(l.on).toFixed(2)}/s on, ${perSecond(l.off).toFixed(2)}/s off (ratio ${(perSecond(l.on) / perSecond(l.off)).toFixed(2)}); on p50 ${loginLatency.on.p50} ms, p99 ${loginLatency.on.p99} ms; off p50 ${loginLatency.off.p50} ms, p99 ${loginLatency.off.p99} ms`,
    });
    return [off, on];
  } catch (error) {
    await Promise.all([off.stop(), on.stop()]).catch(() => undefined);
    throw error;
  } finally {
    await sink.close();
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  ensureH2load();
  const target = await chooseDatabase();
  log(`database: ${target.label}`);
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'latchkey-bench-'));
  const outDir = path.resolve(args.out!);
  mkdirSync(outDir, { recursive: true });
  const hash = await bcrypt.hash(PASSWORD, plan.bcryptCost);
  let server: BenchServer | undefined;
  let peakRss = 0;
  /** VmHWM after each scenario (the sweep's is of its own server). */
  const peakRssAfter: Record<string, number> = {};
  try {
    server = await startServer(serverEnv(target, dataDir), path.join(outDir, 'server.log'), serverNodeArgs);
    log(`server pid ${server.pid}, gRPC port ${server.grpcPort}; seeding ${plan.users} users and ${plan.sessions} sessions`);
    const s = await seed(server);
    const running = server;
    const measure = async (name: string, scenario: () => Promise<void>) => {
      if (!only.has(name)) return;
      await scenario();
      peakRssAfter[name] = await running.peakRss();
    };
    await measure('validate', () => validateScenario(running, s, path.join(dataDir, 'request.bin')));
    await measure('refresh', () => refreshScenario(running, s, target));
    await measure('login', () => loginScenario(running, s, hash));
    await measure('saturation', () => saturationScenario(running, s));
    await measure('check', () => checkScenario(running, s, path.join(dataDir, 'request.bin')));
    await measure('forward-auth', () => forwardAuthScenario(running, s));
    peakRss = Math.max(peakRss, await server.peakRss());
    await server.stop();
    server = undefined;
    if (only.has('overload')) {
      // Its own server (with SERVICE_API_KEYS): its peak RSS under 10,000 calls in flight is its
      // own row, with its own bound, and is not counted in the run's peak below.
      const srv = await overloadScenario(target, dataDir, outDir, hash);
      peakRssAfter.overload = await srv.peakRss();
      await srv.stop();
    }
    if (only.has('login-cost')) await loginCostScenario(dataDir, outDir);
    for (const [name, replicas] of [['sweep', 1], ['sweep2', 2]] as const) {
      if (!only.has(name)) continue;
      if (target.kind !== 'postgresql') {
        log(`${name} scenario skipped: it inserts its rows with SQL, which needs PostgreSQL`);
        continue;
      }
      const servers = await sweepScenario(target, dataDir, outDir, s, replicas);
      peakRssAfter[name] = await servers[0]!.peakRss();
      peakRss = Math.max(peakRss, peakRssAfter[name]);
      for (const srv of servers) await srv.stop();
    }
    if (only.has('tracing')) {
      const servers = await tracingScenario(target, dataDir, outDir, s);
      peakRssAfter.tracing = Math.max(...(await Promise.all(servers.map((srv) => srv.peakRss()))));
      for (const srv of servers) await srv.stop();
    }
    for (const name of ['propagation', 'revocation-memory'] as const) {
      if (!only.has(name)) continue;
      if (target.kind !== 'postgresql') {
        log(`${name} scenario skipped: it needs two servers on one database, or inserts its rows with SQL: PostgreSQL`);
        continue;
      }
      if (name === 'propagation') {
        const servers = await propagationScenario(target, dataDir, outDir);
        peakRssAfter[name] = Math.max(...(await Promise.all(servers.map((srv) => srv.peakRss()))));
        peakRss = Math.max(peakRss, peakRssAfter[name]);
        for (const srv of servers) await srv.stop();
      } else {
        await revocationMemoryScenario(target, dataDir, outDir);
      }
    }
  } finally {
    await server?.stop().catch(() => undefined);
    await target.drop();
    rmSync(dataDir, { recursive: true, force: true });
  }
  const steps = Object.entries(peakRssAfter)
    .map(([name, bytes]) => `after ${name} ${(bytes / 1e6).toFixed(0)} MB${name === 'overload' ? ' (its own server, under floods: not counted here, see its own row)' : ''}`)
    .join(', ');
  record({ scenario: 'memory', name: 'Server peak RSS (VmHWM) over the run', peakRssBytes: peakRss, notes: steps, display: `${(peakRss / 1e6).toFixed(0)} MB (${steps})` });

  const report: BenchReport = {
    date: new Date().toISOString(),
    mode: quick ? 'quick' : 'full',
    command: `npm run bench${process.argv.slice(2).length ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    durationSeconds: Math.round((Date.now() - started) / 1000),
    machine: await machine(target),
    settings: {
      bcryptCost: plan.bcryptCost,
      users: plan.users,
      sessions: plan.sessions,
      sweepRows: plan.sweepRows,
      revocations: revocationPlan.revocations,
      revocationViewRows: revocationPlan.viewRows,
      nodeEnv: quick ? 'development' : 'production',
      nodeOptions: overrides.NODE_OPTIONS ?? imageNodeOptions,
    },
    figures,
  };
  const json = JSON.stringify(report, null, 2);
  writeFileSync(path.join(outDir, `bench-${report.mode}.json`), `${json}\n`);
  process.stdout.write(`${renderTable(report)}\n`);
  log(`JSON: ${path.join(outDir, `bench-${report.mode}.json`)}`);
  if (!quick && !args['no-doc'] && only.size === SCENARIOS.split(',').length && args.set!.length === 0 && serverNodeArgs.length === 0) {
    writeFileSync(path.join(ROOT, 'BENCHMARKS.md'), renderMarkdown(report));
    log('BENCHMARKS.md rewritten');
  }
}

async function machine(target: Target): Promise<BenchReport['machine']> {
  const h2 = await new Promise<string>((resolve) => execFile('h2load', ['--version'], (_, out) => resolve(String(out).split('\n')[0]!.trim())));
  return {
    cores: os.availableParallelism(),
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    database: target.label,
    h2load: h2,
  };
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
