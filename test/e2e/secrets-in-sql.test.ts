import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { type Client, status } from '@grpc/grpc-js';
import pg from 'pg';
import { startApp, type RunningApp } from '../../src/app.js';
import type { AuthServiceClient, RefreshTokenResponse, RegisterResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { createLogger } from '../../src/observability/logger.js';
import { failure, login, ManualClock, register } from '../support/auth.js';
import { authClient, call } from '../support/clients.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { waitFor } from '../support/wait.js';

/**
 * Secrets stay out of the statement text PostgreSQL sees (pg_stat_activity, its statement and
 * error logs) and out of our own error log lines: parameters are bound, never inlined, and a
 * database error's detail ("Failing row contains (…)") is not logged.
 */
const onPostgres = process.env.TEST_DATABASE_URL ? describe : describe.skip;
const clock = new ManualClock();
const PASSWORD = 'correct horse battery';

class LogLines extends Writable {
  lines: Record<string, unknown>[] = [];
  text = '';

  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    this.text += chunk.toString('utf8');
    for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) this.lines.push(JSON.parse(line) as Record<string, unknown>);
    done();
  }
}

let db: TestDatabase;
let app: RunningApp;
let client: AuthServiceClient;
const log = new LogLines();

beforeAll(async () => {
  db = await createTestDatabase();
  app = await startApp(testConfig(db.url, { DATABASE_STATEMENT_TIMEOUT: '30s' }), createLogger('info', log), undefined, { clock });
  client = authClient(app.grpcPort);
});

afterAll(async () => {
  client?.close();
  await app?.stop();
  await db?.drop();
});

onPostgres('statement text in pg_stat_activity', () => {
  it('holds no refresh token, secret hash or email while a RefreshToken waits in the database', async () => {
    const email = 'stat-activity@example.test';
    await register(client, email);
    const refreshToken = (await login(client, email)).tokens!.refreshToken;
    const secret = refreshToken.split('.')[1]!;
    const secretHash = createHash('sha256').update(Buffer.from(secret, 'base64url')).digest();

    // Another connection holds the sessions table, so the refresh's statement waits, visible.
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query('lock table sessions in access exclusive mode');
      const refreshed = call<object, RefreshTokenResponse>(client as unknown as Client, 'refreshToken', { refreshToken }, { deadlineMs: 20_000 });
      const waiting = await waitFor(
        () =>
          query<{ query: string }>(
            db.url,
            `select query from pg_stat_activity
              where datname = current_database() and pid <> pg_backend_pid() and wait_event_type = 'Lock'`,
          ),
        (rows) => rows.length > 0,
      );
      await holder.query('commit');
      expect((await refreshed).error).toBeUndefined();

      const text = waiting.map((row) => row.query).join('\n');
      expect(text).toMatch(/sessions/);
      expect(text).toMatch(/\$1/);
      for (const secretForm of [refreshToken, secret, secretHash.toString('hex'), secretHash.toString('base64'), email]) {
        expect(text).not.toContain(secretForm);
      }
    } finally {
      await holder.end();
    }
  });
});

describe('error log of a failing statement', () => {
  it('carries no value from the failing row (email, password hash) when a constraint refuses a Register', async () => {
    const email = 'refused-row@reject.test';
    // A constraint the service does not know about: its violation is an unexpected error, logged.
    await query(db.url, "alter table users add constraint test_reject_domain check (email not like '%@reject.test')");
    try {
      const { error } = await call<object, RegisterResponse>(client as unknown as Client, 'register', { email, password: PASSWORD, displayName: 'Refused Row' });
      expect(failure(error)).toMatchObject({ code: status.INTERNAL });
      expect(await query(db.url, 'select 1 from users where email = $1', [email])).toEqual([]);

      const logged = await waitFor(
        async () => log.lines.filter((line) => line.msg === 'unexpected error in handler'),
        (lines) => lines.length > 0,
      );
      const line = JSON.stringify(logged);
      expect(line).toContain('test_reject_domain'); // the constraint's name stays: it is what an operator needs
      for (const value of [email, 'refused-row', 'Refused Row', PASSWORD, '$2b$', 'Failing row']) {
        expect(line).not.toContain(value);
      }
      expect(log.text).not.toContain(email);
    } finally {
      await query(db.url, 'alter table users drop constraint test_reject_domain');
    }
  });
});
