import { createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto';

/**
 * Refresh tokens are opaque to clients: `<session id>.<secret>`, the secret 32 bytes in base64url.
 * Only SHA-256 digests of secrets are stored, so a copy of the database cannot refresh anything.
 */
const FORMAT = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.([A-Za-z0-9_-]{43})$/;

export interface RefreshToken {
  readonly sessionId: string;
  readonly secret: Buffer;
}

export function formatRefreshToken(sessionId: string, secret: Buffer): string {
  return `${sessionId}.${secret.toString('base64url')}`;
}

/** Undefined for anything that is not exactly the format (including an access token or garbage). */
export function parseRefreshToken(token: string): RefreshToken | undefined {
  const match = FORMAT.exec(token);
  if (!match) return undefined;
  const secret = Buffer.from(match[2]!, 'base64url');
  // 43 base64url characters carry 258 bits; the last two must be zero for a canonical encoding.
  if (secret.length !== 32 || secret.toString('base64url') !== match[2]) return undefined;
  return { sessionId: match[1]!, secret };
}

export function newRefreshSecret(): Buffer {
  return randomBytes(32);
}

export function hashRefreshSecret(secret: Buffer): Buffer {
  return createHash('sha256').update(secret).digest();
}

/**
 * Derives the refresh-token secrets of rotations. A child secret is HMAC(key, session id, parent
 * secret): a repeated refresh with the same parent (a retry after a lost response) can be answered
 * with the very same child without storing it in clear.
 */
export class RefreshSecretDeriver {
  private readonly key: Buffer;

  constructor(keyEncryptionKey: Buffer) {
    this.key = Buffer.from(hkdfSync('sha256', keyEncryptionKey, Buffer.alloc(0), 'latchkey/refresh-token/v1', 32));
  }

  child(sessionId: string, parent: Buffer): Buffer {
    return createHmac('sha256', this.key).update(sessionId).update('.').update(parent).digest();
  }
}
