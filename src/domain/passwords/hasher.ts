import bcrypt from 'bcrypt';
import { createHmac, randomBytes } from 'node:crypto';
import { DomainError } from '../errors.js';
import { FairLimiter, LimiterFullError, type FairKey, type LimiterTurn } from '../limiter.js';

export interface PasswordHasherOptions {
  readonly cost: number;
  readonly concurrency: number;
  readonly queueLimit: number;
  /** Hashes one source (client address) may have waiting; more are refused at once. */
  readonly queuePerSource: number;
  /** Suggested wait for a refused caller (google.rpc.RetryInfo). */
  readonly retryAfterMs: number;
}

export interface VerifyResult {
  readonly match: boolean;
  /** The stored hash was made at another cost; re-hash it now that the password is known. */
  readonly needsRehash: boolean;
}

/** Where a call that needs a hash comes from: its source decides its share of the hashing queue. */
export interface RequestOrigin {
  /** The end user's address (as a trusted gateway reports it) or the peer's; see docs/architecture.md. */
  readonly source: string;
  /** Aborted when the caller cancels or its deadline passes. */
  readonly signal?: AbortSignal;
}

/**
 * A place in the hashing queue, taken before any other work of the call (so a call refused for
 * capacity is refused before it looks anything up), used for one or more hashes, then released.
 * The database lookup a login needs runs while the turn waits in the queue.
 */
export interface HashTurn {
  verify(password: string, hash: string | undefined): Promise<VerifyResult>;
  hash(password: string): Promise<string>;
  /** Idempotent: leaves the queue, or frees the thread-pool slot once the hashes are done. */
  release(): void;
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
 * Password hashing on the libuv thread pool (bcrypt's async API), behind a fair limiter: at most
 * `concurrency` hashes run at once, and the waiting ones are served in turn by source (client
 * address) and, within a source, by account, so one client flooding wrong passwords only delays
 * itself. Beyond a source's share, or the whole queue, a call fails at once with
 * RESOURCE_EXHAUSTED (RATE_LIMITED, or OVERLOADED) and a RetryInfo, so a login storm costs bounded
 * memory and never delays the event loop, where token validation runs.
 */
export class PasswordHasher {
  private readonly limiter: FairLimiter;

  private constructor(
    private readonly options: PasswordHasherOptions,
    /** Compared against when the email is unknown, so that case costs the same as a wrong password. */
    private readonly dummyHash: string,
  ) {
    this.limiter = new FairLimiter(options.concurrency, options.queueLimit, options.queuePerSource);
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

  /**
   * Takes a place in the queue for `key`, or throws RESOURCE_EXHAUSTED at once. `signal` (the
   * call's cancellation or deadline) takes a waiting turn out of the queue.
   */
  admit(key: FairKey, signal?: AbortSignal): HashTurn {
    let turn: LimiterTurn;
    try {
      turn = this.limiter.acquire(key, signal);
    } catch (error) {
      throw refusal(error, this.options.retryAfterMs);
    }
    const retryAfterMs = this.options.retryAfterMs;
    const run = async <T>(task: () => Promise<T>): Promise<T> => {
      try {
        await turn.ready;
      } catch (error) {
        throw refusal(error, retryAfterMs);
      }
      return task();
    };
    return {
      verify: async (password, hash) => {
        const target = hash ?? this.dummyHash;
        const match = await run(() => bcrypt.compare(prehash(password), target));
        return { match: match && hash !== undefined, needsRehash: match && costOf(target) !== this.options.cost };
      },
      hash: (password) => run(() => bcrypt.hash(prehash(password), this.options.cost)),
      release: () => turn.release(),
    };
  }

  /** One hash in its own turn (for work without a caller, such as re-hashing after a login). */
  async hash(password: string, key: FairKey): Promise<string> {
    const turn = this.admit(key);
    try {
      return await turn.hash(password);
    } finally {
      turn.release();
    }
  }
}

/** The caller-facing error for a limiter refusal; anything else (an abort) passes through. */
function refusal(error: unknown, retryAfterMs: number): unknown {
  if (!(error instanceof LimiterFullError)) return error;
  return error.scope === 'source'
    ? DomainError.rateLimited('too many sign-in attempts from this client are being processed; retry shortly', retryAfterMs)
    : DomainError.overloaded('too many sign-in attempts are being processed; retry shortly', retryAfterMs);
}
