import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { ClockOffset } from './call-scope.js';
import type { Orm } from './orm.js';
import type { Logger } from '../observability/logger.js';

/** SQLSTATE classes and codes that mean "the database cannot be reached", not "the query is wrong". */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);
const UNAVAILABLE_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const UNAVAILABLE_MESSAGES = [
  'Connection terminated',
  'Client has encountered a connection error',
  'Connection ended unexpectedly',
  'connection is closed',
];
/**
 * Errors that say the database did not answer in time: a statement timeout, a client-side read
 * timeout, no pool connection within the connect timeout. A slow or saturated database looks like
 * this as much as a partitioned one does, so they fail the call with UNAVAILABLE but only prompt a
 * health check by the probe; they never mark the database down by themselves.
 */
const SLOW_SQLSTATES = new Set(['57014']);
const SLOW_MESSAGES = ['timeout exceeded when trying to connect', 'Query read timeout'];

function someCause(error: unknown, test: (e: Error) => boolean): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (test(e)) return true;
  }
  return false;
}

/** True when an error (or its cause chain) says the database did not answer in time (see SLOW_SQLSTATES). */
export function isDatabaseSlow(error: unknown): boolean {
  return someCause(error, (e) => {
    const code = (e as { code?: unknown }).code;
    return (typeof code === 'string' && SLOW_SQLSTATES.has(code)) || SLOW_MESSAGES.some((m) => e.message.includes(m));
  });
}

/**
 * True when an error (or anything in its `cause` chain) says the database is unreachable or
 * went away: such failures become UNAVAILABLE for the caller and prompt a health re-check.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  return someCause(error, (e) => {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (UNAVAILABLE_ERRNOS.has(code) || UNAVAILABLE_SQLSTATES.has(code) || code.startsWith('08'))) {
      return true;
    }
    return UNAVAILABLE_MESSAGES.some((m) => e.message.includes(m));
  });
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

/** The readiness ping's text, recognisable in a statement log. */
export const READINESS_PING = 'select 1 as readiness';

/** `select 1`, bounded by `timeoutMs`; `signal` (e.g. SIGTERM during start-up) stops waiting at once. */
async function ping(orm: Orm, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const controller = new AbortController();
  const timer = signal ? AbortSignal.any([controller.signal, signal]) : controller.signal;
  try {
    await Promise.race([
      orm.em.getConnection().execute(READINESS_PING),
      sleep(timeoutMs, undefined, { signal: timer }).then(() => {
        throw new PingTimeoutError(timeoutMs);
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

/** How readiness asks the database whether it is there; resolves with how its clock relates to ours. */
export interface DatabaseProbe {
  ping(timeoutMs: number): Promise<ClockOffset>;
  close(): Promise<void>;
  /** The ping waits in the request pool's queue (PoolProbe): a timeout while the pool is busy says "busy". */
  readonly sharesPool?: boolean;
}

export class PingTimeoutError extends Error {
  constructor(timeoutMs: number) {
    super(`database ping timed out after ${timeoutMs}ms`);
    this.name = 'PingTimeoutError';
  }
}

/**
 * The readiness probe's own connection, outside the request pool: a pool busy with slow
 * statements or a flood of calls makes calls wait, but never makes this ping wait, so "busy" is
 * never reported as "down". Each ping also measures the database clock against ours (the write
 * guard of call-scope.ts needs it). A ping that times out drops the connection; the next ping
 * connects afresh.
 */
export class DedicatedProbe implements DatabaseProbe {
  #client: pg.Client | undefined;

  constructor(private readonly url: string) {}

  async ping(timeoutMs: number): Promise<ClockOffset> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      // The verdict waits one turn of the event loop (setImmediate runs after the I/O poll): when a
      // flood kept the loop busy past the timeout, an answer already sitting in the socket wins,
      // so a busy process never reads as a database that is down.
      timer = setTimeout(() => setImmediate(() => reject(new PingTimeoutError(timeoutMs))), timeoutMs);
    });
    try {
      const client = await Promise.race([this.#connected(timeoutMs), timeout]);
      const sent = Date.now();
      const result = await Promise.race([client.query<{ now: Date }>('select clock_timestamp() as now'), timeout]);
      const received = Date.now();
      const databaseNow = result.rows[0]!.now.getTime();
      return { offsetMs: databaseNow - (sent + received) / 2, uncertaintyMs: (received - sent) / 2 };
    } catch (error) {
      this.#drop();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  async #connected(timeoutMs: number): Promise<pg.Client> {
    if (this.#client) return this.#client;
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: timeoutMs, keepAlive: true, application_name: 'latchkey-readiness' });
    // A connection lost between pings is only noticed by the next ping.
    client.on('error', () => {
      if (this.#client === client) this.#client = undefined;
    });
    this.#client = client;
    try {
      await client.connect();
    } catch (error) {
      this.#drop();
      throw error;
    }
    return client;
  }

  #drop(): void {
    const client = this.#client;
    this.#client = undefined;
    // end() waits for the server's goodbye, which a partitioned server never sends.
    (client as unknown as { connection?: { stream?: { destroy(): void } } } | undefined)?.connection?.stream?.destroy();
    client?.end().catch(() => undefined);
  }

  async close(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    if (client) await Promise.race([client.end().catch(() => undefined), sleep(1_000)]);
  }
}

/**
 * The probe through the request pool, for a single-connection setup (the embedded PGlite, which
 * runs every connection's messages on one backend: a second connection's query could land inside
 * the first one's transaction). There, busy and down cannot be told apart by a connection anyway.
 */
export class PoolProbe implements DatabaseProbe {
  readonly sharesPool = true;

  constructor(private readonly orm: Orm) {}

  async ping(timeoutMs: number): Promise<ClockOffset> {
    await ping(this.orm, timeoutMs);
    return { offsetMs: 0, uncertaintyMs: 0 };
  }

  async close(): Promise<void> {}
}

/**
 * Watches the database with a periodic ping on the probe and tells listeners when it goes away
 * or comes back. Calls consult `available` to fail fast with UNAVAILABLE instead of waiting on a
 * dead pool; a call that hits a connection error reports it (marked down at once, then
 * confirmed), and a call that found the database slow asks for a check.
 */
export class DatabaseMonitor {
  #status: DatabaseStatus = 'available';
  #timer: NodeJS.Timeout | undefined;
  #checking: Promise<void> | undefined;
  #clock: ClockOffset = { offsetMs: 0, uncertaintyMs: 0 };
  readonly #listeners = new Set<(status: DatabaseStatus) => void>();

  constructor(
    private readonly probe: DatabaseProbe,
    private readonly options: {
      intervalMs: number;
      pingTimeoutMs: number;
      logger: Logger;
      /** Whether calls' statements hold or wait for pool connections now (see DatabaseProbe.sharesPool). */
      poolBusy?: () => boolean;
    },
  ) {}

  get available(): boolean {
    return this.#status === 'available';
  }

  /** The database clock relative to ours, as of the last successful ping. */
  get clockOffset(): ClockOffset {
    return this.#clock;
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
    await this.probe.close();
  }

  /** Pings now (coalescing concurrent requests) and updates the status. */
  check(): Promise<void> {
    this.#checking ??= (async () => {
      try {
        this.#clock = await this.probe.ping(this.options.pingTimeoutMs);
        this.#set('available');
      } catch (error) {
        // A ping queued behind the calls on a single shared connection tells nothing new when it
        // times out while they run: that is a busy pool. Connection errors still count.
        if (error instanceof PingTimeoutError && this.probe.sharesPool && this.options.poolBusy?.()) return;
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
