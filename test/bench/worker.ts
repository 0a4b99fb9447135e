/**
 * One load generator, run as its own process so that it never shares an event loop (or a core's
 * time slice accounting) with the server it measures. It is given a spec as JSON in argv[2],
 * keeps `concurrency` calls in flight for `durationMs` (or until SIGTERM when 0), and prints one
 * JSON line with the counts and the latency histogram (microseconds, HdrHistogram encoded).
 */
import bcrypt from 'bcrypt';
import pg from 'pg';
import * as hdr from 'hdr-histogram-js';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { ErrorInfo } from '../../src/generated/google/rpc/error_details.js';
import { Status } from '../../src/generated/google/rpc/status.js';
import { LoginRequest, LogoutRequest, RefreshTokenRequest, RefreshTokenResponse, ValidateTokenRequest } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { CheckResponse } from '../../src/generated/envoy/service/auth/v3/external_auth.js';
import http from 'node:http';
import { ROTATE_SQL } from '../../src/persistence/repositories/sessions.js';
import { connectAll, grpcFrame, type UnaryClient, type UnaryResult } from './wire.js';

export type WorkerSpec =
  | (Common & { kind: 'health' })
  | (Common & { kind: 'validate'; accessToken: string; checkRevocation: boolean })
  /** envoy.service.auth.v3.Authorization/Check with a pre-encoded CheckRequest; a call counts as OK only when the check allowed. */
  | (Common & { kind: 'check'; requestBase64: string })
  /** HTTP/1.1 GETs over keep-alive connections (one per call in flight), e.g. forward-auth; OK is a 200. */
  | (Common & { kind: 'http'; url: string; headers: Record<string, string> })
  | (Common & { kind: 'login'; emails: string[]; password: string; via?: Gateway })
  /** Wrong passwords for one account from one end-user address, through a gateway; answers are tallied, not failures. */
  | (Common & { kind: 'login-flood'; email: string; via: Gateway; pauseAfterRefusalMs: number })
  /** Random well-formed refresh tokens (`<uuid>.<43 base64url chars>`), a new one per call; answers are tallied, not failures. */
  | (Common & { kind: 'refresh-flood' })
  | (Common & { kind: 'refresh'; refreshTokens: string[] })
  | (Common & { kind: 'bcrypt'; password: string; hash: string })
  | (Common & { kind: 'statement'; databaseUrl: string; sessionIds: string[]; hash: string; poolMax: number });

/**
 * Revocation propagation between two replicas, one session at a time: check that replica B
 * validates the session's access token with check_revocation, log the session out on replica A,
 * then ask B again every `pollIntervalMs` (start to start) until it refuses with SESSION_REVOKED.
 * Each sample is the time from the Logout's response to the refusal's response.
 */
export interface PropagationSpec {
  readonly kind: 'propagation';
  /** Replica A: where the sessions are logged out. */
  readonly revokePort: number;
  /** Replica B: where ValidateToken with check_revocation is polled. */
  readonly pollPort: number;
  readonly sessions: ReadonlyArray<{ readonly accessToken: string; readonly refreshToken: string }>;
  readonly pollIntervalMs: number;
  /** A revocation B has not refused after this long counts as not propagated (recorded at this value, and as a failure). */
  readonly timeoutMs: number;
  /** A random pause of up to this long between revocations, so that they do not keep one phase against the follower's timer. */
  readonly maxGapMs: number;
}

/** The failure key of a revocation that B had not refused within `timeoutMs`. */
export const NOT_PROPAGATED = 'not refused within the timeout';

/**
 * A gateway holding a service API key that reports its end user's address in `client.ip_address`
 * (the address is then the call's source for the hashing queue's fairness).
 */
export interface Gateway {
  readonly apiKey: string;
  readonly ipAddress: string;
}

