/** Thrown when a limiter's queue is full: the caller should fail fast rather than wait. */
export class LimiterFullError extends Error {
  constructor() {
    super('limiter queue is full');
    this.name = 'LimiterFullError';
  }
}

interface Waiter {
  start(): void;
}

/**
 * Runs at most `concurrency` tasks at once; up to `queueLimit` more wait in order, and any beyond
 * that are refused at once with LimiterFullError. A waiting task whose signal aborts leaves the
 * queue without running. Used for password hashing, so a burst of logins cannot occupy the libuv
 * pool and the event loop's memory unboundedly.
 */
export class ConcurrencyLimiter {
  private active = 0;
  private readonly waiting: Waiter[] = [];

  constructor(
    readonly concurrency: number,
    readonly queueLimit: number,
  ) {}

  get running(): number {
    return this.active;
  }

  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted();
    if (this.active >= this.concurrency) {
      if (this.waiting.length >= this.queueLimit) throw new LimiterFullError();
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          const index = this.waiting.indexOf(waiter);
          if (index >= 0) this.waiting.splice(index, 1);
          reject(signal?.reason);
        };
        const waiter: Waiter = {
          start: () => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          },
        };
        this.waiting.push(waiter);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    } else {
      this.active += 1;
    }
    try {
      return await task();
    } finally {
      // The slot passes straight to the next waiter, so `active` never dips and lets a newcomer jump the queue.
      const next = this.waiting.shift();
      if (next) next.start();
      else this.active -= 1;
    }
  }
}
