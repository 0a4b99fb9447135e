import type { EntityManager } from '@mikro-orm/postgresql';
import { dateOrNull, queryAll, queryOne, run } from './sql.js';

export interface SigningKeyRow {
  readonly kid: string;
  readonly algorithm: string;
  readonly publicJwk: Record<string, string>;
  readonly privateKeyEncrypted: Buffer;
  /** The key-encryption key it is sealed under; null for rows from before ids were recorded (`default`). */
  readonly kekId: string | null;
  readonly createdAt?: Date;
  readonly activatesAt: Date;
  readonly retiredAt: Date | null;
  readonly expiresAt: Date | null;
}

interface RawRow {
  kid: string;
  algorithm: string;
  public_jwk: Record<string, string>;
  private_key_encrypted: Buffer;
  kek_id: string | null;
  created_at: string;
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
    kekId: raw.kek_id,
    createdAt: new Date(raw.created_at),
    activatesAt: new Date(raw.activates_at),
    retiredAt: dateOrNull(raw.retired_at),
    expiresAt: dateOrNull(raw.expires_at),
  };
}

const COLUMNS = 'kid, algorithm, public_jwk, private_key_encrypted, kek_id, created_at, activates_at, retired_at, expires_at';

/** Every writer of `signing_keys` takes this transaction-scoped advisory lock first. */
const LOCK = `select pg_advisory_xact_lock(hashtext('latchkey.signing_keys'))`;
const TRY_LOCK = `select pg_try_advisory_xact_lock(hashtext('latchkey.signing_keys')) as granted`;

/**
 * A cheap summary of the table that changes whenever a key is added, changes state or goes: the
 * replicas poll it on the embedded database (no notifications there) and reload on a change.
 */
export const SIGNING_KEYS_FINGERPRINT = `select coalesce(string_agg(kid || '/' || activates_at::text || '/' || coalesce(retired_at::text, '-') || '/' || coalesce(expires_at::text, '-') || '/' || coalesce(kek_id, '-'), ',' order by kid), '') as fingerprint from signing_keys`;

/** Keys still published in the JWKS at a time (the parameter): not past `expires_at`. Oldest activation first. */
export const LIST_PUBLISHED = `select ${COLUMNS} from signing_keys where expires_at is null or expires_at > ? order by activates_at, kid`;

async function listPublished(em: EntityManager, now: Date): Promise<SigningKeyRow[]> {
  const rows = await queryAll<RawRow>(em, LIST_PUBLISHED, [now]);
  return rows.map(toRow);
}

async function listAll(em: EntityManager): Promise<SigningKeyRow[]> {
  return (await queryAll<RawRow>(em, `select ${COLUMNS} from signing_keys order by activates_at, kid`)).map(toRow);
}

async function insert(em: EntityManager, key: SigningKeyRow, now: Date): Promise<void> {
  await run(
    em,
    `insert into signing_keys (kid, algorithm, public_jwk, private_key_encrypted, kek_id, created_at, activates_at, retired_at, expires_at)
     values (?, ?, ?::jsonb, ?, ?, ?, ?, null, null)`,
    [key.kid, key.algorithm, JSON.stringify(key.publicJwk), key.privateKeyEncrypted, key.kekId, now, key.activatesAt],
  );
}

/** The key that signs at `at`: the newest activated by then and not retired by then. */
export function signingKeyAt<K extends Pick<SigningKeyRow, 'activatesAt' | 'retiredAt' | 'expiresAt'>>(rows: readonly K[], at: Date): K | undefined {
  let best: K | undefined;
  for (const row of rows) {
    if (row.activatesAt > at) continue;
    if (row.retiredAt !== null && row.retiredAt <= at) continue;
    if (row.expiresAt !== null && row.expiresAt <= at) continue;
    if (!best || row.activatesAt >= best.activatesAt) best = row;
  }
  return best;
}

export type SigningKeyState = 'next' | 'active' | 'retired' | 'removed';

/** The lifecycle state of `row` at `now` among `rows`. */
export function signingKeyState(row: SigningKeyRow, rows: readonly SigningKeyRow[], now: Date): SigningKeyState {
  if (row.expiresAt !== null && row.expiresAt <= now) return 'removed';
  if (row.retiredAt !== null && row.retiredAt <= now) return 'retired';
  if (row.activatesAt > now) return 'next';
  return signingKeyAt(rows, now)?.kid === row.kid ? 'active' : 'retired';
}

