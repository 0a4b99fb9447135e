import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { DomainError } from '../../src/domain/errors.js';
import { AccessTokens } from '../../src/domain/tokens/access-tokens.js';

const subject = { userId: '6f1c2a4e-8b1d-4c3e-9f7a-0d2b5e8c1a3f', sessionId: '0b9e4d7c-3a2f-4e1b-8c5d-6a7f8e9d0c1b', email: 'ada@example.com', roles: ['reader'] };
const options = { issuer: 'https://auth.example.com', audience: 'latchkey', ttlMs: 15 * 60_000 };

/** A key ring of one published key; `unpublish` takes it out, as retiring a key would. */
function ring() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const published = new Map<string, KeyObject>([['k1', publicKey]]);
  return { signing: { kid: 'k1', privateKey }, verificationKey: (kid: string) => published.get(kid), unpublish: () => published.clear() };
}

function reasonOf(attempt: () => unknown): string | undefined {
  try {
    attempt();
  } catch (error) {
    if (error instanceof DomainError) return error.reason;
    throw error;
  }
  return undefined;
}

describe('AccessTokens with the verified-token cache', () => {
  const start = Date.UTC(2026, 11, 1, 12, 0, 0);

  it.each([0, 100])('gives the same claims for the same token, and expires it by the clock (cache size %i)', (cacheSize) => {
    let now = start;
    const tokens = new AccessTokens(ring(), { ...options, cacheSize }, { now: () => now });
    const { token, claims } = tokens.issue(subject);
    expect(tokens.verify(token)).toEqual(claims);
    expect(tokens.verify(token)).toEqual(claims);
    now = start + 15 * 60_000 - 1_000;
    expect(tokens.verify(token)).toEqual(claims);
    now = start + 15 * 60_000;
    expect(reasonOf(() => tokens.verify(token))).toBe('TOKEN_EXPIRED');
    // Still expired on the next call (the entry is gone, the full check says so too).
    expect(reasonOf(() => tokens.verify(token))).toBe('TOKEN_EXPIRED');
  });

  it('hands out the remembered claims for a token seen before, and fresh ones when the cache is off', () => {
    const cached = new AccessTokens(ring(), { ...options, cacheSize: 100 }, { now: () => start });
    const { token } = cached.issue(subject);
    expect(cached.verify(token)).toBe(cached.verify(token));
    const uncached = new AccessTokens(ring(), { ...options, cacheSize: 0 }, { now: () => start });
    const other = uncached.issue(subject).token;
    expect(uncached.verify(other)).not.toBe(uncached.verify(other));
    expect(uncached.verify(other)).toEqual(uncached.verify(other));
  });

  it('verifies a token that differs from a remembered one in any character in full', () => {
    const tokens = new AccessTokens(ring(), { ...options, cacheSize: 100 }, { now: () => start });
    const { token } = tokens.issue(subject);
    tokens.verify(token);
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const forgedPayload = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), roles: ['admin'] })).toString('base64url');
    expect(reasonOf(() => tokens.verify(`${header}.${forgedPayload}.${signature}`))).toBe('TOKEN_INVALID');
    const flipped = signature.slice(0, -2) + (signature.at(-2) === 'A' ? 'B' : 'A') + signature.at(-1);
    expect(reasonOf(() => tokens.verify(`${header}.${payload}.${flipped}`))).toBe('TOKEN_INVALID');
    expect(reasonOf(() => tokens.verify(`${token} `))).toBe('TOKEN_INVALID');
  });

  it('stops accepting a remembered token once its key is no longer published', () => {
    const keys = ring();
    const tokens = new AccessTokens(keys, { ...options, cacheSize: 100 }, { now: () => start });
    const { token } = tokens.issue(subject);
    const remembered = tokens.verify(token);
    expect(tokens.verify(token)).toBe(remembered);
    keys.unpublish();
    expect(reasonOf(() => tokens.verify(token))).toBe('TOKEN_INVALID');
  });

  it('never remembers a token that failed a check, such as a token from another issuer', () => {
    const keys = ring();
    const tokens = new AccessTokens(keys, { ...options, cacheSize: 100 }, { now: () => start });
    const foreign = jwt.sign({ ...subject, sub: subject.userId, sid: subject.sessionId, jti: 'x', exp: Math.floor(start / 1000) + 60 }, keys.signing.privateKey, {
      algorithm: 'ES256',
      keyid: 'k1',
      header: { alg: 'ES256', typ: 'at+jwt' },
      issuer: 'https://elsewhere.example.com',
      audience: 'latchkey',
    });
    for (let i = 0; i < 3; i++) expect(reasonOf(() => tokens.verify(foreign))).toBe('TOKEN_INVALID');
  });

  it('keeps answering correctly beyond its size, and the claims it hands out cannot be changed by a caller', () => {
    const tokens = new AccessTokens(ring(), { ...options, cacheSize: 2 }, { now: () => start });
    const issued = Array.from({ length: 5 }, (_, i) => tokens.issue({ ...subject, email: `user${i}@example.com` }));
    for (let round = 0; round < 2; round++) {
      for (const { token, claims } of issued) expect(tokens.verify(token)).toEqual(claims);
    }
    const claims = tokens.verify(issued[4]!.token);
    expect(() => (claims.roles as string[]).push('admin')).toThrow(TypeError);
    expect(tokens.verify(issued[4]!.token).roles).toEqual(['reader']);
  });
});

