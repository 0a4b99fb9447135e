import { AsyncLocalStorage } from 'node:async_hooks';
import { DomainError } from '../domain/errors.js';

/**
 * Admission and deadlines for the database work of calls (DESIGN.md "Staying up under load",
 * docs/architecture.md "Overload and deadlines").
 *
 * A call that needs the database is admitted at its start against `maxCalls` (refused at once,
 * before it forks an EntityManager or sends anything, beyond it). Its statements then take one of
 * `statementSlots` slots, as many as the pool has connections, waiting in a FIFO queue of our own
 * rather than in the pool's unbounded one, so a queued statement whose time is up is dropped before
 * it reaches the database, and saturation is visible (running, waiting).
 *
 * Each statement gets an end time: the earlier of `statementTimeoutMs` from now and the call's
 * deadline less a margin (so that UNAVAILABLE reaches the caller before its own deadline). The
 * call gives up at that end time, and the statement carries a guard (`latchkey_before`, see the
 * CallDeadline migration) set a little earlier, in the database's clock: a write that reaches the
 * database after the call gave up (held in a partitioned network, then delivered) raises instead of
 * committing. A call reported as failed therefore never takes effect later.
 */
export class CallDeadlineError extends Error {
  constructor(message = 'the database did not answer within the call\'s deadline') {
    super(message);
    this.name = 'CallDeadlineError';
  }
}

/** SQLSTATE raised by `latchkey_before` for a write that arrived after its call gave up. */
export const DEADLINE_SQLSTATE = 'LK001';

/** Stands in a statement's parameters for the call's write deadline; sql.ts replaces it. */
export const WRITE_DEADLINE = Symbol('write deadline');

/**
 * Stands in a statement's parameters for the database clock's time as the statement is sent (our
 * clock plus the measured offset), plus SEND_TOLERANCE_MS: `greatest(clock_timestamp() - ?, 0)`
 * in the statement is then how much longer than a normal round trip it took to be applied, which
 * is what a network that held it added.
 */
export const SENT_AT = Symbol('sent at');

/**
 * Delays up to this (plus the clock offset's uncertainty) count as none: a normal round trip does
 * not move a time the call chose, and a delay that matters (seconds in a partition) still does.
 */
export const SEND_TOLERANCE_MS = 100;

/** What runStatement gives the statement it runs. */
export interface StatementTimes {
  /** The write guard's time in the database's clock, or null when there is none. */
  readonly guard: Date | null;
  /** The database clock's time as the statement is sent (estimated), plus SEND_TOLERANCE_MS. */
  readonly sentAt: Date;
}

interface CallScope {
  readonly gate: DatabaseGate;
  /** Wall-clock ms (Date.now()) after which the call's database work is useless; Infinity without a deadline. */
  readonly deadline: number;
  /** Statements started and not yet settled. */
  pending: number;
  handlerDone: boolean;
  released: boolean;
}

interface Waiter {
  start(): void;
}

export interface ClockOffset {
  /** The database clock minus this process's clock, in ms, as last measured by the health probe. */
  readonly offsetMs: number;
  /** Half the round trip of that measurement: the offset is known to within this. */
  readonly uncertaintyMs: number;
}

export interface DatabaseGateOptions {
  /** Calls needing the database (or a password hash) admitted at once. */
  readonly maxCalls: number;
  /** Statements running at once: the pool size. */
  readonly statementSlots: number;
  readonly statementTimeoutMs: number;
  /** Retry delay suggested to refused callers (google.rpc.RetryInfo). */
  readonly retryAfterMs: number;
  /** How the database clock relates to ours, for the write guard. */
  readonly clockOffset?: () => ClockOffset;
}

/** Time kept back from the caller's deadline to send UNAVAILABLE before it passes. */
export function deadlineMarginMs(remainingMs: number): number {
  return Math.min(250, Math.max(20, remainingMs * 0.1));
}

/**
 * The guard is set this much before the time the call gives up on a statement, so that an answer
 * that left the database just before the guard still arrives before the call gives up.
 */
const GUARD_LEAD_MS = 50;

/** The admitted call the current code runs for, if any (one store for every gate in the process). */
const storage = new AsyncLocalStorage<CallScope>();

/**
 * Runs one statement under the bounds of the call the code runs for (see DatabaseGate.statement),
 * or directly, without bounds, outside any call: start-up, scheduled jobs, the CLI.
 */