export interface RotationPolicy {
  /** How long a key signs before the next takes over (SIGNING_KEY_ROTATION_INTERVAL). */
  readonly intervalMs: number;
  /** How long a key is published before it signs (SIGNING_KEY_PUBLISH_AHEAD). */
  readonly publishAheadMs: number;
  /** How long a retired key stays published: the access-token lifetime plus clock skew. */
  readonly retiredForMs: number;
}

export interface RotationResult {
  /** Another replica held the lock (only when not waiting for it): nothing was done. */
  readonly skippedLock: boolean;
  /** The key staged by this run, if any. */
  readonly staged?: { kid: string; activatesAt: Date };
  /** Keys retired by this run (a newer key has taken over). */
  readonly retired: string[];
  /** Keys removed by this run (every token they signed has expired). */
  readonly removed: number;
}

export const signingKeys = {
  listPublished,
  listAll,

  /**
   * Inserts the key made by `make` unless a key already signs by `signingBy`, and returns the keys
   * published at `now`. Serialised by a transaction-scoped advisory lock, so replicas starting
   * together on an empty table create one key between them, not one each. `signingBy` lies a little
   * after `now`: a replica whose clock (or whose moment of reading it) is slightly behind another's
   * must take the key that one has just created, not make a second.
   */
  async ensureActive(em: EntityManager, now: Date, signingBy: Date, make: () => SigningKeyRow): Promise<SigningKeyRow[]> {
    return em.transactional(async (tx) => {
      await queryOne(tx, LOCK);
      const published = await listPublished(tx, now);
      const signing = published.some((key) => key.activatesAt <= signingBy && (key.retiredAt === null || key.retiredAt > now));
      if (signing) return published;
      await insert(tx, make(), now);
      return listPublished(tx, now);
    });
  },

  /**
   * One step of the lifecycle at `now`: removes keys whose every token has expired, retires keys a
   * newer key has taken over from (published until `retiredForMs` after), and stages the next key
   * once it is due (`force`: now, unless one is already staged), activating `publishAheadMs` later
   * at the earliest. `wait` false: gives up at once when another replica holds the lock.
   */
  async rotate(em: EntityManager, now: Date, policy: RotationPolicy, make: (activatesAt: Date) => SigningKeyRow, options: { wait: boolean; force?: boolean }): Promise<RotationResult> {
    return em.transactional(async (tx) => {
      if (options.wait) await queryOne(tx, LOCK);
      else if (!(await queryOne<{ granted: boolean }>(tx, TRY_LOCK))?.granted) return { skippedLock: true, retired: [], removed: 0 };
      const removed = await run(tx, 'delete from signing_keys where expires_at <= ?', [now]);
      const rows = await listPublished(tx, now);
      const signing = signingKeyAt(rows, now);
      const retired: string[] = [];
      if (signing) {
        for (const row of rows) {
          if (row.kid === signing.kid || row.activatesAt > signing.activatesAt || row.retiredAt !== null) continue;
          await run(tx, 'update signing_keys set retired_at = ?, expires_at = ? where kid = ? and retired_at is null', [
            signing.activatesAt,
            new Date(Math.max(signing.activatesAt.getTime(), now.getTime()) + policy.retiredForMs),
            row.kid,
          ]);
          retired.push(row.kid);
        }
      }
      const staged = rows.find((row) => row.activatesAt > now && row.retiredAt === null);
      let activatesAt: Date | undefined;
      if (!staged) {
        if (!signing) activatesAt = now;
        else if (options.force) activatesAt = new Date(now.getTime() + policy.publishAheadMs);
        else if (now.getTime() >= signing.activatesAt.getTime() + policy.intervalMs - policy.publishAheadMs) {
          activatesAt = new Date(Math.max(now.getTime() + policy.publishAheadMs, signing.activatesAt.getTime() + policy.intervalMs));
        }
      }
      if (!activatesAt) return { skippedLock: false, retired, removed };
      const key = make(activatesAt);
      await insert(tx, key, now);
      return { skippedLock: false, staged: { kid: key.kid, activatesAt }, retired, removed };
    });
  },

  /**
   * A compromised key: retired and withdrawn at `now` (its tokens stop verifying), and, when it
   * was the key signing, replaced at once by the staged key (already published) or a new one.
   * Undefined when no such key is published.
   */
  async retireNow(em: EntityManager, kid: string, now: Date, make: (activatesAt: Date) => SigningKeyRow): Promise<{ signing: string; created: boolean } | undefined> {
    return em.transactional(async (tx) => {
      await queryOne(tx, LOCK);
      const rows = await listPublished(tx, now);
      if (!rows.some((row) => row.kid === kid)) return undefined;
      await run(tx, 'update signing_keys set retired_at = least(coalesce(retired_at, ?), ?), expires_at = ? where kid = ?', [now, now, now, kid]);
      const others = rows.filter((row) => row.kid !== kid && (row.retiredAt === null || row.retiredAt > now));
      const signing = signingKeyAt(others, now);
      if (signing) return { signing: signing.kid, created: false };
      const staged = others.filter((row) => row.activatesAt > now).at(-1);
      if (staged) {
        await run(tx, 'update signing_keys set activates_at = ? where kid = ?', [now, staged.kid]);
        return { signing: staged.kid, created: false };
      }
      const key = make(now);
      await insert(tx, key, now);
      return { signing: key.kid, created: true };
    });
  },

  /** Re-seals every stored private key with `reseal`; returns how many changed. */
  async rewrap(em: EntityManager, reseal: (row: SigningKeyRow) => { sealed: Buffer; kekId: string }): Promise<number> {
    return em.transactional(async (tx) => {
      await queryOne(tx, LOCK);
      let count = 0;
      for (const row of await listAll(tx)) {
        const { sealed, kekId } = reseal(row);
        count += await run(tx, 'update signing_keys set private_key_encrypted = ?, kek_id = ? where kid = ?', [sealed, kekId, row.kid]);
      }
      return count;
    });
  },

  async fingerprint(em: EntityManager): Promise<string> {
    return (await queryOne<{ fingerprint: string }>(em, SIGNING_KEYS_FINGERPRINT))?.fingerprint ?? '';
  },
};

