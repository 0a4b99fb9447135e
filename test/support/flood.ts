import http2, { type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ErrorInfo, RetryInfo } from '../../src/generated/google/rpc/error_details.js';
import { Status } from '../../src/generated/google/rpc/status.js';
import { grpcFrame } from './raw-grpc.js';

/** The V8 flags the image runs the server with, read from the Dockerfile (as test/bench does) so the two cannot drift. */
export function imageNodeOptions(): string {
  const dockerfile = readFileSync(fileURLToPath(new URL('../../Dockerfile', import.meta.url)), 'utf8');
  const options = /^ENV NODE_OPTIONS="([^"]*)"$/m.exec(dockerfile)?.[1];
  if (!options) throw new Error('no ENV NODE_OPTIONS="..." line in the Dockerfile');
  return options;
}

/** How one call of a flood ended, as the client saw it. */
export interface FloodOutcome {
  /** The gRPC status code; undefined when the stream ended without one (reset, or cut by the cap). */
  readonly code: number | undefined;
  /** google.rpc.ErrorInfo reason, when the status carried one. */
  readonly reason?: string;
  /** google.rpc.RetryInfo delay in ms, when the status carried one. */
  readonly retryDelayMs?: number;
  readonly message?: string;
  /** The HTTP/2 code the stream closed with (0 for a normally completed call). */
  readonly rstCode?: number;
}

export interface FloodOptions {
  /** HTTP/2 connections the calls are spread over (round robin). */
  readonly connections: number;
  /** Extra request headers (gRPC metadata), e.g. `authorization` or `x-api-key`. */
  readonly headers?: Record<string, string>;
  /** The gRPC deadline each call carries (`grpc-timeout`), in ms. */
  readonly deadlineMs: number;
  /** Safety net: when it passes, every connection is torn down and unfinished calls end with no code. */
  readonly capMs: number;
}

function outcomeOf(headers: IncomingHttpHeaders | undefined, trailers: IncomingHttpHeaders | undefined, rstCode: number | undefined): FloodOutcome {
  const frame = typeof trailers?.['grpc-status'] === 'string' ? trailers : headers;
  const code = frame?.['grpc-status'];
  if (typeof code !== 'string') return { code: undefined, rstCode };
  const rawMessage = frame!['grpc-message'];
  const rawDetails = frame!['grpc-status-details-bin'];
  let reason: string | undefined;
  let retryDelayMs: number | undefined;
  if (typeof rawDetails === 'string') {
    for (const any of Status.decode(Buffer.from(rawDetails, 'base64')).details) {
      if (any.typeUrl.endsWith('/google.rpc.ErrorInfo')) reason = ErrorInfo.decode(any.value).reason;
      if (any.typeUrl.endsWith('/google.rpc.RetryInfo')) {
        const delay = RetryInfo.decode(any.value).retryDelay;
        retryDelayMs = delay ? delay.seconds * 1000 + Math.round(delay.nanos / 1e6) : undefined;
      }
    }
  }
  return {
    code: Number(code),
    reason,
    retryDelayMs,
    message: typeof rawMessage === 'string' ? decodeURIComponent(rawMessage) : undefined,
    rstCode,
  };
}

/**
 * Sends `requests.length` unary calls to `path` all at once, spread over `connections` raw HTTP/2
 * connections (each its own TCP connection, as separate clients would be), and resolves with how
 * each ended. Raw node:http2 rather than grpc-js channels: the test process has to keep 10,000
 * calls open on a shared two-core machine, and pre-encoded frames cost it little.
 */
export async function flood(port: number, path: string, requests: Uint8Array[], options: FloodOptions): Promise<FloodOutcome[]> {
  const sessions: ClientHttp2Session[] = [];
  try {
    for (let i = 0; i < options.connections; i++) {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      session.on('error', () => undefined);
      sessions.push(session);
    }
    // Wait for each server's SETTINGS, so the client knows how many streams it may open.
    await Promise.all(
      sessions.map(
        (session) =>
          new Promise<void>((resolve, reject) => {
            session.once('remoteSettings', () => resolve());
            session.once('error', reject);
          }),
      ),
    );
    const headers = {
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': `${Math.max(1, Math.round(options.deadlineMs))}m`,
      ...options.headers,
    };
    const calls = requests.map(
      (request, i) =>
        new Promise<FloodOutcome>((resolve) => {
          const session = sessions[i % sessions.length]!;
          let responseHeaders: IncomingHttpHeaders | undefined;
          let trailers: IncomingHttpHeaders | undefined;
          let stream: http2.ClientHttp2Stream;
          try {
            stream = session.request(headers, { endStream: false });
          } catch {
            resolve({ code: undefined });
            return;
          }
          stream.on('error', () => undefined);
          stream.on('response', (h) => (responseHeaders = h));
          stream.on('trailers', (t) => (trailers = t));
          stream.on('data', () => undefined);
          stream.once('close', () => resolve(outcomeOf(responseHeaders, trailers, stream.rstCode)));
          stream.end(grpcFrame(request));
        }),
    );
    let timer: NodeJS.Timeout | undefined;
    const cap = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        for (const session of sessions) session.destroy();
        resolve();
      }, options.capMs);
    });
    try {
      await Promise.race([Promise.all(calls), cap]);
      // After the cap, the destroyed streams close and resolve with no code.
      return await Promise.all(calls);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    for (const session of sessions) if (!session.destroyed) session.destroy();
  }
}

/** Counts outcomes by `code/reason` (e.g. `8/OVERLOADED`, `0/`), for readable assertions and reports. */
export function tally(outcomes: readonly FloodOutcome[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of outcomes) {
    const key = `${o.code ?? 'none'}/${o.reason ?? ''}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => a.localeCompare(b)));
}

/** Resident set size of a process in bytes, from /proc/<pid>/status (Linux); undefined once it is gone. */
export function residentBytes(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}
