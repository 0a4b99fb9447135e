/**
 * Gateways delegating authentication to Latchkey: `envoy.service.auth.v3.Authorization/Check`
 * (Envoy/Istio ext_authz, gRPC mode) with CheckRequests shaped as Envoy sends them, the HTTP
 * forward-auth endpoint called directly (test/e2e/nginx-forward-auth.test.ts puts a real nginx in
 * front), and the OpenID discovery document. Runs on PostgreSQL and on the embedded database.
 */
import { Client as GrpcClient, credentials, Metadata, status, type Client } from '@grpc/grpc-js';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { startApp, type RunningApp } from '../../src/app.js';
import { CheckResponse, type AuthorizationClient } from '../../src/generated/envoy/service/auth/v3/external_auth.js';
import type { LoginResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { HeaderValueOption_HeaderAppendAction } from '../../src/generated/envoy/config/core/v3/base.js';
import { createLogger } from '../../src/observability/logger.js';
import { type AuthServer, login, ManualClock, MINUTE, register, serverSigningKey, startAuthServer } from '../support/auth.js';
import { closedPort } from '../support/children.js';
import { call, healthStatus } from '../support/clients.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { authorizationClient, check, decision, envoyCheckRequest, forgedToken, forwardAuth, signedToken } from '../support/gateway.js';
import { TcpProxy } from '../support/proxy.js';
import { waitFor } from '../support/wait.js';

const API_KEY = 'gateway-tests-service-key-0123456789abcdef';
const OVERWRITE = HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD;
const CHECK = '/envoy.service.auth.v3.Authorization/Check';

const bearer = (signedIn: LoginResponse) => `Bearer ${signedIn.tokens!.accessToken}`;
const serviceKey = () => {
  const metadata = new Metadata();
  metadata.set('x-api-key', API_KEY);
  return metadata;
};

const missingToken = (code = status.UNAUTHENTICATED) => ({
  code,
  http: 401,
  headers: [
    ['www-authenticate', 'Bearer'],
    ['content-type', 'application/json'],
  ],
  body: { error: 'invalid_request', reason: 'TOKEN_MISSING' },
});
const invalidToken = (reason: string) => ({
  code: status.UNAUTHENTICATED,
  http: 401,
  headers: [
    ['www-authenticate', 'Bearer error="invalid_token"'],
    ['content-type', 'application/json'],
  ],
  body: { error: 'invalid_token', reason },
});
const roleRequired = {
  code: status.PERMISSION_DENIED,
  http: 403,
  headers: [
    ['www-authenticate', 'Bearer error="insufficient_scope"'],
    ['content-type', 'application/json'],
  ],
  body: { error: 'insufficient_scope', reason: 'ROLE_REQUIRED' },
};

async function handled(httpPort: number, code: string): Promise<number> {
  const body = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  // go-grpc-prometheus shape: Go's code names (OK, Unauthenticated).
  const goCode = code === 'OK' ? 'OK' : code.charAt(0) + code.slice(1).toLowerCase();
  const line = new RegExp(
    `^grpc_server_handled_total\\{grpc_type="unary",grpc_service="envoy\\.service\\.auth\\.v3\\.Authorization",grpc_method="Check",grpc_code="${goCode}"\\} (\\S+)$`,
    'm',
  ).exec(body);
  return line ? Number(line[1]) : 0;
}

describe('Check over gRPC, default settings', () => {
  const clock = new ManualClock();
  let server: AuthServer;
  let client: AuthorizationClient;
  let people = 0;

  beforeAll(async () => {
    server = await startAuthServer({ SERVICE_API_KEYS: API_KEY }, clock);
    client = authorizationClient(server.app.grpcPort);
  });
  afterAll(async () => {
    client?.close();
    await server?.close();
  });

  async function signedIn(roles: string[] = []): Promise<{ userId: string; email: string; login: LoginResponse }> {
    const email = `gateway-${++people}@example.com`;
    const userId = (await register(server.client, email)).user!.id;
    if (roles.length > 0) {
      const { error } = await call(server.client as unknown as Client, 'setUserRoles', { userId, roles }, { metadata: serviceKey() });
      expect(error).toBeUndefined();
    }
    return { userId, email, login: await login(server.client, email) };
  }

  it('allows a valid token: identity headers set (overwriting), client-sent prefix headers removed, authorization kept', async () => {
    const user = await signedIn();
    const { response, error } = await check(
      client,
      envoyCheckRequest({ authorization: bearer(user.login), 'x-latchkey-user-id': 'someone-else', 'x-latchkey-roles': 'admin', 'x-latchkey-debug': '1' }),
    );
    expect(error).toBeUndefined();
    expect(decision(response)).toEqual({
      code: status.OK,
      set: [
        ['x-latchkey-user-id', user.userId, OVERWRITE],
        ['x-latchkey-session-id', user.login.sessionId, OVERWRITE],
        ['x-latchkey-email', user.email, OVERWRITE],
      ],
      // The user has no roles, so no roles header is set: the spoofed one is removed instead.
      remove: ['x-latchkey-roles', 'x-latchkey-debug'],
    });
    expect(response!.deniedResponse).toBeUndefined();
  });

  it('allows the same token again with nothing to remove (the remembered answer)', async () => {
    const user = await signedIn(['admin', 'billing']);
    const expected = {
      code: status.OK,
      set: [
        ['x-latchkey-user-id', user.userId, OVERWRITE],
        ['x-latchkey-session-id', user.login.sessionId, OVERWRITE],
        ['x-latchkey-email', user.email, OVERWRITE],
        ['x-latchkey-roles', 'admin,billing', OVERWRITE],
      ],
      remove: [],
    };
    for (let i = 0; i < 3; i++) expect(decision((await check(client, envoyCheckRequest({ authorization: bearer(user.login) }))).response)).toEqual(expected);
  });

  it('asks for roles through the context extension latchkey-required-roles: every listed role is needed', async () => {
    const user = await signedIn(['admin', 'billing']);
    const withRoles = (roles: string) => check(client, envoyCheckRequest({ authorization: bearer(user.login) }, { 'latchkey-required-roles': roles }));
    expect(decision((await withRoles('admin')).response)).toMatchObject({ code: status.OK });
    expect(decision((await withRoles(' billing , admin ')).response)).toMatchObject({ code: status.OK });
    expect(decision((await withRoles('admin,ops')).response)).toEqual(roleRequired);
    // A client header of the same name is not a context extension: it asks for nothing.
    expect(decision((await check(client, envoyCheckRequest({ authorization: bearer(user.login), 'latchkey-required-roles': 'ops' }))).response)).toMatchObject({ code: status.OK });
  });

  it.each([
    ['no authorization header', {}],
    ['another scheme', { authorization: 'Basic dXNlcjpwYXNz' }],
    ['an empty authorization header', { authorization: '' }],
  ])('denies %s with 401 and the plain Bearer challenge', async (_name, headers) => {
    const { response, error } = await check(client, envoyCheckRequest(headers));
    expect(error).toBeUndefined();
    expect(decision(response)).toEqual(missingToken());
    expect(response!.okResponse).toBeUndefined();
  });

  it('denies a check without the http attribute (network filter, or no request at all) as a request without a token', async () => {
    const noHttp = envoyCheckRequest({});
    noHttp.attributes!.request!.http = undefined;
    expect(decision((await check(client, noHttp)).response)).toEqual(missingToken());
    expect(decision((await check(client, { attributes: undefined })).response)).toEqual(missingToken());
  });

  it('denies malformed and forged tokens with 401 invalid_token, TOKEN_INVALID', async () => {
    const user = await signedIn();
    const key = await serverSigningKey(server.db.url);
    const now = Math.floor(clock.ms / 1000);
    const claims = { iss: 'http://localhost:8080', aud: 'latchkey', sub: user.userId, sid: user.login.sessionId, iat: now, exp: now + 600, jti: '00000000-0000-4000-8000-000000000001', roles: [], email: user.email };
    for (const authorization of ['Bearer not a token', 'Bearer abc.def.ghi', 'Bearer ', `Bearer ${'a'.repeat(5000)}`, `Bearer ${forgedToken(claims, key.kid)}`]) {
      expect({ authorization: authorization.slice(0, 20), decision: decision((await check(client, envoyCheckRequest({ authorization }))).response) }).toEqual({
        authorization: authorization.slice(0, 20),
        decision: invalidToken('TOKEN_INVALID'),
      });
    }
    // The forging helper is sound: the same claims signed with the server's key are allowed.
    expect(decision((await check(client, envoyCheckRequest({ authorization: `Bearer ${signedToken(claims, key)}` }))).response)).toMatchObject({ code: status.OK });
  });

  it('denies a revoked session (SESSION_REVOKED) and a token carrying a role the user lost (TOKEN_STALE)', async () => {
    const revoked = await signedIn();
    expect((await server.rpc('logout', { refreshToken: revoked.login.tokens!.refreshToken })).error).toBeUndefined();
    expect(decision((await check(client, envoyCheckRequest({ authorization: bearer(revoked.login) }))).response)).toEqual(invalidToken('SESSION_REVOKED'));

    const demoted = await signedIn(['admin', 'billing']);
    const { error } = await call(server.client as unknown as Client, 'setUserRoles', { userId: demoted.userId, roles: ['billing'] }, { metadata: serviceKey() });
    expect(error).toBeUndefined();
    expect(decision((await check(client, envoyCheckRequest({ authorization: bearer(demoted.login) }))).response)).toEqual(invalidToken('TOKEN_STALE'));
  });

  it('answers bytes that are not a CheckRequest with a 400 deny (INVALID_ARGUMENT), not a gRPC error', async () => {
    const raw = new GrpcClient(`127.0.0.1:${server.app.grpcPort}`, credentials.createInsecure());
    try {
      const response = await new Promise<CheckResponse>((resolve, reject) =>
        raw.makeUnaryRequest(CHECK, (bytes: Buffer) => bytes, (bytes: Buffer) => CheckResponse.decode(bytes), Buffer.from([0x0a, 0x7f, 0x00]), (error, value) => (error ? reject(error) : resolve(value!))),
      );
      expect(decision(response)).toEqual({
        code: status.INVALID_ARGUMENT,
        http: 400,
        headers: [['content-type', 'application/json']],
        body: { error: 'invalid_request', reason: 'INVALID_ARGUMENT' },
      });
    } finally {
      raw.close();
    }
  });

  it('counts each decision under its status code in the RPC metrics', async () => {
    const before = { ok: await handled(server.app.httpPort, 'OK'), unauthenticated: await handled(server.app.httpPort, 'UNAUTHENTICATED') };
    const user = await signedIn();
    await check(client, envoyCheckRequest({ authorization: bearer(user.login) }));
    await check(client, envoyCheckRequest({}));
    await check(client, envoyCheckRequest({ authorization: 'Bearer nope' }));
    expect({ ok: await handled(server.app.httpPort, 'OK'), unauthenticated: await handled(server.app.httpPort, 'UNAUTHENTICATED') }).toEqual({
      ok: before.ok + 1,
      unauthenticated: before.unauthenticated + 2,
    });
  });

  it('reports the Authorization service in gRPC health', async () => {
    expect(await healthStatus(server.app.grpcPort, 'envoy.service.auth.v3.Authorization')).toBe('SERVING');
  });

  // Last: moves the shared clock past every token's expiry.
  it('denies an expired token (TOKEN_EXPIRED)', async () => {
    const user = await signedIn();
    clock.advance(16 * MINUTE);
    expect(decision((await check(client, envoyCheckRequest({ authorization: bearer(user.login) }))).response)).toEqual(invalidToken('TOKEN_EXPIRED'));
  });
});

describe('forward-auth over HTTP, called directly', () => {
  const clock = new ManualClock();
  let server: AuthServer;
  let people = 0;

  beforeAll(async () => {
    server = await startAuthServer({ SERVICE_API_KEYS: API_KEY }, clock);
  });
  afterAll(async () => {
    await server?.close();
  });

  async function signedIn(roles: string[] = []) {
    const email = `forward-${++people}@example.com`;
    const userId = (await register(server.client, email)).user!.id;
    if (roles.length > 0) {
      expect((await call(server.client as unknown as Client, 'setUserRoles', { userId, roles }, { metadata: serviceKey() })).error).toBeUndefined();
    }
    return { userId, email, login: await login(server.client, email) };
  }

  it('answers 200 with the identity headers for a valid token, on any method and under any sub-path', async () => {
    const user = await signedIn(['admin']);
    const identity = {
      'x-latchkey-user-id': user.userId,
      'x-latchkey-session-id': user.login.sessionId,
      'x-latchkey-email': user.email,
      'x-latchkey-roles': 'admin',
    };
    expect(await forwardAuth(server.app.httpPort, { authorization: bearer(user.login) })).toEqual({ status: 200, headers: identity, body: undefined });
    // Envoy's HTTP mode keeps the method and appends the original path (path_prefix).
    expect(await forwardAuth(server.app.httpPort, { authorization: bearer(user.login) }, '/forward-auth/orders/17?expand=1', 'POST')).toEqual({ status: 200, headers: identity, body: undefined });
  });

  it('answers 401 with the challenge and the reason, and never reads the token from the query string', async () => {
    const user = await signedIn();
    const token = user.login.tokens!.accessToken;
    const missing = { status: 401, headers: { 'www-authenticate': 'Bearer' }, body: { error: 'invalid_request', reason: 'TOKEN_MISSING' } };
    expect(await forwardAuth(server.app.httpPort, {})).toEqual(missing);
    expect(await forwardAuth(server.app.httpPort, {}, `/forward-auth?access_token=${token}`)).toEqual(missing);
    expect(await forwardAuth(server.app.httpPort, { authorization: 'Bearer abc.def.ghi' })).toEqual({
      status: 401,
      headers: { 'www-authenticate': 'Bearer error="invalid_token"' },
      body: { error: 'invalid_token', reason: 'TOKEN_INVALID' },
    });
  });

  it('answers 403 when the token lacks a role the gateway asks for in x-latchkey-required-roles', async () => {
    const user = await signedIn(['billing']);
    expect(await forwardAuth(server.app.httpPort, { authorization: bearer(user.login), 'x-latchkey-required-roles': 'admin' })).toEqual({
      status: 403,
      headers: { 'www-authenticate': 'Bearer error="insufficient_scope"' },
      body: { error: 'insufficient_scope', reason: 'ROLE_REQUIRED' },
    });
    expect((await forwardAuth(server.app.httpPort, { authorization: bearer(user.login), 'x-latchkey-required-roles': 'billing' })).status).toBe(200);
  });
});

describe('custom header prefix, authorization not passed on, and the discovery document', () => {
  let db: TestDatabase;
  let app: RunningApp;
  let client: AuthorizationClient;
  let httpPort: number;
  const ISSUER = 'https://issuer.example.test/latchkey';

  beforeAll(async () => {
    db = await createTestDatabase();
    httpPort = await closedPort();
    app = await startApp(
      testConfig(db.url, {
        GATEWAY_HEADER_PREFIX: 'x-id-',
        GATEWAY_PASS_AUTHORIZATION: 'false',
        HTTP_PORT: String(httpPort),
        PUBLIC_URL: `http://127.0.0.1:${httpPort}/`,
        JWT_ISSUER: ISSUER,
      }),
      createLogger('silent'),
    );
    client = authorizationClient(app.grpcPort);
  });
  afterAll(async () => {
    client?.close();
    await app?.stop();
    await db?.drop();
  });

  it('names the headers with the prefix, removes client-sent ones with it, and removes authorization', async () => {
    const auth = (await import('../support/clients.js')).authClient(app.grpcPort);
    try {
      const userId = (await register(auth, 'prefix@example.com')).user!.id;
      const signed = await login(auth, 'prefix@example.com');
      const { response } = await check(client, envoyCheckRequest({ authorization: bearer(signed), 'x-id-user-id': 'spoofed', 'x-id-roles': 'admin', 'x-latchkey-user-id': 'not our prefix' }));
      expect(decision(response)).toEqual({
        code: status.OK,
        set: [
          ['x-id-user-id', userId, OVERWRITE],
          ['x-id-session-id', signed.sessionId, OVERWRITE],
          ['x-id-email', 'prefix@example.com', OVERWRITE],
        ],
        remove: ['x-id-roles', 'authorization'],
      });
      expect(await forwardAuth(app.httpPort, { authorization: bearer(signed), 'x-id-required-roles': 'admin' })).toMatchObject({ status: 403 });

      // The discovery document names the configured issuer and the JWKS under PUBLIC_URL, and
      // nothing Latchkey does not serve.
      const discovery = await (await fetch(`http://127.0.0.1:${app.httpPort}/.well-known/openid-configuration`)).json();
      expect(discovery).toEqual({
        issuer: ISSUER,
        jwks_uri: `http://127.0.0.1:${httpPort}/.well-known/jwks.json`,
        id_token_signing_alg_values_supported: ['ES256'],
        subject_types_supported: ['public'],
        claims_supported: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'sid', 'email', 'roles'],
      });
      // JWT middleware that discovers its keys from there verifies Latchkey's tokens.
      const keys = createRemoteJWKSet(new URL((discovery as { jwks_uri: string }).jwks_uri));
      const verified = await jwtVerify(signed.tokens!.accessToken, keys, { issuer: ISSUER, audience: 'latchkey', algorithms: ['ES256'], typ: 'at+jwt' });
      expect({ sub: verified.payload.sub, sid: verified.payload.sid, alg: verified.protectedHeader.alg }).toEqual({ sub: userId, sid: signed.sessionId, alg: 'ES256' });
      await expect(jwtVerify(forgedToken({ ...verified.payload }, verified.protectedHeader.kid!), keys, { issuer: ISSUER, audience: 'latchkey' })).rejects.toThrow();
    } finally {
      auth.close();
    }
  });
});

