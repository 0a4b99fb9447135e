import { status } from '@grpc/grpc-js';
import { createLocalJWKSet, jwtVerify } from 'jose';
import type {
  GetJwksResponse,
  LoginResponse,
  RefreshTokenResponse,
  ValidateTokenResponse,
} from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { type AuthServer, DAY, failure, login, ManualClock, MINUTE, register, startAuthServer, storeSnapshot } from '../support/auth.js';
import { query } from '../support/database.js';

const clock = new ManualClock();
let server: AuthServer;

beforeAll(async () => {
  server = await startAuthServer({ PUBLIC_URL: 'https://auth.example.com' }, clock);
});

afterAll(async () => {
  await server?.close();
});

const rpc = <Res>(method: string, request: object) => server.rpc<Res>(method, request);

describe('Register → Login → ValidateToken → RefreshToken → Logout', () => {
  it('walks the whole lifecycle over gRPC', async () => {
    const registered = await register(server.client, '  Walker@Example.COM ', 'a long and lovely passphrase', ' Walker ');
    expect(registered.user).toMatchObject({
      email: 'walker@example.com',
      displayName: 'Walker',
      emailVerified: false,
      disabled: false,
      roles: [],
      lastLoginAt: undefined,
    });

    const signedIn = await login(server.client, 'WALKER@example.com', 'a long and lovely passphrase');
    expect(signedIn.user?.id).toBe(registered.user!.id);
    expect(signedIn.user?.lastLoginAt).toEqual(new Date(clock.ms));
    expect(signedIn.tokens).toMatchObject({
      tokenType: 'Bearer',
      accessTokenExpiresAt: new Date(Math.floor(clock.ms / 1000) * 1000 + 15 * MINUTE),
      refreshTokenExpiresAt: new Date(clock.ms + 14 * DAY),
    });
    expect(Buffer.byteLength(signedIn.tokens!.accessToken)).toBeLessThan(1024);

    const validated = await rpc<ValidateTokenResponse>('validateToken', { accessToken: signedIn.tokens!.accessToken, checkRevocation: true });
    expect(validated.error).toBeUndefined();
    expect(validated.response?.claims).toMatchObject({
      userId: registered.user!.id,
      sessionId: signedIn.sessionId,
      email: 'walker@example.com',
      roles: [],
    });

    clock.advance(MINUTE);
    const refreshed = await rpc<RefreshTokenResponse>('refreshToken', { refreshToken: signedIn.tokens!.refreshToken });
    expect(refreshed.error).toBeUndefined();
    const next = refreshed.response!.tokens!;
    expect(next.refreshToken).not.toBe(signedIn.tokens!.refreshToken);
    expect(next.refreshToken.startsWith(`${signedIn.sessionId}.`)).toBe(true);
    expect(next.refreshTokenExpiresAt).toEqual(new Date(clock.ms + 14 * DAY));
    const [session] = await query<{ generation: number; last_used_at: Date; idle_expires_at: Date }>(
      server.db.url,
      'select generation, last_used_at, idle_expires_at from sessions where id = $1',
      [signedIn.sessionId],
    );
    expect(session).toEqual({ generation: 1, last_used_at: new Date(clock.ms), idle_expires_at: new Date(clock.ms + 14 * DAY) });

    // A retry with the previous token moments later (a lost response) gets the same new token.
    const retried = await rpc<RefreshTokenResponse>('refreshToken', { refreshToken: signedIn.tokens!.refreshToken });
    expect(retried.error).toBeUndefined();
    expect(retried.response!.tokens!.refreshToken).toBe(next.refreshToken);

    const loggedOut = await rpc('logout', { refreshToken: next.refreshToken });
    expect(loggedOut.error).toBeUndefined();
    const afterLogout = await rpc('refreshToken', { refreshToken: next.refreshToken });
    expect(failure(afterLogout.error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'SESSION_REVOKED' });
    const revokedCheck = await rpc('validateToken', { accessToken: next.accessToken, checkRevocation: true });
    expect(failure(revokedCheck.error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'SESSION_REVOKED' });
    // Without check_revocation the token stays valid until it expires: verification is local.
    const localCheck = await rpc<ValidateTokenResponse>('validateToken', { accessToken: next.accessToken, checkRevocation: false });
    expect(localCheck.error).toBeUndefined();

    // Logging out again with the same token succeeds and changes nothing.
    const before = await storeSnapshot(server.db.url);
    expect((await rpc('logout', { refreshToken: next.refreshToken })).error).toBeUndefined();
    expect(await storeSnapshot(server.db.url)).toEqual(before);

    const events = await query<{ event_type: string; details: unknown }>(
      server.db.url,
      'select event_type, details from audit_events where user_id = $1 order by id',
      [registered.user!.id],
    );
    expect(events.map((e) => e.event_type)).toEqual(['user.registered', 'login.succeeded', 'session.logged_out']);
    const [ended] = await query<{ revoked_reason: string }>(server.db.url, 'select revoked_reason from sessions where id = $1', [signedIn.sessionId]);
    expect(ended!.revoked_reason).toBe('LOGOUT');
  });

  it('never stores a password or a token in clear', async () => {
    const password = 'a secret nobody should see';
    await register(server.client, 'secretive@example.com', password);
    const signedIn = await login(server.client, 'secretive@example.com', password);
    const snapshot = Object.values(await storeSnapshot(server.db.url)).join('\n');
    const secret = signedIn.tokens!.refreshToken.split('.')[1]!;
    for (const text of [password, secret, Buffer.from(secret, 'base64url').toString('hex'), signedIn.tokens!.accessToken]) {
      expect(snapshot).not.toContain(text);
    }
  });
});

