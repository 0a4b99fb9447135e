import { Migration } from '@mikro-orm/migrations';
import { CompiledQuery, type Kysely } from 'kysely';
import { domainToASCII, domainToUnicode } from 'node:url';

/**
 * Stored addresses get the spelling normaliseEmail now gives (src/domain/users/email.ts): NFC,
 * lower-cased, the domain through IDNA in its Unicode form. Before, they were only trimmed and
 * lower-cased, so an account registered in NFD, or with an A-label (`xn--…`) or fullwidth domain,
 * could no longer be found by Login. The rule is copied here rather than imported, so this
 * migration does tomorrow what it does today.
 *
 * Only addresses that can change are read: those with a non-ASCII character or an A-label. Left as
 * they are: an address whose new spelling another account already has (two accounts that the new
 * rule makes one address; an operator decides which keeps it), and one whose domain IDNA refuses.
 * Local parts are not folded (normaliseEmail refuses compatibility characters in new addresses; a
 * stored one keeps its NFC form). Unused one-time tokens follow their address. Not reversible:
 * down() leaves the addresses in their normalised form.
 */
export class Migration20261201160000EmailNormalisation extends Migration {
  override name = 'Migration20261201160000EmailNormalisation';

  override async up(): Promise<void> {
    // The migration's own transaction, with the addresses bound as parameters (Migration.execute
    // would inline them into the statement text).
    const db = (this.ctx ?? this.getEntityManager().getKysely()) as unknown as Kysely<unknown>;
    const run = async <R>(sql: string, params: unknown[] = []) => (await db.executeQuery<R>(CompiledQuery.raw(sql, params))).rows;
    const rows = await run<{ id: string; email: string }>(`select id, email from users where email ~ '[^\\x01-\\x7f]' or email like '%xn--%' order by created_at, id`);
    for (const { id, email } of rows) {
      const normalised = normalisedEmail(email);
      if (normalised === undefined || normalised === email) continue;
      const updated = await run<{ id: string }>(
        'update users set email = $1 where id = $2 and not exists (select 1 from users where email = $1) returning id',
        [normalised, id],
      );
      if (updated.length === 1) await run('update one_time_tokens set email = $1 where user_id = $2 and email = $3', [normalised, id, email]);
    }
  }

  override down(): void {}
}

function normalisedEmail(email: string): string | undefined {
  const text = email.trim().normalize('NFC').toLowerCase();
  const at = text.lastIndexOf('@');
  if (at <= 0) return undefined;
  const ascii = domainToASCII(text.slice(at + 1));
  if (ascii === '') return undefined;
  const result = `${text.slice(0, at)}@${domainToUnicode(ascii)}`;
  return result.length <= 254 ? result : undefined;
}
