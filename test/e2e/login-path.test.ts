import { type Client, status } from '@grpc/grpc-js';
import bcrypt from 'bcrypt';
import { startApp, type RunningApp } from '../../src/app.js';
import { decodeStatusDetails } from '../../src/grpc/errors.js';
import type { LoginResponse, ValidateTokenResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { createLogger } from '../../src/observability/logger.js';
import { failure, login, register } from '../support/auth.js';
import { authClient, call } from '../support/clients.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { StatementLog } from '../support/statements.js';

let db: TestDatabase;
const apps: RunningApp[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
});

// The embedded database serves one connection at a time, so only one server runs at once.
async function stopAll(): Promise<void> {
  for (const app of apps.splice(0)) await app.stop();
}
afterEach(stopAll);

afterAll(async () => {
  await stopAll();
  await db?.drop();
});

async function start(overrides: Record<string, string>, logger = createLogger('silent')): Promise<RunningApp> {
  const app = await startApp(testConfig(db.url, overrides), logger, undefined);
  apps.push(app);
  return app;
}

/** The login's one read: the user by email and the account's lock, one row whether or not the email is registered. */
const LOOKUP = /^select u\.id, .* from \(select \?::varchar as email, \?::varchar as throttle_id\) k left join users u on u\.email = k\.email left join login_throttles t on t\.id = k\.throttle_id and t\.locked_until > \?::timestamptz$/;

describe('the login path', () => {
  it('issues exactly a user lookup (with the account\'s lock) and one write (session, last sign-in, audit event, the reset of failed attempts), and no other DELETE; a refresh is one statement', async () => {
    const log = new StatementLog();
    // The database monitor's `select 1` would otherwise land in a window now and then (a hash
    // takes longer on a loaded machine); with this interval it sends none during the test.
    const app = await start({ DATABASE_HEALTH_INTERVAL: '10m' }, createLogger('trace', log));
    const client = authClient(app.grpcPort);
    try {
      await register(client, 'path@example.com');
      log.statements = [];
      await login(client, 'path@example.com');
      expect(log.statements).toHaveLength(2);
      expect(log.statements[0]).toMatch(LOOKUP);
      expect(log.statements[1]).toMatch(/^with signed_in as \( update users set last_login_at .* insert into sessions .* insert into audit_events /);
      // The one DELETE: a successful login forgets the account's failed attempts (issue 18).
      expect(log.statements.join('\n').replace('delete from login_throttles where id = ? and exists (select 1 from created)', '')).not.toMatch(/\bdelete\b/i);

      log.statements = [];
      const signedIn = await login(client, 'path@example.com');
      log.statements = [];
      const refreshed = await call(client as unknown as Client, 'refreshToken', { refreshToken: signedIn.tokens!.refreshToken });
      expect(refreshed.error).toBeUndefined();
      // A refresh is one round trip: the conditional UPDATE that rotates and returns what the tokens need.
      expect(log.statements).toHaveLength(1);
      expect(log.statements[0]).toMatch(/^update sessions s set generation = s\.generation \+ 1, .* returning /);

      log.statements = [];
      const { error } = await call(client as unknown as Client, 'login', { email: 'path@example.com', password: 'wrong password!' });
      expect(failure(error).reason).toBe('INVALID_CREDENTIALS');
      expect(log.statements).toHaveLength(2);
      expect(log.statements[0]).toMatch(LOOKUP);
      // One statement counts the failure against the account's lock and writes its (rate-limited) audit row.
      expect(log.statements[1]).toMatch(/^with p as materialized .* insert into login_throttles .* on conflict \(id\) do update .* insert into audit_events /);
    } finally {
      client.close();
    }
  });
});

describe('password hashing is bounded', () => {
  it('fails logins fast with OVERLOADED and a RetryInfo beyond the queue, while token validation keeps answering', async () => {
    // One hash at a time and no queue, at a cost that takes a visible while per hash.
    const app = await start({ BCRYPT_COST: '12', PASSWORD_HASH_CONCURRENCY: '1', PASSWORD_HASH_QUEUE_LIMIT: '0' });
    const client = authClient(app.grpcPort);
    try {
      await register(client, 'busy@example.com');
      const signedIn = await login(client, 'busy@example.com');
      const logins = Array.from({ length: 6 }, () =>
        call<object, LoginResponse>(client as unknown as Client, 'login', { email: 'busy@example.com', password: 'correct horse battery' }),
      );
      // While the hasher is saturated, validation (no hashing) still answers.
      const validated = await call<object, ValidateTokenResponse>(client as unknown as Client, 'validateToken', { accessToken: signedIn.tokens!.accessToken });
      expect(validated.error).toBeUndefined();
      const results = await Promise.all(logins);
      const limited = results.filter((r) => r.error);
      expect(results.filter((r) => !r.error).length).toBeGreaterThanOrEqual(1);
      expect(limited.length).toBeGreaterThanOrEqual(1);
      for (const { error } of limited) {
        expect(failure(error)).toEqual({
          code: status.RESOURCE_EXHAUSTED,
          reason: 'OVERLOADED',
          message: 'too many sign-in attempts are being processed; retry shortly',
          fields: [],
        });
        expect(decodeStatusDetails(error!.metadata).retryInfo?.retryDelay).toEqual({ seconds: 1, nanos: 0 });
      }
    } finally {
      client.close();
    }
  });
});

describe('a hash made at another cost', () => {
  it('is re-hashed at the configured cost after a successful login (shutdown waits for it), and not after a failed one', async () => {
    const cheap = await start({ BCRYPT_COST: '4' });
    const cheapClient = authClient(cheap.grpcPort);
    const user = await register(cheapClient, 'rehash@example.com');
    cheapClient.close();
    await stopAll();
    const hashOf = async () =>
      (await query<{ password_hash: string }>(db.url, 'select password_hash from users where id = $1', [user.user!.id]))[0]!.password_hash;
    const original = await hashOf();
    expect(original).toMatch(/^\$2b\$04\$/);

    // A cost whose hash takes far longer than stopping an idle server: only waiting for it saves it.
    const dearer = await start({ BCRYPT_COST: '12' });
    const client = authClient(dearer.grpcPort);
    try {
      const { error } = await call(client as unknown as Client, 'login', { email: 'rehash@example.com', password: 'not the password' });
      expect(failure(error).reason).toBe('INVALID_CREDENTIALS');
      expect(await hashOf()).toBe(original);

      await login(client, 'rehash@example.com');
    } finally {
      client.close();
    }
    // Re-hashing runs after the response; shutdown waits for it before closing the database.
    await stopAll();
    const rehashed = await hashOf();
    expect(rehashed).toMatch(/^\$2b\$12\$/);
    expect(await bcrypt.getRounds(rehashed)).toBe(12);

    const again = await start({ BCRYPT_COST: '12' });
    const againClient = authClient(again.grpcPort);
    try {
      await expect(login(againClient, 'rehash@example.com')).resolves.toBeDefined();
    } finally {
      againClient.close();
    }
  });
});
