import type { EntityManager } from '@mikro-orm/postgresql';
import { WRITE_DEADLINE } from '../call-scope.js';
import { AUDIT_COLUMNS, AUDIT_PLACEHOLDERS, auditValues, type AuditEntry } from './audit.js';
import { BEFORE_DEADLINE, dateOrNull, queryOne } from './sql.js';
import { toUserRecord, USER_COLUMNS, type RawUser, type UserRecord } from './users.js';

/** The lockout settings the failure statement applies (LOGIN_LOCKOUT_*), in milliseconds. */
export interface LockoutPolicy {
  /** Failures within the window that lock; 0 never locks (failures are still counted, for the audit). */
  readonly threshold: number;
  readonly windowMs: number;
  readonly durationMs: number;
  readonly maxDurationMs: number;
}

/** The throttle row after a failure was recorded. */
export interface RecordedFailure {
  /** Failures in the current window; 0 right after this failure locked the account. */
  readonly failures: number;
  readonly lockedUntil: Date | null;
  /** This failure set the lock (an `account.locked` audit row was written with it). */
  readonly lockedNow: boolean;
  readonly lockCount: number;
}

/** What the login's lookup reads: the user, if any, and the account's lock, if one is in force. */
export interface LoginLookup {
  readonly user: UserRecord | undefined;
  readonly lockedUntil: Date | undefined;
}

const PREFIXED_USER_COLUMNS = USER_COLUMNS.split(', ')
  .map((column) => `u.${column}`)
  .join(', ');

type RawLookup = { [K in keyof RawUser]: RawUser[K] | null } & { throttle_locked_until: string | null };

function toLookup(row: RawLookup | undefined): LoginLookup {
  const lockedUntil = dateOrNull(row?.throttle_locked_until ?? null) ?? undefined;
  return { user: row?.id ? toUserRecord(row as RawUser) : undefined, lockedUntil };
}

const MS = "interval '1 millisecond'";

/**
 * One atomic statement per failed password check (issue 18). The row is keyed by the keyed hash
 * of the email; `insert … on conflict do update` takes the row lock, so parallel failures are
 * applied one after another, each seeing the previous one's count. In the update, with `t` the row
 * as it was:
 *
 * - `forgotten`: the row's `expires_at` passed (window, lock and repeat memory all over): it counts
 *   as new, whether or not the sweep has deleted it yet;
 * - `locked`: a lock is in force (a failure whose check started before the lock was set);
 * - `counted`: the failures in the window including this one (1 when the window is over);
 * - `lock`: not locked yet and `counted` reached the threshold: the lock lasts
 *   duration × 2^(earlier locks), at most the maximum, the count restarts at 0 and a new window
 *   starts. A failure during a lock counts in the window but does not extend the lock.
 * - `expires_at`: the later of the window's and the lock's end, plus the maximum duration (how
 *   long the repeat count is remembered).
 *
 * `failures` is 0 only right after this failure locked the account: every other outcome counts at
 * least 1, which is how the audit CTE tells a new lock apart from a failure racing with it. Audit
 * rows are rate-limited the same way: `login.failed` only for the first failure of a window (not
 * for one recorded during a lock: a check that raced with it), `account.locked` for the failure
 * that locks, so a flood of wrong guesses writes at most two rows per account per window.
 */
const RECORD_FAILURE = `with p as materialized (
   select ?::varchar as id, ?::timestamptz as now, ?::float8 * ${MS} as win,
          ?::int as threshold, ?::float8 as dur_ms, greatest(?::float8, ?::float8) as max_ms
 ), recorded as (
   insert into login_throttles as t (id, failures, window_started_at, locked_at, locked_until, lock_count, expires_at)
   select p.id, case when f.lock then 0 else 1 end, p.now,
          case when f.lock then p.now end,
          case when f.lock then p.now + p.dur_ms * ${MS} end,
          case when f.lock then 1 else 0 end,
          greatest(p.now + p.win, case when f.lock then p.now + p.dur_ms * ${MS} end) + p.max_ms * ${MS}
     from p, lateral (select p.threshold = 1 as lock) f
   on conflict (id) do update set (failures, window_started_at, locked_at, locked_until, lock_count, expires_at) = (
     select case when n.lock then 0 else c.counted end,
            n.window_start,
            case when n.lock then p.now else s.locked_at end,
            n.locked_until,
            s.base_count + case when n.lock then 1 else 0 end,
            greatest(n.window_start + p.win, n.locked_until) + p.max_ms * ${MS}
       from p,
            lateral (select t.expires_at <= p.now as forgotten) f,
            lateral (select not f.forgotten and coalesce(t.locked_until > p.now, false) as locked,
                            not f.forgotten and t.window_started_at + p.win > p.now as in_window,
                            case when f.forgotten then 0 else t.lock_count end as base_count,
                            case when f.forgotten then null else t.locked_at end as locked_at,
                            case when f.forgotten then null else t.locked_until end as locked_until) s,
            lateral (select case when s.locked or s.in_window then t.failures + 1 else 1 end as counted) c,
            lateral (select not s.locked and p.threshold > 0 and c.counted >= p.threshold as lock) l,
            lateral (select l.lock,
                            case when l.lock or not (s.locked or s.in_window) then p.now else t.window_started_at end as window_start,
                            case when l.lock then p.now + least(p.dur_ms * power(2::float8, least(s.base_count, 60)), p.max_ms) * ${MS}
                                 else s.locked_until end as locked_until) n
   )
   returning t.failures, t.locked_until, t.lock_count, ${BEFORE_DEADLINE}
 ), audited as (
   insert into audit_events (${AUDIT_COLUMNS})
   select ?, case when r.failures = 0 then 'account.locked' else 'login.failed' end, ?::uuid, null, ?, ?,
          ?::jsonb || case when r.failures = 0 then jsonb_build_object('lockedUntil', r.locked_until, 'lockCount', r.lock_count) else '{}'::jsonb end
     from recorded r, p
    where r.failures = 0 or (r.failures = 1 and not coalesce(r.locked_until > p.now, false))
 )
 select failures, locked_until, lock_count from recorded`;

