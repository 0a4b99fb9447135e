import { createHmac, hkdfSync } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { Logger } from '../../observability/logger.js';
import { throttles, type LockoutPolicy, type RecordedFailure } from '../../persistence/repositories/throttles.js';

export type { LockoutPolicy };

/**
 * Per-account sign-in throttling (issue 18), shared by Login, ChangePassword's current-password
 * check and UnlockUser. An account's throttle row is keyed by HMAC-SHA256 (hex) of its normalised
 * email under a server key (`throttleKey`): registered and unknown emails are keyed, counted and
 * answered alike, and the table holds no email (without the key a row cannot be tied to an
 * address). The counting itself is one atomic statement: see repositories/throttles.ts.
 */
export class AccountLockout {
  constructor(
    private readonly throttleKey: Buffer,
    readonly policy: LockoutPolicy,
    private readonly logger: Logger,
  ) {}

  /**
   * The throttle key, derived from the stored refresh-secret key (random, kept across key-encryption
   * key changes), so a KEK change does not reset who is locked out.
   */
  static keyFrom(secret: Buffer): Buffer {
    return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), 'latchkey/login-throttle/v1', 32));
  }

  /** The throttle id of a normalised email (normaliseEmail). */
  idOf(email: string): string {
    return createHmac('sha256', this.throttleKey).update(email, 'utf8').digest('hex');
  }

  /** Counts one failed password check, with its rate-limited audit row, in one statement. */
  async recordFailure(
    em: EntityManager,
    throttleId: string,
    now: Date,
    audit: { userId: string | null; ipAddress?: string; userAgent?: string; details: Record<string, unknown> },
  ): Promise<RecordedFailure> {
    const recorded = await throttles.recordFailure(em, { throttleId, now, policy: this.policy }, audit);
    if (recorded.lockedNow) {
      // The throttle id, never the email: the log must not tell registered and unknown addresses apart either.
      this.logger.warn({ throttleId, lockedUntil: recorded.lockedUntil?.toISOString(), lockCount: recorded.lockCount }, 'account sign-in locked after repeated failures');
    }
    return recorded;
  }
}