export interface RefreshSecretKeyRow {
  readonly id: string;
  readonly keyEncrypted: Buffer;
  readonly kekId: string | null;
}

export const refreshSecretKeys = {
  /**
   * The stored derivation key, creating it first when there is none (under the signing keys'
   * lock, so replicas starting together agree). `make` is told whether the database already
   * served this application (it holds signing keys or sessions): then the key sessions were
   * created with is the one to store.
   */
  async ensure(em: EntityManager, make: (existingDeployment: boolean) => RefreshSecretKeyRow): Promise<RefreshSecretKeyRow> {
    return em.transactional(async (tx) => {
      await queryOne(tx, LOCK);
      const found = await queryOne<{ id: string; key_encrypted: Buffer; kek_id: string | null }>(tx, 'select id, key_encrypted, kek_id from refresh_secret_keys order by created_at, id limit 1');
      if (found) return { id: found.id, keyEncrypted: found.key_encrypted, kekId: found.kek_id };
      const existing = await queryOne<{ existing: boolean }>(tx, 'select exists(select 1 from signing_keys) or exists(select 1 from sessions) as existing');
      const row = make(existing?.existing ?? false);
      await run(tx, 'insert into refresh_secret_keys (id, key_encrypted, kek_id, created_at) values (?, ?, ?, now())', [row.id, row.keyEncrypted, row.kekId]);
      return row;
    });
  },

  async listAll(em: EntityManager): Promise<RefreshSecretKeyRow[]> {
    const rows = await queryAll<{ id: string; key_encrypted: Buffer; kek_id: string | null }>(em, 'select id, key_encrypted, kek_id from refresh_secret_keys order by created_at, id');
    return rows.map((row) => ({ id: row.id, keyEncrypted: row.key_encrypted, kekId: row.kek_id }));
  },

  async rewrap(em: EntityManager, reseal: (row: RefreshSecretKeyRow) => { sealed: Buffer; kekId: string }): Promise<number> {
    return em.transactional(async (tx) => {
      await queryOne(tx, LOCK);
      let count = 0;
      for (const row of await this.listAll(tx)) {
        const { sealed, kekId } = reseal(row);
        count += await run(tx, 'update refresh_secret_keys set key_encrypted = ?, kek_id = ? where id = ?', [sealed, kekId, row.id]);
      }
      return count;
    });
  },
};
