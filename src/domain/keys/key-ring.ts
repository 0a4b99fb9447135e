import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { Clock } from '../clock.js';
import { signingKeys, type SigningKeyRow } from '../../persistence/repositories/signing-keys.js';
import { openPrivateKey, sealPrivateKey } from './key-encryption.js';

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

function newKey(keyEncryptionKey: Buffer, now: Date): SigningKeyRow {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const exported = publicKey.export({ format: 'jwk' }) as Record<string, string>;
  const kid = thumbprint(exported);
  const publicJwk = { kty: 'EC', crv: 'P-256', x: exported.x!, y: exported.y!, kid, alg: SIGNING_ALGORITHM, use: 'sig' };
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  return { kid, algorithm: SIGNING_ALGORITHM, publicJwk, privateKeyEncrypted: sealPrivateKey(keyEncryptionKey, kid, der), activatesAt: now, retiredAt: null, expiresAt: null };
}

export interface SigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
}

/**
 * The signing keys in memory, as `KeyObject`s parsed once (parsing a PEM or JWK per call would
 * dominate the cost of signing and verifying). One key signs; every published key verifies.
 * The JWKS document is rendered once per load, not per request.
 */
export class KeyRing {
  private constructor(
    readonly signing: SigningKey,
    private readonly verifying: ReadonlyMap<string, KeyObject>,
    readonly jwksJson: string,
    readonly keyIds: readonly string[],
  ) {}

  /** Loads the published keys, creating the first key pair when none signs yet. */
  static async load(em: EntityManager, keyEncryptionKey: Buffer, clock: Clock): Promise<KeyRing> {
    const now = new Date(clock.now());
    const signingBy = new Date(now.getTime() + CLOCK_SKEW_MS);
    const rows = await signingKeys.ensureActive(em, now, signingBy, () => newKey(keyEncryptionKey, now));
    const verifying = new Map<string, KeyObject>();
    for (const row of rows) verifying.set(row.kid, createPublicKey({ key: row.publicJwk, format: 'jwk' }));
    // The newest active key signs; older ones keep verifying what they signed.
    const active = rows.filter((row) => row.activatesAt <= signingBy && row.retiredAt === null).at(-1)!;
    const privateKey = createPrivateKey({ key: openPrivateKey(keyEncryptionKey, active.kid, active.privateKeyEncrypted), format: 'der', type: 'pkcs8' });
    // Members in a fixed order (jsonb storage does not keep the order they were written in).
    const jwks = { keys: rows.map(({ publicJwk: k }) => ({ kty: k.kty, crv: k.crv, x: k.x, y: k.y, kid: k.kid, alg: k.alg, use: k.use })) };
    return new KeyRing({ kid: active.kid, privateKey }, verifying, JSON.stringify(jwks), rows.map((row) => row.kid));
  }

  verificationKey(kid: string): KeyObject | undefined {
    return this.verifying.get(kid);
  }
}
