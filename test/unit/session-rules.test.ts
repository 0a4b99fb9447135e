import { checkId, isStoredId } from '../../src/domain/sessions/ids.js';
import { decodeSessionPageToken, encodeSessionPageToken, type SessionPageToken } from '../../src/domain/sessions/page-token.js';
import { sessionStatusAt } from '../../src/domain/sessions/session-state.js';

const TOKEN: SessionPageToken = {
  userId: '0b3f5c1e-8d2a-4c4e-9f7a-2b1d3e4f5a6b',
  state: 'REVOKED',
  lastUsedMicros: '1924991999999999',
  sessionId: 'f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b',
};

const encodeBody = (body: unknown) => Buffer.from(JSON.stringify(body)).toString('base64url');
const BODY = { v: 1, u: TOKEN.userId, s: TOKEN.state, t: TOKEN.lastUsedMicros, i: TOKEN.sessionId };

describe('session page tokens', () => {
  it('round-trip, in URL-safe characters only', () => {
    const text = encodeSessionPageToken(TOKEN);
    expect(text).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decodeSessionPageToken(text)).toEqual(TOKEN);
    for (const state of ['UNSPECIFIED', 'ACTIVE', 'REVOKED', 'EXPIRED'] as const) {
      expect(decodeSessionPageToken(encodeSessionPageToken({ ...TOKEN, state }))).toEqual({ ...TOKEN, state });
    }
    expect(decodeSessionPageToken(encodeSessionPageToken({ ...TOKEN, lastUsedMicros: '0' }))?.lastUsedMicros).toBe('0');
  });

  it('decodes the body it is built from, so the rejections below are down to their one change', () => {
    expect(decodeSessionPageToken(encodeBody(BODY))).toEqual(TOKEN);
    expect(encodeBody(BODY).at(-1)).toBe('Q');
    expect(Buffer.from(`${encodeBody(BODY).slice(0, -1)}R`, 'base64url')).toEqual(Buffer.from(encodeBody(BODY), 'base64url'));
  });

  it.each([
    ['another version', { v: 2 }],
    ['a version as text', { v: '1' }],
    ['no version', { v: undefined }],
    ['a user id that is not a stored id', { u: 'someone' }],
    ['an upper-case user id', { u: TOKEN.userId.toUpperCase() }],
    ['a session id that is not a string', { i: 7 }],
    ['a state that is not a filter', { s: 'SESSION_STATE_ACTIVE' }],
    ['the UNRECOGNIZED marker as state', { s: 'UNRECOGNIZED' }],
    ['a time as a number', { t: 1924991999999999 }],
    ['a negative time', { t: '-1' }],
    ['a time with a leading zero', { t: '01' }],
    ['a time in exponent form', { t: '1e15' }],
    ['a time of 17 digits', { t: '10000000000000000' }],
    ['an empty time', { t: '' }],
    ['an extra key', { x: 1 }],
    ['a __proto__ key', JSON.parse('{"__proto__": {"v": 1}}') as object],
  ])('refuses a body with %s', (_name, change) => {
    expect(decodeSessionPageToken(encodeBody({ ...BODY, ...change }))).toBeUndefined();
  });

  it.each([
    ['empty', ''],
    ['not base64url', 'a+b/c'],
    ['padded', `${encodeBody(BODY)}=`],
    ['wrapped in spaces', ` ${encodeBody(BODY)} `],
    // The same bytes as a real token, spelled with a last character whose unused bits are set.
    ['a non-canonical spelling of a real token', `${encodeBody(BODY).slice(0, -1)}R`],
    ['not JSON', Buffer.from('{"v":1').toString('base64url')],
    ['a JSON string', encodeBody('token')],
    ['a JSON array', encodeBody([BODY])],
    ['JSON null', encodeBody(null)],
    ['longer than 512 characters', encodeBody({ ...BODY, pad: 'x'.repeat(400) })],
  ])('refuses text that is %s', (_name, text) => {
    expect(decodeSessionPageToken(text)).toBeUndefined();
  });
});

describe('session ids', () => {
  it('accept 1 to 64 characters, counted as code points', () => {
    expect(checkId('id', 'x', true)).toEqual({ value: 'x' });
    expect(checkId('id', '😀'.repeat(64), true)).toEqual({ value: '😀'.repeat(64) });
    expect(checkId('id', '😀'.repeat(65), true)).toEqual({ violations: [{ field: 'id', description: 'must be at most 64 characters' }] });
    expect(checkId('id', 'a'.repeat(65), false)).toEqual({ violations: [{ field: 'id', description: 'must be at most 64 characters' }] });
  });

  it('are required only where the request says so', () => {
    expect(checkId('session_id', '', true)).toEqual({ violations: [{ field: 'session_id', description: 'is required' }] });
    expect(checkId('except_session_id', '', false)).toEqual({ value: '' });
  });

  it('must have been valid UTF-8 (U+FFFD is what the decoder leaves of anything else)', () => {
    expect(checkId('user_id', 'ab\uFFFDcd', true)).toEqual({ violations: [{ field: 'user_id', description: 'must be valid UTF-8 text' }] });
  });

  it('reach SQL only in the form Latchkey assigns', () => {
    expect(isStoredId('0b3f5c1e-8d2a-4c4e-9f7a-2b1d3e4f5a6b')).toBe(true);
    for (const id of ['0B3F5C1E-8D2A-4C4E-9F7A-2B1D3E4F5A6B', '{0b3f5c1e-8d2a-4c4e-9f7a-2b1d3e4f5a6b}', '0b3f5c1e8d2a4c4e9f7a2b1d3e4f5a6b', '0b3f5c1e-8d2a-4c4e-9f7a-2b1d3e4f5a6b\n', 'x']) {
      expect(isStoredId(id)).toBe(false);
    }
  });
});

describe('sessionStatusAt', () => {
  const now = new Date('2030-01-01T00:00:00Z');
  const at = (offsetMs: number) => new Date(now.getTime() + offsetMs);
  const session = (change: Partial<{ revokedAt: Date | null; idleExpiresAt: Date; absoluteExpiresAt: Date }>) => ({
    revokedAt: null,
    idleExpiresAt: at(1),
    absoluteExpiresAt: at(2),
    ...change,
  });

  it('is ACTIVE while both expiries are in the future', () => {
    expect(sessionStatusAt(session({}), now)).toBe('ACTIVE');
  });

  it('is EXPIRED from the instant either expiry is reached', () => {
    expect(sessionStatusAt(session({ idleExpiresAt: now }), now)).toBe('EXPIRED');
    expect(sessionStatusAt(session({ absoluteExpiresAt: now }), now)).toBe('EXPIRED');
  });

  it('is REVOKED once revoked, even after it would have expired', () => {
    expect(sessionStatusAt(session({ revokedAt: at(-5) }), now)).toBe('REVOKED');
    expect(sessionStatusAt(session({ revokedAt: at(-5), idleExpiresAt: at(-1) }), now)).toBe('REVOKED');
  });
});
