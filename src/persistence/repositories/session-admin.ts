import type { EntityManager } from '@mikro-orm/postgresql';
import type { RevocationReason } from '../../domain/sessions/revocation.js';
import type { SessionStatus } from '../../domain/sessions/session-state.js';
import { WRITE_DEADLINE } from '../call-scope.js';
import { AUDIT_COLUMNS } from './audit.js';
import { REVOKED_COUNT, revokeSessionsOf } from './sessions.js';
import { dateOrNull, one, queryAll, queryOne, sql } from './sql.js';

/** A session as SessionService shows it: device, times and revocation, never its secrets. */
export interface SessionRecord {
  readonly id: string;
  readonly userId: string;
  readonly ipAddress: string;
  readonly userAgent: string;
  readonly deviceName: string;
  readonly createdAt: Date;
  readonly lastUsedAt: Date;
  readonly idleExpiresAt: Date;
  readonly absoluteExpiresAt: Date;
  readonly revokedAt: Date | null;
  /** As stored; a RevocationReason for every revocation Latchkey writes. */
  readonly revokedReason: string | null;
}

/** Where a listing continues: after this session in (last_used_at desc, id desc) order. */
export interface SessionKeyset {
  /** last_used_at in microseconds since the epoch, as decimal text: exact, unlike a JS Date. */
  readonly lastUsedMicros: string;
  readonly sessionId: string;
}

/** A listed session with its exact last_used_at, from which the next page's keyset is made. */
export type ListedSession = SessionRecord & { readonly lastUsedMicros: string };

interface RawSession {
  id: string;
  user_id: string;
  ip_address: string;
  user_agent: string;
  device_name: string;
  created_at: string;
  last_used_at: string;
  idle_expires_at: string;
  absolute_expires_at: string;
  revoked_at: string | null;
  revoked_reason: string | null;
}

/** A listing row: the user's id, and one session's columns (all null when no session matched). */
type RawListedRow = { found_user_id: string; last_used_micros: string | null } & { [K in keyof RawSession]: RawSession[K] | null };

const SESSION_COLUMNS = `s.id, s.user_id, s.ip_address, s.user_agent, s.device_name, s.created_at, s.last_used_at,
  s.idle_expires_at, s.absolute_expires_at, s.revoked_at, s.revoked_reason`;

/** The state rule of sessionStatusAt, in SQL; the one `?` is the request's `now`. */
const STATUS_AT = `case when s.revoked_at is not null then 'REVOKED'
  when least(s.idle_expires_at, s.absolute_expires_at) <= ?::timestamptz then 'EXPIRED'
  else 'ACTIVE' end`;

/** Active at `now` (the two `?`); the condition every revocation here is guarded by. */
const ACTIVE_AT = 's.revoked_at is null and s.idle_expires_at > ? and s.absolute_expires_at > ?';

function toSessionRecord(raw: RawSession): SessionRecord {
  return {
    id: raw.id,
    userId: raw.user_id,
    ipAddress: raw.ip_address,
    userAgent: raw.user_agent,
    deviceName: raw.device_name,
    createdAt: new Date(raw.created_at),
    lastUsedAt: new Date(raw.last_used_at),
    idleExpiresAt: new Date(raw.idle_expires_at),
    absoluteExpiresAt: new Date(raw.absolute_expires_at),
    revokedAt: dateOrNull(raw.revoked_at),
    revokedReason: raw.revoked_reason,
  };
}

/**
 * The SQL of SessionService. Every method is one statement and none opens a transaction: a
 * revocation and its audit rows are written by one CTE, so they commit together or not at all.
 * Callers pass only ids of the stored form (see isStoredId); `ownerId`, when set, limits a
 * lookup to that user's sessions.
 */