export const throttles = {
  /**
   * The login's one read: the user with this email (if any) and the lock of the throttle row (if
   * one is in force at `now`). One row whether or not the email is registered.
   */
  async lookupByEmail(em: EntityManager, email: string, throttleId: string, now: Date): Promise<LoginLookup> {
    const row = await queryOne<RawLookup>(
      em,
      `select ${PREFIXED_USER_COLUMNS}, t.locked_until as throttle_locked_until
         from (select ?::varchar as email, ?::varchar as throttle_id) k
         left join users u on u.email = k.email
         left join login_throttles t on t.id = k.throttle_id and t.locked_until > ?::timestamptz`,
      [email, throttleId, now],
    );
    return toLookup(row);
  },

  /** As lookupByEmail, for a user known by id (ChangePassword's current-password check). */
  async lookupById(em: EntityManager, userId: string, throttleId: string, now: Date): Promise<LoginLookup> {
    const row = await queryOne<RawLookup>(
      em,
      `select ${PREFIXED_USER_COLUMNS}, t.locked_until as throttle_locked_until
         from (select ?::uuid as id, ?::varchar as throttle_id) k
         left join users u on u.id = k.id
         left join login_throttles t on t.id = k.throttle_id and t.locked_until > ?::timestamptz`,
      [userId, throttleId, now],
    );
    return toLookup(row);
  },

  /** Records one failed password check (see RECORD_FAILURE), with its rate-limited audit row, in one statement. */
  async recordFailure(
    em: EntityManager,
    failure: { throttleId: string; now: Date; policy: LockoutPolicy },
    audit: { userId: string | null; ipAddress?: string; userAgent?: string; details: Record<string, unknown> },
  ): Promise<RecordedFailure> {
    const { policy } = failure;
    const row = await queryOne<{ failures: number; locked_until: string | null; lock_count: number }>(em, RECORD_FAILURE, [
      failure.throttleId,
      failure.now,
      policy.windowMs,
      policy.threshold,
      policy.durationMs,
      policy.maxDurationMs,
      policy.durationMs,
      WRITE_DEADLINE,
      failure.now,
      audit.userId,
      audit.ipAddress || null,
      audit.userAgent || null,
      JSON.stringify(audit.details),
    ]);
    if (!row) throw new Error('recording a login failure returned no row');
    return { failures: row.failures, lockedUntil: dateOrNull(row.locked_until), lockedNow: row.failures === 0, lockCount: row.lock_count };
  },

  /**
   * Forgets every failure and lock of the account (UnlockUser), with its audit row, in one
   * statement. Returns whether a lock was in force at `now`.
   */
  async clear(em: EntityManager, throttleId: string, now: Date, audit: AuditEntry): Promise<{ wasLocked: boolean }> {
    const row = await queryOne<{ was_locked: boolean }>(
      em,
      `with cleared as (
         delete from login_throttles where id = ? returning locked_until, ${BEFORE_DEADLINE}
       ), audited as (
         insert into audit_events (${AUDIT_COLUMNS}) select ${AUDIT_PLACEHOLDERS} where latchkey_before(?)
       )
       select coalesce((select bool_or(locked_until > ?::timestamptz) from cleared), false) as was_locked`,
      [throttleId, WRITE_DEADLINE, ...auditValues(audit), WRITE_DEADLINE, now],
    );
    return { wasLocked: row?.was_locked ?? false };
  },
};
