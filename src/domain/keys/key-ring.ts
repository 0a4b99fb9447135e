import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { Clock } from '../clock.js';
import { signingKeyAt, signingKeys, type SigningKeyRow } from '../../persistence/repositories/signing-keys.js';
import { KeyEncryptionKeys } from './key-encryption.js';
import { IMPLIED_KEK_ID } from '../../config/schema.js';

export const SIGNING_ALGORITHM = 'ES256';

/**
 * How far another replica's clock may run ahead of this one's: a key it activated that little in
 * the future of our clock already counts as signing (two replicas starting together must agree on
 * one key). Verifiers allow no such leeway; this only decides which key signs.
 */
export const CLOCK_SKEW_MS = 60_000;

/** RFC 7638 thumbprint of a P-256 public key: a stable, collision-free key id. */
function thumbprint(jwk: Record<string, string>): string {
  const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
  return createHash('sha256').update(canonical).digest('base64url');
}

/** A new key pair, its private half sealed under the first key-encryption key, signing from `activatesAt`. */
export function newSigningKey(keks: KeyEncryptionKeys, activatesAt: Date): SigningKeyRow {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const exported = publicKey.export({ format: 'jwk' }) as Record<string, string>;
  const kid = thumbprint(exported);
  const publicJwk = { kty: 'EC', crv: 'P-256', x: exported.x!, y: exported.y!, kid, alg: SIGNING_ALGORITHM, use: 'sig' };
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  const { sealed, kekId } = keks.seal(kid, der);
  return { kid, algorithm: SIGNING_ALGORITHM, publicJwk, privateKeyEncrypted: sealed, kekId, activatesAt, retiredAt: null, expiresAt: null };
}

export interface SigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
}

interface Signable extends SigningKey {
  readonly activatesAt: Date;
  readonly retiredAt: Date | null;
  readonly expiresAt: Date | null;
}

interface Verifying {
  readonly key: KeyObject;
  readonly expiresAt: Date | null;
}

interface RingState {
  readonly signable: readonly Signable[];
  readonly verifying: ReadonlyMap<string, Verifying>;
  readonly jwksJson: string;
  readonly keyIds: readonly string[];
  /** The rows it was built from, so a reload can tell whether anything changed. */
  readonly fingerprint: string;
}

const fingerprintOf = (rows: readonly SigningKeyRow[]) =>
  rows.map((row) => `${row.kid}/${row.activatesAt.getTime()}/${row.retiredAt?.getTime() ?? '-'}/${row.expiresAt?.getTime() ?? '-'}`).join(',');

/**
 * The signing keys in memory, as `KeyObject`s parsed once (parsing a PEM or JWK per call would
 * dominate the cost of signing and verifying). The key that signs is chosen by the clock at each
 * signature (the newest activated and not retired, see signingKeyAt), so a staged key takes over
 * at its time on every replica without a reload; every published key verifies until its
 * `expires_at`. `reload` swaps in what the table says now (a key staged, retired or removed
 * elsewhere); the JWKS document is rendered once per load, not per request.
 */
export class KeyRing {
  #state: RingState;

  private constructor(
    state: RingState,
    private readonly keks: KeyEncryptionKeys,
    private readonly clock: Clock,
  ) {
    this.#state = state;
  }

  /**
   * Loads the published keys, creating the first key pair when none signs yet. Every published
   * private key must open with a configured key-encryption key, or this throws (start-up fails,
   * naming the key ids, never the keys).
   */
  static async load(em: EntityManager, keyEncryptionKeys: KeyEncryptionKeys | Buffer, clock: Clock): Promise<KeyRing> {
    const keks = keyEncryptionKeys instanceof KeyEncryptionKeys ? keyEncryptionKeys : new KeyEncryptionKeys([{ id: IMPLIED_KEK_ID, key: keyEncryptionKeys }]);
    const now = new Date(clock.now());
    const signingBy = new Date(now.getTime() + CLOCK_SKEW_MS);
    const rows = await signingKeys.ensureActive(em, now, signingBy, () => newSigningKey(keks, now));
    return new KeyRing(KeyRing.build(rows, keks, now, new Map(), true), keks, clock);
  }

  private static build(rows: readonly SigningKeyRow[], keks: KeyEncryptionKeys, now: Date, known: ReadonlyMap<string, Signable>, strict: boolean, onSkipped?: (kid: string, error: Error) => void): RingState {
    const verifying = new Map<string, Verifying>();
    const signable: Signable[] = [];
    for (const row of rows) {
      verifying.set(row.kid, { key: createPublicKey({ key: row.publicJwk, format: 'jwk' }), expiresAt: row.expiresAt });
      const mayStillSign = row.retiredAt === null || row.retiredAt > now;
      if (!mayStillSign && !strict) continue;
      let privateKey = known.get(row.kid)?.privateKey;
      if (!privateKey) {
        try {
          privateKey = createPrivateKey({ key: keks.open(`signing key ${row.kid}`, row.kid, row.privateKeyEncrypted, row.kekId), format: 'der', type: 'pkcs8' });
        } catch (error) {
          if (strict) throw error;
          onSkipped?.(row.kid, error as Error);
          continue;
        }
      }
      if (mayStillSign) signable.push({ kid: row.kid, privateKey, activatesAt: row.activatesAt, retiredAt: row.retiredAt, expiresAt: row.expiresAt });
    }
    // Members in a fixed order (jsonb storage does not keep the order they were written in).
    const jwks = { keys: rows.map(({ publicJwk: k }) => ({ kty: k.kty, crv: k.crv, x: k.x, y: k.y, kid: k.kid, alg: k.alg, use: k.use })) };
    return { signable, verifying, jwksJson: JSON.stringify(jwks), keyIds: rows.map((row) => row.kid), fingerprint: fingerprintOf(rows) };
  }

  /**
   * Re-reads the published keys. A private key that no configured key-encryption key opens is
   * left out of signing (reported through `onSkipped`) rather than failing the reload. Resolves
   * true when anything changed.
   */
  async reload(em: EntityManager, onSkipped?: (kid: string, error: Error) => void): Promise<boolean> {
    const now = new Date(this.clock.now());
    const rows = await signingKeys.listPublished(em, now);
    const fingerprint = fingerprintOf(rows);
    if (fingerprint === this.#state.fingerprint) return false;
    const known = new Map(this.#state.signable.map((key) => [key.kid, key]));
    this.#state = KeyRing.build(rows, this.keks, now, known, false, onSkipped);
    return true;
  }

  /** The key that signs now: the newest activated (allowing CLOCK_SKEW_MS) and not retired. */
  get signing(): SigningKey {
    const { signable } = this.#state;
    const chosen = signingKeyAt(signable, new Date(this.clock.now() + CLOCK_SKEW_MS)) ?? signable.at(-1);
    if (!chosen) throw new Error('no signing key is available: run `latchkey keys rotate`');
    return chosen;
  }

  get jwksJson(): string {
    return this.#state.jwksJson;
  }

  get keyIds(): readonly string[] {
    return this.#state.keyIds;
  }

  /** The public key of a published key that has not been removed (by the clock) yet. */
  verificationKey(kid: string): KeyObject | undefined {
    const entry = this.#state.verifying.get(kid);
    if (!entry) return undefined;
    if (entry.expiresAt !== null && entry.expiresAt.getTime() <= this.clock.now()) return undefined;
    return entry.key;
  }
}
