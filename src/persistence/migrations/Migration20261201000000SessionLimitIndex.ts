import { Migration } from '@mikro-orm/migrations';

/**
 * The login statement's session-limit subquery (`where user_id = ? and revoked_at is null …
 * order by last_used_at desc, created_at desc, id desc offset …`) gets an index that matches it
 * column for column, and becomes the only index that starts with `user_id`, so its plan does not
 * depend on when ANALYZE last ran (issue 14: on a table freshly loaded with other users' sessions,
 * the planner walked the `revoked_at` index through every unrevoked session instead).
 *
 * - `sessions_user_id_last_used_at_created_at_id_idx` replaces `(user_id, last_used_at)`: every
 *   reader of the old one (listings, revoking a user's sessions, the cascade from `users`) uses
 *   its prefix, and the session-limit query reads it in order (backwards: a btree serves `desc` on
 *   every column) without a sort. It is not partial (`where revoked_at is null`): listings of
 *   revoked sessions and the cascade need every session of a user, and a partial index next to a
 *   full one on `user_id` leaves the planner a choice again (after ANALYZE it took the full one).
 * - `sessions_revoked_at_not_null_idx` replaces the index on `revoked_at`: its only reader is the
 *   sweep of long-revoked sessions (`revoked_at < cutoff`, which implies not null). Without the
 *   NULL entries it can no longer be chosen for `revoked_at is null`, and inserting or rotating an
 *   active session writes one index entry fewer.
 *
 * Plain `create index` inside the migration's transaction: `create index concurrently` cannot run
 * in a transaction block, and the migrator runs every pending migration in one (`allOrNothing`).
 * The build blocks writes to `sessions` while it runs; on a large table, create the two new indexes by hand with
 * `create index concurrently` (same names and definitions) before upgrading, and this migration
 * keeps them (`if not exists`). The old indexes are dropped last, so the ACCESS EXCLUSIVE lock
 * a drop takes is held only for the moment before the commit.
 */
export class Migration20261201000000SessionLimitIndex extends Migration {
  override name = 'Migration20261201000000SessionLimitIndex';

  override up(): void {
    this.addSql(`create index if not exists "sessions_user_id_last_used_at_created_at_id_idx" on "sessions" ("user_id", "last_used_at", "created_at", "id");`);
    this.addSql(`create index if not exists "sessions_revoked_at_not_null_idx" on "sessions" ("revoked_at") where revoked_at is not null;`);
    this.addSql(`drop index if exists "sessions_user_id_last_used_at_idx";`);
    this.addSql(`drop index if exists "sessions_revoked_at_idx";`);
  }

  override down(): void {
    this.addSql(`create index if not exists "sessions_user_id_last_used_at_idx" on "sessions" ("user_id", "last_used_at");`);
    this.addSql(`create index if not exists "sessions_revoked_at_idx" on "sessions" ("revoked_at");`);
    this.addSql(`drop index if exists "sessions_revoked_at_not_null_idx";`);
    this.addSql(`drop index if exists "sessions_user_id_last_used_at_created_at_id_idx";`);
  }
}