describe('the database unreachable while the revocation view is not fresh', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let app: RunningApp;
  let client: AuthorizationClient;

  beforeAll(async () => {
    db = await createTestDatabase();
    proxy = TcpProxy.forUrl(db.url);
    await proxy.start();
    app = await startApp(testConfig(proxy.rewrite(db.url), { DATABASE_HEALTH_INTERVAL: '100ms' }), createLogger('silent'));
    client = authorizationClient(app.grpcPort);
  });
  afterAll(async () => {
    client?.close();
    await app?.stop();
    await proxy?.stop();
    await db?.drop();
  });

  it('denies with 503 (never allows) a token it cannot check, and still answers 401 for a request without one', async () => {
    const auth = (await import('../support/clients.js')).authClient(app.grpcPort);
    try {
      await register(auth, 'outage@example.com');
      const signed = await login(auth, 'outage@example.com');
      expect(decision((await check(client, envoyCheckRequest({ authorization: bearer(signed) }))).response)).toMatchObject({ code: status.OK });

      await proxy.stop();
      expect(await waitFor(() => healthStatus(app.grpcPort, 'envoy.service.auth.v3.Authorization'), (s) => s === 'NOT_SERVING')).toBe('NOT_SERVING');
      expect(decision((await check(client, envoyCheckRequest({ authorization: bearer(signed) }))).response)).toEqual({
        code: status.UNAVAILABLE,
        http: 503,
        headers: [['content-type', 'application/json']],
        body: { error: 'temporarily_unavailable', reason: 'UNAVAILABLE' },
      });
      expect(await forwardAuth(app.httpPort, { authorization: bearer(signed) })).toEqual({ status: 503, headers: {}, body: { error: 'temporarily_unavailable', reason: 'UNAVAILABLE' } });
      expect(decision((await check(client, envoyCheckRequest({}))).response)).toEqual(missingToken());

      await proxy.start();
      expect(await waitFor(() => healthStatus(app.grpcPort, 'envoy.service.auth.v3.Authorization'), (s) => s === 'SERVING')).toBe('SERVING');
      expect(
        await waitFor(
          async () => decision((await check(client, envoyCheckRequest({ authorization: bearer(signed) }))).response),
          (d) => (d as { code: number }).code === status.OK,
        ),
      ).toMatchObject({ code: status.OK });
    } finally {
      auth.close();
    }
  });
});
