import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { IMPLIED_KEK_ID, type Config } from '../../config/schema.js';
import { KeyEncryptionKeys } from './key-encryption.js';
import type { Logger } from '../../observability/logger.js';

/**
 * KEY_ENCRYPTION_KEY, or in development (where it may be unset) a key generated once into the data
 * directory, so `npm start` works with no set-up and keeps its signing keys across restarts.
 * Production requires the variable (loadConfig enforces it).
 */
export async function resolveKeyEncryptionKey(config: Config, logger: Logger): Promise<Buffer> {
  if (config.KEY_ENCRYPTION_KEY) return config.KEY_ENCRYPTION_KEY;
  if (config.NODE_ENV === 'production') throw new Error('KEY_ENCRYPTION_KEY is required when NODE_ENV=production');
  const path = join(config.LATCHKEY_DATA_DIR, 'key-encryption-key');
  const generated = randomBytes(32);
  await mkdir(config.LATCHKEY_DATA_DIR, { recursive: true });
  try {
    // `wx`: of two processes starting together, one writes the key and the other reads it.
    await writeFile(path, `${generated.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
    logger.warn({ path }, 'KEY_ENCRYPTION_KEY is not set: generated a development key into the data directory (set the variable in production)');
    return generated;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const stored = Buffer.from((await readFile(path, 'utf8')).trim(), 'base64');
  if (stored.length !== 32) throw new Error(`${path} does not hold a 32-byte base64 key: delete it or set KEY_ENCRYPTION_KEY`);
  logger.warn({ path }, 'KEY_ENCRYPTION_KEY is not set: using the development key stored in the data directory');
  return stored;
}

/**
 * The configured key-encryption keys: KEY_ENCRYPTION_KEYS in order when set, otherwise the one
 * KEY_ENCRYPTION_KEY (or the development key) under the id `default`.
 */
export async function resolveKeyEncryptionKeys(config: Config, logger: Logger): Promise<KeyEncryptionKeys> {
  if (config.KEY_ENCRYPTION_KEYS) return new KeyEncryptionKeys(config.KEY_ENCRYPTION_KEYS);
  return new KeyEncryptionKeys([{ id: IMPLIED_KEK_ID, key: await resolveKeyEncryptionKey(config, logger) }]);
}
