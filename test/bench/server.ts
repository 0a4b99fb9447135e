import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync, closeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

const MAIN = fileURLToPath(new URL('../../../../dist/main.js', import.meta.url));

export interface BenchServer {
  readonly pid: number;
  readonly grpcPort: number;
  readonly httpPort: number;
  /** Parsed JSON log lines written so far (the server logs to a file, as a container runtime would capture it). */
  logs(): Array<Record<string, unknown>>;
  /** One counter or gauge from /metrics, summed over the series whose labels include `labels`. */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  /** Peak resident set size so far (VmHWM), in bytes. */
  peakRss(): Promise<number>;
  /** Resident set size now (VmRSS), in bytes (0 once the process is gone). */
  rss(): Promise<number>;
  /** How the process ended, with the end of its stderr; undefined while it runs. */
  exited(): { code: number | null; signal: string | null; stderr: string } | undefined;
  stop(): Promise<void>;
}

/**
 * Starts `node dist/main.js serve` (the production entry point, default settings unless `env`
 * says otherwise) with its log lines going to `logFile`, and waits until it is serving.
 */
export async function startServer(env: Record<string, string>, logFile: string, nodeArgs: string[] = [], readyTimeoutMs = 60_000): Promise<BenchServer> {
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  const out = openSync(logFile, 'w');
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, MAIN, 'serve'], {
    env: { PATH: process.env.PATH ?? '', GRPC_PORT: String(grpcPort), HTTP_PORT: String(httpPort), GRPC_HOST: '127.0.0.1', HTTP_HOST: '127.0.0.1', ...env },
    stdio: ['ignore', out, 'pipe'],
  });
  closeSync(out);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  let ended: { code: number | null; signal: string | null } | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code, signal) => {
      ended = { code, signal };
      resolve(code);
    }),
  );
  const logs = () =>
    readFileSync(logFile, 'utf8')
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);

  // Ready when /readyz says so (the log line is not there at every LOG_LEVEL).
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    const early = await Promise.race([exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 100))]);
    const ready = await fetch(`http://127.0.0.1:${httpPort}/readyz`).then((r) => r.ok, () => false);
    if (ready) break;
    if (early || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the server did not start.\n${readFileSync(logFile, 'utf8').slice(-4000)}\n${stderr}`);
    }
  }
  return {
    pid: child.pid!,
    grpcPort,
    httpPort,
    logs,
    async metric(name, labels = {}) {
      const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
      let sum = 0;
      for (const line of text.split('\n')) {
        if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
        if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
      }
      return sum;
    },
    async peakRss() {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
      const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
      return Number(kb ?? 0) * 1024;
    },
    async rss() {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8').catch(() => '');
      const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
      return Number(kb ?? 0) * 1024;
    },
    exited() {
      return ended && { ...ended, stderr: stderr.slice(-2000) };
    },
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      const code = await exited;
      if (code !== 0) throw new Error(`the server exited with ${code} on SIGTERM.\n${stderr}`);
    },
  };
}
