import { type Client, Metadata, status } from '@grpc/grpc-js';
import { startApp, type RunningApp } from '../../src/app.js';
import { createLogger } from '../../src/observability/logger.js';
import { failure, login, register } from '../support/auth.js';
import { authClient, call, healthStatus, sessionClient } from '../support/clients.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { TcpProxy } from '../support/proxy.js';
import { waitFor } from '../support/wait.js';

const SERVICES = ['', 'latchkey.auth.v1.AuthService', 'latchkey.session.v1.SessionService'];
const API_KEY = 'outage-test-service-key-0123456789abcdef';

let db: TestDatabase;
let proxy: TcpProxy;
let app: RunningApp;

beforeAll(async () => {
  db = await createTestDatabase();
  proxy = TcpProxy.forUrl(db.url);
  await proxy.start();
  app = await startApp(testConfig(proxy.rewrite(db.url), { DATABASE_HEALTH_INTERVAL: '100ms', SERVICE_API_KEYS: API_KEY }), createLogger('silent'));
});

afterAll(async () => {
  await app?.stop();
  await proxy?.stop();
  await db?.drop();
});

const allHealth = () => Promise.all(SERVICES.map((s) => healthStatus(app.grpcPort, s)));
const metric = async (name: string) => {
  const body = await (await fetch(`http://127.0.0.1:${app.httpPort}/metrics`)).text();
  return new RegExp(`^${name} (\\S+)$`, 'm').exec(body)?.[1];
};
const readyz = async () => (await fetch(`http://127.0.0.1:${app.httpPort}/readyz`)).status;

it('goes NOT_SERVING while the database is unreachable and SERVING again when it returns', async () => {
  expect(await allHealth()).toEqual(['SERVING', 'SERVING', 'SERVING']);
  expect(await readyz()).toBe(200);

  await proxy.stop();
  expect(await waitFor(allHealth, (s) => s.every((x) => x === 'NOT_SERVING'))).toEqual(['NOT_SERVING', 'NOT_SERVING', 'NOT_SERVING']);
  expect(await readyz()).toBe(503);
  expect(await metric('latchkey_database_up')).toBe('0');
  // Liveness is about the process, not its dependencies: restarting would not bring the database back.
  expect((await fetch(`http://127.0.0.1:${app.httpPort}/healthz`)).status).toBe(200);
  expect(await healthStatus(app.grpcPort, 'liveness')).toBe('SERVING');

  await proxy.start();
  expect(await waitFor(allHealth, (s) => s.every((x) => x === 'SERVING'))).toEqual(['SERVING', 'SERVING', 'SERVING']);
  expect(await readyz()).toBe(200);
  expect(await metric('latchkey_database_up')).toBe('1');
});

it('survives repeated outages without leaking into a crash', async () => {
  for (let round = 0; round < 3; round++) {
    await proxy.stop();
    expect(await waitFor(() => healthStatus(app.grpcPort), (s) => s === 'NOT_SERVING')).toBe('NOT_SERVING');
    await proxy.start();
    expect(await waitFor(() => healthStatus(app.grpcPort), (s) => s === 'SERVING')).toBe('SERVING');
  }
});

it('goes NOT_SERVING when the database hangs without closing connections, and recovers', async () => {
  expect(await healthStatus(app.grpcPort)).toBe('SERVING');
  proxy.freeze();
  expect(await waitFor(() => healthStatus(app.grpcPort), (s) => s === 'NOT_SERVING', 15_000)).toBe('NOT_SERVING');
  expect(await readyz()).toBe(503);
  proxy.thaw();
  expect(await waitFor(() => healthStatus(app.grpcPort), (s) => s === 'SERVING', 15_000)).toBe('SERVING');
});

describe('auth calls during an outage', () => {
  it('answer UNAVAILABLE where they need the database, keep validating tokens locally, and work again afterwards', async () => {
    const client = authClient(app.grpcPort);
    const sessions = sessionClient(app.grpcPort);
    const rpc = (method: string, request: object) => call<object, unknown>(client as unknown as Client, method, request, { deadlineMs: 8_000 });
    try {
      await register(client, 'outage@example.com');
      const signedIn = await login(client, 'outage@example.com');

      await proxy.stop();
      await waitFor(() => healthStatus(app.grpcPort), (s) => s === 'NOT_SERVING');
      for (const [method, request] of [
        ['login', { email: 'outage@example.com', password: 'correct horse battery' }],
        ['register', { email: 'second@example.com', password: 'correct horse battery' }],
        ['refreshToken', { refreshToken: signedIn.tokens!.refreshToken }],
        ['logout', { refreshToken: signedIn.tokens!.refreshToken }],
        ['validateToken', { accessToken: signedIn.tokens!.accessToken, checkRevocation: true }],
      ] as const) {
        const { error } = await rpc(method, request);
        expect([method, failure(error).code, failure(error).reason]).toEqual([method, status.UNAVAILABLE, 'UNAVAILABLE']);
      }
      const local = await rpc('validateToken', { accessToken: signedIn.tokens!.accessToken, checkRevocation: false });
      expect(local.error).toBeUndefined();

      // Calls with a credential: the bearer's session cannot be checked, and nothing is guessed.
      const bearer = new Metadata();
      bearer.set('authorization', `Bearer ${signedIn.tokens!.accessToken}`);
      const service = new Metadata();
      service.set('x-api-key', API_KEY);
      const userId = signedIn.user!.id;
      for (const [target, method, request, metadata] of [
        [sessions, 'listSessions', { userId: '', pageSize: 0, pageToken: '', state: 0 }, bearer],
        [sessions, 'revokeSession', { sessionId: signedIn.sessionId }, service],
        [sessions, 'revokeAllSessions', { userId, exceptSessionId: '' }, service],
        [client, 'changePassword', { currentPassword: 'correct horse battery', newPassword: 'another long passphrase' }, bearer],
        [client, 'getUser', { userId }, service],
        [client, 'disableUser', { userId }, service],
        [client, 'requestPasswordReset', { email: 'outage@example.com' }, service],
        [client, 'verifyEmail', { token: 'A'.repeat(43) }, undefined],
      ] as const) {
        const { error } = await call<object, unknown>(target as unknown as Client, method, request, { deadlineMs: 8_000, metadata });
        expect([method, failure(error).code, failure(error).reason]).toEqual([method, status.UNAVAILABLE, 'UNAVAILABLE']);
      }

      await proxy.start();
      await waitFor(() => healthStatus(app.grpcPort), (s) => s === 'SERVING');
      const refreshed = await rpc('refreshToken', { refreshToken: signedIn.tokens!.refreshToken });
      expect(refreshed.error).toBeUndefined();
    } finally {
      client.close();
      sessions.close();
    }
  });
});