interface Common {
  readonly port: number;
  readonly concurrency: number;
  /** HTTP/2 connections the calls are spread over. */
  readonly connections: number;
  /** 0: until SIGTERM. */
  readonly durationMs: number;
  /** Calls finished in this first stretch are not recorded. */
  readonly warmupMs: number;
  /** Also return every call's [start, latency] in ms (for slow, windowed scenarios such as logins during a sweep). */
  readonly samples?: boolean;
  /**
   * Record every call started in the window, also those that end after it (the worker waits for
   * them), instead of dropping them: when single calls take seconds, dropping them keeps only the fast.
   */
  readonly finishInFlight?: boolean;
}

export interface WorkerResult {
  readonly calls: number;
  readonly ok: number;
  /** Failed calls by `code: message`, so a broken run says why instead of looking fast. */
  readonly failures: Record<string, number>;
  readonly elapsedMs: number;
  /** Encoded HdrHistogram of the recorded latencies in microseconds. */
  readonly histogram: string;
  /** [epoch ms at start, latency ms] of every recorded call, when asked. */
  readonly samples?: Array<[number, number]>;
  /** Floods only: every answer in the window by `code/reason` (e.g. `8/OVERLOADED`, `16/INVALID_CREDENTIALS`, `-1/` for a stream without a status). */
  readonly outcomes?: Record<string, number>;
}

export const HEALTH_CHECK = '/grpc.health.v1.Health/Check';
export const VALIDATE = '/latchkey.auth.v1.AuthService/ValidateToken';
export const LOGIN = '/latchkey.auth.v1.AuthService/Login';
export const REFRESH = '/latchkey.auth.v1.AuthService/RefreshToken';
export const LOGOUT = '/latchkey.auth.v1.AuthService/Logout';
export const CHECK = '/envoy.service.auth.v3.Authorization/Check';

export function newHistogram(): hdr.Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
}

/** What one in-flight slot does per call: returns the call's outcome. */
type Step = (client: UnaryClient) => Promise<UnaryResult>;