describe('tokens verify with a standard JWT library from the published keys alone', () => {
  let signedIn: LoginResponse;
  beforeAll(async () => {
    await register(server.client, 'jose@example.com');
    signedIn = await login(server.client, 'jose@example.com');
  });

  const verifyWith = (jwks: unknown) =>
    jwtVerify(signedIn.tokens!.accessToken, createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0]), {
      issuer: 'https://auth.example.com',
      audience: 'latchkey',
      algorithms: ['ES256'],
      typ: 'at+jwt',
      currentDate: new Date(clock.ms),
    });

  it('from GetJwks', async () => {
    const { response, error } = await rpc<GetJwksResponse>('getJwks', {});
    expect(error).toBeUndefined();
    const jwks = JSON.parse(response!.jwksJson) as { keys: Record<string, string>[] };
    expect(response!.keyIds).toEqual(jwks.keys.map((k) => k.kid));
    for (const key of jwks.keys) {
      expect(key).toEqual({ kty: 'EC', crv: 'P-256', x: expect.any(String), y: expect.any(String), kid: expect.any(String), alg: 'ES256', use: 'sig' });
      expect(Object.keys(key)).toEqual(['kty', 'crv', 'x', 'y', 'kid', 'alg', 'use']);
    }
    const { payload, protectedHeader } = await verifyWith(jwks);
    expect(protectedHeader).toEqual({ alg: 'ES256', typ: 'at+jwt', kid: response!.keyIds[0] });
    expect(payload).toEqual({
      iss: 'https://auth.example.com',
      aud: 'latchkey',
      sub: signedIn.user!.id,
      sid: signedIn.sessionId,
      iat: Math.floor(clock.ms / 1000),
      exp: Math.floor(clock.ms / 1000) + 900,
      jti: expect.stringMatching(/^[0-9a-f-]{36}$/),
      roles: [],
      email: 'jose@example.com',
    });
  });

  it('from GET /.well-known/jwks.json on the HTTP port', async () => {
    const response = await fetch(`http://127.0.0.1:${server.app.httpPort}/.well-known/jwks.json`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(response.headers.get('cache-control')).toBe('public, max-age=300');
    const body = await response.text();
    const { response: grpcJwks } = await rpc<GetJwksResponse>('getJwks', {});
    expect(body).toBe(grpcJwks!.jwksJson);
    await expect(verifyWith(JSON.parse(body))).resolves.toBeDefined();
    expect(body).not.toMatch(/"d"/);
  });
});

describe('sessions expire on their own clock', () => {
  it('refuses a refresh after the idle timeout with SESSION_EXPIRED, whether or not a sweep ran', async () => {
    await register(server.client, 'idle@example.com');
    const signedIn = await login(server.client, 'idle@example.com');
    clock.advance(14 * DAY + 1);
    const before = await storeSnapshot(server.db.url);
    const { error } = await rpc('refreshToken', { refreshToken: signedIn.tokens!.refreshToken });
    expect(failure(error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'SESSION_EXPIRED', message: 'the session has expired' });
    expect(await storeSnapshot(server.db.url)).toEqual(before);
  });

  it('rejects an expired access token with TOKEN_EXPIRED; a token never outlives its session', async () => {
    await register(server.client, 'late@example.com');
    const signedIn = await login(server.client, 'late@example.com');
    clock.advance(15 * MINUTE + 1_000);
    const expired = await rpc('validateToken', { accessToken: signedIn.tokens!.accessToken, checkRevocation: false });
    expect(failure(expired.error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'TOKEN_EXPIRED', message: 'the access token has expired' });

    // A session one minute from its absolute expiry: the refreshed token expires with it (not 15
    // minutes later), so the revocation view never has to know a session's expiry.
    const sessionEnds = clock.ms + 60_000;
    await query(server.db.url, `update sessions set absolute_expires_at = $1 where id = $2`, [new Date(sessionEnds), signedIn.sessionId]);
    const fresh = await rpc<RefreshTokenResponse>('refreshToken', { refreshToken: signedIn.tokens!.refreshToken });
    expect(fresh.error).toBeUndefined();
    expect(fresh.response!.tokens!.accessTokenExpiresAt!.getTime()).toBe(Math.floor(sessionEnds / 1000) * 1000);
    expect((await rpc('validateToken', { accessToken: fresh.response!.tokens!.accessToken, checkRevocation: true })).error).toBeUndefined();
    clock.advance(60_000);
    const check = await rpc('validateToken', { accessToken: fresh.response!.tokens!.accessToken, checkRevocation: true });
    expect(failure(check.error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'TOKEN_EXPIRED' });
  });

  it('never extends the idle expiry past the absolute lifetime, however often the session refreshes', async () => {
    await register(server.client, 'capped@example.com');
    const signedIn = await login(server.client, 'capped@example.com');
    const absolute = clock.ms + 30 * DAY;
    let token = signedIn.tokens!.refreshToken;
    const expiries: number[] = [];
    for (;;) {
      clock.advance(6 * DAY);
      const { response, error } = await rpc<RefreshTokenResponse>('refreshToken', { refreshToken: token });
      if (error) {
        expect(failure(error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'SESSION_EXPIRED' });
        break;
      }
      token = response!.tokens!.refreshToken;
      expiries.push(response!.tokens!.refreshTokenExpiresAt!.getTime());
    }
    // Refreshed on days 6, 12, 18 and 24; the one on day 30 is past the absolute lifetime.
    expect(expiries).toHaveLength(4);
    expect(expiries.slice(2)).toEqual([absolute, absolute]);
    expect(Math.max(...expiries)).toBe(absolute);
  });
});
