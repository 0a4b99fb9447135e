import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';

/**
 * The nice value given to libuv's thread pool, where bcrypt runs. The event loop keeps the default
 * priority, so when logins keep every core busy hashing, a token validation that arrives still gets
 * a core at once instead of waiting for the scheduler to take one from a hash: the kernel's weight
 * for nice 10 is about a tenth of nice 0's. An idle core is still used in full by the hashes.
 */
export const THREAD_POOL_NICE = 10;

export interface ThreadPoolPriority {
  /** libuv pool threads found (0 off Linux, or before the pool has started). */
  readonly threads: number;
  /** Threads now at `nice` or lower priority. */
  readonly lowered: number;
  readonly error?: string;
}

/**
 * Lowers the scheduling priority of this process's libuv pool threads (named `libuv-worker`).
 * Linux applies `setpriority` to a single thread when given its thread id; lowering a priority
 * needs no privilege. Call it after the pool has started (the first bcrypt hash starts it): the
 * pool's threads are made once and kept.
 */
export function lowerThreadPoolPriority(nice = THREAD_POOL_NICE): ThreadPoolPriority {
  if (process.platform !== 'linux') return { threads: 0, lowered: 0 };
  let threads = 0;
  let lowered = 0;
  let error: string | undefined;
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch (e) {
    return { threads: 0, lowered: 0, error: (e as Error).message };
  }
  for (const tid of tids) {
    let name: string;
    try {
      name = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
    } catch {
      continue; // the thread has exited
    }
    if (name !== 'libuv-worker') continue;
    threads += 1;
    try {
      if (os.getPriority(Number(tid)) < nice) os.setPriority(Number(tid), nice);
      lowered += 1;
    } catch (e) {
      error = (e as Error).message;
    }
  }
  return error === undefined ? { threads, lowered } : { threads, lowered, error };
}
