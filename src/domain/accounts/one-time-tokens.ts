import { createHash, randomBytes } from 'node:crypto';

/**
 * Password-reset and email-verification tokens: 32 random bytes in base64url (43 characters).
 * Only a SHA-256 digest is stored, so a copy of the database cannot redeem anything.
 */
const FORMAT = /^[A-Za-z0-9_-]{43}$/;

export interface NewOneTimeToken {
  readonly token: string;
  readonly hash: Buffer;
}

export function newOneTimeToken(): NewOneTimeToken {
  const secret = randomBytes(32);
  return { token: secret.toString('base64url'), hash: hashSecret(secret) };
}

/** The stored digest of a presented token, or undefined when it is not exactly the format. */
export function oneTimeTokenHash(token: string): Buffer | undefined {
  if (!FORMAT.test(token)) return undefined;
  const secret = Buffer.from(token, 'base64url');
  // 43 characters carry 258 bits; only the canonical encoding of 32 bytes is accepted.
  if (secret.length !== 32 || secret.toString('base64url') !== token) return undefined;
  return hashSecret(secret);
}

function hashSecret(secret: Buffer): Buffer {
  return createHash('sha256').update(secret).digest();
}

/** The configured page with `token` set as a query parameter; any query it already has is kept. */
export function linkWithToken(page: string, token: string): string {
  const url = new URL(page);
  url.searchParams.set('token', token);
  return url.toString();
}
