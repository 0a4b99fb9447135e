import net, { type AddressInfo } from 'node:net';
import type { LatchkeyProcess } from './process.js';

/**
 * Remembers the processes a test file starts, so `afterEach` can SIGKILL whatever a failed test
 * left running (a stray server would keep its ports and database connections).
 */
export class Children {
  readonly #running = new Set<LatchkeyProcess>();

  track<P extends LatchkeyProcess>(proc: P): P {
    this.#running.add(proc);
    void proc.exited.then(() => this.#running.delete(proc));
    return proc;
  }

  async killAll(): Promise<void> {
    const running = [...this.#running];
    this.#running.clear();
    for (const proc of running) {
      if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill('SIGKILL');
    }
    await Promise.all(running.map((proc) => proc.exited));
  }
}

/**
 * Waits for `promise`, failing with a readable message (and the process output) after a generous
 * safety net instead of a bare jest timeout. Never an assertion on how long anything took.
 */
export async function within<T>(promise: Promise<T>, timeoutMs: number, what: string, proc?: LatchkeyProcess): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const output = proc ? `\nstdout:\n${proc.stdout()}\nstderr:\n${proc.stderr()}` : '';
      reject(new Error(`timed out waiting for ${what}${output}`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A loopback port nothing listens on (bound once, then released). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Tries a TCP connection: 'connected', or the error code (for example ECONNREFUSED). */
export function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}
