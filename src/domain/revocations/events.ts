import type { RevocationReason } from '../sessions/revocation.js';

/**
 * A position in the revocation feed: the writing transaction's id and the row's id. Events are
 * ordered by (xid, id) and read only below the commit-visibility watermark, so a reader that
 * resumes after a position never misses an event (see Migration20261201130000RevocationFeed).
 */
export interface FeedPosition {
  readonly xid: bigint;
  readonly id: bigint;
}

/** One entry of the revocation feed. */
export type RevocationEvent =
  | {
      readonly kind: 'session';
      readonly position: FeedPosition;
      readonly sessionId: string;
      readonly userId: string;
      readonly reason: RevocationReason;
      readonly occurredAt: Date;
    }
  | {
      /** The user's tokens carrying a role outside `roles` (the user's roles now) are stale. */
      readonly kind: 'user';
      readonly position: FeedPosition;
      readonly userId: string;
      readonly reason: 'ROLES_REMOVED';
      readonly roles: readonly string[];
      readonly occurredAt: Date;
    };

export function comparePositions(a: FeedPosition, b: FeedPosition): number {
  if (a.xid !== b.xid) return a.xid < b.xid ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  return 0;
}

const CURSOR = /^v1\.(\d{1,20})\.(\d{1,20})$/;

/** The opaque cursor a client resumes from (base64url of `v1.<xid>.<id>`). */
export function encodeCursor(position: FeedPosition): string {
  return Buffer.from(`v1.${position.xid}.${position.id}`, 'utf8').toString('base64url');
}

/** The position a cursor names, or undefined for anything that is not one of ours. */
export function decodeCursor(cursor: string): FeedPosition | undefined {
  if (cursor.length > 64 || !/^[A-Za-z0-9_-]+$/.test(cursor)) return undefined;
  const match = CURSOR.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!match) return undefined;
  const position = { xid: BigInt(match[1]!), id: BigInt(match[2]!) };
  return encodeCursor(position) === cursor ? position : undefined;
}

/** Reads the feed in order (implemented over PostgreSQL in persistence/revocation-feed.ts). */
export interface RevocationFeedReader {
  /**
   * Up to `limit` events after `after` (or, without it, every event that occurred at or after
   * `since`), in feed order, stopping before any position an unfinished transaction could still
   * precede. `complete` is true when nothing else is readable in order right now.
   */
  readOrdered(options: { after?: FeedPosition; since?: Date; limit: number; signal?: AbortSignal }): Promise<{ events: RevocationEvent[]; complete: boolean }>;
}

/** Live events in feed order, as this replica's follower reads them. */
export interface RevocationFeedFollower {
  /**
   * Calls `listener` with every event after the follower's position at the time of the call, in
   * order, until the returned function is called. Returns that starting position too (undefined
   * before the follower has read anything).
   */
  subscribe(listener: (event: RevocationEvent) => void): {
    position: FeedPosition | undefined;
    /**
     * The furthest event the follower has seen committed, settled or not (at or after `position`
     * when defined): events up to it are delivered once no unfinished transaction can precede them.
     */
    visible?: FeedPosition;
    unsubscribe(): void;
  };
  /** The last position delivered to subscribers (undefined before the first read). */
  readonly position: FeedPosition | undefined;
}
