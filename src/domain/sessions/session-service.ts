import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import type { Logger } from '../../observability/logger.js';
import type { Clock } from '../clock.js';

export interface SessionServiceDependencies {
  readonly orm: MikroORM;
  readonly clock: Clock;
  readonly logger: Logger;
}

/**
 * Session listing and revocation for owners and services (SessionService). Each method takes the
 * authenticated Caller and plain values; the gRPC handlers translate. Every call forks its own
 * EntityManager.
 */
export class SessionService {
  constructor(private readonly deps: SessionServiceDependencies) {}

  protected em(): EntityManager {
    return this.deps.orm.em.fork();
  }
}
