import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Client, type ServiceError, status } from '@grpc/grpc-js';
import type { LevelWithSilent } from 'pino';
import { startApp, type RunningApp } from '../../src/app.js';
import type { AuthServiceClient, LoginResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import type { SessionServiceClient } from '../../src/generated/latchkey/session/v1/session_service.js';
import { createLogger } from '../../src/observability/logger.js';
import { type Credential, metadataFor } from '../support/accounts.js';
import { failure, login, register, storeSnapshot } from '../support/auth.js';
import { authClient, call, healthStatus, sessionClient } from '../support/clients.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { PartitionProxy } from '../support/partition-proxy.js';
import { waitFor } from '../support/wait.js';

/**
 * A network partition between the service and its database (issue 14): the network does not cut
 * anything, it holds bytes (a black hole) and delivers them late when it heals. Every call made
 * during it answers UNAVAILABLE before its own deadline; a write the network held and delivered
 * after its call gave up changes nothing; and a client that retries after the heal (later than
 * REFRESH_REUSE_GRACE for a refresh) succeeds, with exactly one effect.
 *
 * Real time throughout (no injected clock): the write guard compares the database clock with the
 * call's deadline, and the grace window must really have passed.
 */
const REUSE_GRACE_MS = 2_000;
const API_KEY = 'partition-tests-service-key-0123456789abcdef';
const PASSWORD = 'correct horse battery';
const NEW_PASSWORD = 'a different long passphrase';

let db: TestDatabase;
let proxy: PartitionProxy;
let app: RunningApp;
let auth: AuthServiceClient;
let sessions: SessionServiceClient;

beforeAll(async () => {
  db = await createTestDatabase();
  proxy = PartitionProxy.forUrl(db.url);
  await proxy.start();
  app = await startApp(
    testConfig(proxy.rewrite(db.url), {
      DATABASE_HEALTH_INTERVAL: '200ms',
      DATABASE_HEALTH_TIMEOUT: '500ms',
      DATABASE_STATEMENT_TIMEOUT: '2s',
      REFRESH_REUSE_GRACE: `${REUSE_GRACE_MS}ms`,
      MAX_SESSIONS_PER_USER: '0',
      SERVICE_API_KEYS: API_KEY,
    }),
    createLogger((process.env.TEST_LOG_LEVEL ?? 'silent') as LevelWithSilent),
  );
  auth = authClient(app.grpcPort);
  sessions = sessionClient(app.grpcPort);
});

afterEach(async () => {
  // A failed test must not leave the next one partitioned.
  if (proxy.frozen) await heal();
});

afterAll(async () => {
  auth?.close();
  sessions?.close();
  await app?.stop();
  await proxy?.stop();
  await db?.drop();
});

type Result = { response?: unknown; error?: ServiceError };
const rpc = (target: AuthServiceClient | SessionServiceClient, method: string, request: object, deadlineMs: number, credential?: Credential) =>
  call<object, unknown>(target as unknown as Client, method, request, {
    deadlineMs,
    ...(credential ? { metadata: metadataFor(credential) } : {}),
  }) as Promise<Result>;
const CLIENT_INFO = { ipAddress: '203.0.113.9', userAgent: 'jest', deviceName: 'partition test' };
const refresh = (refreshToken: string, deadlineMs = 10_000) =>
  rpc(auth, 'refreshToken', { refreshToken, client: CLIENT_INFO }, deadlineMs) as Promise<{ response?: LoginResponse; error?: ServiceError }>;
const logout = (refreshToken: string, deadlineMs = 10_000) => rpc(auth, 'logout', { refreshToken }, deadlineMs);
const bearer = (signedIn: LoginResponse): Credential => ({ bearer: signedIn.tokens!.accessToken });
const asService: Credential = { apiKey: API_KEY };

const health = () => healthStatus(app.grpcPort);
const codeOf = (result: Result) => ({ code: failure(result.error).code, reason: failure(result.error).reason });
const UNAVAILABLE = { code: status.UNAVAILABLE, reason: 'UNAVAILABLE' };
/** What codeOf makes of a call that succeeded. */
const OK = { code: undefined, reason: 'no error' };

/**
 * Ends the partition, waits until the database has answered what was held (delivered late), then
 * until the service is SERVING. Returns on how many connections held requests were delivered.
 */
async function heal(): Promise<number> {
  const delivered = await proxy.thaw();
  expect(await waitFor(health, (s) => s === 'SERVING', 15_000)).toBe('SERVING');
  return delivered;
}

/** Statement text the tests recognise in the protocol bytes the network holds. */
const ROTATION = 'previous_secret_hash = s.refresh_secret_hash';
const LOGOUT_REVOCATION = 'and refresh_secret_hash = ';
const PASSWORD_CHANGE = "'password.changed'";
const USER_INSERT = 'insert into users (id, email';
const SESSION_REVOCATION = 'true as revoked_now from revoked';

async function partitionNoticed(): Promise<void> {
  expect(await waitFor(health, (s) => s === 'NOT_SERVING', 15_000)).toBe('NOT_SERVING');
}

const secretHash = (refreshToken: string) => createHash('sha256').update(Buffer.from(refreshToken.split('.')[1]!, 'base64url')).digest();

interface SessionRow {
  generation: number;
  refresh_secret_hash: Buffer;
  revoked_at: Date | null;
  revoked_reason: string | null;
}

async function sessionRow(id: string): Promise<SessionRow> {
  const [row] = await query<SessionRow>(db.url, 'select generation, refresh_secret_hash, revoked_at, revoked_reason from sessions where id = $1', [id]);
  return row!;
}

async function auditCount(eventType: string, where: { sessionId?: string; userId?: string }): Promise<number> {
  const [row] = await query<{ n: number }>(
    db.url,
    'select count(*)::int as n from audit_events where event_type = $1 and ($2::uuid is null or session_id = $2) and ($3::uuid is null or user_id = $3)',
    [eventType, where.sessionId ?? null, where.userId ?? null],
  );
  return row!.n;
}

async function passwordHashOf(userId: string): Promise<string> {
  const [row] = await query<{ password_hash: string }>(db.url, 'select password_hash from users where id = $1', [userId]);
  return row!.password_hash;
}

async function signedInUser(email: string): Promise<LoginResponse> {
  await register(auth, email, PASSWORD);
  return login(auth, email, PASSWORD);
}

describe('a call that timed out in a partition, retried after the heal', () => {
  it('RefreshToken: the retry, later than REFRESH_REUSE_GRACE after the first attempt, rotates once and nothing is seen as reuse', async () => {
    const signedIn = await signedInUser('refresh-partition@example.com');
    const token = signedIn.tokens!.refreshToken;
    const sessionId = signedIn.sessionId;

    proxy.freeze();
    const started = Date.now();
    // The rotating UPDATE is the refresh's first statement: the network holds it.
    expect(codeOf(await refresh(token, 3_000))).toEqual(UNAVAILABLE);
    expect(proxy.holds(ROTATION)).toBe(true);
    await partitionNoticed();
    // The only fixed wait: the retry must really come later than the grace window after the call started.
    await sleep(Math.max(0, started + REUSE_GRACE_MS + 500 - Date.now()));
    expect(await heal()).toBeGreaterThanOrEqual(1);

    // The held rotation reached the database after its call gave up: refused, nothing changed.
    const untouched = await sessionRow(sessionId);
    expect({ generation: untouched.generation, revoked: untouched.revoked_at !== null }).toEqual({ generation: 0, revoked: false });
    expect(untouched.refresh_secret_hash.equals(secretHash(token))).toBe(true);

    const retry = await refresh(token);
    expect(retry.error).toBeUndefined();
    const next = retry.response!.tokens!.refreshToken;
    const row = await sessionRow(sessionId);
    expect({ generation: row.generation, revoked_at: row.revoked_at, revoked_reason: row.revoked_reason }).toEqual({
      generation: 1,
      revoked_at: null,
      revoked_reason: null,
    });
    expect(row.refresh_secret_hash.equals(secretHash(next))).toBe(true);
    expect(await auditCount('refresh_token.reused', { sessionId })).toBe(0);
    expect(await auditCount('session.revoked', { sessionId })).toBe(0);

    const again = await refresh(next);
    expect(again.error).toBeUndefined();
    expect((await sessionRow(sessionId)).generation).toBe(2);
  });

  it('Logout: the retry succeeds and the session is revoked with LOGOUT exactly once', async () => {
    const signedIn = await signedInUser('logout-partition@example.com');
    const token = signedIn.tokens!.refreshToken;
    const sessionId = signedIn.sessionId;

    proxy.freeze();
    // The revoking statement is the logout's first: the network holds it.
    expect(codeOf(await logout(token, 3_000))).toEqual(UNAVAILABLE);
    expect(proxy.holds(LOGOUT_REVOCATION)).toBe(true);
    await partitionNoticed();
    expect(await heal()).toBeGreaterThanOrEqual(1);

    expect(await sessionRow(sessionId)).toMatchObject({ generation: 0, revoked_at: null, revoked_reason: null });
    expect(await auditCount('session.logged_out', { sessionId })).toBe(0);

    const retry = await logout(token);
    expect(retry.error).toBeUndefined();
    const row = await sessionRow(sessionId);
    expect(row.revoked_at).not.toBeNull();
    expect(row.revoked_reason).toBe('LOGOUT');
    expect(await auditCount('session.logged_out', { sessionId })).toBe(1);
    expect(await auditCount('refresh_token.reused', { sessionId })).toBe(0);
    // Revoked: the token no longer refreshes.
    expect(codeOf(await refresh(token)).reason).toBe('SESSION_REVOKED');
  });

  it('ChangePassword: the retry with the same current password succeeds; one password.changed; only the new password logs in', async () => {
    const email = 'password-partition@example.com';
    const signedIn = await signedInUser(email);
    const userId = signedIn.user!.id;
    const hashBefore = await passwordHashOf(userId);
    const change = (deadlineMs: number) =>
      rpc(auth, 'changePassword', { currentPassword: PASSWORD, newPassword: NEW_PASSWORD }, deadlineMs, bearer(signedIn));

    // The caller's credential is checked and the current password verified before the change is
    // written: the partition starts with the writing statement itself.
    const held = proxy.freezeOnStatement(PASSWORD_CHANGE);
    const attempt = await change(3_000);
    await held;
    expect(codeOf(attempt)).toEqual(UNAVAILABLE);
    await partitionNoticed();
    expect(await heal()).toBeGreaterThanOrEqual(1);

    expect(await passwordHashOf(userId)).toBe(hashBefore);
    expect(await auditCount('password.changed', { userId })).toBe(0);

    const retry = await change(10_000);
    expect(retry.error).toBeUndefined();
    expect(await auditCount('password.changed', { userId })).toBe(1);
    expect((await login(auth, email, NEW_PASSWORD)).user!.id).toBe(userId);
    const old = await rpc(auth, 'login', { email, password: PASSWORD, client: CLIENT_INFO }, 10_000);
    expect(codeOf(old).reason).toBe('INVALID_CREDENTIALS');
  });
});

describe('during a partition', () => {
  it('every call answers UNAVAILABLE before its own deadline, and health follows the partition', async () => {
    const email = 'mixed-partition@example.com';
    const first = await signedInUser(email);
    const second = await login(auth, email, PASSWORD);
    const third = await login(auth, email, PASSWORD);
    expect(await health()).toBe('SERVING');

    // Each call with a deadline of its own.
    const mix: [string, () => Promise<Result>][] = [
      ['Login', () => rpc(auth, 'login', { email, password: PASSWORD, client: CLIENT_INFO }, 2_500)],
      ['RefreshToken', () => refresh(first.tokens!.refreshToken, 3_000)],
      ['Logout', () => logout(second.tokens!.refreshToken, 2_000)],
      ['ValidateToken', () => rpc(auth, 'validateToken', { accessToken: third.tokens!.accessToken, checkRevocation: true }, 1_500)],
      ['ListSessions', () => rpc(sessions, 'listSessions', { userId: '', pageSize: 0, pageToken: '', state: 0 }, 2_800, bearer(third))],
      ['ListSessions (service)', () => rpc(sessions, 'listSessions', { userId: first.user!.id, pageSize: 0, pageToken: '', state: 0 }, 1_800, asService)],
    ];
    const outcomes = async () => Object.fromEntries(await Promise.all(mix.map(async ([name, send]) => [name, codeOf(await send())] as const)));
    const allUnavailable = Object.fromEntries(mix.map(([name]) => [name, UNAVAILABLE]));
    const before = await storeSnapshot(db.url);

    proxy.freeze();
    // Issued before the partition is noticed: each waits on the database until its own time is
    // up. A client deadline passing first would show as DEADLINE_EXCEEDED, not UNAVAILABLE.
    // ValidateToken with check_revocation is the exception: while the revocation view is fresh
    // (read within REVOCATION_MAX_STALENESS, its connection not known lost) it answers from memory.
    const early = await outcomes();
    expect([OK, UNAVAILABLE]).toContainEqual(early.ValidateToken);
    expect({ ...early, ValidateToken: UNAVAILABLE }).toEqual(allUnavailable);
    await partitionNoticed();
    // The view goes stale (its reads time out): from then on check_revocation needs the database.
    await waitFor(
      async () => codeOf(await rpc(auth, 'validateToken', { accessToken: third.tokens!.accessToken, checkRevocation: true }, 1_500)),
      (outcome) => outcome.code === status.UNAVAILABLE,
      10_000,
    );
    // Issued once it is noticed: refused at once.
    expect(await outcomes()).toEqual(allUnavailable);
    // Local validation needs no database and keeps working.
    expect((await rpc(auth, 'validateToken', { accessToken: third.tokens!.accessToken, checkRevocation: false }, 2_000)).error).toBeUndefined();
    await heal();

    // Whatever the partition held and delivered late changed nothing.
    expect(await storeSnapshot(db.url)).toEqual(before);
    const refreshed = await refresh(first.tokens!.refreshToken);
    expect(refreshed.error).toBeUndefined();
    expect((await rpc(auth, 'validateToken', { accessToken: third.tokens!.accessToken, checkRevocation: true }, 5_000)).error).toBeUndefined();
  });
});

describe('a write delivered to the database after its call gave up', () => {
  it('Register: changes nothing, and the same call made again succeeds', async () => {
    const before = await storeSnapshot(db.url);
    const request = { email: 'late-register@example.com', password: PASSWORD, displayName: 'Late' };

    const held = proxy.freezeOnStatement(USER_INSERT);
    const attempt = await rpc(auth, 'register', request, 1_500);
    await held;
    expect(codeOf(attempt)).toEqual(UNAVAILABLE);
    await partitionNoticed();
    expect(await heal()).toBeGreaterThanOrEqual(1);
    expect(await storeSnapshot(db.url)).toEqual(before);

    const retry = await rpc(auth, 'register', request, 10_000);
    expect(retry.error).toBeUndefined();
    const users = await query<{ n: number }>(db.url, 'select count(*)::int as n from users where email = $1', [request.email]);
    expect(users[0]!.n).toBe(1);
  });

  it('RevokeSession: changes nothing, and the same call made again succeeds', async () => {
    const signedIn = await signedInUser('late-revoke@example.com');
    const before = await storeSnapshot(db.url);

    const held = proxy.freezeOnStatement(SESSION_REVOCATION);
    const attempt = await rpc(sessions, 'revokeSession', { sessionId: signedIn.sessionId }, 1_500, asService);
    await held;
    expect(codeOf(attempt)).toEqual(UNAVAILABLE);
    await partitionNoticed();
    expect(await heal()).toBeGreaterThanOrEqual(1);
    expect(await storeSnapshot(db.url)).toEqual(before);

    const retry = await rpc(sessions, 'revokeSession', { sessionId: signedIn.sessionId }, 10_000, asService);
    expect(retry.error).toBeUndefined();
    expect((await sessionRow(signedIn.sessionId)).revoked_reason).toBe('REVOKED_BY_SERVICE');
    expect(await auditCount('session.revoked', { sessionId: signedIn.sessionId })).toBe(1);
  });
});

/**
 * Calls that write in two statements: the change itself, then an idempotent sweep of sessions
 * that a racing login created with the old password. The partition starts at the second
 * statement, after the first has committed. The contract is the one above: a call answered with a
 * failure has changed nothing, and the same call made again after the heal succeeds; or the call
 * succeeded. Either way exactly one change.
 */
describe('a partition between the statements of one call', () => {
  const RACED_SWEEP = 'select id as user_id from users where id = ';

  it('ChangePassword: an UNAVAILABLE answer means the password did not change, and the retry succeeds', async () => {
    const email = 'second-statement-change@example.com';
    const signedIn = await signedInUser(email);
    await login(auth, email, PASSWORD);
    const userId = signedIn.user!.id;
    const hashBefore = await passwordHashOf(userId);
    const change = (deadlineMs: number) =>
      rpc(auth, 'changePassword', { currentPassword: PASSWORD, newPassword: NEW_PASSWORD }, deadlineMs, bearer(signedIn));

    const held = proxy.freezeOnStatement(RACED_SWEEP);
    const attempt = await change(3_000);
    await held;
    await partitionNoticed();
    expect(await heal()).toBeGreaterThanOrEqual(1);

    if (attempt.error) {
      expect(codeOf(attempt)).toEqual(UNAVAILABLE);
      expect({ passwordChanged: (await passwordHashOf(userId)) !== hashBefore, events: await auditCount('password.changed', { userId }) }).toEqual({
        passwordChanged: false,
        events: 0,
      });
      const retry = await change(10_000);
      expect(codeOf(retry)).toEqual({ code: undefined, reason: 'no error' });
    }
    expect(await auditCount('password.changed', { userId })).toBe(1);
    expect((await login(auth, email, NEW_PASSWORD)).user!.id).toBe(userId);
  });

  it('ResetPassword: an UNAVAILABLE answer means the token was not used, and the retry succeeds', async () => {
    const email = 'second-statement-reset@example.com';
    const userId = (await register(auth, email, PASSWORD)).user!.id;
    await login(auth, email, PASSWORD);
    const issued = await rpc(auth, 'requestPasswordReset', { email }, 10_000, asService);
    expect(issued.error).toBeUndefined();
    const token = (issued.response as { resetToken: string }).resetToken;
    const hashBefore = await passwordHashOf(userId);
    const reset = (deadlineMs: number) => rpc(auth, 'resetPassword', { token, newPassword: NEW_PASSWORD }, deadlineMs);

    const held = proxy.freezeOnStatement(RACED_SWEEP);
    const attempt = await reset(3_000);
    await held;
    await partitionNoticed();
    expect(await heal()).toBeGreaterThanOrEqual(1);

    if (attempt.error) {
      expect(codeOf(attempt)).toEqual(UNAVAILABLE);
      expect({ passwordChanged: (await passwordHashOf(userId)) !== hashBefore, events: await auditCount('password.reset', { userId }) }).toEqual({
        passwordChanged: false,
        events: 0,
      });
      const retry = await reset(10_000);
      expect(codeOf(retry)).toEqual({ code: undefined, reason: 'no error' });
    }
    expect(await auditCount('password.reset', { userId })).toBe(1);
    expect((await login(auth, email, NEW_PASSWORD)).user!.id).toBe(userId);
  });
});
