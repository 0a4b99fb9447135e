import { defineEntity, p, type InferEntity } from '@mikro-orm/core';

/**
 * A P-256 signing key pair. The private key is stored encrypted (AES-256-GCM under
 * KEY_ENCRYPTION_KEY). A key is published in the JWKS from `createdAt`, signs from `activatesAt`,
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
    createdAt: p.datetime(),
    activatesAt: p.datetime(),
    retiredAt: p.datetime().nullable(),
    expiresAt: p.datetime().nullable(),
  },
});

export type SigningKey = InferEntity<typeof SigningKeySchema>;
