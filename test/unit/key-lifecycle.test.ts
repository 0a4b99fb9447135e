import { KeyDecryptionError, KeyEncryptionKeys, sealPrivateKey } from '../../src/domain/keys/key-encryption.js';
import { signingKeyAt, signingKeyState, type SigningKeyRow } from '../../src/persistence/repositories/signing-keys.js';

const at = (minutes: number) => new Date(Date.UTC(2026, 11, 1) + minutes * 60_000);
const row = (kid: string, activates: number, retired: number | null = null, expires: number | null = null): SigningKeyRow => ({
  kid,
  algorithm: 'ES256',
  publicJwk: {},
  privateKeyEncrypted: Buffer.alloc(0),
  kekId: null,
  activatesAt: at(activates),
  retiredAt: retired === null ? null : at(retired),
  expiresAt: expires === null ? null : at(expires),
});

describe('the signing-key lifecycle', () => {
  const rows = [row('old', 0, 100, 116), row('current', 100), row('next', 200)];

  it('signs with the newest key activated and not retired', () => {
    expect(signingKeyAt(rows, at(50))?.kid).toBe('old');
    expect(signingKeyAt(rows, at(150))?.kid).toBe('current');
    expect(signingKeyAt(rows, at(200))?.kid).toBe('next');
    expect(signingKeyAt([row('gone', 0, 10, 10)], at(20))).toBeUndefined();
  });

  it('names each key\'s state at a time', () => {
    const states = (minutes: number) => rows.map((r) => signingKeyState(r, rows, at(minutes)));
    expect(states(110)).toEqual(['retired', 'active', 'next']);
    expect(states(116)).toEqual(['removed', 'active', 'next']);
    // Superseded but not yet marked retired by the job: already not signing.
    const unmarked = [row('a', 0), row('b', 10)];
    expect(unmarked.map((r) => signingKeyState(r, unmarked, at(20)))).toEqual(['retired', 'active']);
  });
});

describe('KeyEncryptionKeys', () => {
  const k1 = Buffer.alloc(32, 1);
  const k2 = Buffer.alloc(32, 2);
  const keks = new KeyEncryptionKeys([
    { id: 'k2', key: k2 },
    { id: 'k1', key: k1 },
  ]);

  it('seals with the first and opens with whichever key it was sealed under, whatever id is recorded', () => {
    const sealed = keks.seal('kid', Buffer.from('secret'));
    expect(sealed.kekId).toBe('k2');
    expect(keks.open('signing key kid', 'kid', sealed.sealed, 'k2').toString()).toBe('secret');
    const old = sealPrivateKey(k1, 'kid', Buffer.from('older'));
    expect(keks.open('signing key kid', 'kid', old, null).toString()).toBe('older');
    expect(keks.open('signing key kid', 'kid', old, 'renamed').toString()).toBe('older');
  });

  it('names the ids, never the keys, when none opens it', () => {
    const foreign = sealPrivateKey(Buffer.alloc(32, 3), 'kid', Buffer.from('x'));
    let error: Error | undefined;
    try {
      keks.open('signing key kid', 'kid', foreign, 'k0');
    } catch (caught) {
      error = caught as Error;
    }
    expect(error).toBeInstanceOf(KeyDecryptionError);
    expect(error!.message).toBe(
      "cannot decrypt signing key kid: it is sealed under key-encryption key 'k0', and none of the configured keys (ids: k2, k1) opens it; list that key in KEY_ENCRYPTION_KEYS (or KEY_ENCRYPTION_KEY) again, or the row is corrupt",
    );
  });
});
