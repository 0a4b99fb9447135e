import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The compiled CLI (`npm test` builds first, so the real artefact is what runs). */
export const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));

export interface LatchkeyProcess {
  readonly child: ChildProcess;
  /** Everything written so far. */
  stdout(): string;
  stderr(): string;
  /** Parsed JSON log lines from stdout. */
  logs(): Record<string, unknown>[];
  /** Resolves with the exit code (or signal name) when the process ends. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs `node dist/main.js <args>` with exactly `env` (plus PATH), capturing its output. */
export function runLatchkey(args: string[], env: Record<string, string>): LatchkeyProcess {
  const child = spawn(process.execPath, [MAIN, ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    logs: () =>
      out
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as Record<string, unknown>),
    exited,
  };
}

/** Starts `serve` and waits for its "latchkey serving" log line; returns the bound ports. */
export async function startLatchkey(
  env: Record<string, string>,
  timeoutMs = 30_000,
): Promise<LatchkeyProcess & { grpcPort: number; httpPort: number }> {
  const proc = runLatchkey(['serve'], { LOG_LEVEL: 'info', ...env });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const serving = proc.logs().find((line) => line.msg === 'latchkey serving');
    if (serving) return { ...proc, grpcPort: serving.grpcPort as number, httpPort: serving.httpPort as number };
    const exitedEarly = await Promise.race([proc.exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 50))]);
    if (exitedEarly || Date.now() > deadline) {
      proc.child.kill('SIGKILL');
      throw new Error(`latchkey did not start.\nstdout:\n${proc.stdout()}\nstderr:\n${proc.stderr()}`);
    }
  }
}
