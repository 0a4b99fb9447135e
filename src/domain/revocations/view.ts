import type { AccessTokenClaims } from '../tokens/access-tokens.js';
import type { RevocationEvent } from './events.js';
import { RevokedSessionSet } from './revoked-set.js';

/** What the view can say about an access token's session, from memory. */
export type RevocationVerdict =
  /** The session was revoked. */
  | 'revoked'
  /** The token carries a role the user no longer has: refresh it. */
  | 'stale'
  /** Not revoked, as of a view fresh enough to trust. */
  | 'active'
  /** The view is not fresh enough to say: ask the database. */
  | 'unknown';

export interface RevocationViewOptions {
  /** How long an event matters: the access-token lifetime plus clock skew. */
  readonly relevanceMs: number;
  /** Older than this (since its last successful read), the view is not trusted (REVOCATION_MAX_STALENESS). */
  readonly maxStalenessMs: number;
  /** Wall-clock ms when the follower's last successful read started (undefined: never). */
  readonly lastReadAt: () => number | undefined;
  /** Whether the follower's connection is up: once it is known lost, the view is not trusted at all. */
  readonly connected: () => boolean;
  /** Wall clock for freshness (never an injected test clock: freshness is about real time). */
  readonly now?: () => number;
}

/**
 * The replica's in-memory revocation view (DESIGN.md "Revocation reach"): every revoked session
 * and every user whose roles were cut, for as long as an access token issued before could still be
 * valid. `check_revocation` answers from it while it is fresh: its follower is connected, read the
 * feed within `maxStalenessMs`, and no revocation made by this replica is newer than that read.
 * Otherwise it answers 'unknown', and the caller asks the database: never a stale yes.
 * `maxStalenessMs` 0 turns the view off.
 *
 * Memory: revoked sessions live in a compact table outside the V8 heap (RevokedSessionSet, about
 * 24 bytes each). They are kept in generations, one table per quarter of `relevanceMs` by
 * revocation time, so forgetting what is no longer relevant drops whole tables (no rebuild, no
 * pause of the event loop) at the cost of keeping an entry up to a quarter window longer; a lookup
 * asks the five or so tables there are. Users with removed roles (rare) sit in a Map.
 */
export class RevocationView {
  /** Revoked sessions and when (seconds). */
  /** Generation (revocation time ÷ #generationMs) → its revoked sessions. */
  readonly #generations = new Map<number, RevokedSessionSet>();
  readonly #generationMs: number;
  /** User id → the roles the user has had since a role was removed, and when (ms). */
  readonly #users = new Map<string, { roles: ReadonlySet<string>; at: number }>();
  /** A revocation this replica made that the follower may not have read yet. */
  #localSince: number | undefined;
  #fallbacks = 0;

  constructor(private readonly options: RevocationViewOptions) {
    this.#generationMs = Math.max(1_000, Math.floor(options.relevanceMs / 4));
  }

  get size(): number {
    let sessions = 0;
    for (const table of this.#generations.values()) sessions += table.size;
    return sessions + this.#users.size;
  }

  /** Calls answered by the database because the view was not fresh. */
  get fallbacks(): number {
    return this.#fallbacks;
  }

  /** Seconds since the follower's last successful read (Infinity before the first). */
  get lagSeconds(): number {
    const last = this.options.lastReadAt();
    return last === undefined ? Number.POSITIVE_INFINITY : Math.max(0, this.#now() - last) / 1000;
  }

  get fresh(): boolean {
    if (this.options.maxStalenessMs === 0 || !this.options.connected()) return false;
    const last = this.options.lastReadAt();
    if (last === undefined) return false;
    if (this.#localSince !== undefined && last <= this.#localSince) return false;
    return this.#now() - last <= this.options.maxStalenessMs;
  }

  apply(event: RevocationEvent): void {
    const at = event.occurredAt.getTime();
    if (event.kind === 'session') {
      const generation = Math.floor(at / this.#generationMs);
      let table = this.#generations.get(generation);
      if (!table) this.#generations.set(generation, (table = new RevokedSessionSet()));
      table.add(event.sessionId, at);
    } else {
      const known = this.#users.get(event.userId);
      // Events of one user arrive in commit order per read; the later change wins.
      if (!known || known.at <= at) this.#users.set(event.userId, { roles: new Set(event.roles), at });
    }
  }

  /**
   * This replica just revoked something: until the follower has read past this moment, the view
   * defers to the database, so a revocation is refused at once on the replica that made it.
   */
  noteLocalRevocation(): void {
    this.#localSince = this.#now();
  }

  verdict(claims: AccessTokenClaims): RevocationVerdict {
    if (!this.fresh) {
      this.#fallbacks += 1;
      return 'unknown';
    }
    for (const table of this.#generations.values()) if (table.has(claims.sessionId)) return 'revoked';
    const user = this.#users.get(claims.userId);
    // Stale: issued no later than the removal (`iat` has whole seconds: a token of that second
    // counts as earlier), and carrying a role outside the roles left. A token issued afterwards
    // carries the roles of its time, so a role given back later does not make it stale.
    if (user && claims.issuedAt * 1000 <= user.at && claims.roles.some((role) => !user.roles.has(role))) return 'stale';
    return 'active';
  }

  /** Forgets events older than the relevance window (by `now`, the domain clock). */
  prune(now: number): number {
    const cutoff = now - this.options.relevanceMs;
    let removed = 0;
    for (const [generation, table] of this.#generations) {
      // Whole generations only: every entry of this one was revoked before the cutoff.
      if ((generation + 1) * this.#generationMs <= cutoff) {
        removed += table.size;
        this.#generations.delete(generation);
      }
    }
    for (const [id, entry] of this.#users) if (entry.at < cutoff && this.#users.delete(id)) removed += 1;
    return removed;
  }

  #now(): number {
    return (this.options.now ?? Date.now)();
  }
}