describe('ES256 signature malleability (one valid form per token)', () => {
  const start = Date.UTC(2026, 11, 1, 12, 0, 0);
  const n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
  const sOf = (token: string) => BigInt(`0x${Buffer.from(token.split('.')[2]!, 'base64url').subarray(32).toString('hex')}`);
  /** The same token with s replaced by n − s: a signature jsonwebtoken (and any ECDSA verifier) accepts. */
  function twin(token: string): string {
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const bytes = Buffer.from(signature, 'base64url');
    const s = Buffer.from((n - sOf(token)).toString(16).padStart(64, '0'), 'hex');
    return `${header}.${payload}.${Buffer.concat([bytes.subarray(0, 32), s]).toString('base64url')}`;
  }

  it('issues every token with a low-S signature', () => {
    const tokens = new AccessTokens(ring(), { ...options, cacheSize: 0 }, { now: () => start });
    for (let i = 0; i < 200; i++) {
      const { token } = tokens.issue(subject);
      expect(sOf(token) <= n / 2n).toBe(true);
      expect(sOf(token) > 0n).toBe(true);
    }
  });

  it.each([0, 100])('refuses the high-S twin of a valid token with TOKEN_INVALID (cache size %i)', (cacheSize) => {
    const keys = ring();
    const tokens = new AccessTokens(keys, { ...options, cacheSize }, { now: () => start });
    const { token, claims } = tokens.issue(subject);
    const highS = twin(token);
    // The twin is a valid ECDSA signature over the same input: only the low-S rule refuses it.
    expect(() => jwt.verify(highS, keys.verificationKey('k1')!, { algorithms: ['ES256'], clockTimestamp: start / 1000 })).not.toThrow();
    expect(tokens.verify(token)).toEqual(claims);
    expect(reasonOf(() => tokens.verify(highS))).toBe('TOKEN_INVALID');
    expect(tokens.verify(token)).toEqual(claims);
  });

  it('refuses a signature spelled with base64 padding or trailing characters', () => {
    const tokens = new AccessTokens(ring(), { ...options, cacheSize: 0 }, { now: () => start });
    const { token } = tokens.issue(subject);
    expect(reasonOf(() => tokens.verify(`${token}=`))).toBe('TOKEN_INVALID');
    expect(reasonOf(() => tokens.verify(`${token}AA`))).toBe('TOKEN_INVALID');
  });
});
