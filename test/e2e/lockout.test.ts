/**
 * Per-account lockout (issue 18). Failed password checks are counted atomically in the database;
 * once LOGIN_LOCKOUT_THRESHOLD of them fall within the window, Login answers ACCOUNT_LOCKED
 * (PERMISSION_DENIED) with a RetryInfo before any hash, even for the right password, and an
 * unknown email gets exactly the same answers. The clock is injected: locks expire by moving it.
 */
import { status, type ServiceError } from '@grpc/grpc-js';
import bcrypt from 'bcrypt';
import { jest } from '@jest/globals';
import type { ChangePasswordResponse, LoginResponse, UnlockUserResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { decodeStatusDetails } from '../../src/grpc/errors.js';
import { type AuthServer, failure, ManualClock, MINUTE } from '../support/auth.js';
import { accountTestKit, asService, bearerOf, type Credential, PASSWORD } from '../support/accounts.js';
import { startAccountServer } from '../support/accounts.js';
import { query } from '../support/database.js';

const THRESHOLD = 10;
const CONCURRENCY = 2;
const clock = new ManualClock(Date.parse('2026-06-01T12:00:00.000Z'));
let server: AuthServer;

beforeAll(async () => {
  server = await startAccountServer(clock, {
    LOGIN_LOCKOUT_THRESHOLD: String(THRESHOLD),
    LOGIN_LOCKOUT_WINDOW: '15m',
    LOGIN_LOCKOUT_DURATION: '1m',
    LOGIN_LOCKOUT_MAX_DURATION: '4m',
    PASSWORD_HASH_CONCURRENCY: String(CONCURRENCY),
    // Every one of the 50 parallel attempts gets a place in the hashing queue.
    PASSWORD_HASH_QUEUE_LIMIT: '100',
  });
});

afterAll(async () => {
  await server?.close();
});

const kit = accountTestKit(() => server);
const url = () => server.db.url;

const loginAs = (email: string, password: string) =>
  kit.rpc<LoginResponse>('login', { email, password, client: { ipAddress: '203.0.113.9', userAgent: 'jest', deviceName: '' } });

/** What a client sees of a failed call: code, reason and the RetryInfo delay in ms (or 'none'). */
function answer(outcome: { error?: ServiceError }): { code?: number; reason?: string; retryMs: number | 'none' } {
  const seen = failure(outcome.error);
  const delay = decodeStatusDetails(outcome.error?.metadata).retryInfo?.retryDelay;
  return { code: seen.code, reason: seen.reason, retryMs: delay ? delay.seconds * 1000 + delay.nanos / 1e6 : 'none' };
}

const LOCKED = (retryMs: number) => ({ code: status.PERMISSION_DENIED, reason: 'ACCOUNT_LOCKED', retryMs });
const WRONG = { code: status.UNAUTHENTICATED, reason: 'INVALID_CREDENTIALS', retryMs: 'none' as const };

async function auditOf(userId: string): Promise<{ event_type: string; details: Record<string, unknown> }[]> {
  return query(url(), `select event_type, details from audit_events where user_id = $1 and event_type not in ('user.registered') order by id`, [userId]);
}

async function failureMetric(reason: string): Promise<number> {
  const body = await (await fetch(`http://127.0.0.1:${server.app.httpPort}/metrics`)).text();
  return Number(new RegExp(`^latchkey_login_failures_total\\{reason="${reason}"\\} (\\S+)$`, 'm').exec(body)?.[1] ?? Number.NaN);
}

describe('50 parallel wrong-password logins against one account', () => {
  it('evaluates at most the threshold plus the hashing concurrency, then answers ACCOUNT_LOCKED; the right password is refused during the lock and works after it', async () => {
    const userId = await kit.newUser('parallel@example.com');
    const compare = jest.spyOn(bcrypt, 'compare');
    const invalidBefore = await failureMetric('INVALID_CREDENTIALS');
    const lockedBefore = await failureMetric('ACCOUNT_LOCKED');
    let outcomes: ReturnType<typeof answer>[];
    try {
      outcomes = (await Promise.all(Array.from({ length: 50 }, (_, i) => loginAs('parallel@example.com', `wrong password ${i}`)))).map(answer);
      // Evaluated: a password compared. Only the attempts that read the account before the lock was set.
      expect(compare.mock.calls.length).toBeGreaterThanOrEqual(THRESHOLD);
      expect(compare.mock.calls.length).toBeLessThanOrEqual(THRESHOLD + CONCURRENCY);
    } finally {
      compare.mockRestore();
    }
    const wrong = outcomes.filter((o) => o.reason === 'INVALID_CREDENTIALS');
    const locked = outcomes.filter((o) => o.reason === 'ACCOUNT_LOCKED');
    expect(wrong.length + locked.length).toBe(50);
    expect(wrong.length).toBeGreaterThanOrEqual(THRESHOLD);
    expect(wrong.length).toBeLessThanOrEqual(THRESHOLD + CONCURRENCY);
    for (const o of wrong) expect(o).toEqual(WRONG);
    // The clock did not move: every lock answer says the full first duration.
    for (const o of locked) expect(o).toEqual(LOCKED(MINUTE));
    expect((await failureMetric('INVALID_CREDENTIALS')) - invalidBefore).toBe(wrong.length);
    expect((await failureMetric('ACCOUNT_LOCKED')) - lockedBefore).toBe(locked.length);

    // A flood writes two audit rows: the window's first failure and the lock.
    expect((await auditOf(userId)).map((row) => row.event_type)).toEqual(['login.failed', 'account.locked']);

    // The right password during the lock: refused before any hash, nothing written.
    clock.advance(30_000);
    const compareDuringLock = jest.spyOn(bcrypt, 'compare');
    try {
      const before = await kit.mark();
      expect(answer(await loginAs('parallel@example.com', PASSWORD))).toEqual(LOCKED(30_000));
      expect((await kit.changesSince(before)).changed).toEqual([]);
      expect(compareDuringLock).not.toHaveBeenCalled();
    } finally {
      compareDuringLock.mockRestore();
    }

    // The lock lifts by itself: a millisecond before its end still locked, at its end the login works.
    clock.advance(30_000 - 1);
    expect(answer(await loginAs('parallel@example.com', PASSWORD))).toEqual(LOCKED(1));
    clock.advance(1);
    expect((await loginAs('parallel@example.com', PASSWORD)).error).toBeUndefined();
    // The success forgot the failures: the account's throttle row is gone.
    expect(await query(url(), 'select id from login_throttles')).toEqual([]);
  });
});

describe('an unknown email and a registered one under the same attack', () => {
  it('get identical codes, reasons and RetryInfo, through repeated locks that double up to the maximum', async () => {
    await kit.newUser('known@example.com');
    const seen: Record<'known' | 'unknown', ReturnType<typeof answer>[]> = { known: [], unknown: [] };
    const both = async (password: string) => {
      seen.known.push(answer(await loginAs('known@example.com', password)));
      seen.unknown.push(answer(await loginAs('nobody-here@example.com', password)));
    };
    const lockLengths = [1, 2, 4, 4].map((m) => m * MINUTE);
    for (const length of lockLengths) {
      for (let i = 0; i < THRESHOLD; i++) await both(`wrong guess ${i}`);
      // Locked now: the next attempts are refused without a hash, even a right password for the known one.
      await both('another guess');
      clock.advance(length - 1);
      await both(PASSWORD);
      clock.advance(1);
    }
    expect(seen.unknown).toEqual(seen.known);
    const round = (length: number) => [...Array<typeof WRONG>(THRESHOLD).fill(WRONG), LOCKED(length), LOCKED(1)];
    expect(seen.known).toEqual(lockLengths.flatMap(round));
    // Same rows too: one throttle row for each, in the same state.
    const rows = await query<{ failures: number; lock_count: number; locked_until: Date }>(url(), 'select failures, lock_count, locked_until from login_throttles order by id');
    expect(rows).toHaveLength(2);
    expect(rows[0]).toEqual(rows[1]);
    expect(rows[0]!.lock_count).toBe(4);
  });

  it('answers the right password with ACCOUNT_LOCKED during the lock, and forgets everything after a successful login', async () => {
    await kit.newUser('forgets@example.com');
    for (let i = 0; i < THRESHOLD; i++) expect(answer(await loginAs('forgets@example.com', `nope ${i}`))).toEqual(WRONG);
    expect(answer(await loginAs('forgets@example.com', PASSWORD))).toEqual(LOCKED(MINUTE));
    clock.advance(MINUTE);
    expect((await loginAs('forgets@example.com', PASSWORD)).error).toBeUndefined();
    // A fresh start: THRESHOLD - 1 failures lock nothing, and the next lock would be the shortest again.
    for (let i = 0; i < THRESHOLD - 1; i++) expect(answer(await loginAs('forgets@example.com', `nope ${i}`))).toEqual(WRONG);
    expect((await loginAs('forgets@example.com', PASSWORD)).error).toBeUndefined();
  });
});

describe('ChangePassword', () => {
  it('counts a wrong current password against the same lock, and is refused with ACCOUNT_LOCKED while it holds', async () => {
    const userId = await kit.newUser('changer@example.com');
    const signedIn = (await loginAs('changer@example.com', PASSWORD)).response!;
    const change = (current: string) =>
      kit.rpc<ChangePasswordResponse>('changePassword', { currentPassword: current, newPassword: 'a brand new passphrase', revokeOtherSessions: false }, bearerOf(signedIn));
    for (let i = 0; i < THRESHOLD; i++) expect(answer(await change(`not it ${i}`))).toEqual(WRONG);
    expect(answer(await loginAs('changer@example.com', PASSWORD))).toEqual(LOCKED(MINUTE));
    const before = await kit.mark();
    expect(answer(await change(PASSWORD))).toEqual(LOCKED(MINUTE));
    expect((await kit.changesSince(before)).changed).toEqual([]);
    expect((await auditOf(userId)).map((row) => row.event_type)).toEqual([
      'login.succeeded',
      // The first failure of the window, then one password.change_failed per attempt, the lock with the last.
      'login.failed',
      ...Array(THRESHOLD - 1).fill('password.change_failed'),
      'account.locked',
      'password.change_failed',
    ]);
    clock.advance(MINUTE);
    expect((await change(PASSWORD)).error).toBeUndefined();
  });
});

describe('UnlockUser', () => {
  const lockOut = async (email: string) => {
    for (let i = 0; i < THRESHOLD; i++) await loginAs(email, `bad ${i}`);
    expect(answer(await loginAs(email, PASSWORD))).toEqual(LOCKED(MINUTE));
  };

  it('needs a service credential: a user is PERMISSION_DENIED, no credential TOKEN_INVALID, and nothing changes', async () => {
    const userId = await kit.newUser('unlock-perm@example.com');
    const someone = await kit.newUser('unlock-someone@example.com');
    const user = (await loginAs('unlock-someone@example.com', PASSWORD)).response!;
    expect(someone).toBeDefined();
    await lockOut('unlock-perm@example.com');
    const asUser: Credential = bearerOf(user);
    await kit.expectRejected('unlockUser', { userId }, asUser, { code: status.PERMISSION_DENIED, reason: 'PERMISSION_DENIED' });
    await kit.expectRejected('unlockUser', { userId }, undefined, { code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' });
    expect(answer(await loginAs('unlock-perm@example.com', PASSWORD))).toEqual(LOCKED(MINUTE));
  });

  it('answers USER_NOT_FOUND for an unknown user and INVALID_ARGUMENT for an empty id, changing nothing', async () => {
    await kit.expectRejected('unlockUser', { userId: '00000000-0000-4000-8000-000000000000' }, asService, { code: status.NOT_FOUND, reason: 'USER_NOT_FOUND' });
    await kit.expectRejected('unlockUser', { userId: '' }, asService, { code: status.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT', fields: ['user_id'] });
  });

  it('lifts the lock at once and forgets the failures, audited', async () => {
    const userId = await kit.newUser('unlock-me@example.com');
    await lockOut('unlock-me@example.com');
    const unlocked = await kit.rpc<UnlockUserResponse>('unlockUser', { userId }, asService);
    expect(unlocked.error).toBeUndefined();
    expect(unlocked.response).toMatchObject({ user: { id: userId, email: 'unlock-me@example.com' }, wasLocked: true });
    expect((await auditOf(userId)).at(-1)).toEqual({ event_type: 'account.unlocked', details: { actor: 'api_key' } });
    expect((await loginAs('unlock-me@example.com', PASSWORD)).error).toBeUndefined();
    // Unlocking an unlocked user succeeds without change.
    const again = await kit.rpc<UnlockUserResponse>('unlockUser', { userId }, asService);
    expect(again.response?.wasLocked).toBe(false);
  });
});
