import { Migration } from '@mikro-orm/migrations';

/**
 * The five tables of DESIGN.md ("Storage"), with an index on every column a lookup or a sweep
 * filters by. A test compares this schema against the entity definitions, so the two cannot drift.
 */
export class Migration20261123000000Initial extends Migration {
  override name = 'Migration20261123000000Initial';

  override up(): void {
    this.addSql(`create table "users" (
      "id" uuid not null,
      "email" varchar(254) not null,
      "password_hash" text not null,
      "display_name" varchar(200) not null default '',
      "roles" text[] not null default '{}',
      "email_verified_at" timestamptz null,
      "disabled_at" timestamptz null,
      "password_changed_at" timestamptz not null,
      "last_login_at" timestamptz null,
      "created_at" timestamptz not null,
      "updated_at" timestamptz not null,
      primary key ("id"));`);
    this.addSql(`alter table "users" add constraint "users_email_key" unique ("email");`);

    this.addSql(`create table "sessions" (
      "id" uuid not null,
      "user_id" uuid not null,
      "generation" int not null default 0,
      "refresh_secret_hash" bytea not null,
      "previous_secret_hash" bytea null,
      "rotated_at" timestamptz null,
      "ip_address" varchar(64) not null default '',
      "user_agent" varchar(512) not null default '',
      "device_name" varchar(200) not null default '',
      "created_at" timestamptz not null,
      "last_used_at" timestamptz not null,
      "idle_expires_at" timestamptz not null,
      "absolute_expires_at" timestamptz not null,
      "revoked_at" timestamptz null,
      "revoked_reason" varchar(64) null,
      primary key ("id"));`);
    this.addSql(`create index "sessions_user_id_last_used_at_idx" on "sessions" ("user_id", "last_used_at");`);
    this.addSql(`create index "sessions_idle_expires_at_idx" on "sessions" ("idle_expires_at");`);
    this.addSql(`create index "sessions_absolute_expires_at_idx" on "sessions" ("absolute_expires_at");`);
    this.addSql(`create index "sessions_revoked_at_idx" on "sessions" ("revoked_at");`);
    this.addSql(`alter table "sessions" add constraint "sessions_user_id_foreign"
      foreign key ("user_id") references "users" ("id") on delete cascade;`);

    this.addSql(`create table "one_time_tokens" (
      "id" uuid not null,
      "user_id" uuid not null,
      "purpose" text not null,
      "token_hash" bytea not null,
      "created_at" timestamptz not null,
      "expires_at" timestamptz not null,
      "used_at" timestamptz null,
      primary key ("id"));`);
    this.addSql(`alter table "one_time_tokens" add constraint "one_time_tokens_purpose_check"
      check ("purpose" in ('password_reset', 'email_verification'));`);
    this.addSql(`alter table "one_time_tokens" add constraint "one_time_tokens_token_hash_key" unique ("token_hash");`);
    this.addSql(`create index "one_time_tokens_user_id_idx" on "one_time_tokens" ("user_id");`);
    this.addSql(`create index "one_time_tokens_expires_at_idx" on "one_time_tokens" ("expires_at");`);
    this.addSql(`create index "one_time_tokens_used_at_idx" on "one_time_tokens" ("used_at");`);
    this.addSql(`alter table "one_time_tokens" add constraint "one_time_tokens_user_id_foreign"
      foreign key ("user_id") references "users" ("id") on delete cascade;`);

    this.addSql(`create table "signing_keys" (
      "kid" varchar(64) not null,
      "algorithm" varchar(16) not null,
      "public_jwk" jsonb not null,
      "private_key_encrypted" bytea not null,
      "created_at" timestamptz not null,
      "activates_at" timestamptz not null,
      "retired_at" timestamptz null,
      "expires_at" timestamptz null,
      primary key ("kid"));`);
    this.addSql(`create index "signing_keys_expires_at_idx" on "signing_keys" ("expires_at");`);

    this.addSql(`create table "audit_events" (
      "id" bigserial primary key,
      "occurred_at" timestamptz not null,
      "event_type" varchar(64) not null,
      "user_id" uuid null,
      "session_id" uuid null,
      "ip_address" varchar(64) null,
      "user_agent" varchar(512) null,
      "details" jsonb not null default '{}');`);
    this.addSql(`create index "audit_events_occurred_at_idx" on "audit_events" ("occurred_at");`);
    this.addSql(`create index "audit_events_user_id_occurred_at_idx" on "audit_events" ("user_id", "occurred_at");`);
  }

  override down(): void {
    for (const table of ['audit_events', 'signing_keys', 'one_time_tokens', 'sessions', 'users']) {
      this.addSql(`drop table if exists "${table}" cascade;`);
    }
  }
}
