import { Migration } from '@mikro-orm/migrations';

/**
 * Key rotation without a restart (issue 17):
 * - `signing_keys.kek_id`: the id of the key-encryption key a private key is sealed under (null:
 *   a row written before this migration, sealed under the one KEY_ENCRYPTION_KEY of the time,
 *   which goes by the id `default`).
 * - `refresh_secret_keys`: the refresh-secret derivation key, random and sealed like a signing key,
 *   so that it no longer depends on the key-encryption key. The first start after this migration
 *   stores today's KEK-derived key there when sessions already exist, so they keep working.
 * - A statement-level trigger notifies `latchkey_signing_keys` (delivered at commit) whenever
 *   signing keys change, whoever changes them: the replicas reload their key rings.
 */
export class Migration20261201140000KeyRotation extends Migration {
  override name = 'Migration20261201140000KeyRotation';

  override up(): void {
    this.addSql(`alter table "signing_keys" add column "kek_id" varchar(32) null;`);
    this.addSql(`create table "refresh_secret_keys" (
      "id" varchar(64) not null,
      "key_encrypted" bytea not null,
      "kek_id" varchar(32) null,
      "created_at" timestamptz not null,
      primary key ("id"));`);
    this.addSql(`create or replace function latchkey_notify_signing_keys() returns trigger language plpgsql as $$
      begin
        perform pg_notify('latchkey_signing_keys', '');
        return null;
      end
      $$;`);
    this.addSql(`create trigger "signing_keys_notify" after insert or update or delete on "signing_keys"
      for each statement execute function latchkey_notify_signing_keys();`);
  }

  override down(): void {
    this.addSql(`drop trigger if exists "signing_keys_notify" on "signing_keys";`);
    this.addSql(`drop function if exists latchkey_notify_signing_keys();`);
    this.addSql(`drop table if exists "refresh_secret_keys";`);
    this.addSql(`alter table "signing_keys" drop column if exists "kek_id";`);
  }
}
