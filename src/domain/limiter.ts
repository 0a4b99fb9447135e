/** Thrown when a limiter refuses to queue: the caller should fail fast rather than wait. */
export class LimiterFullError extends Error {
  constructor(
    /** `source`: this source already has its share queued; `global`: the whole queue is full. */
    readonly scope: 'source' | 'global',
  ) {
    super(scope === 'source' ? 'this source already has its share of the queue' : 'limiter queue is full');
    this.name = 'LimiterFullError';
  }
}

/** Who a unit of work is for: the client address it came from and the account it concerns. */
export interface FairKey {
  readonly source: string;
  readonly account: string;
}

/** A place in a FairLimiter: `ready` resolves when the work may run; `release` gives the place back. */
export interface LimiterTurn {
  readonly ready: Promise<void>;
  /** Idempotent; leaves the queue if still waiting, frees the running slot otherwise. */
  release(): void;
}

interface Waiter {
  readonly key: FairKey;
  start(): void;
  reject(error: unknown): void;
}

/** The waiters of one source, by account, each list in arrival order. */
interface SourceQueue {
  readonly accounts: Map<string, Waiter[]>;
  size: number;
}

/**
 * Runs at most `concurrency` units at once and lets the rest wait, fairly: between sources in
 * turn (round robin), and between the accounts of a source in turn, so one client flooding
 * sign-ins with wrong passwords waits behind itself and nobody else. Bounds:
 * - a source may have at most `perSourceQueueLimit` units waiting; more are refused at once;
 * - at most `queueLimit` wait in all; when full, a newcomer from a source with fewer waiting
 *   than the busiest source takes the place of that source's newest unit (which is refused), so a
 *   crowd of sources cannot starve a new one either.
 * Refusal is synchronous (acquire throws), so a caller can refuse before doing any other work.
 */
export class FairLimiter {
  #active = 0;
  #queued = 0;
  #refused = 0;
  /** Sources with waiters; Map order is the round-robin order (the one served moves to the back). */
  readonly #sources = new Map<string, SourceQueue>();

  constructor(
    readonly concurrency: number,
    readonly queueLimit: number,
    readonly perSourceQueueLimit: number,
  ) {}

  get running(): number {
    return this.#active;
  }

  /** Units refused since start (the queue or the source's share was full), pushed-out ones included. */
  get refused(): number {
    return this.#refused;
  }

  get queued(): number {
    return this.#queued;
  }

  /** A turn for `key`, or LimiterFullError at once. A waiting turn whose signal aborts leaves the queue. */
  acquire(key: FairKey, signal?: AbortSignal): LimiterTurn {
    signal?.throwIfAborted();
    let state: 'waiting' | 'running' | 'done' = 'waiting';
    let waiter: Waiter | undefined;
    const onAbort = () => {
      if (state !== 'waiting' || !waiter) return;
      state = 'done';
      this.#remove(waiter);
      waiter.reject(signal?.reason);
    };
    const release = () => {
      signal?.removeEventListener('abort', onAbort);
      if (state === 'running') {
        state = 'done';
        this.#finish();
      } else if (state === 'waiting' && waiter) {
        state = 'done';
        this.#remove(waiter);
        waiter.reject(new LimiterFullError('global'));
      }
    };
    if (this.#active < this.concurrency && this.#queued === 0) {
      this.#active += 1;
      state = 'running';
      return { ready: Promise.resolve(), release };
    }
    const ready = new Promise<void>((resolve, reject) => {
      waiter = {
        key,
        start: () => {
          state = 'running';
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (error) => {
          state = 'done';
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
    });
    // Nobody may be left with an unobserved rejection if the caller releases before awaiting.
    ready.catch(() => undefined);
    this.#enqueue(waiter!);
    signal?.addEventListener('abort', onAbort, { once: true });
    return { ready, release };
  }

  #enqueue(waiter: Waiter): void {
    const own = this.#sources.get(waiter.key.source);
    const ownSize = own?.size ?? 0;
    // A share as large as the whole queue is no share: the global bound (below) decides.
    if (ownSize >= this.perSourceQueueLimit && this.perSourceQueueLimit < this.queueLimit) {
      this.#refused += 1;
      throw new LimiterFullError('source');
    }
    if (this.#queued >= this.queueLimit) {
      let busiest: SourceQueue | undefined;
      for (const queue of this.#sources.values()) if (!busiest || queue.size > busiest.size) busiest = queue;
      this.#refused += 1;
      if (!busiest || busiest.size <= ownSize + 1) throw new LimiterFullError('global');
      const evicted = newestOf(busiest);
      this.#remove(evicted);
      evicted.reject(new LimiterFullError('global'));
    }
    let queue = this.#sources.get(waiter.key.source);
    if (!queue) {
      queue = { accounts: new Map(), size: 0 };
      this.#sources.set(waiter.key.source, queue);
    }
    const list = queue.accounts.get(waiter.key.account);
    if (list) list.push(waiter);
    else queue.accounts.set(waiter.key.account, [waiter]);
    queue.size += 1;
    this.#queued += 1;
  }

  #remove(waiter: Waiter): void {
    const queue = this.#sources.get(waiter.key.source);
    const list = queue?.accounts.get(waiter.key.account);
    const index = list?.indexOf(waiter) ?? -1;
    if (!queue || !list || index < 0) return;
    list.splice(index, 1);
    if (list.length === 0) queue.accounts.delete(waiter.key.account);
    queue.size -= 1;
    this.#queued -= 1;
    if (queue.size === 0) this.#sources.delete(waiter.key.source);
  }

  /** A running unit finished: its slot passes to the next source's next account in turn. */
  #finish(): void {
    const next = this.#next();
    if (next) next.start();
    else this.#active -= 1;
  }

  #next(): Waiter | undefined {
    const first = this.#sources.entries().next();
    if (first.done) return undefined;
    const [source, queue] = first.value;
    const [account, list] = queue.accounts.entries().next().value!;
    const waiter = list.shift()!;
    // Both the source and the account go to the back of their rounds.
    queue.accounts.delete(account);
    if (list.length > 0) queue.accounts.set(account, list);
    queue.size -= 1;
    this.#queued -= 1;
    this.#sources.delete(source);
    if (queue.size > 0) this.#sources.set(source, queue);
    return waiter;
  }
}

function newestOf(queue: SourceQueue): Waiter {
  let longest: Waiter[] | undefined;
  for (const list of queue.accounts.values()) if (!longest || list.length > longest.length) longest = list;
  return longest![longest!.length - 1]!;
}
