import { createHmac, createSecretKey, hash, hkdfSync, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';

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

export function hashRefreshSecret(secret: Buffer): Buffer {
  return hash('sha256', secret, 'buffer');
}

/**
 * How many rotations back a presented token is still recognised as an ancestor of the session's
 * current one (see RefreshSecretDeriver.generationsBehind). Walking the chain costs about 2.6 µs
 * per step, and only a secret this server issued (its tag checks) is walked at all, so a made-up
 * secret costs two HMACs whatever the session's generation. A real token older than this is
 * refused as TOKEN_INVALID instead of being reported as reuse.
 */
export const MAX_REUSE_DEPTH = 1024;

/** A secret is 24 bytes of body and an 8-byte tag over the session id and the body. */
const BODY_BYTES = 24;
const TAG_BYTES = 8;

/** A stored derivation key: the 32-byte chain key, then the 32-byte tag key. */
export const DERIVATION_KEY_BYTES = 64;

/**
 * Derives the refresh-token secrets of rotations. A child secret's body is HMAC(key, session id,
 * parent secret), so the tokens of a session form a chain that only the server can extend:
 * - a repeated refresh with the same parent (a retry after a lost response, a second tab) can be
 *   answered with the very same child without storing it in clear;
 * - any earlier token of the session leads, step by step, to the current secret's hash, so a
 *   replayed old token is recognised as reuse while a made-up secret is not, with nothing stored
 *   per rotation but the current and previous hashes.
 * Every secret also carries a tag (a truncated HMAC of the session id and its body under a second
 * key), so a secret the server never issued is told apart in constant time, before any walk: a
 * caller holding a known session id cannot buy more than two HMACs of event-loop time per call
 * with made-up secrets (192 bits of body entropy; 64 bits of tag only gate the walk).
 */
export class RefreshSecretDeriver {
  private readonly key: KeyObject;
  private readonly tagKey: KeyObject;

  /**
   * `root`: 32 bytes the two keys are derived from (HKDF), as releases before stored derivation
   * keys did from KEY_ENCRYPTION_KEY; or, 64 bytes long, the two keys themselves (see
   * `derivedKeyMaterial`, and the stored key in `refresh_secret_keys`).
   */
  constructor(root: Buffer) {
    const material = root.length === DERIVATION_KEY_BYTES ? root : RefreshSecretDeriver.derivedKeyMaterial(root);
    this.key = createSecretKey(Buffer.from(material.subarray(0, 32)));
    this.tagKey = createSecretKey(Buffer.from(material.subarray(32)));
  }

  /** The chain key and the tag key (64 bytes) that `root` stands for. */
  static derivedKeyMaterial(root: Buffer): Buffer {
    return Buffer.concat([
      Buffer.from(hkdfSync('sha256', root, Buffer.alloc(0), 'latchkey/refresh-token/v1', 32)),
      Buffer.from(hkdfSync('sha256', root, Buffer.alloc(0), 'latchkey/refresh-token-tag/v1', 32)),
    ]);
  }

  /** A new random derivation key (the chain key and the tag key). */
  static generateKeyMaterial(): Buffer {
    return randomBytes(DERIVATION_KEY_BYTES);
  }

  /** A new session's first secret: a random body and its tag. */
  fresh(sessionId: string): Buffer {
    return this.tagged(sessionId, randomBytes(BODY_BYTES));
  }

  child(sessionId: string, parent: Buffer): Buffer {
    const body = createHmac('sha256', this.key).update(sessionId).update('.').update(parent).digest().subarray(0, BODY_BYTES);
    return this.tagged(sessionId, body);
  }

  /** Whether this server issued `secret` for `sessionId` (its tag checks), in constant time. */
  issued(sessionId: string, secret: Buffer): boolean {
    if (secret.length !== BODY_BYTES + TAG_BYTES) return false;
    return timingSafeEqual(this.tagOf(sessionId, secret.subarray(0, BODY_BYTES)), secret.subarray(BODY_BYTES));
  }

  private tagged(sessionId: string, body: Buffer): Buffer {
    return Buffer.concat([body, this.tagOf(sessionId, body)]);
  }

  private tagOf(sessionId: string, body: Buffer): Buffer {
    return createHmac('sha256', this.tagKey).update(sessionId).update('.').update(body).digest().subarray(0, TAG_BYTES);
  }

  /**
   * How many rotations ago `presented` was the session's secret: 0 when its hash is `currentHash`,
   * k when `currentHash` is the hash of its k-th descendant, or undefined when it is no ancestor
   * within `maxDepth` steps (a made-up or foreign secret). `firstChild`, when already computed,
   * saves one step.
   */
  generationsBehind(sessionId: string, presented: Buffer, currentHash: Buffer, maxDepth: number, firstChild?: Buffer): number | undefined {
    if (hashRefreshSecret(presented).equals(currentHash)) return 0;
    // One step is always looked at (the caller has usually derived it already): it also keeps the
    // grace window for the previous token of a session signed in before secrets carried tags.
    // Further back, only a secret this server issued is worth walking from.
    const depthLimit = this.issued(sessionId, presented) ? Math.min(maxDepth, MAX_REUSE_DEPTH) : Math.min(maxDepth, 1);
    let secret = presented;
    for (let depth = 1; depth <= depthLimit; depth++) {
      secret = depth === 1 && firstChild ? firstChild : this.child(sessionId, secret);
      if (hashRefreshSecret(secret).equals(currentHash)) return depth;
    }
    return undefined;
  }
}
