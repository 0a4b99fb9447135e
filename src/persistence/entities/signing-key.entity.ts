import { defineEntity, p, type InferEntity } from '@mikro-orm/core';

/**
 * A P-256 signing key pair. The private key is stored encrypted (AES-256-GCM under the
 * key-encryption key `kekId`). A key is published in the JWKS from `createdAt`, signs from `activatesAt`,
 * stops signing at `retiredAt`, and is withdrawn from the JWKS after `expiresAt`, when no token
 * it signed can still be valid.
 */
export const SigningKeySchema = defineEntity({
  name: 'SigningKey',
  tableName: 'signing_keys',
  indexes: [{ name: 'signing_keys_expires_at_idx', properties: ['expiresAt'] }],
  properties: {
    kid: p.string().length(64).primary(),
    algorithm: p.string().length(16),
    publicJwk: p.json<Record<string, string>>(),
    privateKeyEncrypted: p.uint8array(),
    /** The key-encryption key it is sealed under; null for rows from before KEK ids (`default`). */
    kekId: p.string().length(32).nullable(),
    createdAt: p.datetime(),
    activatesAt: p.datetime(),
    retiredAt: p.datetime().nullable(),
    expiresAt: p.datetime().nullable(),
  },
});

export type SigningKey = InferEntity<typeof SigningKeySchema>;

/**
 * The refresh-secret derivation key (see RefreshSecretDeriver): random, sealed like a signing key
 * under the key-encryption key `kekId`, so replacing the KEK leaves live sessions working.
 */
export const RefreshSecretKeySchema = defineEntity({
  name: 'RefreshSecretKey',
  tableName: 'refresh_secret_keys',
  properties: {
    id: p.string().length(64).primary(),
    keyEncrypted: p.uint8array(),
    kekId: p.string().length(32).nullable(),
    createdAt: p.datetime(),
  },
});

export type RefreshSecretKey = InferEntity<typeof RefreshSecretKeySchema>;
