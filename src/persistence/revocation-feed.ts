import pg from 'pg';
import type { Logger } from '../observability/logger.js';
import type { Orm } from './orm.js';
import { executeBound, numberedPlaceholders } from './repositories/sql.js';
import {
  comparePositions,
  type FeedPosition,
  type RevocationEvent,
  type RevocationFeedFollower,
  type RevocationFeedReader,
} from '../domain/revocations/events.js';
import type { RevocationReason } from '../domain/sessions/revocation.js';
import { CoalescedRun } from '../runtime/coalesced.js';

/** The channel the feed's trigger notifies at each commit that appended events. */
export const REVOCATION_CHANNEL = 'latchkey_revocations';

interface RawEvent {
  id: string;
  xid: string;
  kind: string;
  session_id: string | null;
  user_id: string;
  reason: string;
  roles: string[] | null;
  occurred_at: Date;
  /** Below the commit-visibility watermark: no unfinished transaction can still precede it. */
  settled: boolean;
}

/** Positions leave as text (bigint and xid8 exceed a JS number); order by the table's columns, never these. */
const COLUMNS = `id::text, xid::text, kind, session_id, user_id, reason, roles, occurred_at,
  xid < pg_snapshot_xmin(pg_current_snapshot()) as settled`;

/**
 * The follower's read: every visible event after a position, settled or not (parameters: the
 * position's xid and id, the earliest occurred_at). Exported so that a statement log can tell the
 * server's own background reads from a call's statements.
 */
export const FOLLOWER_READ = `select ${COLUMNS} from revocation_events
  where (xid, id) > (?::text::xid8, ?::bigint) and occurred_at >= ?
  order by revocation_events.xid, revocation_events.id limit 5000`;

function toEvent(row: RawEvent): RevocationEvent {
  const position = { xid: BigInt(row.xid), id: BigInt(row.id) };
  const occurredAt = new Date(row.occurred_at);
  if (row.kind === 'user') {
    return { kind: 'user', position, userId: row.user_id, reason: 'ROLES_REMOVED', roles: row.roles ?? [], occurredAt };
  }
  return { kind: 'session', position, sessionId: row.session_id!, userId: row.user_id, reason: row.reason as RevocationReason, occurredAt };
}

/** Runs one statement with `?` placeholders and returns its rows. */
export interface FeedDb {
  all<R extends object>(sql: string, params: unknown[]): Promise<R[]>;
}

/** A node-postgres client or pool as a FeedDb (`?` placeholders become `$n`). */
export function pgFeedDb(db: pg.Client | pg.Pool): FeedDb {
  return {
    async all<R extends object>(sql: string, params: unknown[]) {
      const result = await db.query(numberedPlaceholders(sql), params);
      return result.rows as R[];
    },
  };
}

/** The ORM's connection as a FeedDb: for the embedded database, which has one connection only. */
export function ormFeedDb(orm: Orm): FeedDb {
  return {
    async all<R extends object>(sql: string, params: unknown[]) {
      return (await executeBound(orm.em, sql, params, 'all')) as R[];
    },
  };
}

/**
 * Reads the feed (`revocation_events`) in order. Only rows below the commit-visibility watermark
 * are returned in order: a transaction that started before them and has not ended could still
 * commit events that sort before them, so a reader that resumed after them would skip those.
 */
async function readSettled(db: FeedDb, options: { after?: FeedPosition; since?: Date; limit: number }): Promise<{ events: RevocationEvent[]; complete: boolean }> {
  const after = options.after ?? { xid: 0n, id: 0n };
  const since = options.after ? new Date(0) : (options.since ?? new Date(0));
  const rows = await db.all<RawEvent>(
    `select ${COLUMNS} from revocation_events
      where (xid, id) > (?::text::xid8, ?::bigint) and occurred_at >= ?
        and xid < pg_snapshot_xmin(pg_current_snapshot())
      order by revocation_events.xid, revocation_events.id limit ?`,
    [after.xid.toString(), after.id.toString(), since, options.limit + 1],
  );
  const complete = rows.length <= options.limit;
  return { events: rows.slice(0, options.limit).map(toEvent), complete };
}