function stepsFor(spec: WorkerSpec): (slot: number) => Step {
  switch (spec.kind) {
    case 'health': {
      const frame = grpcFrame(new Uint8Array(0));
      return () => (client) => client.call(HEALTH_CHECK, frame);
    }
    case 'validate': {
      const frame = grpcFrame(ValidateTokenRequest.encode({ accessToken: spec.accessToken, checkRevocation: spec.checkRevocation }).finish());
      return () => (client) => client.call(VALIDATE, frame);
    }
    case 'check': {
      const frame = grpcFrame(Buffer.from(spec.requestBase64, 'base64'));
      return () => async (client) => {
        const result = await client.call(CHECK, frame);
        if (result.code !== 0) return result;
        // A deny is a gRPC OK too: the decision is the CheckResponse's status.
        const decided = CheckResponse.decode(result.message).status?.code ?? -1;
        return decided === 0 ? result : { ...result, code: decided, statusMessage: `denied (CheckResponse status ${decided})` };
      };
    }
    case 'http': {
      const agent = new http.Agent({ keepAlive: true, maxSockets: spec.concurrency });
      return () => () =>
        new Promise<UnaryResult>((resolve) => {
          const request = http.get(spec.url, { agent, headers: spec.headers }, (response) => {
            response.resume();
            response.once('end', () => resolve({ code: response.statusCode === 200 ? 0 : (response.statusCode ?? -1), message: Buffer.alloc(0), statusMessage: `HTTP ${response.statusCode}` }));
          });
          request.once('error', (error) => resolve({ code: -1, message: Buffer.alloc(0), statusMessage: error.message }));
        });
    }
    case 'login': {
      const via = spec.via;
      const client = via ? { ipAddress: via.ipAddress, userAgent: 'latchkey-bench', deviceName: '' } : undefined;
      const frames = spec.emails.map((email) => grpcFrame(LoginRequest.encode(LoginRequest.fromPartial({ email, password: spec.password, client })).finish()));
      const headers: Record<string, string> = via ? { 'x-api-key': via.apiKey } : {};
      let next = 0;
      return () => (c) => c.call(LOGIN, frames[next++ % frames.length]!, headers);
    }
    case 'login-flood': {
      const client = { ipAddress: spec.via.ipAddress, userAgent: 'latchkey-bench-flood', deviceName: '' };
      const headers = { 'x-api-key': spec.via.apiKey };
      return (slot) => {
        const frame = grpcFrame(LoginRequest.encode(LoginRequest.fromPartial({ email: spec.email, password: `wrong password ${slot}`, client })).finish());
        return async (c) => {
          const result = await c.call(LOGIN, frame, headers);
          // RESOURCE_EXHAUSTED: a short pause before the next attempt (see docs/benchmarks.md).
          if (result.code === 8 && spec.pauseAfterRefusalMs > 0) await new Promise((r) => setTimeout(r, spec.pauseAfterRefusalMs));
          return result;
        };
      };
    }
    case 'refresh-flood':
      return () => (c) =>
        c.call(REFRESH, grpcFrame(RefreshTokenRequest.encode({ refreshToken: `${randomUUID()}.${randomBytes(32).toString('base64url')}`, client: undefined }).finish()));
    case 'refresh': {
      // Each slot owns the sessions slot, slot + C, slot + 2C, … and takes them in turn; every
      // refresh presents the token the previous refresh of that session returned, so each call is
      // a real rotation (never a retry inside the grace window, which is answered without a write).
      const tokens = [...spec.refreshTokens];
      if (tokens.length < spec.concurrency) throw new Error(`refresh needs at least one session per call in flight (${tokens.length} < ${spec.concurrency})`);
      return (slot) => {
        const mine = tokens.map((_, i) => i).filter((i) => i % spec.concurrency === slot);
        let turn = 0;
        return async (client) => {
          const index = mine[turn++ % mine.length]!;
          const result = await client.call(REFRESH, grpcFrame(RefreshTokenRequest.encode({ refreshToken: tokens[index]!, client: undefined }).finish()));
          if (result.code === 0) tokens[index] = RefreshTokenResponse.decode(result.message).tokens!.refreshToken;
          return result;
        };
      };
    }
    case 'statement': {
      // The refresh's UPDATE with nothing around it: node-postgres, a pool as large as the
      // server's, rows whose hash the statement sets to what it was, so that it always matches.
      let n = 0;
      const text = ROTATE_SQL.replace(/\?/g, () => `$${++n}`);
      const hash = Buffer.from(spec.hash, 'hex');
      const idle = new Date(Date.now() + 14 * 86_400_000);
      return (slot) => {
        const mine = spec.sessionIds.filter((_, i) => i % spec.concurrency === slot);
        let turn = 0;
        return async () => {
          const now = new Date();
          const id = mine[turn++ % mine.length]!;
          // As the server sends it: the call's time, the send time, …, and the write deadline.
          const result = await statementPool!.query(text, [hash, now, now, now, idle, null, null, null, id, hash, now, now, new Date(now.getTime() + 5_000)]);
          return { code: result.rowCount === 1 ? 0 : 5, message: Buffer.alloc(0), statusMessage: result.rowCount === 1 ? '' : 'no row' };
        };
      };
    }
    case 'bcrypt':
      return () => async () => {
        const match = await bcrypt.compare(spec.password, spec.hash);
        return { code: match ? 0 : 16, message: Buffer.alloc(0), statusMessage: match ? '' : 'no match' };
      };
  }
}

let statementPool: pg.Pool | undefined;

