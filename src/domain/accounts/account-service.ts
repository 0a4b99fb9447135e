import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import type { Logger } from '../../observability/logger.js';
import type { Clock } from '../clock.js';
import type { PasswordHasher } from '../passwords/hasher.js';

/** Where a one-time token is redeemed and for how long it works. */
export interface OneTimeTokenPolicy {
  /** The page that redeems it; the link is this URL with `?token=<token>` appended. */
  readonly url: string;
  readonly ttlMs: number;
}

export interface AccountServiceDependencies {
  readonly orm: MikroORM;
  readonly hasher: PasswordHasher;
  readonly passwordReset: OneTimeTokenPolicy;
  readonly emailVerification: OneTimeTokenPolicy;
  readonly clock: Clock;
  readonly logger: Logger;
}

/**
 * The password and account flows (ChangePassword, password reset, email verification) and user
 * administration (GetUser, DisableUser, EnableUser, SetUserRoles). Each method takes the
 * authenticated Caller where the RPC needs one, and plain values; the gRPC handlers translate.
 */
export class AccountService {
  constructor(private readonly deps: AccountServiceDependencies) {}

  protected em(): EntityManager {
    return this.deps.orm.em.fork();
  }
}