/** The feed's reader for catch-up (WatchRevocations), on the request pool's database. */
export class PostgresRevocationFeed implements RevocationFeedReader {
  constructor(private readonly db: FeedDb) {}

  readOrdered(options: { after?: FeedPosition; since?: Date; limit: number }): Promise<{ events: RevocationEvent[]; complete: boolean }> {
    return readSettled(this.db, options);
  }

  /** The greatest position the sweep has deleted: a cursor below it may have missed events. */
  async horizon(): Promise<FeedPosition | undefined> {
    const [row] = await this.db.all<{ xid: string; event_id: string }>('select xid::text as xid, event_id::text as event_id from revocation_feed_horizon where id = 1', []);
    return row ? { xid: BigInt(row.xid), id: BigInt(row.event_id) } : undefined;
  }
}

/** The follower's connection: a FeedDb that may also deliver the channel's notifications. */
export interface FeedConnection extends FeedDb {
  close(): void;
}

/**
 * A connection of the follower's own that LISTENs on the channel: `onNotify` wakes the follower,
 * `onLost` tells it the connection is gone.
 */
export async function listeningConnection(
  url: string,
  timeoutMs: number,
  handlers: { onNotify(): void; onLost(): void },
  /** Further channels LISTENed on the same connection (e.g. signing-key changes), by name. */
  channels: Readonly<Record<string, () => void>> = {},
): Promise<FeedConnection> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs, keepAlive: true, application_name: 'latchkey-revocation-feed' });
  client.on('error', () => handlers.onLost());
  client.on('end', () => handlers.onLost());
  client.on('notification', (message) => {
    const other = message.channel === REVOCATION_CHANNEL ? undefined : channels[message.channel];
    if (other) other();
    else handlers.onNotify();
  });
  try {
    await client.connect();
    await client.query(`listen ${REVOCATION_CHANNEL}`);
    for (const channel of Object.keys(channels)) {
      if (!/^[a-z_]+$/.test(channel)) throw new Error(`invalid channel name ${channel}`);
      await client.query(`listen ${channel}`);
    }
  } catch (error) {
    destroy(client);
    throw error;
  }
  return { ...pgFeedDb(client), close: () => destroy(client) };
}

/** The ORM's connection, polled (no notifications): for the single-connection embedded database. */
export function polledConnection(orm: Orm): FeedConnection {
  return { ...ormFeedDb(orm), close: () => undefined };
}

/** What the follower keeps up to date: the replica's in-memory view (domain/revocations/view.ts). */
export interface RevocationSink {
  apply(event: RevocationEvent): void;
}

export interface FollowerOptions {
  /** Opens the follower's connection, wiring its notifications to `onNotify` and its loss to `onLost`. */
  readonly connect: (handlers: { onNotify(): void; onLost(): void }) => Promise<FeedConnection>;
  /** Every event that occurred since now − this is loaded at start (the access-token lifetime plus skew). */
  readonly relevanceMs: number;
  /** Reads at least this often even without a notification: a lost notification, or a watermark held back, only delays. */
  readonly pollIntervalMs: number;
  /** A read that takes longer drops the connection (a partition); the follower reconnects. */
  readonly readTimeoutMs: number;
  readonly logger: Logger;
}

/**
 * Follows the feed on a connection of its own: LISTEN for the wake-up, the table for the truth.
 * Every read applies every visible new event to the sink (the view does not care about order),
 * and delivers the settled ones, in order, to subscribers (WatchRevocations). `lastReadAt` (the
 * start of the last read that succeeded) tells how fresh the view is; while the connection is
 * down or reads fail, it ages and the view stops being trusted (see RevocationView).
 */
export class RevocationFollower implements RevocationFeedFollower {
  #client: FeedConnection | undefined;
  #position: FeedPosition | undefined;
  /** The furthest event read, settled or not. */
  #visible: FeedPosition | undefined;
  #lastReadAt: number | undefined;
  readonly #runs = new CoalescedRun(() => this.#read(), () => this.#stopped);
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  #connecting: Promise<void> | undefined;
  readonly #listeners = new Set<(event: RevocationEvent) => void>();

