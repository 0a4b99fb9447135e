import bcrypt from 'bcrypt';
import { createHmac, randomBytes } from 'node:crypto';
import { DomainError } from '../errors.js';
import { ConcurrencyLimiter, LimiterFullError } from '../limiter.js';

export interface PasswordHasherOptions {
  readonly cost: number;
  readonly concurrency: number;
  readonly queueLimit: number;
}

export interface VerifyResult {
  readonly match: boolean;
  /** The stored hash was made at another cost; re-hash it now that the password is known. */
  readonly needsRehash: boolean;
}

/**
 * bcrypt reads only the first 72 bytes of its input, so two long passwords sharing a prefix would
 * unlock each other's accounts. Every password is therefore first reduced to a fixed 44-character
 * HMAC-SHA256 digest (base64, no NUL bytes). The HMAC key is a fixed label, not a secret: it only
 * makes the digest specific to Latchkey, so a leaked table of plain SHA-256 password digests
 * elsewhere cannot be tried against these hashes directly.
 */
function prehash(password: string): string {
  return createHmac('sha256', 'latchkey/password/v1').update(password, 'utf8').digest('base64');
}

function costOf(hash: string): number | undefined {
  const match = /^\$2[aby]\$(\d{2})\$/.exec(hash);
  return match ? Number(match[1]) : undefined;
}

/**
 * Password hashing on the libuv thread pool (bcrypt's async API), behind a limiter: at most
 * `concurrency` hashes run at once and `queueLimit` wait; beyond that a call fails at once with
 * RATE_LIMITED, so a login storm costs bounded memory and never delays the event loop, where token
 * validation runs.
 */
export class PasswordHasher {
  private readonly limiter: ConcurrencyLimiter;

  private constructor(
    private readonly options: PasswordHasherOptions,
    /** Compared against when the email is unknown, so that case costs the same as a wrong password. */
    private readonly dummyHash: string,
  ) {
    this.limiter = new ConcurrencyLimiter(options.concurrency, options.queueLimit);
  }

  static async create(options: PasswordHasherOptions): Promise<PasswordHasher> {
    const dummyHash = await bcrypt.hash(prehash(randomBytes(32).toString('base64')), options.cost);
    return new PasswordHasher(options, dummyHash);
  }

  get cost(): number {
    return this.options.cost;
  }

  /** Hashes in flight and waiting, for metrics. */
  get load(): { running: number; queued: number } {
    return { running: this.limiter.running, queued: this.limiter.queued };
  }

  hash(password: string, signal?: AbortSignal): Promise<string> {
    return this.limited(() => bcrypt.hash(prehash(password), this.options.cost), signal);
  }

  /** Compares against `hash`, or against the start-up dummy hash when there is no user (same cost, same time). */
  async verify(password: string, hash: string | undefined, signal?: AbortSignal): Promise<VerifyResult> {
    const target = hash ?? this.dummyHash;
    const match = await this.limited(() => bcrypt.compare(prehash(password), target), signal);
    return { match: match && hash !== undefined, needsRehash: match && costOf(target) !== this.options.cost };
  }

  private async limited<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    try {
      return await this.limiter.run(task, signal);
    } catch (error) {
      if (error instanceof LimiterFullError) {
        throw new DomainError('RATE_LIMITED', 'too many sign-in attempts are being processed; retry shortly');
      }
      throw error;
    }
  }
}
