import { MikroORM, type Options } from '@mikro-orm/postgresql';
import { Migrator } from '@mikro-orm/migrations';
import { entities } from './entities/index.js';
import { migrationsList } from './migrations/index.js';
import type { Logger } from '../observability/logger.js';

export type Orm = MikroORM;

export interface OrmOptions {
  readonly clientUrl: string;
  readonly poolMax: number;
  /** Bounds each new connection attempt, so an unreachable database fails a call instead of hanging it. */
  readonly connectTimeoutMs: number;
  /** Server-side statement_timeout, plus a client-side query timeout slightly above it. */
  readonly statementTimeoutMs: number;
  readonly logger: Logger;
}

/**
 * Builds the ORM. Nothing connects here: MikroORM 7 connects lazily, so start-up decides how
 * long to wait for the database (see waitForDatabase).
 */
export async function createOrm(options: OrmOptions): Promise<Orm> {
  const log = options.logger.child({ component: 'orm' });
  const config: Options = {
    clientUrl: options.clientUrl,
    entities,
    extensions: [Migrator],
    pool: { min: 0, max: options.poolMax, idleTimeoutMillis: 30_000 },
    driverOptions: {
      connectionTimeoutMillis: options.connectTimeoutMs,
      statement_timeout: options.statementTimeoutMs,
      query_timeout: options.statementTimeoutMs + 1_000,
      // Dead peers (a pulled cable, a failed-over primary) are noticed instead of waited on forever.
      keepAlive: true,
    },
    migrations: {
      migrationsList,
      tableName: 'mikro_orm_migrations',
      transactional: true,
      allOrNothing: true,
      snapshot: false,
      silent: true,
    },
    discovery: { warnWhenNoEntities: true },
    // The migrations own the database functions and triggers (the call-deadline guard, the
    // revocation feed's writers); the schema diff must not propose to drop them for not being
    // mirrored in entity metadata.
    schemaGenerator: { ignoreRoutines: true, ignoreTriggers: true },
    // At LOG_LEVEL=trace every SQL statement is logged (without its parameters, which can hold
    // password and token hashes): how an operator, or a test, sees what a call sends.
    debug: log.isLevelEnabled('trace') ? ['query'] : false,
    colors: false,
    logger: (message) => log.trace(message),
    // Entities are never loaded implicitly through the global EntityManager: each RPC and each
    // scheduled run forks its own.
    allowGlobalContext: false,
  };
  return MikroORM.init(config);
}
