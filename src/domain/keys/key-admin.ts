import { randomUUID } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import { CLOCK_SKEW_MS, IMPLIED_KEK_ID, type Config } from '../../config/schema.js';
import {
  refreshSecretKeys,
  signingKeys,
  signingKeyState,
  type RotationPolicy,
  type RotationResult,
  type SigningKeyState,
} from '../../persistence/repositories/signing-keys.js';
import type { Clock } from '../clock.js';
import { RefreshSecretDeriver } from '../tokens/refresh-tokens.js';
import type { KeyEncryptionKeys } from './key-encryption.js';
import { newSigningKey } from './key-ring.js';

/** The lifecycle's timings from the configuration. */
export function rotationPolicy(config: Pick<Config, 'SIGNING_KEY_ROTATION_INTERVAL' | 'SIGNING_KEY_PUBLISH_AHEAD' | 'ACCESS_TOKEN_TTL'>): RotationPolicy {
  return {
    intervalMs: config.SIGNING_KEY_ROTATION_INTERVAL,
    publishAheadMs: config.SIGNING_KEY_PUBLISH_AHEAD,
    // Every token a key signed has expired this long after it stopped signing.
    retiredForMs: config.ACCESS_TOKEN_TTL + CLOCK_SKEW_MS,
  };
}

/** One lifecycle step (the `rotate-signing-keys` job; `latchkey keys rotate` with `force`). */
export function rotateSigningKeys(
  em: EntityManager,
  keks: KeyEncryptionKeys,
  clock: Clock,
  policy: RotationPolicy,
  options: { wait: boolean; force?: boolean },
): Promise<RotationResult> {
  return signingKeys.rotate(em, new Date(clock.now()), policy, (activatesAt) => newSigningKey(keks, activatesAt), options);
}

/** `latchkey keys retire <kid> --now`. */
export function retireSigningKeyNow(em: EntityManager, keks: KeyEncryptionKeys, clock: Clock, kid: string) {
  const now = new Date(clock.now());
  return signingKeys.retireNow(em, kid, now, (activatesAt) => newSigningKey(keks, activatesAt));
}

export interface KeyListing {
  readonly kid: string;
  readonly state: SigningKeyState;
  readonly kekId: string;
  readonly createdAt: Date | undefined;
  readonly activatesAt: Date;
  readonly retiredAt: Date | null;
  readonly expiresAt: Date | null;
}

/** `latchkey keys list`: every stored signing key with its state at `now`. */
export async function listSigningKeys(em: EntityManager, clock: Clock): Promise<KeyListing[]> {
  const now = new Date(clock.now());
  const rows = await signingKeys.listAll(em);
  return rows.map((row) => ({
    kid: row.kid,
    state: signingKeyState(row, rows, now),
    kekId: row.kekId ?? 'default',
    createdAt: row.createdAt,
    activatesAt: row.activatesAt,
    retiredAt: row.retiredAt,
    expiresAt: row.expiresAt,
  }));
}

/**
 * `latchkey keys rewrap`: every stored private key (signing keys and the refresh-secret derivation
 * key) opened with whichever configured key-encryption key opens it and sealed again under the
 * first. Throws, changing nothing in that table, when one opens with none of them.
 */
export async function rewrapKeys(em: EntityManager, keks: KeyEncryptionKeys): Promise<{ signingKeys: number; refreshSecretKeys: number; kekId: string }> {
  const signing = await signingKeys.rewrap(em, (row) => keks.seal(row.kid, keks.open(`signing key ${row.kid}`, row.kid, row.privateKeyEncrypted, row.kekId)));
  const refresh = await refreshSecretKeys.rewrap(em, (row) => keks.seal(refreshKeyAad(row.id), keks.open(`refresh-secret key ${row.id}`, refreshKeyAad(row.id), row.keyEncrypted, row.kekId)));
  return { signingKeys: signing, refreshSecretKeys: refresh, kekId: keks.primaryId };
}

const refreshKeyAad = (id: string) => `refresh-secret-key/${id}`;

/**
 * The refresh-secret derivation key, stored sealed in `refresh_secret_keys`; created at the first
 * start: random on a new database, or, on a database that already has sessions (or signing keys),
 * the key earlier releases derived from the key-encryption key, so those sessions keep rotating,
 * retrying within the grace window and being caught on reuse. From then on it no longer depends on
 * the key-encryption key, which can be replaced (see rewrapKeys).
 */
export async function loadRefreshSecretDeriver(em: EntityManager, keks: KeyEncryptionKeys): Promise<{ deriver: RefreshSecretDeriver; id: string; material: Buffer }> {
  const row = await refreshSecretKeys.ensure(em, (existingDeployment) => {
    const id = existingDeployment ? 'legacy-kek-derived' : `rsk-${randomUUID()}`;
    const material = existingDeployment ? RefreshSecretDeriver.derivedKeyMaterial(legacyKek(keks)) : RefreshSecretDeriver.generateKeyMaterial();
    const { sealed, kekId } = keks.seal(refreshKeyAad(id), material);
    return { id, keyEncrypted: sealed, kekId };
  });
  const material = keks.open(`refresh-secret key ${row.id}`, refreshKeyAad(row.id), row.keyEncrypted, row.kekId);
  return { deriver: new RefreshSecretDeriver(material), id: row.id, material };
}

/** The key earlier releases derived refresh secrets from: KEY_ENCRYPTION_KEY (`default`), else the first listed. */
function legacyKek(keks: KeyEncryptionKeys): Buffer {
  return (keks.entries.find((entry) => entry.id === IMPLIED_KEK_ID) ?? keks.entries[0]!).key;
}
