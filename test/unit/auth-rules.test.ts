import { checkPassword } from '../../src/domain/passwords/policy.js';
import { checkClientInfo } from '../../src/domain/sessions/client-info.js';
import { formatRefreshToken, hashRefreshSecret, MAX_REUSE_DEPTH, parseRefreshToken, RefreshSecretDeriver } from '../../src/domain/tokens/refresh-tokens.js';
import { normaliseEmail } from '../../src/domain/users/email.js';

describe('checkPassword', () => {
  it('counts code points, not UTF-16 units or bytes', () => {
    expect(checkPassword('p', '😀'.repeat(7), true)).toMatchObject({ weakPassword: true, violations: [{ field: 'p', description: 'must be at least 8 characters' }] });
    expect(checkPassword('p', '😀'.repeat(8), true)).toEqual({ value: '😀'.repeat(8) });
  });

  it('applies the minimum length only to new passwords', () => {
    expect(checkPassword('p', 'short', false)).toEqual({ value: 'short' });
  });

  it('normalises to NFKC and never trims', () => {
    expect(checkPassword('p', '  ﬁne password  ', true)).toEqual({ value: '  fine password  ' });
  });

  it.each([
    ['', 'is required'],
    ['x'.repeat(1025), 'must be at most 1024 bytes of UTF-8'],
    ['abc\uFFFDdefgh', 'must be valid UTF-8 text'],
    ['abc\uDC00defgh', 'must be valid UTF-8 text'],
    ['abc\u0000defgh', 'must not contain NUL characters'],
  ])('refuses %p', (password, description) => {
    expect(checkPassword('password', password, true)).toEqual({ violations: [{ field: 'password', description }] });
  });
});

describe('normaliseEmail', () => {
  it('trims and lower-cases', () => {
    expect(normaliseEmail('email', '  Mixed.Case+tag@Example.ORG ')).toEqual({ value: 'mixed.case+tag@example.org' });
  });

  it.each(['', 'plain', '@example.com', 'a@', 'a@b', 'a@.com', 'a@b..com', 'a b@example.com', 'a@b@example.com', `${'l'.repeat(65)}@example.com`])(
    'refuses %p',
    (email) => {
      expect(normaliseEmail('email', email)).toHaveProperty(['violations', 0, 'field'], 'email');
    },
  );

  it.each(['some\uFFFDone@example.com', 'some\uD800one@example.com'])('refuses %p as not UTF-8', (email) => {
    expect(normaliseEmail('email', email)).toEqual({ violations: [{ field: 'email', description: 'must be valid UTF-8 text' }] });
  });

  it('accepts internationalised addresses', () => {
    expect(normaliseEmail('email', 'Ünïcode@bücher.de')).toEqual({ value: 'ünïcode@bücher.de' });
  });
});

describe('checkClientInfo', () => {
  it('accepts IPv4, IPv6 and empty addresses', () => {
    for (const ipAddress of ['', '192.0.2.1', '2001:db8::1', '::ffff:192.0.2.1']) {
      expect(checkClientInfo('client', { ipAddress, userAgent: '', deviceName: '' })).toHaveProperty('value.ipAddress', ipAddress);
    }
  });

  it('truncates the user agent on a code point boundary and blanks control characters', () => {
    const result = checkClientInfo('client', { ipAddress: '', userAgent: `${'a'.repeat(511)}😀tail\n`, deviceName: '' });
    expect(result).toHaveProperty('value.userAgent', `${'a'.repeat(511)}😀`);
    expect(checkClientInfo('client', { ipAddress: '', userAgent: 'a\nb', deviceName: '' })).toHaveProperty('value.userAgent', 'a b');
  });

  it('refuses a device name or address that was not valid UTF-8, but keeps such a user agent with U+FFFD in place', () => {
    expect(checkClientInfo('client', { ipAddress: '10.0.0.1\uFFFD', userAgent: '', deviceName: 'Work \uFFFD laptop' })).toEqual({
      violations: [
        { field: 'client.ip_address', description: 'must be valid UTF-8 text' },
        { field: 'client.device_name', description: 'must be valid UTF-8 text' },
      ],
    });
    expect(checkClientInfo('client', { ipAddress: '', userAgent: 'Mozilla/5.0 (\uFFFD) \uD800x', deviceName: '' })).toHaveProperty(
      'value.userAgent',
      'Mozilla/5.0 (\uFFFD) \uFFFDx',
    );
  });

  it('names each bad field by its proto path', () => {
    expect(checkClientInfo('client', { ipAddress: '10.0.0.256', userAgent: '', deviceName: 'bad\u0000name' })).toEqual({
      violations: [
        { field: 'client.ip_address', description: 'must be an IPv4 or IPv6 address' },
        { field: 'client.device_name', description: 'must not contain control characters' },
      ],
    });
  });
});

