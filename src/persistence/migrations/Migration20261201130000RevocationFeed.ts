import { Migration } from '@mikro-orm/migrations';

/**
 * The revocation feed (DESIGN.md "Revocation reach"): one row for every session that stops being
 * usable before its access tokens expire, and one for every user whose older tokens went stale
 * (a role removed). Rows are written by triggers, so they commit with the change that causes them,
 * in the same statement, whatever path makes it (logout, RevokeSession, RevokeAllSessions, reuse,
 * the session limit, password change and reset, DisableUser, SetUserRoles), present or future.
 *
 * `xid` is the writing transaction's id. Readers order by (xid, id) and read only below
 * `pg_snapshot_xmin(pg_current_snapshot())`: every transaction with a smaller id has ended, so no
 * row can appear later before a position already read. (Ids from the sequence alone are not
 * enough: a transaction that took a smaller id can commit after a larger one was read.)
 *
 * The statement-level trigger notifies `latchkey_revocations` (delivered at commit): a wake-up for
 * the replicas' followers, which then read the table.
 */
export class Migration20261201130000RevocationFeed extends Migration {
  override name = 'Migration20261201130000RevocationFeed';

  override up(): void {
    this.addSql(`create table "revocation_events" (
      "id" bigserial primary key,
      "xid" xid8 not null default pg_current_xact_id(),
      "kind" varchar(16) not null,
      "session_id" uuid null,
      "user_id" uuid not null,
      "reason" varchar(32) not null,
      "roles" text[] null,
      "occurred_at" timestamptz not null);`);
    this.addSql(`create index "revocation_events_xid_id_idx" on "revocation_events" ("xid", "id");`);
    this.addSql(`create index "revocation_events_occurred_at_idx" on "revocation_events" ("occurred_at");`);

    this.addSql(`create or replace function latchkey_session_revoked() returns trigger language plpgsql as $$
      begin
        insert into revocation_events (kind, session_id, user_id, reason, occurred_at)
        values ('session', new.id, new.user_id, coalesce(new.revoked_reason, 'REVOKED_BY_SERVICE'), new.revoked_at);
        return null;
      end
      $$;`);
    this.addSql(`create trigger "sessions_revocation_feed" after update of "revoked_at" on "sessions"
      for each row when (old.revoked_at is null and new.revoked_at is not null)
      execute function latchkey_session_revoked();`);

    // A role removed: the user's tokens that carry a role outside `roles` (the user's roles now)
    // are stale; a token refreshed since carries the current roles and is not.
    this.addSql(`create or replace function latchkey_roles_removed() returns trigger language plpgsql as $$
      begin
        insert into revocation_events (kind, session_id, user_id, reason, roles, occurred_at)
        values ('user', null, new.id, 'ROLES_REMOVED', new.roles, coalesce(new.updated_at, clock_timestamp()));
        return null;
      end
      $$;`);
    this.addSql(`create trigger "users_roles_removed_feed" after update of "roles" on "users"
      for each row when (not (old.roles <@ new.roles))
      execute function latchkey_roles_removed();`);

    this.addSql(`create or replace function latchkey_notify_revocations() returns trigger language plpgsql as $$
      begin
        perform pg_notify('latchkey_revocations', '');
        return null;
      end
      $$;`);
    this.addSql(`create trigger "revocation_events_notify" after insert on "revocation_events"
      for each statement execute function latchkey_notify_revocations();`);

    // The greatest position the sweep has deleted: a cursor below it may have missed events and
    // is expired. Kept by a trigger, so the sweep stays a plain batched delete.
    this.addSql(`create table "revocation_feed_horizon" (
      "id" int not null default 1,
      "xid" xid8 not null,
      "event_id" bigint not null,
      primary key ("id"),
      constraint "revocation_feed_horizon_single_row" check ("id" = 1));`);
    this.addSql(`create or replace function latchkey_feed_horizon() returns trigger language plpgsql as $$
      begin
        insert into revocation_feed_horizon as h (id, xid, event_id)
        select 1, xid, id from deleted order by xid desc, id desc limit 1
        on conflict (id) do update set xid = excluded.xid, event_id = excluded.event_id
          where (h.xid, h.event_id) < (excluded.xid, excluded.event_id);
        return null;
      end
      $$;`);
    this.addSql(`create trigger "revocation_events_horizon" after delete on "revocation_events"
      referencing old table as deleted
      for each statement execute function latchkey_feed_horizon();`);
  }

  override down(): void {
    this.addSql(`drop trigger if exists "revocation_events_horizon" on "revocation_events";`);
    this.addSql(`drop function if exists latchkey_feed_horizon();`);
    this.addSql(`drop table if exists "revocation_feed_horizon";`);
    this.addSql(`drop trigger if exists "revocation_events_notify" on "revocation_events";`);
    this.addSql(`drop trigger if exists "users_roles_removed_feed" on "users";`);
    this.addSql(`drop trigger if exists "sessions_revocation_feed" on "sessions";`);
    this.addSql(`drop function if exists latchkey_notify_revocations();`);
    this.addSql(`drop function if exists latchkey_roles_removed();`);
    this.addSql(`drop function if exists latchkey_session_revoked();`);
    this.addSql(`drop table if exists "revocation_events";`);
  }
}