export const sessionAdmin = {
  async find(em: EntityManager, lookup: { sessionId: string; ownerId: string | null }): Promise<SessionRecord | undefined> {
    const row = await queryOne<RawSession>(
      em,
      `select ${SESSION_COLUMNS} from sessions s where s.id = ? and (?::uuid is null or s.user_id = ?::uuid)`,
      [lookup.sessionId, lookup.ownerId, lookup.ownerId],
    );
    return row ? toSessionRecord(row) : undefined;
  },

  /**
   * One page of a user's sessions in `status` at `now`, most recently used first, after `after`.
   * `userFound` is false when the user does not exist (then there are no sessions either).
   */
  async page(
    em: EntityManager,
    query: { userId: string; status: SessionStatus; now: Date; after: SessionKeyset | null; limit: number },
  ): Promise<{ userFound: boolean; sessions: ListedSession[] }> {
    // The left join keeps the user's row when no session matches, so a missing user is told apart
    // from an empty page without a second statement.
    const rows = await queryAll<RawListedRow>(
      em,
      `select u.id as found_user_id, p.*
         from users u
         left join lateral (
           select ${SESSION_COLUMNS}, (extract(epoch from s.last_used_at) * 1000000)::bigint::text as last_used_micros
             from sessions s
            where s.user_id = u.id
              and ${STATUS_AT} = ?
              and (?::bigint is null
                   or (s.last_used_at, s.id) < (timestamptz 'epoch' + ?::bigint * interval '1 microsecond', ?::uuid))
            order by s.last_used_at desc, s.id desc
            limit ?
         ) p on true
        where u.id = ?
        order by p.last_used_at desc, p.id desc`,
      [
        query.now,
        query.status,
        query.after?.lastUsedMicros ?? null,
        query.after?.lastUsedMicros ?? null,
        query.after?.sessionId ?? null,
        query.limit,
        query.userId,
      ],
    );
    if (rows.length === 0) return { userFound: false, sessions: [] };
    const sessions = rows
      .filter((row) => row.id !== null)
      .map((row) => ({ ...toSessionRecord(row as RawSession), lastUsedMicros: row.last_used_micros! }));
    return { userFound: true, sessions };
  },

  /**
   * Revokes the session if it is active at `now`, with its audit event, and returns it as it is
   * after the statement; an already revoked or expired session is returned unchanged, with no
   * audit event. The reason is REVOKED_BY_USER when `actingUserId` owns the session,
   * REVOKED_BY_SERVICE otherwise. The row lock makes a concurrent revocation wait and then see
   * the revoked row, so every caller is answered with the session's real state.
   */
  async revoke(
    em: EntityManager,
    revocation: { sessionId: string; ownerId: string | null; actingUserId: string | null; now: Date },
  ): Promise<{ session: SessionRecord; revokedNow: boolean } | undefined> {
    const row = await queryOne<RawSession & { revoked_now: boolean }>(
      em,
      `with target as (
         select ${SESSION_COLUMNS} from sessions s where s.id = ? and (?::uuid is null or s.user_id = ?::uuid)
            for update
       ), revoked as (
         update sessions s
            set revoked_at = ?,
                revoked_reason = case when s.user_id = ?::uuid then 'REVOKED_BY_USER' else 'REVOKED_BY_SERVICE' end
           from target t
          where s.id = t.id and ${ACTIVE_AT} and latchkey_before(?)
         returning ${SESSION_COLUMNS}
       ), audited as (
         insert into audit_events (${AUDIT_COLUMNS})
         select ?, 'session.revoked', r.user_id, r.id, null, null,
                jsonb_build_object('reason', r.revoked_reason,
                                   'by', case when r.revoked_reason = 'REVOKED_BY_USER' then 'user' else 'service' end)
           from revoked r
       )
       select *, true as revoked_now from revoked
       union all
       select *, false from target where not exists (select 1 from revoked)`,
      [
        revocation.sessionId,
        revocation.ownerId,
        revocation.ownerId,
        revocation.now,
        revocation.actingUserId,
        revocation.now,
        revocation.now,
        WRITE_DEADLINE,
        revocation.now,
      ],
    );
    return row ? { session: toSessionRecord(row), revokedNow: row.revoked_now } : undefined;
  },

  /**
   * Revokes every session of the user active at `now`, except `exceptSessionId`, writing one
   * audit event per revoked session. Nothing is written when the user does not exist or
   * `exceptSessionId` is not one of the user's sessions; the flags say which.
   */
  async revokeAll(
    em: EntityManager,
    revocation: {
      userId: string;
      exceptSessionId: string | null;
      now: Date;
      reason: RevocationReason;
      by: 'user' | 'service';
    },
  ): Promise<{ userFound: boolean; exceptFound: boolean; revokedCount: number }> {
    const { now, reason, exceptSessionId } = revocation;
    const row = await one<{ user_found: boolean; except_found: boolean; revoked_count: number }>(
      em,
      sql`with target as (
         select id as user_id from users where id = ${revocation.userId}
       ), kept as (
         select id from sessions where id = ${exceptSessionId}::uuid and user_id = (select user_id from target)
       ), ${revokeSessionsOf('target', {
         now,
         reason,
         exceptSessionId,
         // A kept session that is not the user's refuses the whole call, so nothing is revoked.
         enabled: sql`(${exceptSessionId}::uuid is null or exists (select 1 from kept))`,
         details: { by: revocation.by },
       })}
       select exists (select 1 from target) as user_found,
              (${exceptSessionId}::uuid is null or exists (select 1 from kept)) as except_found,
              ${REVOKED_COUNT} as revoked_count`,
    );
    return { userFound: row!.user_found, exceptFound: row!.except_found, revokedCount: row!.revoked_count };
  },
};
