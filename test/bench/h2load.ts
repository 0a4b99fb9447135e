import { execFile, execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface H2loadResult {
  /** Requests h2load saw complete in the measured window. */
  readonly completed: number;
  /** Requests that failed or errored at the HTTP/2 level. */
  readonly failed: number;
  readonly seconds: number;
  readonly perSecond: number;
}

/** h2load from Debian's nghttp2-client, installed when missing (the bench needs it, nothing else does). */
export function ensureH2load(): string {
  const found = () => {
    try {
      return execFileSync('sh', ['-c', 'command -v h2load'], { encoding: 'utf8' }).trim();
    } catch {
      return '';
    }
  };
  let path = found();
  if (path) return path;
  process.stderr.write('bench: installing h2load (apt-get install nghttp2-client)\n');
  const apt = (args: string[]) => execFileSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  try {
    apt(['install', '-y', '--no-install-recommends', 'nghttp2-client']);
  } catch {
    apt(['update']);
    apt(['install', '-y', '--no-install-recommends', 'nghttp2-client']);
  }
  path = found();
  if (!path) throw new Error('h2load is not installed and could not be installed (Debian package nghttp2-client)');
  return path;
}

/**
 * Drives one unary RPC with a pre-encoded gRPC frame: `connections` HTTP/2 connections with
 * `streams` calls in flight on each, for `seconds` after `warmupSeconds`. h2load only sees HTTP
 * status (always 200 for gRPC), so the caller checks the gRPC outcome on the server side.
 */
export async function h2load(options: {
  readonly port: number;
  readonly path: string;
  readonly frame: Buffer;
  readonly connections: number;
  readonly streams: number;
  readonly seconds: number;
  readonly warmupSeconds: number;
  readonly dataFile: string;
}): Promise<H2loadResult> {
  writeFileSync(options.dataFile, options.frame);
  const args = [
    `http://127.0.0.1:${options.port}${options.path}`,
    '-t', '1',
    '-c', String(options.connections),
    '-m', String(options.streams),
    '-D', String(options.seconds),
    '--warm-up-time', String(options.warmupSeconds),
    '-d', options.dataFile,
    '-H', 'content-type: application/grpc',
    '-H', 'te: trailers',
  ];
  const { stdout } = await run('h2load', args, { maxBuffer: 16 << 20 });
  const finished = /finished in ([\d.]+)(m?s), ([\d.]+) req\/s/.exec(stdout);
  const requests = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(stdout);
  if (!finished || !requests) throw new Error(`could not read h2load's output:\n${stdout}`);
  const seconds = Number(finished[1]) / (finished[2] === 'ms' ? 1000 : 1);
  return {
    completed: Number(requests[3]),
    failed: Number(requests[5]) + Number(requests[6]),
    seconds,
    perSecond: Number(finished[3]),
  };
}
