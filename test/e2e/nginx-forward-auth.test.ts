/**
 * A real gateway in front: nginx (from Debian, `.ci/run` installs it) on loopback with
 * `auth_request` to replica A's forward-auth endpoint, as the README configures it, and a tiny
 * upstream that records the headers it receives. Every case asserts exactly what the upstream got,
 * or that it got nothing. A revocation made through replica B must reach A (its revocation view,
 * through the feed) and so nginx.
 *
 * Two replicas need PostgreSQL (the embedded database serves one connection at a time). On
 * PostgreSQL runs a missing nginx fails the test loudly instead of skipping it.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { LoginResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { login, register, serverSigningKey } from '../support/auth.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { forgedToken, forwardAuth, signedToken } from '../support/gateway.js';
import { EchoUpstream, Nginx, nginxBinary } from '../support/nginx.js';
import { type Replica, startReplica, withApiKey } from '../support/replicas.js';
import { waitFor } from '../support/wait.js';

const API_KEY = 'nginx-tests-service-key-0123456789abcdef';
/** Safety net for replica A's view to read B's revocation; never an assertion on how long it took. */
const CATCH_UP = 15_000;

const onPostgres = process.env.TEST_DATABASE_URL ? describe : describe.skip;

onPostgres('nginx auth_request in front of Latchkey', () => {
  let db: TestDatabase;
  let a: Replica;
  let b: Replica;
  let upstream: EchoUpstream;
  let nginx: Nginx;
  let people = 0;

  beforeAll(async () => {
    const binary = nginxBinary();
    if (!binary) throw new Error('nginx is not installed: these tests need it on PostgreSQL runs (apt-get install -y nginx-light; .ci/run does)');
    db = await createTestDatabase();
    a = await startReplica('A', db.url, { SERVICE_API_KEYS: API_KEY });
    b = await startReplica('B', db.url, { SERVICE_API_KEYS: API_KEY });
    upstream = new EchoUpstream();
    const upstreamPort = await upstream.start();
    nginx = new Nginx(binary);
    await nginx.start({ latchkey: a.app.httpPort, upstream: upstreamPort });
  });
  afterAll(async () => {
    await nginx?.stop();
    await upstream?.stop();
    await a?.close();
    await b?.close();
    await db?.drop();
  });
  beforeEach(() => {
    upstream.received.length = 0;
  });

  async function signedIn(roles: string[] = []): Promise<{ userId: string; email: string; login: LoginResponse }> {
    const email = `nginx-${++people}@example.com`;
    const userId = (await register(a.auth, email)).user!.id;
    if (roles.length > 0) expect((await a.rpc('setUserRoles', { userId, roles }, withApiKey(API_KEY))).error).toBeUndefined();
    return { userId, email, login: await login(a.auth, email) };
  }

  /** A request through nginx: the status and challenge the client got. */
  async function through(path: string, headers: Record<string, string>): Promise<{ status: number; challenge: string | null; body: string }> {
    const response = await fetch(`http://127.0.0.1:${nginx.port}${path}`, { headers });
    return { status: response.status, challenge: response.headers.get('www-authenticate'), body: await response.text() };
  }

  /** The identity headers (and authorization) one request delivered to the upstream. */
  const identityOf = (headers: IncomingHttpHeaders) =>
    Object.fromEntries(Object.entries(headers).filter(([name]) => name.startsWith('x-latchkey-') || name === 'authorization'));

  it('passes a request with a valid token, and the upstream receives exactly the identity Latchkey answered', async () => {
    const user = await signedIn();
    const token = user.login.tokens!.accessToken;
    expect(await through('/orders?page=2', { authorization: `Bearer ${token}` })).toEqual({ status: 200, challenge: null, body: 'upstream' });
    expect(upstream.received.map((r) => ({ url: r.url, identity: identityOf(r.headers) }))).toEqual([
      {
        url: '/orders?page=2',
        identity: {
          authorization: `Bearer ${token}`,
          'x-latchkey-user-id': user.userId,
          'x-latchkey-session-id': user.login.sessionId,
          'x-latchkey-email': user.email,
        },
      },
    ]);
  });

  it('replaces a client-sent x-latchkey-user-id (and drops a spoofed roles header) for a valid token', async () => {
    const user = await signedIn();
    const token = user.login.tokens!.accessToken;
    const spoofed = { authorization: `Bearer ${token}`, 'x-latchkey-user-id': '00000000-0000-4000-8000-000000000000', 'x-latchkey-roles': 'admin', 'x-latchkey-required-roles': 'ops' };
    expect((await through('/orders', spoofed)).status).toBe(200);
    expect(upstream.received.map((r) => identityOf(r.headers))).toEqual([
      {
        authorization: `Bearer ${token}`,
        'x-latchkey-user-id': user.userId,
        'x-latchkey-session-id': user.login.sessionId,
        'x-latchkey-email': user.email,
      },
    ]);
  });

  it('stops a spoofed x-latchkey-user-id without a token: 401, the upstream receives nothing', async () => {
    expect(await through('/orders', { 'x-latchkey-user-id': '00000000-0000-4000-8000-000000000000' })).toMatchObject({ status: 401, challenge: 'Bearer' });
    expect(upstream.received).toEqual([]);
  });

  it('stops a request without a token: 401 with the plain Bearer challenge', async () => {
    expect(await through('/orders', {})).toMatchObject({ status: 401, challenge: 'Bearer' });
    expect(upstream.received).toEqual([]);
  });

  it.each([
    ['malformed', () => 'Bearer not.a.token'],
    ['malformed (not a b64token)', () => 'Bearer two words'],
  ])('stops a %s token: 401 invalid_token, the upstream receives nothing', async (_name, authorization) => {
    expect(await through('/orders', { authorization: authorization() })).toMatchObject({ status: 401, challenge: 'Bearer error="invalid_token"' });
    expect(upstream.received).toEqual([]);
  });

  it('stops an expired and a forged token: 401 invalid_token, the upstream receives nothing', async () => {
    const user = await signedIn();
    const key = await serverSigningKey(db.url);
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: 'http://localhost:8080', aud: 'latchkey', sub: user.userId, sid: user.login.sessionId, jti: '00000000-0000-4000-8000-000000000002', roles: [], email: user.email };
    const expired = signedToken({ ...claims, iat: now - 1200, exp: now - 300 }, key);
    const forged = forgedToken({ ...claims, iat: now, exp: now + 600 }, key.kid);
    expect(await forwardAuth(a.app.httpPort, { authorization: `Bearer ${expired}` })).toMatchObject({ status: 401, body: { reason: 'TOKEN_EXPIRED' } });
    expect(await forwardAuth(a.app.httpPort, { authorization: `Bearer ${forged}` })).toMatchObject({ status: 401, body: { reason: 'TOKEN_INVALID' } });
    for (const token of [expired, forged]) {
      expect(await through('/orders', { authorization: `Bearer ${token}` })).toMatchObject({ status: 401, challenge: 'Bearer error="invalid_token"' });
    }
    expect(upstream.received).toEqual([]);
    // The helper is sound: the same claims, unexpired and signed with the server's key, pass.
    expect((await through('/orders', { authorization: `Bearer ${signedToken({ ...claims, iat: now, exp: now + 600 }, key)}` })).status).toBe(200);
  });

  it('stops a token whose session was revoked through the other replica, once A has read the revocation', async () => {
    const user = await signedIn();
    const token = user.login.tokens!.accessToken;
    expect((await through('/orders', { authorization: `Bearer ${token}` })).status).toBe(200);
    upstream.received.length = 0;

    expect((await b.rpc('logout', { refreshToken: user.login.tokens!.refreshToken })).error).toBeUndefined();
    // A learns it from the feed (its view), not from the call: wait for A, then go through nginx.
    await waitFor(() => forwardAuth(a.app.httpPort, { authorization: `Bearer ${token}` }), (r) => r.status === 401, CATCH_UP, 20);
    expect(await forwardAuth(a.app.httpPort, { authorization: `Bearer ${token}` })).toMatchObject({ status: 401, body: { reason: 'SESSION_REVOKED' } });
    expect(await through('/orders', { authorization: `Bearer ${token}` })).toMatchObject({ status: 401, challenge: 'Bearer error="invalid_token"' });
    expect(upstream.received).toEqual([]);
  });

  it('protects a location by role: 403 without admin (nothing reaches the upstream), 200 with it and the roles header', async () => {
    const plain = await signedIn();
    const admin = await signedIn(['admin']);
    expect(await through('/admin/users', { authorization: `Bearer ${plain.login.tokens!.accessToken}` })).toMatchObject({ status: 403 });
    expect(upstream.received).toEqual([]);

    expect((await through('/admin/users', { authorization: `Bearer ${admin.login.tokens!.accessToken}`, 'x-latchkey-required-roles': '' })).status).toBe(200);
    expect(upstream.received.map((r) => ({ url: r.url, identity: identityOf(r.headers) }))).toEqual([
      {
        url: '/admin/users',
        identity: {
          authorization: `Bearer ${admin.login.tokens!.accessToken}`,
          'x-latchkey-user-id': admin.userId,
          'x-latchkey-session-id': admin.login.sessionId,
          'x-latchkey-email': admin.email,
          'x-latchkey-roles': 'admin',
        },
      },
    ]);
  });

  it('nginx logged no error talking to Latchkey', () => {
    expect(nginx.errorLog()).not.toMatch(/\[(error|crit|alert|emerg)\]/);
  });
});