export async function runWorker(spec: WorkerSpec): Promise<WorkerResult> {
  const clients = spec.kind === 'bcrypt' || spec.kind === 'statement' || spec.kind === 'http' ? [] : await connectAll(spec.port, Math.max(1, spec.connections));
  if (spec.kind === 'statement') {
    statementPool = new pg.Pool({ connectionString: spec.databaseUrl, max: spec.poolMax });
    await Promise.all(Array.from({ length: spec.poolMax }, () => statementPool!.query('select 1')));
  }
  const histogram = newHistogram();
  const failures: Record<string, number> = {};
  const samples: Array<[number, number]> = [];
  const isFlood = spec.kind === 'login-flood' || spec.kind === 'refresh-flood';
  const outcomes: Record<string, number> = {};
  let calls = 0;
  let ok = 0;
  const started = performance.now();
  const recordFrom = started + spec.warmupMs;
  let stopAt = spec.durationMs > 0 ? recordFrom + spec.durationMs : Infinity;
  let stop: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  process.once('SIGTERM', () => {
    stopAt = Math.min(stopAt, performance.now());
    stop();
  });
  if (Number.isFinite(stopAt)) setTimeout(stop, stopAt - started);

  const makeStep = stepsFor(spec);
  const slot = async (index: number) => {
    const step = makeStep(index);
    const client = clients[index % Math.max(1, clients.length)]!; // undefined for bcrypt and statement, which do not use it
    while (performance.now() < stopAt) {
      const t0 = performance.now();
      const result = await step(client);
      const t1 = performance.now();
      if (t0 < recordFrom || (t1 > stopAt && !spec.finishInFlight)) continue;
      calls += 1;
      if (isFlood) {
        const key = `${result.code}/${reasonOf(result.details)}`;
        outcomes[key] = (outcomes[key] ?? 0) + 1;
      }
      if (result.code === 0) {
        ok += 1;
        histogram.recordValue(Math.max(1, Math.round((t1 - t0) * 1000)));
        if (spec.samples) samples.push([performance.timeOrigin + t0, t1 - t0]);
      } else if (!isFlood) {
        const key = `${result.code}: ${result.statusMessage}`.slice(0, 200);
        failures[key] = (failures[key] ?? 0) + 1;
      }
    }
  };
  const slots = Promise.all(Array.from({ length: spec.concurrency }, (_, i) => slot(i)));
  await stopped;
  await slots;
  const elapsedMs = Math.max(0, Math.min(performance.now(), stopAt) - recordFrom);
  for (const client of clients) client.close();
  await statementPool?.end();
  return {
    calls,
    ok,
    failures,
    elapsedMs,
    histogram: hdr.encodeIntoCompressedBase64(histogram),
    ...(spec.samples ? { samples } : {}),
    ...(isFlood ? { outcomes } : {}),
  };
}

