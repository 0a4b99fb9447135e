/**
 * ECDSA signature malleability: for a valid signature (r, s), (r, n − s) is valid too, so an ES256
 * token has two spellings that both verify, and anything keyed on a token's text (the verified-
 * token cache, a client's deduplication, a log search) would see two tokens. Only the low-S form
 * (s ≤ n/2, as Bitcoin's BIP 62 and libsecp256k1 require) is accepted, and our own signatures are
 * put in that form after signing: Node's ECDSA returns the high-S one about half the time.
 */

/** The order n of the P-256 group (FIPS 186-4, D.1.2.3). */
const P256_ORDER = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const HALF_ORDER = P256_ORDER >> 1n;
/** ES256's JOSE signature: r and s, 32 bytes each, big-endian (RFC 7518 §3.4). */
const COMPONENT_BYTES = 32;

function signatureOf(token: string): { head: string; signature: Buffer } | undefined {
  const dot = token.lastIndexOf('.');
  if (dot < 0) return undefined;
  const encoded = token.slice(dot + 1);
  const signature = Buffer.from(encoded, 'base64url');
  // One spelling of the bytes too: no padding, no stray characters, no non-zero trailing bits.
  if (signature.length !== 2 * COMPONENT_BYTES || signature.toString('base64url') !== encoded) return undefined;
  return { head: token.slice(0, dot), signature };
}

const sOf = (signature: Buffer) => BigInt(`0x${signature.subarray(COMPONENT_BYTES).toString('hex')}`);

/** Whether the token's ES256 signature is 64 canonical base64url bytes with 0 < s ≤ n/2. */
export function hasLowSSignature(token: string): boolean {
  const parts = signatureOf(token);
  if (!parts) return false;
  const s = sOf(parts.signature);
  return s > 0n && s <= HALF_ORDER;
}

/** The token with its ES256 signature in low-S form (s replaced by n − s when above n/2). */
export function withLowSSignature(token: string): string {
  const parts = signatureOf(token);
  if (!parts) throw new Error('not an ES256 JWS in compact form');
  const s = sOf(parts.signature);
  if (s <= HALF_ORDER) return token;
  const lowS = Buffer.from((P256_ORDER - s).toString(16).padStart(2 * COMPONENT_BYTES, '0'), 'hex');
  return `${parts.head}.${Buffer.concat([parts.signature.subarray(0, COMPONENT_BYTES), lowS]).toString('base64url')}`;
}
