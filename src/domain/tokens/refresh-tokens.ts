import { createHmac, createSecretKey, hash, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';

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
  return hash('sha256', secret, 'buffer');
}

/**
 * How many rotations back a presented token is still recognised as an ancestor of the session's
 * current one (see RefreshSecretDeriver.generationsBehind). Walking the chain costs about 2.6 µs
 * per step, so a made-up secret costs at most a few milliseconds of CPU. A real token older than
 * this is refused as TOKEN_INVALID instead of being reported as reuse.
 */
export const MAX_REUSE_DEPTH = 1024;

/**
 * Derives the refresh-token secrets of rotations. A child secret is HMAC(key, session id, parent
 * secret), so the tokens of a session form a chain that only the server can extend:
 * - a repeated refresh with the same parent (a retry after a lost response, a second tab) can be
 *   answered with the very same child without storing it in clear;
 * - any earlier token of the session leads, step by step, to the current secret's hash, so a
 *   replayed old token is recognised as reuse while a made-up secret is not, with nothing stored
 *   per rotation but the current and previous hashes.
 */
export class RefreshSecretDeriver {
  private readonly key: KeyObject;

  constructor(keyEncryptionKey: Buffer) {
    this.key = createSecretKey(Buffer.from(hkdfSync('sha256', keyEncryptionKey, Buffer.alloc(0), 'latchkey/refresh-token/v1', 32)));
  }

  child(sessionId: string, parent: Buffer): Buffer {
    return createHmac('sha256', this.key).update(sessionId).update('.').update(parent).digest();
  }

  /**
   * How many rotations ago `presented` was the session's secret: 0 when its hash is `currentHash`,
   * k when `currentHash` is the hash of its k-th descendant, or undefined when it is no ancestor
   * within `maxDepth` steps (a made-up or foreign secret). `firstChild`, when already computed,
   * saves one step.
   */
  generationsBehind(sessionId: string, presented: Buffer, currentHash: Buffer, maxDepth: number, firstChild?: Buffer): number | undefined {
    if (hashRefreshSecret(presented).equals(currentHash)) return 0;
    let secret = presented;
    for (let depth = 1; depth <= Math.min(maxDepth, MAX_REUSE_DEPTH); depth++) {
      secret = depth === 1 && firstChild ? firstChild : this.child(sessionId, secret);
      if (hashRefreshSecret(secret).equals(currentHash)) return depth;
    }
    return undefined;
  }
}