  constructor(
    private readonly sink: RevocationSink,
    private readonly options: FollowerOptions,
  ) {}

  /** Wall-clock ms when the last successful read started; undefined before the first. */
  get lastReadAt(): number | undefined {
    return this.#lastReadAt;
  }

  get connected(): boolean {
    return this.#client !== undefined;
  }

  get position(): FeedPosition | undefined {
    return this.#position;
  }

  /** Connects, loads every relevant event, and starts following. Resolves once the view is loaded. */
  async start(): Promise<void> {
    try {
      await this.#connect();
    } finally {
      this.#schedule();
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#runs.running?.catch(() => undefined);
    this.#drop();
  }

  subscribe(listener: (event: RevocationEvent) => void): { position: FeedPosition | undefined; visible?: FeedPosition; unsubscribe(): void } {
    this.#listeners.add(listener);
    return { position: this.#position, visible: this.#visible, unsubscribe: () => this.#listeners.delete(listener) };
  }

  /** Reads now (coalesced with a read in progress, which is then followed by another). */
  refresh(): Promise<void> {
    return this.#runs.request();
  }

  #schedule(): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      void this.#tick();
    }, this.options.pollIntervalMs);
    this.#timer.unref();
  }

  async #tick(): Promise<void> {
    try {
      if (!this.#client) await this.#connect();
      else await this.refresh();
    } catch (error) {
      this.options.logger.warn({ err: { message: (error as Error).message } }, 'revocation feed: read failed; the view is trusted again once a read succeeds');
      this.#drop();
    } finally {
      this.#schedule();
    }
  }

  #connect(): Promise<void> {
    this.#connecting ??= (async () => {
      let connection: FeedConnection | undefined;
      const handlers = {
        onNotify: () => {
          if (this.#client === connection) void this.refresh().catch(() => undefined);
        },
        onLost: () => {
          if (connection && this.#client === connection) this.#drop();
        },
      };
      connection = await this.#bounded(this.options.connect(handlers));
      this.#client = connection;
      // LISTEN first, then read: a commit between the two is in the read, and one after it wakes us.
      await this.refresh();
    })().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #read(): Promise<void> {
    const client = this.#client;
    if (!client) throw new Error('the revocation feed connection is down');
    const startedAt = Date.now();
    const loaded = this.#position === undefined;
    let after = this.#position;
    // Every visible event after the settled position, settled or not, in pages.
    for (;;) {
      const rows = await this.#bounded(
        client.all<RawEvent>(
          FOLLOWER_READ,
          [(after?.xid ?? 0n).toString(), (after?.id ?? 0n).toString(), loaded ? new Date(startedAt - this.options.relevanceMs) : new Date(0)],
        ),
      );
      let settledPrefix = true;
      for (const row of rows) {
        const event = toEvent(row);
        this.sink.apply(event);
        if (this.#visible === undefined || comparePositions(event.position, this.#visible) > 0) this.#visible = event.position;
        if (settledPrefix && row.settled) {
          this.#position = event.position;
          for (const listener of this.#listeners) listener(event);
        } else {
          settledPrefix = false;
        }
      }
      if (rows.length < 5000) break;
      after = toEvent(rows[rows.length - 1]!).position;
    }
    if (loaded && this.#position === undefined) {
      // An empty feed: start from the watermark's side of everything (nothing settled yet).
      this.#position = { xid: 0n, id: 0n };
    }
    this.#lastReadAt = startedAt;
  }

  async #bounded<T>(work: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        work,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => setImmediate(() => reject(new Error(`revocation feed read timed out after ${this.options.readTimeoutMs}ms`))), this.options.readTimeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  #drop(): void {
    const client = this.#client;
    this.#client = undefined;
    client?.close();
  }
}

function destroy(client: pg.Client): void {
  (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  client.end().catch(() => undefined);
}
