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
    super(`cannot decrypt ${kid}: KEY_ENCRYPTION_KEY is not the key it was encrypted with, or the row is corrupt`);
    this.name = 'KeyDecryptionError';
  }
}

export function openPrivateKey(keyEncryptionKey: Buffer, kid: string, sealed: Buffer): Buffer {
  if (sealed.length <= 1 + IV_BYTES + TAG_BYTES || sealed[0] !== FORMAT_VERSION) throw new KeyDecryptionError(`signing key ${kid}`);
  const iv = sealed.subarray(1, 1 + IV_BYTES);
  const tag = sealed.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
  try {
    const decipher = createDecipheriv('aes-256-gcm', keyEncryptionKey, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(kid, 'utf8'));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(sealed.subarray(1 + IV_BYTES + TAG_BYTES)), decipher.final()]);
  } catch {
    throw new KeyDecryptionError(`signing key ${kid}`);
  }
}

/** A stored key that none of the configured key-encryption keys opens. Names ids only. */
export class NoKeyEncryptionKeyError extends KeyDecryptionError {
  constructor(what: string, storedUnder: string | null, configured: readonly string[]) {
    super(what);
    this.message = (
      `cannot decrypt ${what}: it is sealed under key-encryption key '${storedUnder ?? 'default'}', and none of the configured keys (ids: ${configured.join(', ')}) opens it; ` +
        'list that key in KEY_ENCRYPTION_KEYS (or KEY_ENCRYPTION_KEY) again, or the row is corrupt'
    );
  }
}

/**
 * The configured key-encryption keys, in order: the first seals, every one opens. A stored key
 * records the id it was sealed under; the key with that id is tried first, then the others (rows
 * from before ids were recorded carry none, and an operator may have renamed an id).
 */
export class KeyEncryptionKeys {
  constructor(readonly entries: readonly { readonly id: string; readonly key: Buffer }[]) {
    if (entries.length === 0) throw new Error('at least one key-encryption key is required');
  }

  get primaryId(): string {
    return this.entries[0]!.id;
  }

  get ids(): string[] {
    return this.entries.map((entry) => entry.id);
  }

  seal(aad: string, plaintext: Buffer): { sealed: Buffer; kekId: string } {
    return { sealed: sealPrivateKey(this.entries[0]!.key, aad, plaintext), kekId: this.primaryId };
  }

  /** Opens what `seal` made; `what` names it in the error (e.g. "signing key <kid>"). */
  open(what: string, aad: string, sealed: Buffer, storedUnder: string | null): Buffer {
    const ordered = [...this.entries].sort((a, b) => Number(b.id === (storedUnder ?? 'default')) - Number(a.id === (storedUnder ?? 'default')));
    for (const entry of ordered) {
      try {
        return openPrivateKey(entry.key, aad, sealed);
      } catch (error) {
        if (!(error instanceof KeyDecryptionError)) throw error;
      }
    }
    throw new NoKeyEncryptionKeyError(what, storedUnder, this.ids);
  }
}
