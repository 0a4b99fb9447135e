import { Migration } from '@mikro-orm/migrations';

/**
 * One-time tokens remember the address they were issued for, so a token sent to an address the
 * user has since changed is refused. At most one unused token per user and purpose: issuing a new
 * one replaces the old one in the same row, and the unique index makes that hold under races.
 */
export class Migration20261124000000OneTimeTokenEmail extends Migration {
  override name = 'Migration20261124000000OneTimeTokenEmail';

  override up(): void {
    this.addSql(`alter table "one_time_tokens" add column "email" varchar(254) null;`);
    this.addSql(`create unique index "one_time_tokens_user_id_purpose_unused_key" on "one_time_tokens" ("user_id", "purpose") where used_at is null;`);
  }

  override down(): void {
    this.addSql(`drop index if exists "one_time_tokens_user_id_purpose_unused_key";`);
    this.addSql(`alter table "one_time_tokens" drop column if exists "email";`);
  }
}
