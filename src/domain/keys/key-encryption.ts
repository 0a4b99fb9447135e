import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

const FORMAT_VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * Seals a signing key's private half for storage: AES-256-GCM under KEY_ENCRYPTION_KEY, with the
 * key id as associated data so a ciphertext cannot be moved to another row. Layout: version byte,
 * 12-byte IV, 16-byte tag, ciphertext.
 */
export function sealPrivateKey(keyEncryptionKey: Buffer, kid: string, privateKeyDer: Buffer): Buffer {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', keyEncryptionKey, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.from(kid, 'utf8'));
  const ciphertext = Buffer.concat([cipher.update(privateKeyDer), cipher.final()]);
  return Buffer.concat([Buffer.of(FORMAT_VERSION), iv, cipher.getAuthTag(), ciphertext]);
}

export class KeyDecryptionError extends Error {
  constructor(kid: string) {
    super(`cannot decrypt signing key ${kid}: KEY_ENCRYPTION_KEY is not the key it was encrypted with, or the row is corrupt`);
    this.name = 'KeyDecryptionError';
  }
}

export function openPrivateKey(keyEncryptionKey: Buffer, kid: string, sealed: Buffer): Buffer {
  if (sealed.length <= 1 + IV_BYTES + TAG_BYTES || sealed[0] !== FORMAT_VERSION) throw new KeyDecryptionError(kid);
  const iv = sealed.subarray(1, 1 + IV_BYTES);
  const tag = sealed.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
  try {
    const decipher = createDecipheriv('aes-256-gcm', keyEncryptionKey, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(kid, 'utf8'));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(sealed.subarray(1 + IV_BYTES + TAG_BYTES)), decipher.final()]);
  } catch {
    throw new KeyDecryptionError(kid);
  }
}
