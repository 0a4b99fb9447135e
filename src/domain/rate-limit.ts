import { BlockList, isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { Clock } from './clock.js';
import { DomainError } from './errors.js';

/** A token bucket's shape: `perMs` tokens come back each millisecond, up to `burst`. `perMs` 0 is no limit. */
export interface BucketRate {
  readonly perMs: number;
  readonly burst: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * A token bucket per source address (issue 18), in this replica's memory. At most `maxSources`
 * buckets are kept; beyond that the least recently used is forgotten, so a flood of distinct
 * addresses costs bounded memory. A forgotten source starts again with a full bucket, which is
 * what a bucket left alone long enough holds anyway: only sources seen less recently than
 * `maxSources` others lose their debt.
 */
export class SourceBuckets {
  private readonly buckets: LRUCache<string, Bucket>;

  constructor(
    readonly rate: BucketRate,
    maxSources: number,
    private readonly clock: Clock,
  ) {
    this.buckets = new LRUCache({ max: maxSources });
  }

  /** Takes a token for `source`: undefined when granted, otherwise the milliseconds until one is back. */
  take(source: string): number | undefined {
    const { perMs, burst } = this.rate;
    if (perMs <= 0) return undefined;
    const now = this.clock.now();
    const bucket = this.buckets.get(source) ?? { tokens: burst, at: now };
    const tokens = Math.min(burst, bucket.tokens + Math.max(0, now - bucket.at) * perMs);
    if (tokens >= 1) {
      this.buckets.set(source, { tokens: tokens - 1, at: now });
      return undefined;
    }
    // A refused call takes nothing: the bucket fills as if it had not come.
    this.buckets.set(source, { tokens, at: now });
    return Math.ceil((1 - tokens) / perMs);
  }

  /** Sources remembered now, for tests and metrics. */
  get size(): number {
    return this.buckets.size;
  }
}

/** The RPCs with a per-source bucket. */
export type LimitedRpc = 'Login' | 'Register' | 'RequestPasswordReset' | 'ResetPassword' | 'VerifyEmail';

/** One bucket set per RPC; `check` throws RATE_LIMITED with a RetryInfo beyond the source's rate. */
export class SourceLimits {
  private readonly byRpc: ReadonlyMap<LimitedRpc, SourceBuckets>;

  constructor(rates: Readonly<Record<LimitedRpc, BucketRate>>, maxSources: number, clock: Clock) {
    this.byRpc = new Map(Object.entries(rates).map(([rpc, rate]) => [rpc as LimitedRpc, new SourceBuckets(rate, maxSources, clock)]));
  }

  /** Throws RESOURCE_EXHAUSTED (`RATE_LIMITED`) when `source` has no token left for `rpc`. */
  check(rpc: LimitedRpc, source: string): void {
    const retryAfterMs = this.byRpc.get(rpc)?.take(source);
    if (retryAfterMs !== undefined) throw DomainError.rateLimited('too many attempts from this client; retry later', retryAfterMs);
  }
}

/**
 * TRUSTED_PROXIES: peers whose `client.ip_address` is taken as the call's source (node:net
 * BlockList over the configured CIDR blocks).
 */
export class TrustedProxies {
  private readonly list = new BlockList();
  private readonly empty: boolean;

  constructor(blocks: readonly { address: string; prefix: number; family: 'ipv4' | 'ipv6' }[] = []) {
    for (const block of blocks) this.list.addSubnet(block.address, block.prefix, block.family);
    this.empty = blocks.length === 0;
  }

  /** Whether the peer address (without port) is in one of the blocks. */
  includes(address: string): boolean {
    if (this.empty) return false;
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 4 ? 'ipv4' : 'ipv6');
  }
}