describe('refresh tokens', () => {
  const sessionId = '0b7e7a4c-3f6d-4d6e-9c1a-2b3c4d5e6f70';
  const secret = Buffer.alloc(32, 0xab);

  it('round-trip through their text form', () => {
    const token = formatRefreshToken(sessionId, secret);
    expect(token).toMatch(/^0b7e7a4c-3f6d-4d6e-9c1a-2b3c4d5e6f70\.[A-Za-z0-9_-]{43}$/);
    expect(parseRefreshToken(token)).toEqual({ sessionId, secret });
  });

  it.each(['', sessionId, `${sessionId}.`, `${sessionId.toUpperCase()}.${secret.toString('base64url')}`, `${sessionId}.${secret.toString('base64url')}=`, `x.${secret.toString('base64url')}`])(
    'refuse %p',
    (token) => {
      expect(parseRefreshToken(token)).toBeUndefined();
    },
  );

  it('derive the same child from the same parent, and different children from different parents or keys', () => {
    const deriver = new RefreshSecretDeriver(Buffer.alloc(32, 1));
    const child = deriver.child(sessionId, secret);
    expect(child).toHaveLength(32);
    expect(deriver.child(sessionId, secret)).toEqual(child);
    expect(deriver.child(sessionId, Buffer.alloc(32, 0xac))).not.toEqual(child);
    expect(deriver.child('1b7e7a4c-3f6d-4d6e-9c1a-2b3c4d5e6f70', secret)).not.toEqual(child);
    expect(new RefreshSecretDeriver(Buffer.alloc(32, 2)).child(sessionId, secret)).not.toEqual(child);
  });

  it('recognise every ancestor of the current secret by walking the chain, and nothing else', () => {
    const deriver = new RefreshSecretDeriver(Buffer.alloc(32, 1));
    const chain: Buffer[] = [deriver.fresh(sessionId)];
    for (let i = 0; i < 6; i++) chain.push(deriver.child(sessionId, chain.at(-1)!));
    const current = hashRefreshSecret(chain[6]!);
    expect(chain.map((s) => deriver.generationsBehind(sessionId, s, current, 6))).toEqual([6, 5, 4, 3, 2, 1, 0]);
    // The walk stops at the session's generation count: an ancestor further back cannot exist.
    expect(deriver.generationsBehind(sessionId, chain[0]!, current, 5)).toBeUndefined();
    // A made-up secret, another session's chain, another key's chain.
    expect(deriver.generationsBehind(sessionId, Buffer.alloc(32, 3), current, 6)).toBeUndefined();
    expect(deriver.generationsBehind('1b7e7a4c-3f6d-4d6e-9c1a-2b3c4d5e6f70', chain[0]!, current, 6)).toBeUndefined();
    expect(new RefreshSecretDeriver(Buffer.alloc(32, 2)).generationsBehind(sessionId, chain[0]!, current, 6)).toBeUndefined();
    // A precomputed first child gives the same answer.
    expect(deriver.generationsBehind(sessionId, chain[4]!, current, 6, chain[5])).toBe(2);
  });

  it('bound the walk at MAX_REUSE_DEPTH generations', () => {
    const deriver = new RefreshSecretDeriver(Buffer.alloc(32, 1));
    const secret = deriver.fresh(sessionId);
    let tip: Buffer = secret;
    for (let i = 0; i < MAX_REUSE_DEPTH; i++) tip = deriver.child(sessionId, tip);
    const current = hashRefreshSecret(tip);
    expect(deriver.generationsBehind(sessionId, secret, current, MAX_REUSE_DEPTH + 10)).toBe(MAX_REUSE_DEPTH);
    const further = deriver.child(sessionId, tip);
    expect(deriver.generationsBehind(sessionId, secret, hashRefreshSecret(further), MAX_REUSE_DEPTH + 10)).toBeUndefined();
  });

  it('walk only from a secret this server issued: a made-up one costs one step however deep the session is', () => {
    const deriver = new RefreshSecretDeriver(Buffer.alloc(32, 1));
    const issued = deriver.fresh(sessionId);
    expect(deriver.issued(sessionId, issued)).toBe(true);
    expect(deriver.issued(sessionId, deriver.child(sessionId, issued))).toBe(true);
    expect(deriver.issued('1b7e7a4c-3f6d-4d6e-9c1a-2b3c4d5e6f70', issued)).toBe(false);
    const forged = Buffer.from(issued);
    forged[0]! ^= 1;
    expect(deriver.issued(sessionId, forged)).toBe(false);
    // A chain grown from an untagged secret (as before tags existed) is recognised one step back only.
    const chain: Buffer[] = [Buffer.alloc(32, 0x5a)];
    for (let i = 0; i < 3; i++) chain.push(deriver.child(sessionId, chain.at(-1)!));
    const current = hashRefreshSecret(chain[3]!);
    expect(deriver.generationsBehind(sessionId, chain[0]!, current, 3)).toBeUndefined();
    expect(deriver.generationsBehind(sessionId, chain[1]!, current, 3)).toBe(2);
    const legacyParent = Buffer.alloc(32, 0x6b);
    expect(deriver.generationsBehind(sessionId, legacyParent, hashRefreshSecret(deriver.child(sessionId, legacyParent)), 5)).toBe(1);
    // The walk a made-up secret triggers is the single step, counted by child() calls.
    let steps = 0;
    const counting = new (class extends RefreshSecretDeriver {
      override child(id: string, parent: Buffer): Buffer {
        steps += 1;
        return super.child(id, parent);
      }
    })(Buffer.alloc(32, 1));
    expect(counting.generationsBehind(sessionId, Buffer.alloc(32, 9), current, MAX_REUSE_DEPTH)).toBeUndefined();
    expect(steps).toBe(1);
  });

  it('are stored as SHA-256 digests', () => {
    expect(hashRefreshSecret(secret).toString('hex')).toHaveLength(64);
  });
});