export function runStatement<T>(execute: (times: StatementTimes) => Promise<T>): Promise<T> {
  const scope = storage.getStore();
  return scope ? scope.gate.statement(scope, execute) : execute({ guard: null, sentAt: new Date(Date.now() + SEND_TOLERANCE_MS) });
}

/** Runs `work` outside the current call: background work that must outlive it (a re-hash). */
export function outsideCall<T>(work: () => Promise<T>): Promise<T> {
  return storage.exit(work);
}

export class DatabaseGate {
  readonly #waiting: Waiter[] = [];
  #calls = 0;
  #running = 0;
  #refused = 0;
  #dropped = 0;

  constructor(private readonly options: DatabaseGateOptions) {}

  /** For metrics and health: admitted calls, statements running and waiting, refusals and drops so far. */
  get load(): { calls: number; running: number; waiting: number; refused: number; dropped: number } {
    return { calls: this.#calls, running: this.#running, waiting: this.#waiting.length, refused: this.#refused, dropped: this.#dropped };
  }

  get maxCalls(): number {
    return this.options.maxCalls;
  }

  /**
   * Runs `work` as an admitted call, or throws OVERLOADED at once when `maxCalls` calls are in
   * flight. The call's slot is held until `work` has settled and every statement it started has
   * settled too: a statement abandoned at its deadline still occupies a connection until the
   * database answers, and is still counted.
   */
  admit<T>(deadline: number, work: () => Promise<T>): Promise<T> {
    if (this.#calls >= this.options.maxCalls) {
      this.#refused += 1;
      throw DomainError.overloaded('the server is at capacity; retry shortly', this.options.retryAfterMs);
    }
    this.#calls += 1;
    const scope: CallScope = { gate: this, deadline, pending: 0, handlerDone: false, released: false };
    const settle = () => {
      scope.handlerDone = true;
      this.#maybeRelease(scope);
    };
    const result = storage.run(scope, work);
    result.then(settle, settle);
    return result;
  }

  #maybeRelease(scope: CallScope): void {
    if (scope.released || !scope.handlerDone || scope.pending > 0) return;
    scope.released = true;
    this.#calls -= 1;
  }

  /** One statement of an admitted call: see runStatement. */
  async statement<T>(scope: CallScope, execute: (times: StatementTimes) => Promise<T>): Promise<T> {
    const now = Date.now();
    const end = Math.min(now + this.options.statementTimeoutMs, scope.deadline);
    if (end <= now) {
      this.#dropped += 1;
      throw new CallDeadlineError();
    }
    scope.pending += 1;
    let acquired = false;
    try {
      await this.#acquire(end);
      acquired = true;
    } finally {
      if (!acquired) {
        scope.pending -= 1;
        this.#maybeRelease(scope);
      }
    }
    const offset = this.options.clockOffset?.() ?? { offsetMs: 0, uncertaintyMs: 0 };
    const guard = new Date(end - GUARD_LEAD_MS + offset.offsetMs - offset.uncertaintyMs);
    const running = execute({ guard, sentAt: new Date(Date.now() + offset.offsetMs + offset.uncertaintyMs + SEND_TOLERANCE_MS) });
    const done = () => {
      this.#release();
      scope.pending -= 1;
      this.#maybeRelease(scope);
    };
    running.then(done, done);
    const remaining = end - Date.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        running,
        new Promise<never>((_, reject) => {
          // As for the readiness ping: an answer that arrived while the loop was busy wins.
          timer = setTimeout(() => setImmediate(() => reject(new CallDeadlineError())), Math.max(0, remaining));
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Takes a statement slot, waiting in order until `end` at most. */
  #acquire(end: number): Promise<void> {
    if (this.#running < this.options.statementSlots && this.#waiting.length === 0) {
      this.#running += 1;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        start: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        const index = this.#waiting.indexOf(waiter);
        if (index >= 0) this.#waiting.splice(index, 1);
        this.#dropped += 1;
        reject(new CallDeadlineError('no database connection became free within the call\'s deadline'));
      }, end - Date.now());
      this.#waiting.push(waiter);
    });
  }

  #release(): void {
    // The slot passes straight to the next waiter, so a newcomer never jumps the queue.
    const next = this.#waiting.shift();
    if (next) next.start();
    else this.#running -= 1;
  }
}
