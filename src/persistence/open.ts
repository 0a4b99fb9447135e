import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import { describeDatabaseHost, waitForDatabase } from './database.js';
import type { EmbeddedDatabase } from './embedded.js';
import { createOrm, type Orm } from './orm.js';

export interface OpenDatabase {
  readonly orm: Orm;
  /** The connection URL of a PostgreSQL server (the embedded one's too): credentials inside, never log it. */
  readonly url: string;
  /** Connections in the request pool. */
  readonly poolMax: number;
  /** Host and port, safe to log. */
  readonly host: string;
  close(): Promise<void>;
}

/**
 * DATABASE_URL is unset but this build has no embedded database: PGlite is a development
 * dependency, left out of the container image and of `npm ci --omit=dev` installs.
 */
export class EmbeddedDatabaseUnavailableError extends Error {
  constructor() {
    super(
      'DATABASE_URL is not set and the embedded development database (PGlite) is not installed in this build (the container image leaves it out): set DATABASE_URL to a PostgreSQL server',
    );
    this.name = 'EmbeddedDatabaseUnavailableError';
  }
}

/** Loads the embedded database module, whose PGlite packages are development dependencies. */
async function loadEmbedded(): Promise<typeof import('./embedded.js')> {
  try {
    // Loaded only when used: PGlite adds about 9 MB to every process that imports it.
    return await import('./embedded.js');
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException;
    if (code === 'ERR_MODULE_NOT_FOUND' && message.includes('@electric-sql/pglite')) throw new EmbeddedDatabaseUnavailableError();
    throw error;
  }
}

export class SchemaOutdatedError extends Error {
  constructor(pending: readonly string[]) {
    super(`database schema is outdated: ${pending.length} pending migration(s) (${pending.join(', ')}); run \`latchkey migrate\``);
    this.name = 'SchemaOutdatedError';
  }
}

/**
 * Opens the configured database (or starts the embedded one), waits until it answers, and
 * migrates it when asked to. On failure, or when `signal` aborts the wait, everything opened so
 * far is closed again. Migrations themselves are never interrupted half-way.
 */
export async function openDatabase(
  config: Config,
  logger: Logger,
  options: { migrate: 'apply' | 'require-current'; signal?: AbortSignal },
): Promise<OpenDatabase> {
  let embedded: EmbeddedDatabase | undefined;
  let url = config.DATABASE_URL;
  if (url === undefined) {
    const { startEmbeddedDatabase } = await loadEmbedded();
    embedded = await startEmbeddedDatabase(config.LATCHKEY_DATA_DIR);
    url = embedded.url;
    logger.warn(
      { dataDir: config.LATCHKEY_DATA_DIR },
      'DATABASE_URL is not set: using the embedded PGlite database. This is for development only; set DATABASE_URL for production.',
    );
  }
  const host = embedded ? 'embedded' : describeDatabaseHost(url);
  // PGlite runs one query at a time and can wedge when a second connection queries while a
  // transaction is open, so the embedded path always uses exactly one connection.
  const poolMax = embedded ? 1 : config.DATABASE_POOL_MAX;
  const orm = await createOrm({
    clientUrl: url,
    poolMax,
    // Start-up retries for the whole DATABASE_CONNECT_TIMEOUT (waitForDatabase); a single attempt
    // while serving gives up sooner, so a call never waits long on a database that is gone.
    connectTimeoutMs: Math.min(config.DATABASE_CONNECT_TIMEOUT, 5_000),
    statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT,
    logger,
  });
  const close = async () => {
    await orm.close(true);
    await embedded?.stop();
  };
  try {
    await waitForDatabase(orm, { timeoutMs: config.DATABASE_CONNECT_TIMEOUT, host, logger, signal: options.signal });
    options.signal?.throwIfAborted();
    const migrate = embedded ? 'apply' : options.migrate;
    if (migrate === 'apply') {
      const applied = await orm.migrator.up();
      if (applied.length > 0) logger.info({ migrations: applied.map((m) => m.name) }, 'migrations applied');
    } else if (migrate === 'require-current') {
      const pending = await orm.migrator.getPending();
      if (pending.length > 0) throw new SchemaOutdatedError(pending.map((m) => m.name));
    }
  } catch (error) {
    await close().catch(() => undefined);
    throw error;
  }
  return { orm, host, close, url, poolMax };
}
