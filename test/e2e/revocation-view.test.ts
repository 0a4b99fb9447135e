/**
 * The in-memory revocation view (DESIGN.md "Revocation reach") seen from outside: ValidateToken
 * with check_revocation answers from memory, without a SQL statement, while the view is fresh,
 * and a revocation made on one replica reaches another through the feed.
 *
 * Two replicas are two in-process servers on one database, each with its own trace-level logger
 * (StatementLog): a statement counted on B during a call is one B sent for it.
 */
import type { LoginResponse, RefreshTokenResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { login, register } from '../support/auth.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { type Replica, startReplica, withApiKey, withBearer } from '../support/replicas.js';
import { waitFor } from '../support/wait.js';

const API_KEY = 'revocation-view-tests-key-0123456789abcdef';
const service = withApiKey(API_KEY);
/** Safety net for the follower to catch up; never an assertion on how long it took. */
const CATCH_UP = 15_000;

let db: TestDatabase;
const replicas: Replica[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
});

async function closeAll(): Promise<void> {
  for (const replica of replicas.splice(0)) await replica.close();
}
afterEach(closeAll);
afterAll(async () => {
  await closeAll();
  await db?.drop();
});

async function replica(name: string, overrides: Record<string, string> = {}): Promise<Replica> {
  const started = await startReplica(name, db.url, { SERVICE_API_KEYS: API_KEY, MAX_SESSIONS_PER_USER: '0', ...overrides });
  replicas.push(started);
  return started;
}

let people = 0;
async function signedIn(on: Replica, sessions = 1, roles: string[] = []): Promise<{ userId: string; email: string; logins: LoginResponse[] }> {
  const email = `view-${++people}@example.com`;
  const userId = (await register(on.auth, email)).user!.id;
  if (roles.length > 0) {
    const { error } = await on.rpc('setUserRoles', { userId, roles }, service);
    expect(error).toBeUndefined();
  }
  const logins: LoginResponse[] = [];
  for (let i = 0; i < sessions; i++) logins.push(await login(on.auth, email));
  return { userId, email, logins };
}

/** Waits until `on` answers `outcome` for the token from memory (no statement), then asserts it once more. */
async function expectFromMemory(on: Replica, accessToken: string, outcome: string): Promise<void> {
  await waitFor(() => on.checkRevocation(accessToken), (r) => r.outcome === outcome && r.statements.length === 0, CATCH_UP, 20);
  const fallbacks = await on.fallbacks();
  const check = await on.checkRevocation(accessToken);
  expect({ replica: on.name, outcome: check.outcome, statements: check.statements }).toEqual({ replica: on.name, outcome, statements: [] });
  expect(await on.fallbacks()).toBe(fallbacks);
}

const onPostgres = process.env.TEST_DATABASE_URL ? describe : describe.skip;

