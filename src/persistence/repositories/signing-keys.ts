import type { EntityManager } from '@mikro-orm/postgresql';
import { dateOrNull, queryAll, queryOne, run } from './sql.js';

export interface SigningKeyRow {
  readonly kid: string;
  readonly algorithm: string;
  readonly publicJwk: Record<string, string>;
  readonly privateKeyEncrypted: Buffer;
  readonly activatesAt: Date;
  readonly retiredAt: Date | null;
  readonly expiresAt: Date | null;
}

interface RawRow {
  kid: string;
  algorithm: string;
  public_jwk: Record<string, string>;
  private_key_encrypted: Buffer;
  activates_at: string;
  retired_at: string | null;
  expires_at: string | null;
}

function toRow(raw: RawRow): SigningKeyRow {
  return {
    kid: raw.kid,
    algorithm: raw.algorithm,
    publicJwk: raw.public_jwk,
    privateKeyEncrypted: raw.private_key_encrypted,
    activatesAt: new Date(raw.activates_at),
    retiredAt: dateOrNull(raw.retired_at),
    expiresAt: dateOrNull(raw.expires_at),
  };
}

const COLUMNS = 'kid, algorithm, public_jwk, private_key_encrypted, activates_at, retired_at, expires_at';

/** Keys still published in the JWKS at `now`: not past `expires_at`. Oldest activation first. */
async function listPublished(em: EntityManager, now: Date): Promise<SigningKeyRow[]> {
  const rows = await queryAll<RawRow>(
    em,
    `select ${COLUMNS} from signing_keys where expires_at is null or expires_at > ? order by activates_at, kid`,
    [now],
  );
  return rows.map(toRow);
}

export const signingKeys = {
  listPublished,

  /**
   * Inserts the key made by `make` unless a key already signs by `signingBy`, and returns the keys
   * published at `now`. Serialised by a transaction-scoped advisory lock, so replicas starting
   * together on an empty table create one key between them, not one each. `signingBy` lies a little
   * after `now`: a replica whose clock (or whose moment of reading it) is slightly behind another's
   * must take the key that one has just created, not make a second.
   */
  async ensureActive(em: EntityManager, now: Date, signingBy: Date, make: () => SigningKeyRow): Promise<SigningKeyRow[]> {
    return em.transactional(async (tx) => {
      await queryOne(tx, `select pg_advisory_xact_lock(hashtext('latchkey.signing_keys'))`);
      const published = await listPublished(tx, now);
      const signing = published.some((key) => key.activatesAt <= signingBy && key.retiredAt === null);
      if (signing) return published;
      const key = make();
      await run(
        tx,
        `insert into signing_keys (kid, algorithm, public_jwk, private_key_encrypted, created_at, activates_at, retired_at, expires_at)
         values (?, ?, ?::jsonb, ?, ?, ?, null, null)`,
        [key.kid, key.algorithm, JSON.stringify(key.publicJwk), key.privateKeyEncrypted, now, key.activatesAt],
      );
      return listPublished(tx, now);
    });
  },
};
