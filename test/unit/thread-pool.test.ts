import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { lowerThreadPoolPriority, THREAD_POOL_NICE } from '../../src/runtime/thread-pool.js';

const onLinux = process.platform === 'linux' ? describe : describe.skip;

function threads(): Array<{ tid: number; name: string }> {
  return readdirSync('/proc/self/task').flatMap((tid) => {
    try {
      return [{ tid: Number(tid), name: readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() }];
    } catch {
      return [];
    }
  });
}

onLinux('lowerThreadPoolPriority', () => {
  it('lowers every libuv pool thread, and only those, to the hashing priority', async () => {
    await readFile(import.meta.filename ?? '/proc/self/status'); // starts the pool if nothing has yet
    const main = os.getPriority(process.pid);
    const result = lowerThreadPoolPriority();
    const pool = threads().filter((t) => t.name === 'libuv-worker');
    expect(pool.length).toBeGreaterThan(0);
    expect(result).toEqual({ threads: pool.length, lowered: pool.length });
    for (const t of pool) expect(os.getPriority(t.tid)).toBeGreaterThanOrEqual(THREAD_POOL_NICE);
    // The event loop's thread (whose id is the process id) keeps its priority.
    expect(os.getPriority(process.pid)).toBe(main);
    expect(main).toBeLessThan(THREAD_POOL_NICE);
  });

  it('reports, without throwing, threads whose priority it could not set', () => {
    const pool = threads().filter((t) => t.name === 'libuv-worker');
    // 20 is past the range setpriority accepts (-20..19): every attempt fails.
    const result = lowerThreadPoolPriority(20);
    expect(result.threads).toBe(pool.length);
    expect(result.lowered).toBe(0);
    expect(result.error).toEqual(expect.any(String));
  });
});