// Two servers on one database need two connections at once: the embedded database serves one
// connection at a time (see login-path.test.ts), so these run on PostgreSQL only.
onPostgres('two replicas on one database', () => {
  it('a session revoked through replica A (Logout, RevokeSession, RevokeAllSessions) is refused by replica B from memory, with no SQL statement', async () => {
    const a = await replica('A');
    const b = await replica('B');
    const user = await signedIn(a, 4);
    const [first, second, third, fourth] = user.logins.map((l) => l!);

    // Before any revocation, B answers OK from memory: no statement.
    for (const signed of user.logins) await expectFromMemory(b, signed.tokens!.accessToken, 'OK');

    // Logout through A.
    expect((await a.rpc('logout', { refreshToken: first!.tokens!.refreshToken })).error).toBeUndefined();
    // The replica that made it refuses at once (it defers to the database until its follower read past it)…
    expect((await a.checkRevocation(first!.tokens!.accessToken)).outcome).toBe('SESSION_REVOKED');
    // …and B, once its follower has read the event, from memory.
    await expectFromMemory(b, first!.tokens!.accessToken, 'SESSION_REVOKED');
    await expectFromMemory(b, second!.tokens!.accessToken, 'OK');

    // RevokeSession (a service) through A.
    expect((await a.sessionRpc('revokeSession', { sessionId: second!.sessionId }, service)).error).toBeUndefined();
    expect((await a.checkRevocation(second!.tokens!.accessToken)).outcome).toBe('SESSION_REVOKED');
    await expectFromMemory(b, second!.tokens!.accessToken, 'SESSION_REVOKED');

    // RevokeAllSessions by the owner, keeping the caller's session.
    const all = await a.sessionRpc<{ revokedCount: number }>('revokeAllSessions', { userId: '', exceptSessionId: fourth!.sessionId }, withBearer(fourth!.tokens!.accessToken));
    expect(all.error).toBeUndefined();
    expect(all.response!.revokedCount).toBe(1);
    expect((await a.checkRevocation(third!.tokens!.accessToken)).outcome).toBe('SESSION_REVOKED');
    await expectFromMemory(b, third!.tokens!.accessToken, 'SESSION_REVOKED');
    await expectFromMemory(b, fourth!.tokens!.accessToken, 'OK');

    // Every earlier answer still comes from memory.
    await expectFromMemory(b, first!.tokens!.accessToken, 'SESSION_REVOKED');
    await expectFromMemory(b, second!.tokens!.accessToken, 'SESSION_REVOKED');
  });

  it('a token carrying a removed role is TOKEN_STALE on replica B from memory; the token refreshed after the removal is OK', async () => {
    const a = await replica('A');
    const b = await replica('B');
    const user = await signedIn(a, 1, ['billing', 'support']);
    const signed = user.logins[0]!;
    expect(signed.user!.roles).toEqual(['billing', 'support']);
    await expectFromMemory(b, signed.tokens!.accessToken, 'OK');

    // Adding a role leaves older tokens valid.
    expect((await a.rpc('setUserRoles', { userId: user.userId, roles: ['billing', 'support', 'audit'] }, service)).error).toBeUndefined();
    await expectFromMemory(b, signed.tokens!.accessToken, 'OK');

    // Removing one makes every token that carries it stale, on B from memory.
    expect((await a.rpc('setUserRoles', { userId: user.userId, roles: ['support', 'audit'] }, service)).error).toBeUndefined();
    expect((await a.checkRevocation(signed.tokens!.accessToken)).outcome).toBe('TOKEN_STALE');
    await expectFromMemory(b, signed.tokens!.accessToken, 'TOKEN_STALE');

    // A refresh (on B) issues a token with the roles of now: OK, from memory.
    const refreshed = await b.rpc<RefreshTokenResponse>('refreshToken', { refreshToken: signed.tokens!.refreshToken });
    expect(refreshed.error).toBeUndefined();
    const fresh = refreshed.response!.tokens!.accessToken;
    const claims = (await b.checkRevocation(fresh)).response?.claims;
    expect(claims?.roles).toEqual(['audit', 'support']);
    await expectFromMemory(b, fresh, 'OK');
    await expectFromMemory(a, fresh, 'OK');
    // The old one stays stale.
    await expectFromMemory(b, signed.tokens!.accessToken, 'TOKEN_STALE');
  });

  it('a revocation written straight into the database (no replica made it) is refused by both replicas from memory', async () => {
    const a = await replica('A');
    const b = await replica('B');
    const user = await signedIn(a, 1);
    const token = user.logins[0]!.tokens!.accessToken;
    await expectFromMemory(a, token, 'OK');
    await expectFromMemory(b, token, 'OK');
    await query(db.url, `update sessions set revoked_at = now(), revoked_reason = 'REVOKED_BY_SERVICE' where id = $1`, [user.logins[0]!.sessionId]);
    await expectFromMemory(a, token, 'SESSION_REVOKED');
    await expectFromMemory(b, token, 'SESSION_REVOKED');
  });
});

describe('one replica', () => {
  it('refuses its own revocation at once, then from memory with no statement; REVOCATION_MAX_STALENESS=0s always reads the database', async () => {
    const a = await replica('A');
    const user = await signedIn(a, 2);
    const [first, second] = user.logins.map((l) => l!);
    await expectFromMemory(a, first!.tokens!.accessToken, 'OK');

    expect((await a.rpc('logout', { refreshToken: first!.tokens!.refreshToken })).error).toBeUndefined();
    expect((await a.checkRevocation(first!.tokens!.accessToken)).outcome).toBe('SESSION_REVOKED');
    await expectFromMemory(a, first!.tokens!.accessToken, 'SESSION_REVOKED');
    await expectFromMemory(a, second!.tokens!.accessToken, 'OK');
    await closeAll();

    // The view off: every check_revocation reads the session (and counts as a fallback).
    const off = await replica('off', { REVOCATION_MAX_STALENESS: '0s' });
    const before = await off.fallbacks();
    for (const [signed, outcome] of [
      [first!, 'SESSION_REVOKED'],
      [second!, 'OK'],
    ] as const) {
      const check = await off.checkRevocation(signed.tokens!.accessToken);
      expect(check.outcome).toBe(outcome);
      expect(check.statements.length).toBeGreaterThan(0);
      expect(check.statements.join('\n')).toMatch(/from "?sessions"? /);
    }
    expect(await off.fallbacks()).toBe(before + 2);
  });
});
