import { setTimeout as sleep } from 'node:timers/promises';
import type { Orm } from './orm.js';
import type { Logger } from '../observability/logger.js';

/** SQLSTATE classes and codes that mean "the database cannot be reached", not "the query is wrong". */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300', '57014']);
const UNAVAILABLE_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const UNAVAILABLE_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'Query read timeout',
  'Client has encountered a connection error',
  'Connection ended unexpectedly',
  'connection is closed',
];

/**
 * True when an error (or anything in its `cause` chain) says the database is unreachable or
 * went away: such failures become UNAVAILABLE for the caller and prompt a health re-check.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (UNAVAILABLE_ERRNOS.has(code) || UNAVAILABLE_SQLSTATES.has(code) || code.startsWith('08'))) {
      return true;
    }
    if (UNAVAILABLE_MESSAGES.some((m) => e instanceof Error && e.message.includes(m))) return true;
  }
  return false;
}

/** The host (and port) a connection URL points at, safe to log: never the user or password. */
export function describeDatabaseHost(url: string): string {
  try {
    const parsed = new URL(url);
    return parsed.port ? `${parsed.hostname}:${parsed.port}` : parsed.hostname;
  } catch {
    return 'the configured database';
  }
}

export class DatabaseUnreachableError extends Error {
  constructor(host: string, waitedMs: number) {
    super(`database at ${host} is unreachable after ${(waitedMs / 1000).toFixed(1)}s of retrying`);
    this.name = 'DatabaseUnreachableError';
  }
}

/** `select 1`, bounded by `timeoutMs`; `signal` (e.g. SIGTERM during start-up) stops waiting at once. */
async function ping(orm: Orm, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const controller = new AbortController();
  const timer = signal ? AbortSignal.any([controller.signal, signal]) : controller.signal;
  try {
    await Promise.race([
      orm.em.getConnection().execute('select 1'),
      sleep(timeoutMs, undefined, { signal: timer }).then(() => {
        throw new Error(`database ping timed out after ${timeoutMs}ms`);
      }),
    ]);
  } finally {
    controller.abort();
  }
}

/**
 * Start-up: retries with capped exponential backoff until the database answers or `timeoutMs`
 * has passed (the last attempt is made at the deadline), then gives up with an error naming the
 * host (never the credentials). `signal` aborts the wait, e.g. on SIGTERM during start-up.
 */
export async function waitForDatabase(
  orm: Orm,
  options: { timeoutMs: number; host: string; logger: Logger; signal?: AbortSignal },
): Promise<void> {
  const started = Date.now();
  const deadline = started + options.timeoutMs;
  let delay = 200;
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    try {
      await ping(orm, Math.max(1_000, Math.min(options.timeoutMs, 10_000)), options.signal);
      if (attempt > 1) options.logger.info({ host: options.host, attempt }, 'database reachable');
      return;
    } catch (error) {
      options.signal?.throwIfAborted();
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new DatabaseUnreachableError(options.host, Date.now() - started);
      const wait = Math.min(delay, remaining);
      options.logger.warn(
        { host: options.host, attempt, retryInMs: wait, err: { message: (error as Error).message } },
        'database not reachable yet, retrying',
      );
      await sleep(wait, undefined, options.signal ? { signal: options.signal } : undefined);
      delay = Math.min(delay * 2, 5_000);
    }
  }
}

export type DatabaseStatus = 'available' | 'unavailable';

/**
 * Watches the database with a periodic `select 1` and tells listeners when it goes away or comes
 * back. Calls consult `available` to fail fast with UNAVAILABLE instead of waiting on a dead pool;
 * a call that hits a connection error reports it, which triggers an immediate re-check.
 */
export class DatabaseMonitor {
  #status: DatabaseStatus = 'available';
  #timer: NodeJS.Timeout | undefined;
  #checking: Promise<void> | undefined;
  readonly #listeners = new Set<(status: DatabaseStatus) => void>();

  constructor(
    private readonly orm: Orm,
    private readonly options: { intervalMs: number; pingTimeoutMs: number; logger: Logger },
  ) {}

  get available(): boolean {
    return this.#status === 'available';
  }

  onChange(listener: (status: DatabaseStatus) => void): void {
    this.#listeners.add(listener);
  }

  start(): void {
    this.#timer ??= setInterval(() => void this.check(), this.options.intervalMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#checking;
  }

  /** Pings now (coalescing concurrent requests) and updates the status. */
  check(): Promise<void> {
    this.#checking ??= (async () => {
      try {
        await ping(this.orm, this.options.pingTimeoutMs);
        this.#set('available');
      } catch (error) {
        this.#set('unavailable', error);
      } finally {
        this.#checking = undefined;
      }
    })();
    return this.#checking;
  }

  /** A call saw a connection failure: mark unavailable at once and confirm with a ping. */
  reportFailure(error: unknown): void {
    this.#set('unavailable', error);
    void this.check();
  }

  #set(status: DatabaseStatus, error?: unknown): void {
    if (status === this.#status) return;
    this.#status = status;
    if (status === 'unavailable') {
      this.options.logger.error({ err: { message: (error as Error | undefined)?.message } }, 'database unavailable');
    } else {
      this.options.logger.info('database available again');
    }
    for (const listener of this.#listeners) listener(status);
  }
}