export interface PropagationResult extends WorkerResult {
  /** Polls sent to B after the revocations, over all of them. */
  readonly polls: number;
  /** Mean time between the starts of consecutive polls of one revocation (ms): the resolution actually achieved. */
  readonly meanPollSpacingMs: number;
  /** Encoded histogram (µs) of the time from the Logout's response to the *sending* of the poll B refused: a lower bound, beside the upper one in `histogram`. */
  readonly sentHistogram: string;
  /** Encoded histogram (µs) of the Logout calls on A. */
  readonly revokeHistogram: string;
  /** Encoded histogram (µs) from the Logout's *sending* to the refusal's response: the Logout's own time included. */
  readonly fromSendHistogram: string;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function runPropagation(spec: PropagationSpec): Promise<PropagationResult> {
  const [a] = await connectAll(spec.revokePort, 1);
  const [b] = await connectAll(spec.pollPort, 1);
  const histogram = newHistogram();
  const sentHistogram = newHistogram();
  const revokeHistogram = newHistogram();
  const fromSendHistogram = newHistogram();
  const failures: Record<string, number> = {};
  const fail = (key: string) => (failures[key.slice(0, 200)] = (failures[key.slice(0, 200)] ?? 0) + 1);
  const samples: Array<[number, number]> = [];
  let calls = 0;
  let ok = 0;
  let polls = 0;
  let spacingSum = 0;
  let spacings = 0;
  const started = performance.now();
  for (const session of spec.sessions) {
    calls += 1;
    const validate = grpcFrame(ValidateTokenRequest.encode({ accessToken: session.accessToken, checkRevocation: true }).finish());
    // B must see the session as active first: otherwise a refusal would say nothing about propagation.
    const before = await b!.call(VALIDATE, validate);
    if (before.code !== 0) {
      fail(`B refused before the revocation: ${before.code}/${reasonOf(before.details)} ${before.statusMessage}`);
      continue;
    }
    const r0 = performance.now();
    const logout = await a!.call(LOGOUT, grpcFrame(LogoutRequest.encode({ refreshToken: session.refreshToken }).finish()));
    const revokedAt = performance.now();
    if (logout.code !== 0) {
      fail(`Logout on A: ${logout.code}/${reasonOf(logout.details)} ${logout.statusMessage}`);
      continue;
    }
    revokeHistogram.recordValue(Math.max(1, Math.round((revokedAt - r0) * 1000)));
    let previousStart: number | undefined;
    for (let next = revokedAt; ; ) {
      const t0 = performance.now();
      if (previousStart !== undefined) {
        spacingSum += t0 - previousStart;
        spacings += 1;
      }
      previousStart = t0;
      const answer = await b!.call(VALIDATE, validate);
      const t1 = performance.now();
      polls += 1;
      if (answer.code === 0) {
        if (t1 - revokedAt >= spec.timeoutMs) {
          // Counted at the timeout, never as fast; the caller reports it.
          histogram.recordValue(spec.timeoutMs * 1000);
          fromSendHistogram.recordValue(spec.timeoutMs * 1000);
          samples.push([performance.timeOrigin + revokedAt, spec.timeoutMs]);
          fail(NOT_PROPAGATED);
          break;
        }
        next += spec.pollIntervalMs;
        if (next > t1) await sleep(next - t1);
        else next = t1; // a slow answer: poll again at once, without catching up in a burst
        continue;
      }
      const reason = reasonOf(answer.details);
      if (answer.code === 16 && reason === 'SESSION_REVOKED') {
        ok += 1;
        histogram.recordValue(Math.max(1, Math.round((t1 - revokedAt) * 1000)));
        sentHistogram.recordValue(Math.max(1, Math.round((t0 - revokedAt) * 1000)));
        fromSendHistogram.recordValue(Math.max(1, Math.round((t1 - r0) * 1000)));
        samples.push([performance.timeOrigin + revokedAt, t1 - revokedAt]);
      } else {
        fail(`B answered ${answer.code}/${reason} ${answer.statusMessage}`);
      }
      break;
    }
    if (spec.maxGapMs > 0) await sleep(Math.random() * spec.maxGapMs);
  }
  const elapsedMs = performance.now() - started;
  a!.close();
  b!.close();
  return {
    calls,
    ok,
    failures,
    elapsedMs,
    histogram: hdr.encodeIntoCompressedBase64(histogram),
    samples,
    polls,
    meanPollSpacingMs: spacings > 0 ? spacingSum / spacings : 0,
    sentHistogram: hdr.encodeIntoCompressedBase64(sentHistogram),
    revokeHistogram: hdr.encodeIntoCompressedBase64(revokeHistogram),
    fromSendHistogram: hdr.encodeIntoCompressedBase64(fromSendHistogram),
  };
}

/** The google.rpc.ErrorInfo reason in a `grpc-status-details-bin` value, or ''. */
function reasonOf(details: string | undefined): string {
  if (!details) return '';
  try {
    for (const any of Status.decode(Buffer.from(details, 'base64')).details) {
      if (any.typeUrl.endsWith('/google.rpc.ErrorInfo')) return ErrorInfo.decode(any.value).reason;
    }
  } catch {
    return 'undecodable';
  }
  return '';
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, '/'))) {
  // `@file`: the spec is in that file (a large one would not fit in one argument).
  const arg = process.argv[2] ?? '{}';
  const spec = JSON.parse(arg.startsWith('@') ? readFileSync(arg.slice(1), 'utf8') : arg) as WorkerSpec | PropagationSpec;
  (spec.kind === 'propagation' ? runPropagation(spec) : runWorker(spec)).then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      process.exit(0);
    },
    (error: unknown) => {
      process.stderr.write(`bench worker failed: ${(error as Error).stack ?? String(error)}\n`);
      process.exit(1);
    },
  );
}
