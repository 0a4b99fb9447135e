import { randomUUID } from 'node:crypto';
import { type Client, Metadata, status } from '@grpc/grpc-js';
import pg from 'pg';
import type { LoginResponse, RequestPasswordResetResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { type AuthServer, failure, login, ManualClock, register, startAuthServer } from '../support/auth.js';
import { call } from '../support/clients.js';
import { query } from '../support/database.js';
import { waitFor } from '../support/wait.js';

/**
 * Logins racing with the changes that end a user's sessions (a password reset or change, a
 * disabled account), in both orders, with a real lock held by the test to pin the interleaving:
 * - the login waits for the user's row while the change commits: it must not write a session;
 * - the login commits while the change's statement waits for the user's row: the change's
 *   snapshot cannot see that session, and the change's second statement must revoke it.
 * Needs a PostgreSQL server (a second connection holding a lock); the embedded database serves
 * one connection at a time.
 */
const onPostgres = process.env.TEST_DATABASE_URL ? describe : describe.skip;

const API_KEY = 'races-test-service-key-0123456789abcdef';
const PASSWORD = 'correct horse battery';
const clock = new ManualClock();
let server: AuthServer;

onPostgres('sessions raced by a login', () => {
  beforeAll(async () => {
    server = await startAuthServer({ SERVICE_API_KEYS: API_KEY }, clock);
  });

  afterAll(async () => {
    await server?.close();
  });

  const service = new Metadata();
  service.set('x-api-key', API_KEY);
  const rpc = <Res>(method: string, request: object, metadata?: Metadata) =>
    call<object, Res>(server.client as unknown as Client, method, request, metadata ? { metadata } : {});

  /** Resolves once a statement on this test's database waits for a lock (other test files use other databases). */
  async function someoneWaits(): Promise<void> {
    const waiting = await waitFor(
      () =>
        query<{ n: number }>(
          server.db.url,
          `select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
        ),
      (rows) => rows[0]!.n > 0,
    );
    expect(waiting[0]!.n).toBeGreaterThan(0);
  }

  /**
   * Makes a call while a transaction of the test, on its own connection, holds the user's row lock
   * as a concurrent statement would: `first` runs in that transaction before the call starts,
   * `meanwhile` once the call's statement waits for the lock; then the transaction commits.
   */
  async function againstUserLock<T>(
    userId: string,
    attempt: () => Promise<T>,
    steps: { first?: (holder: pg.Client) => Promise<unknown>; meanwhile?: (holder: pg.Client) => Promise<unknown> },
  ): Promise<T> {
    const holder = new pg.Client({ connectionString: server.db.url });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query('select 1 from users where id = $1 for update', [userId]);
      await steps.first?.(holder);
      const pending = attempt();
      await someoneWaits();
      await steps.meanwhile?.(holder);
      await holder.query('commit');
      return await pending;
    } finally {
      await holder.end();
    }
  }

  /** What a login that committed a moment ago leaves: an active session of the user. */
  async function insertSession(holder: pg.Client, userId: string): Promise<string> {
    const id = randomUUID();
    const now = new Date(clock.ms - 1_000);
    await holder.query(
      `insert into sessions (id, user_id, generation, refresh_secret_hash, created_at, last_used_at, idle_expires_at, absolute_expires_at)
       values ($1, $2, 0, $3, $4, $4, $5, $5)`,
      [id, userId, Buffer.alloc(32, 1), now, new Date(clock.ms + 86_400_000)],
    );
    return id;
  }

  async function revocation(sessionId: string): Promise<string | null> {
    const [row] = await query<{ revoked_reason: string | null }>(server.db.url, 'select revoked_reason from sessions where id = $1', [sessionId]);
    return row!.revoked_reason;
  }

  it('a login waiting behind a password change writes no session and fails INVALID_CREDENTIALS', async () => {
    const user = (await register(server.client, 'waits-behind-change@example.com', PASSWORD)).user!.id;
    const { error } = await againstUserLock(user, () => rpc('login', { email: 'waits-behind-change@example.com', password: PASSWORD }), {
      // The change commits while the login waits: a new password, as ChangePassword or ResetPassword writes it.
      meanwhile: (holder) =>
        holder.query(`update users set password_hash = 'replaced', password_changed_at = $2 where id = $1`, [user, new Date(clock.ms + 1)]),
    });
    expect(failure(error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'INVALID_CREDENTIALS' });
    expect(await query(server.db.url, 'select id from sessions where user_id = $1', [user])).toEqual([]);
    const [audit] = await query<{ details: unknown }>(
      server.db.url,
      `select details from audit_events where user_id = $1 and event_type = 'login.failed'`,
      [user],
    );
    expect(audit!.details).toEqual({ reason: 'INVALID_CREDENTIALS', email: 'waits-behind-change@example.com', changedDuringLogin: true });
  });

  it('a login waiting behind DisableUser writes no session and fails ACCOUNT_DISABLED', async () => {
    const user = (await register(server.client, 'waits-behind-disable@example.com', PASSWORD)).user!.id;
    const { error } = await againstUserLock(user, () => rpc('login', { email: 'waits-behind-disable@example.com', password: PASSWORD }), {
      meanwhile: (holder) => holder.query('update users set disabled_at = $2 where id = $1', [user, new Date(clock.ms)]),
    });
    expect(failure(error)).toMatchObject({ code: status.PERMISSION_DENIED, reason: 'ACCOUNT_DISABLED' });
    expect(await query(server.db.url, 'select id from sessions where user_id = $1', [user])).toEqual([]);
  });

  it('a session a login committed while ResetPassword waited is revoked too', async () => {
    const user = (await register(server.client, 'raced-reset@example.com', PASSWORD)).user!.id;
    const before: LoginResponse = await login(server.client, 'raced-reset@example.com', PASSWORD);
    const issued = await rpc<RequestPasswordResetResponse>('requestPasswordReset', { email: 'raced-reset@example.com' }, service);
    let raced = '';
    const { error } = await againstUserLock(
      user,
      () => rpc('resetPassword', { token: issued.response!.resetToken, newPassword: 'a brand new passphrase' }),
      { first: async (holder) => (raced = await insertSession(holder, user)) },
    );
    expect(error).toBeUndefined();
    expect(await revocation(before.sessionId)).toBe('PASSWORD_RESET');
    expect(await revocation(raced)).toBe('PASSWORD_RESET');
    // A login with the new password right after the reset is not touched.
    const after = await login(server.client, 'raced-reset@example.com', 'a brand new passphrase');
    expect(await revocation(after.sessionId)).toBeNull();
  });

  it('a session a login committed while ChangePassword waited is revoked too; the caller\'s own is kept', async () => {
    const user = (await register(server.client, 'raced-change@example.com', PASSWORD)).user!.id;
    const own = await login(server.client, 'raced-change@example.com', PASSWORD);
    const other = await login(server.client, 'raced-change@example.com', PASSWORD);
    const bearer = new Metadata();
    bearer.set('authorization', `Bearer ${own.tokens!.accessToken}`);
    let raced = '';
    const { response, error } = await againstUserLock(
      user,
      () => rpc<{ revokedSessionCount: number }>('changePassword', { currentPassword: PASSWORD, newPassword: 'a changed passphrase' }, bearer),
      { first: async (holder) => (raced = await insertSession(holder, user)) },
    );
    expect(error).toBeUndefined();
    expect(response!.revokedSessionCount).toBe(2);
    expect([await revocation(own.sessionId), await revocation(other.sessionId), await revocation(raced)]).toEqual([
      null,
      'PASSWORD_CHANGED',
      'PASSWORD_CHANGED',
    ]);
  });

  it('a session a login committed while DisableUser waited is revoked too', async () => {
    const user = (await register(server.client, 'raced-disable@example.com', PASSWORD)).user!.id;
    let raced = '';
    const { response, error } = await againstUserLock(
      user,
      () => rpc<{ revokedSessionCount: number }>('disableUser', { userId: user }, service),
      { first: async (holder) => (raced = await insertSession(holder, user)) },
    );
    expect(error).toBeUndefined();
    expect(response!.revokedSessionCount).toBe(1);
    expect(await revocation(raced)).toBe('USER_DISABLED');
  });
});
