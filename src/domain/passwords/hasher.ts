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
  /**
   * Resolves once the turn may hash (its slot is taken), or rejects as verify would. Work that
   * must see what earlier turns wrote (the login's lock check) waits for it first.
   */
  started(): Promise<void>;
  /**
   * Compares with `hash`, or, when the account is unknown (`hash` undefined), with a dummy hash
   * whose cost is chosen for `unknownKey` (see DummyHashes), so it costs what a stored hash costs.
   */
  verify(password: string, hash: string | undefined, unknownKey?: string): Promise<VerifyResult>;
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

export function costOf(hash: string): number | undefined {
  const match = /^\$2[aby]\$(\d{2})\$/.exec(hash);
  return match ? Number(match[1]) : undefined;
}

/**
 * The hashes an unknown email is compared against, one per bcrypt cost, and how many stored
 * hashes have each cost (issue 18: after a BCRYPT_COST change, stored hashes keep their old cost
 * until their next successful login, so a dummy at the new cost made unknown emails slower than
 * wrong passwords).
 *
 * An unknown email is compared against the dummy of a cost drawn from the costs of the stored
 * hashes, in their proportions, by a keyed hash of the email (`unknownKey`: the account's
 * throttle id, HMAC-SHA256 under a server key). So:
 * - the same unknown email always costs the same, as a registered account does (a cost drawn at
 *   random per attempt would show as two timings for one email, which no real account has);
 * - across emails, unknown ones take each cost in the same proportions as registered ones, and
 *   which cost an email gets cannot be predicted without the server key: knowing which costs exist,
 *   and how often, tells an attacker nothing about whether a given email is registered.
 * What an observer can still learn is the proportion of accounts at each cost, which is no
 * secret of any account. The proportions are read at start-up and kept current
 * (`PasswordHasher.refreshCostProfile`, every 10 minutes, and after each registration or re-hash on
 * this replica); a change moves some unknown emails to another cost, as re-hashes move accounts.
 */
export class DummyHashes {
  /** Stored hashes by cost, for the costs whose dummy is ready, in ascending cost order. */
  private profile: [cost: number, count: number][] = [];
  private readonly dummies = new Map<number, string>();
  private readonly pending = new Map<number, Promise<void>>();
  private counts = new Map<number, number>();

  constructor(private readonly fallbackCost: number) {}

  /** Makes the dummy for `cost` (once); resolves when it is ready. */
  prepare(cost: number): Promise<void> {
    if (this.dummies.has(cost)) return Promise.resolve();
    let made = this.pending.get(cost);
    if (!made) {
      made = bcrypt.hash(prehash(randomBytes(32).toString('base64')), cost).then((hash) => {
        this.dummies.set(cost, hash);
        this.pending.delete(cost);
        this.rebuild();
      });
      this.pending.set(cost, made);
    }
    return made;
  }

  /** Replaces the counts (cost → stored hashes); dummies for new costs are made in the background. */
  setCounts(counts: ReadonlyMap<number, number>): Promise<void> {
    this.counts = new Map([...counts].filter(([, count]) => count > 0));
    this.rebuild();
    return Promise.all([...this.counts.keys()].map((cost) => this.prepare(cost))).then(() => undefined);
  }

  /** One stored hash changed cost (`from` undefined: a new one). */
  moved(from: number | undefined, to: number): void {
    if (from === to) return;
    if (from !== undefined && (this.counts.get(from) ?? 0) > 0) this.counts.set(from, this.counts.get(from)! - 1);
    this.counts.set(to, (this.counts.get(to) ?? 0) + 1);
    this.rebuild();
    void this.prepare(to).catch(() => undefined);
  }

  private rebuild(): void {
    this.profile = [...this.counts]
      .filter(([cost, count]) => count > 0 && this.dummies.has(cost))
      .sort(([a], [b]) => a - b);
  }

  /** The proportions in use, for logs and tests. */
  get costs(): Record<number, number> {
    return Object.fromEntries(this.profile);
  }

  /** The dummy for an unknown email with this key (hex; at least 12 digits), or for no key the fallback cost's. */
  pick(unknownKey: string | undefined): string {
    const fallback = this.dummies.get(this.fallbackCost);
    if (this.profile.length === 0 || unknownKey === undefined) {
      if (!fallback) throw new Error('the dummy hash is not ready');
      return fallback;
    }
    const total = this.profile.reduce((sum, [, count]) => sum + count, 0);
    // 48 bits of the key, scaled to the number of stored hashes: exact for any table below 2^48 rows.
    const position = Math.floor((Number.parseInt(unknownKey.slice(0, 12), 16) / 2 ** 48) * total);
    let seen = 0;
    for (const [cost, count] of this.profile) {
      seen += count;
      if (position < seen) return this.dummies.get(cost)!;
    }
    return this.dummies.get(this.profile.at(-1)![0])!;
  }
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
    readonly dummies: DummyHashes,
  ) {
    this.limiter = new FairLimiter(options.concurrency, options.queueLimit, options.queuePerSource);
  }

  /**
   * `storedCosts`, when given, is how many stored hashes have each cost (see DummyHashes); the
   * dummies for those costs are made before this resolves.
   */
  static async create(options: PasswordHasherOptions, storedCosts?: ReadonlyMap<number, number>): Promise<PasswordHasher> {
    const dummies = new DummyHashes(options.cost);
    await dummies.prepare(options.cost);
    if (storedCosts) await dummies.setCounts(storedCosts);
    return new PasswordHasher(options, dummies);
  }

  get cost(): number {
    return this.options.cost;
  }

  /** Hashes in flight and waiting, for metrics. */
  get load(): { running: number; queued: number; refused: number } {
    return { running: this.limiter.running, queued: this.limiter.queued, refused: this.limiter.refused };
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
      started: () => run(() => Promise.resolve()),
      verify: async (password, hash, unknownKey) => {
        const target = hash ?? this.dummies.pick(unknownKey);
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
