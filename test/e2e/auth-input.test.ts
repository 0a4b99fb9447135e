import { status } from '@grpc/grpc-js';
import { createHmac, createPublicKey, generateKeyPairSync } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { withLowSSignature } from '../../src/domain/tokens/low-s.js';
import type { LoginResponse, RefreshTokenResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import {
  type AuthServer,
  expectRejected as expectRejectedCall,
  type ExpectedFailure,
  failure,
  login,
  ManualClock,
  MINUTE,
  register,
  serverSigningKey,
  startAuthServer,
  storeSnapshot,
} from '../support/auth.js';
import { healthStatus } from '../support/clients.js';
import { query } from '../support/database.js';
import { grpcFrame, openRawGrpcCall } from '../support/raw-grpc.js';

const clock = new ManualClock();
const ISSUER = 'https://auth.example.com';
let server: AuthServer;

beforeAll(async () => {
  // The revocation view off: these cases pin what the database path of check_revocation refuses
  // (test/e2e/revocation-view.test.ts covers the view).
  server = await startAuthServer({ PUBLIC_URL: ISSUER, REVOCATION_MAX_STALENESS: '0s' }, clock);
});

afterAll(async () => {
  await server?.close();
});

const rpc = <Res>(method: string, request: object) => server.rpc<Res>(method, request);

/** Calls `method` and asserts both the exact failure and that no table changed. */
const expectRejected = (method: string, request: object, expected: ExpectedFailure) =>
  expectRejectedCall(server.db.url, () => rpc(method, request), expected);

const INVALID = status.INVALID_ARGUMENT;

describe('Register refuses bad input with the exact reason and changes nothing', () => {
  const good = { email: 'someone@example.com', password: 'correct horse battery', displayName: '' };

  it.each([
    ['an empty email', { email: '' }, ['email']],
    ['a blank email', { email: '   ' }, ['email']],
    ['an email without @', { email: 'someone.example.com' }, ['email']],
    ['an email without a dotted domain', { email: 'someone@localhost' }, ['email']],
    ['an email with a space inside', { email: 'some one@example.com' }, ['email']],
    ['an email with a control character', { email: 'some\u0007one@example.com' }, ['email']],
    ['an email of 255 characters', { email: `${'a'.repeat(64)}@${'b'.repeat(186)}.com` }, ['email']],
    ['an 8 KB email', { email: `${'a'.repeat(8 * 1024)}@example.com` }, ['email']],
    ['an empty password', { password: '' }, ['password']],
    ['a password over 1024 bytes', { password: 'ü'.repeat(513) }, ['password']],
    ['a password with a lone surrogate', { password: 'abcd\uD800efghij' }, ['password']],
    ['a password with NUL bytes', { password: 'abcd\u0000efghij' }, ['password']],
    ['a display name with a control character', { displayName: 'Bob\u001b[31m' }, ['display_name']],
    ['a display name over 100 characters', { displayName: 'x'.repeat(101) }, ['display_name']],
    ['several bad fields at once', { email: 'nope', password: '' }, ['email', 'password']],
  ])('%s → INVALID_ARGUMENT', async (_name, change, fields) => {
    await expectRejected('register', { ...good, ...change }, { code: INVALID, reason: 'INVALID_ARGUMENT', fields });
  });

  it('a password of 7 characters → WEAK_PASSWORD on the password field', async () => {
    const seen = await expectRejected('register', { ...good, password: 'abcdefg' }, { code: INVALID, reason: 'WEAK_PASSWORD', fields: ['password'] });
    expect(seen.message).not.toContain('abcdefg');
  });

  it('a short password next to another bad field → INVALID_ARGUMENT listing both', async () => {
    await expectRejected('register', { ...good, email: '', password: 'short' }, { code: INVALID, reason: 'INVALID_ARGUMENT', fields: ['email', 'password'] });
  });

  it('a 1 MB password is refused by the transport with RESOURCE_EXHAUSTED before any handler runs', async () => {
    const before = await storeSnapshot(server.db.url);
    const { error } = await rpc('register', { ...good, password: 'p'.repeat(1024 * 1024) });
    expect(error?.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(error?.details).not.toContain('pppp');
    expect(await storeSnapshot(server.db.url)).toEqual(before);
    expect(await healthStatus(server.app.grpcPort)).toBe('SERVING');
  });

  it('a password whose bytes are not valid UTF-8 → INVALID_ARGUMENT on the password field', async () => {
    // RegisterRequest{email: "raw@example.com", password: <bytes ED A0 80 = an encoded surrogate, then "abcdefgh">}
    const email = Buffer.from('raw@example.com');
    const password = Buffer.concat([Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('abcdefgh')]);
    const message = Buffer.concat([Buffer.from([0x0a, email.length]), email, Buffer.from([0x12, password.length]), password]);
    const before = await storeSnapshot(server.db.url);
    const raw = await openRawGrpcCall(server.app.grpcPort, '/latchkey.auth.v1.AuthService/Register');
    await raw.end(grpcFrame(message));
    const outcome = await raw.outcome;
    raw.session.close();
    expect(outcome.status?.code).toBe(status.INVALID_ARGUMENT);
    expect(decodeURIComponent(outcome.status!.message)).toBe('invalid request: password');
    expect(await storeSnapshot(server.db.url)).toEqual(before);
  });

  it('a taken email, in any case or spacing → ALREADY_EXISTS / EMAIL_TAKEN', async () => {
    await register(server.client, 'taken@example.com');
    await expectRejected('register', { ...good, email: '  TAKEN@example.com' }, { code: status.ALREADY_EXISTS, reason: 'EMAIL_TAKEN' });
  });

  it('two registrations racing for one email: exactly one wins', async () => {
    const results = await Promise.all(Array.from({ length: 5 }, () => rpc('register', { ...good, email: 'race@example.com' })));
    expect(results.filter((r) => !r.error)).toHaveLength(1);
    expect(results.filter((r) => r.error).map((r) => failure(r.error).reason)).toEqual(Array(4).fill('EMAIL_TAKEN'));
    const rows = await query(server.db.url, `select id from users where email = 'race@example.com'`);
    expect(rows).toHaveLength(1);
  });
});

describe('password policy (NIST SP 800-63B)', () => {
  it.each([
    ['8 four-byte characters', '😀😁😂🤣😃😄😅😆'],
    ['64 Cyrillic characters', 'ж'.repeat(64)],
    ['64 CJK characters', '漢'.repeat(64)],
    ['a password with spaces and no digits or symbols', 'just some plain words'],
    ['256 four-byte characters (1024 bytes)', '😀'.repeat(256)],
  ])('accepts %s, and it logs in', async (_name, password) => {
    const email = `policy-${Buffer.from(_name).toString('hex').slice(0, 20)}@example.com`;
    await register(server.client, email, password);
    await expect(login(server.client, email, password)).resolves.toBeDefined();
  });

  it('never truncates: two 100-character passwords sharing their first 72 bytes do not unlock each other', async () => {
    const shared = 'x'.repeat(72);
    const first = `${shared}${'a'.repeat(28)}`;
    const second = `${shared}${'b'.repeat(28)}`;
    await register(server.client, 'long@example.com', first);
    const { error } = await rpc('login', { email: 'long@example.com', password: second });
    expect(failure(error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'INVALID_CREDENTIALS' });
    await expect(login(server.client, 'long@example.com', first)).resolves.toBeDefined();
  });

  it('compares passwords after NFKC normalisation, so composed and decomposed forms match', async () => {
    await register(server.client, 'accent@example.com', 'caf\u00e9 au lait');
    await expect(login(server.client, 'accent@example.com', 'cafe\u0301 au lait')).resolves.toBeDefined();
  });
});

describe('Login', () => {
  beforeAll(async () => {
    await register(server.client, 'known@example.com', 'the right password');
  });

  it('answers an unknown email and a wrong password identically, and records both', async () => {
    const [unknown, wrong] = [
      await expectFailedLogin({ email: 'nobody@example.com', password: 'the right password' }),
      await expectFailedLogin({ email: 'known@example.com', password: 'the wrong password' }),
    ];
    expect(unknown).toEqual(wrong);
    expect(unknown).toEqual({ code: status.UNAUTHENTICATED, reason: 'INVALID_CREDENTIALS', message: 'the email or password is incorrect', fields: [] });
    const events = await query<{ event_type: string; details: Record<string, unknown>; ip_address: string }>(
      server.db.url,
      `select event_type, details, ip_address from audit_events where event_type = 'login.failed' and details->>'email' in ('nobody@example.com', 'known@example.com') order by id`,
    );
    expect(events).toEqual([
      { event_type: 'login.failed', details: { reason: 'INVALID_CREDENTIALS', email: 'nobody@example.com' }, ip_address: '198.51.100.1' },
      { event_type: 'login.failed', details: { reason: 'INVALID_CREDENTIALS', email: 'known@example.com' }, ip_address: '198.51.100.1' },
    ]);
    expect(JSON.stringify(events)).not.toContain('the wrong password');
  });

  /** A first failed login adds exactly one audit event and one failure count (issue 18), and nothing else. */
  async function expectFailedLogin(request: { email: string; password: string }, counted = true) {
    const before = await storeSnapshot(server.db.url);
    const { error } = await rpc('login', { ...request, client: { ipAddress: '198.51.100.1', userAgent: 'probe', deviceName: '' } });
    const after = await storeSnapshot(server.db.url);
    expect({ ...after, audit_events: '', login_throttles: '' }).toEqual({ ...before, audit_events: '', login_throttles: '' });
    expect(after.audit_events!.split('\n').length).toBe(before.audit_events!.split('\n').filter(Boolean).length + 1);
    // The right password of a disabled account is not a failed password check: not counted.
    expect(after.login_throttles!.split('\n').filter(Boolean).length).toBe(before.login_throttles!.split('\n').filter(Boolean).length + (counted ? 1 : 0));
    return failure(error);
  }

  it('tells a disabled user ACCOUNT_DISABLED only after the right password, and starts no session', async () => {
    const user = await register(server.client, 'disabled@example.com', 'the right password');
    await query(server.db.url, 'update users set disabled_at = now() where id = $1', [user.user!.id]);
    expect(await expectFailedLogin({ email: 'disabled@example.com', password: 'not it at all' })).toMatchObject({ reason: 'INVALID_CREDENTIALS' });
    expect(await expectFailedLogin({ email: 'disabled@example.com', password: 'the right password' }, false)).toEqual({
      code: status.PERMISSION_DENIED,
      reason: 'ACCOUNT_DISABLED',
      message: 'this account is disabled',
      fields: [],
    });
    expect(await query(server.db.url, 'select id from sessions where user_id = $1', [user.user!.id])).toEqual([]);
  });

  it.each([
    ['an empty email', { email: '' }, ['email']],
    ['an 8 KB email', { email: `${'a'.repeat(8192)}@example.com` }, ['email']],
    ['an empty password', { password: '' }, ['password']],
    ['a password over 1024 bytes', { password: 'x'.repeat(1025) }, ['password']],
    ['a password with NUL bytes', { password: 'the right\u0000password' }, ['password']],
    ['an IP address that is not one', { client: { ipAddress: '999.1.1.1', userAgent: '', deviceName: '' } }, ['client.ip_address']],
    ['a device name over 100 characters', { client: { ipAddress: '', userAgent: '', deviceName: 'd'.repeat(101) } }, ['client.device_name']],
  ])('%s → INVALID_ARGUMENT, nothing written', async (_name, change, fields) => {
    await expectRejected('login', { email: 'known@example.com', password: 'the right password', ...change }, { code: INVALID, reason: 'INVALID_ARGUMENT', fields });
  });

  it('records the client on the session, truncating an over-long user agent rather than refusing it', async () => {
    const { response, error } = await rpc<LoginResponse>('login', {
      email: 'known@example.com',
      password: 'the right password',
      client: { ipAddress: '2001:db8::1', userAgent: `Mozilla/5.0 ${'z'.repeat(2000)}`, deviceName: '  Work laptop  ' },
    });
    expect(error).toBeUndefined();
    const [session] = await query<{ ip_address: string; user_agent: string; device_name: string }>(
      server.db.url,
      'select ip_address, user_agent, device_name from sessions where id = $1',
      [response!.sessionId],
    );
    expect(session).toEqual({ ip_address: '2001:db8::1', user_agent: `Mozilla/5.0 ${'z'.repeat(500)}`, device_name: 'Work laptop' });
  });
});

describe('ValidateToken refuses every token it did not issue, or not for this audience', () => {
  let signedIn: LoginResponse;
  let serverKey: Awaited<ReturnType<typeof serverSigningKey>>;
  const now = () => Math.floor(clock.ms / 1000);

  beforeAll(async () => {
    await register(server.client, 'tokens@example.com');
    signedIn = await login(server.client, 'tokens@example.com');
    serverKey = await serverSigningKey(server.db.url);
  });

  const claims = (overrides: Record<string, unknown> = {}) => ({
    iss: ISSUER,
    aud: 'latchkey',
    sub: signedIn.user!.id,
    sid: signedIn.sessionId,
    iat: now(),
    exp: now() + 600,
    jti: '00000000-0000-4000-8000-000000000000',
    roles: ['admin'],
    email: 'tokens@example.com',
    ...overrides,
  });
  // In the low-S form the server signs in (a forgery must fail for what the case tests, not for that).
  const forge = (payload: object, header: Record<string, unknown> = {}) =>
    withLowSSignature(jwt.sign(payload, serverKey.key, { algorithm: 'ES256', header: { alg: 'ES256', typ: 'at+jwt', kid: serverKey.kid, ...header } }));
  const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');

  const validate = (accessToken: string) => rpc('validateToken', { accessToken, checkRevocation: false });

  it('accepts a token it signed (the forging helper is sound)', async () => {
    const { error } = await validate(forge(claims()));
    expect(error).toBeUndefined();
  });

  it.each([
    ['an empty token', () => '', INVALID, 'INVALID_ARGUMENT', ['access_token']],
    ['a token over 4096 characters', () => 'a'.repeat(4097), INVALID, 'INVALID_ARGUMENT', ['access_token']],
  ])('%s → INVALID_ARGUMENT', async (_name, token, code, reason, fields) => {
    await expectRejected('validateToken', { accessToken: token(), checkRevocation: true }, { code, reason, fields });
  });

  const invalidTokens: [string, () => string][] = [
    ['garbage', () => 'not a token at all'],
    ['a truncated token', () => signedIn.tokens!.accessToken.slice(0, -10)],
    [
      'one byte of the payload changed',
      () => {
        const [h, p, s] = signedIn.tokens!.accessToken.split('.');
        const payload = Buffer.from(p!, 'base64url');
        payload[10] = payload[10]! ^ 1;
        return `${h}.${payload.toString('base64url')}.${s}`;
      },
    ],
    [
      'one byte of the signature changed',
      () => {
        const [h, p, s] = signedIn.tokens!.accessToken.split('.');
        const signature = Buffer.from(s!, 'base64url');
        signature[5] = signature[5]! ^ 1;
        return `${h}.${p}.${signature.toString('base64url')}`;
      },
    ],
    ['alg none', () => `${b64({ alg: 'none', typ: 'at+jwt', kid: serverKey.kid })}.${b64(claims())}.`],
    [
      'HS256 with the public key (PEM) as the secret',
      () => {
        const pem = createPublicKey(serverKey.key).export({ format: 'pem', type: 'spki' });
        const input = `${b64({ alg: 'HS256', typ: 'at+jwt', kid: serverKey.kid })}.${b64(claims())}`;
        return `${input}.${createHmac('sha256', pem).update(input).digest('base64url')}`;
      },
    ],
    [
      'HS256 with the public JWK as the secret',
      () => {
        const jwk = JSON.stringify(createPublicKey(serverKey.key).export({ format: 'jwk' }));
        const input = `${b64({ alg: 'HS256', typ: 'at+jwt', kid: serverKey.kid })}.${b64(claims())}`;
        return `${input}.${createHmac('sha256', jwk).update(input).digest('base64url')}`;
      },
    ],
    [
      'signed by an unknown key under an unknown kid',
      () => jwt.sign(claims(), generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, { algorithm: 'ES256', header: { alg: 'ES256', typ: 'at+jwt', kid: 'stranger' } }),
    ],
    [
      "signed by an unknown key under the server's kid",
      () => jwt.sign(claims(), generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, { algorithm: 'ES256', header: { alg: 'ES256', typ: 'at+jwt', kid: serverKey.kid } }),
    ],
    ['without a kid', () => jwt.sign(claims(), serverKey.key, { algorithm: 'ES256', header: { alg: 'ES256', typ: 'at+jwt' } })],
    ['not yet valid (nbf in the future)', () => forge(claims({ nbf: now() + 300 }))],
    ['from another issuer', () => forge(claims({ iss: 'https://evil.example.com' }))],
    ['for another audience', () => forge(claims({ aud: 'some-other-service' }))],
    ['typed as a plain JWT', () => forge(claims(), { typ: 'JWT' })],
    ['without a typ', () => forge(claims(), { typ: undefined })],
    [
      'without exp',
      () => {
        const { exp: _exp, ...rest } = claims();
        return forge(rest);
      },
    ],
    ['with a subject that is not a user id', () => forge(claims({ sub: 'root' }))],
    ['with roles that are not strings', () => forge(claims({ roles: [{ admin: true }] }))],
    ['expired and with a bad signature (the signature is checked first)', () => {
      const [h, p] = forge(claims({ exp: now() - 60 })).split('.');
      return `${h}.${p}.${'A'.repeat(86)}`;
    }],
    ['a refresh token', () => signedIn.tokens!.refreshToken],
  ];

  it.each(invalidTokens)('%s → UNAUTHENTICATED / TOKEN_INVALID, saying nothing of the token', async (_name, token) => {
    const text = token();
    const seen = await expectRejected('validateToken', { accessToken: text, checkRevocation: false }, { code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' });
    expect(seen.message).toBe('the access token is invalid');
  });

  it('an expired token with a valid signature → TOKEN_EXPIRED', async () => {
    await expectRejected('validateToken', { accessToken: forge(claims({ iat: now() - 1000, exp: now() - 1 })), checkRevocation: false }, {
      code: status.UNAUTHENTICATED,
      reason: 'TOKEN_EXPIRED',
      message: 'the access token has expired',
    });
  });

  it('expires on the clock: valid one second before exp, TOKEN_EXPIRED at exp', async () => {
    const own = await login(server.client, 'tokens@example.com');
    const exp = Math.floor(own.tokens!.accessTokenExpiresAt!.getTime() / 1000);
    clock.ms = (exp - 1) * 1000;
    expect((await validate(own.tokens!.accessToken)).error).toBeUndefined();
    clock.ms = exp * 1000;
    expect(failure((await validate(own.tokens!.accessToken)).error).reason).toBe('TOKEN_EXPIRED');
    clock.ms = Date.now();
  });

  it("check_revocation of a token naming another user's live session → SESSION_REVOKED", async () => {
    await expectRejected('validateToken', { accessToken: forge(claims({ sub: '33333333-3333-4333-8333-333333333333' })), checkRevocation: true }, {
      code: status.UNAUTHENTICATED,
      reason: 'SESSION_REVOKED',
    });
  });

  it('check_revocation of a token whose session no longer exists → SESSION_REVOKED', async () => {
    await expectRejected('validateToken', { accessToken: forge(claims({ sid: '11111111-1111-4111-8111-111111111111' })), checkRevocation: true }, {
      code: status.UNAUTHENTICATED,
      reason: 'SESSION_REVOKED',
    });
  });
});

describe('RefreshToken and Logout refuse tokens that are not the current refresh token of a live session', () => {
  let a: LoginResponse;
  let b: LoginResponse;

  beforeAll(async () => {
    await register(server.client, 'refresher@example.com');
    a = await login(server.client, 'refresher@example.com');
    b = await login(server.client, 'refresher@example.com');
  });

  const otherSessionsSecret = () => `${a.sessionId}.${b.tokens!.refreshToken.split('.')[1]}`;

  it.each([
    ['an empty token', () => '', INVALID, 'INVALID_ARGUMENT', ['refresh_token']],
    ['a token over 256 characters', () => 'r'.repeat(257), INVALID, 'INVALID_ARGUMENT', ['refresh_token']],
    ['garbage', () => 'garbage', status.UNAUTHENTICATED, 'TOKEN_INVALID', []],
    ['a session id with no secret', () => a.sessionId, status.UNAUTHENTICATED, 'TOKEN_INVALID', []],
    ['a secret that is not base64url', () => `${a.sessionId}.${'!'.repeat(43)}`, status.UNAUTHENTICATED, 'TOKEN_INVALID', []],
    ['a non-canonical secret encoding', () => `${a.sessionId}.${a.tokens!.refreshToken.split('.')[1]!.slice(0, 42)}B`, status.UNAUTHENTICATED, 'TOKEN_INVALID', []],
    ["another session's secret", otherSessionsSecret, status.UNAUTHENTICATED, 'TOKEN_INVALID', []],
    ['an unknown session', () => `22222222-2222-4222-8222-222222222222.${'A'.repeat(43)}`, status.UNAUTHENTICATED, 'TOKEN_INVALID', []],
    // Longer than any refresh token can be: a caller's mistake, named as such.
    ['an access token', () => a.tokens!.accessToken, INVALID, 'INVALID_ARGUMENT', ['refresh_token']],
    ['a short JWT-shaped token', () => 'eyJhbGciOiJFUzI1NiJ9.e30.sig', status.UNAUTHENTICATED, 'TOKEN_INVALID', []],
  ])('%s', async (_name, token, code, reason, fields) => {
    for (const method of ['refreshToken', 'logout']) {
      const seen = await expectRejected(method, { refreshToken: token() }, { code, reason, fields });
      if (code === status.UNAUTHENTICATED) expect(seen.message).toBe('the refresh token is invalid');
    }
  });

  it('a bad client on refresh → INVALID_ARGUMENT, and the token still works afterwards', async () => {
    await expectRejected('refreshToken', { refreshToken: a.tokens!.refreshToken, client: { ipAddress: 'nope', userAgent: '', deviceName: '' } }, {
      code: INVALID,
      reason: 'INVALID_ARGUMENT',
      fields: ['client.ip_address'],
    });
    const { error } = await rpc<RefreshTokenResponse>('refreshToken', { refreshToken: a.tokens!.refreshToken });
    expect(error).toBeUndefined();
  });

  it('after a failed attempt with its session id, the other session is untouched and its own token works', async () => {
    const { error } = await rpc('refreshToken', { refreshToken: b.tokens!.refreshToken });
    expect(error).toBeUndefined();
  });

  it('a token of a deleted user → TOKEN_INVALID', async () => {
    const user = await register(server.client, 'deleted@example.com');
    const signedIn = await login(server.client, 'deleted@example.com');
    await query(server.db.url, 'delete from users where id = $1', [user.user!.id]);
    await expectRejected('refreshToken', { refreshToken: signedIn.tokens!.refreshToken }, { code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' });
    await expectRejected('logout', { refreshToken: signedIn.tokens!.refreshToken }, { code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' });
    await expectRejected('validateToken', { accessToken: signedIn.tokens!.accessToken, checkRevocation: true }, {
      code: status.UNAUTHENTICATED,
      reason: 'SESSION_REVOKED',
    });
  });

  it('a disabled user cannot refresh: SESSION_REVOKED', async () => {
    const user = await register(server.client, 'disabled-later@example.com');
    const signedIn = await login(server.client, 'disabled-later@example.com');
    await query(server.db.url, 'update users set disabled_at = now() where id = $1', [user.user!.id]);
    await expectRejected('refreshToken', { refreshToken: signedIn.tokens!.refreshToken }, { code: status.UNAUTHENTICATED, reason: 'SESSION_REVOKED' });
  });

  it('new roles appear in the next refreshed access token', async () => {
    const user = await register(server.client, 'promoted@example.com');
    const signedIn = await login(server.client, 'promoted@example.com');
    await query(server.db.url, `update users set roles = '{admin,billing}' where id = $1`, [user.user!.id]);
    const { response } = await rpc<RefreshTokenResponse>('refreshToken', { refreshToken: signedIn.tokens!.refreshToken });
    const payload = jwt.decode(response!.tokens!.accessToken) as { roles: string[] };
    expect(payload.roles).toEqual(['admin', 'billing']);
  });

  it('an idle-expired session refuses refresh with SESSION_EXPIRED but logout still ends it', async () => {
    await register(server.client, 'sleepy@example.com');
    const signedIn = await login(server.client, 'sleepy@example.com');
    await query(server.db.url, 'update sessions set idle_expires_at = $1 where id = $2', [new Date(clock.ms - MINUTE), signedIn.sessionId]);
    await expectRejected('refreshToken', { refreshToken: signedIn.tokens!.refreshToken }, { code: status.UNAUTHENTICATED, reason: 'SESSION_EXPIRED' });
    expect((await rpc('logout', { refreshToken: signedIn.tokens!.refreshToken })).error).toBeUndefined();
    const [row] = await query<{ revoked_reason: string }>(server.db.url, 'select revoked_reason from sessions where id = $1', [signedIn.sessionId]);
    expect(row!.revoked_reason).toBe('LOGOUT');
  });
});
