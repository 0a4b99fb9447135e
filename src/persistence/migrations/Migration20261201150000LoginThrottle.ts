import { Migration } from '@mikro-orm/migrations';

/**
 * Per-account sign-in throttling (issue 18): one row per account that failed a password check
 * recently, keyed by a keyed hash of the normalised email, so an unknown email is tracked exactly
 * like a registered one. Rows are written by one atomic statement per failure (see
 * repositories/throttles.ts) and swept once `expires_at` has passed.
 */
export class Migration20261201150000LoginThrottle extends Migration {
  override name = 'Migration20261201150000LoginThrottle';

  override up(): void {
    this.addSql(`create table "login_throttles" (
      "id" varchar(64) not null,
      "failures" int not null,
      "window_started_at" timestamptz not null,
      "locked_at" timestamptz null,
      "locked_until" timestamptz null,
      "lock_count" int not null,
      "expires_at" timestamptz not null,
      primary key ("id"));`);
    this.addSql(`create index "login_throttles_expires_at_idx" on "login_throttles" ("expires_at");`);
  }

  override down(): void {
    this.addSql(`drop table if exists "login_throttles";`);
  }
}
