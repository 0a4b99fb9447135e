import { status } from '@grpc/grpc-js';
import { createHash } from 'node:crypto';
import type {
  ChangePasswordResponse,
  DisableUserResponse,
  EnableUserResponse,
  GetUserResponse,
  LoginResponse,
  RefreshTokenResponse,
  RequestEmailVerificationResponse,
  RequestPasswordResetResponse,
  SetUserRolesResponse,
  ValidateTokenResponse,
  VerifyEmailResponse,
} from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { type AuthServer, DAY, failure, login, ManualClock, MINUTE } from '../support/auth.js';
import { accountTestKit, type AuditRow, asService, bearerOf, type Credential, PASSWORD, startAccountServer } from '../support/accounts.js';
import { query } from '../support/database.js';

const clock = new ManualClock();
const HOUR = 60 * MINUTE;
const RESET_PAGE = 'https://app.example.com/account/reset?lang=en';
const TOKEN_FORMAT = /^[A-Za-z0-9_-]{43}$/;
let server: AuthServer;

beforeAll(async () => {
  server = await startAccountServer(clock, { PASSWORD_RESET_URL: RESET_PAGE });
});

afterAll(async () => {
  await server?.close();
});

const kit = accountTestKit(() => server);
const { rpc, expectRejected } = kit;
const url = () => server.db.url;
const sha256 = (token: string) => createHash('sha256').update(Buffer.from(token, 'base64url')).digest('hex');

/** Audit rows in a stable order: rows written by one statement have no defined order among themselves. */
const sorted = (rows: AuditRow[]) =>
  [...rows].sort((a, b) => `${a.event_type} ${a.session_id}`.localeCompare(`${b.event_type} ${b.session_id}`));

/** The `session.revoked` audit rows of one revoking call, in `sorted` order. */
const revokedRows = (userId: string, sessionIds: string[], reason: string) =>
  [...sessionIds].sort().map((id) => ({ event_type: 'session.revoked', user_id: userId, session_id: id, details: { reason } }));

async function requestReset(email: string, credential: Credential = asService): Promise<RequestPasswordResetResponse> {
  const { response, error } = await rpc<RequestPasswordResetResponse>('requestPasswordReset', { email }, credential);
  expect(error).toBeUndefined();
  return response!;
}

async function requestVerification(userId: string): Promise<RequestEmailVerificationResponse> {
  const { response, error } = await rpc<RequestEmailVerificationResponse>('requestEmailVerification', { userId }, asService);
  expect(error).toBeUndefined();
  return response!;
}

async function loginFailure(email: string, password: string) {
  const { error } = await rpc('login', { email, password });
  return failure(error);
}

/** The text of every row of `table` except the given ids: equal before and after means those rows were not touched. */
async function rowsExcept(table: 'users' | 'sessions', ids: string[]): Promise<string[]> {
  const rows = await query<{ row: string }>(url(), `select t::text as row from ${table} t where not (id::text = any($1)) order by id`, [ids]);
  return rows.map((r) => r.row);
}

describe('ChangePassword', () => {
  const NEW_PASSWORD = 'a completely new passphrase';

  it('replaces the password and revokes every other active session of the user, and nothing else', async () => {
    const alice = await kit.newUser('change-alice@example.com');
    const bob = await kit.newUser('change-bob@example.com');
    const caller = await login(server.client, 'change-alice@example.com');
    const phone = await login(server.client, 'change-alice@example.com');
    const tablet = await login(server.client, 'change-alice@example.com');
    const loggedOut = await login(server.client, 'change-alice@example.com');
    expect((await rpc('logout', { refreshToken: loggedOut.tokens!.refreshToken })).error).toBeUndefined();
    const lapsed = await login(server.client, 'change-alice@example.com');
    await query(url(), 'update sessions set idle_expires_at = $1 where id = $2', [new Date(clock.ms - 1), lapsed.sessionId]);
    const bobs = await login(server.client, 'change-bob@example.com');

    clock.advance(MINUTE);
    const untouchedSessions = await rowsExcept('sessions', [phone.sessionId, tablet.sessionId]);
    const otherUsers = await rowsExcept('users', [alice]);
    const mark = await kit.mark();
    const { response, error } = await rpc<ChangePasswordResponse>(
      'changePassword',
      { currentPassword: PASSWORD, newPassword: NEW_PASSWORD },
      bearerOf(caller),
    );
    expect(error).toBeUndefined();
    expect(response).toEqual({ revokedSessionCount: 2 });

    const { changed, audit } = await kit.changesSince(mark);
    expect(changed).toEqual(['users', 'sessions', 'audit_events']);
    expect(sorted(audit)).toEqual([
      { event_type: 'password.changed', user_id: alice, session_id: caller.sessionId, details: { revokeOtherSessions: true, revokedSessions: 2 } },
      ...revokedRows(alice, [phone.sessionId, tablet.sessionId], 'PASSWORD_CHANGED'),
    ]);
    expect(await kit.sessionStates(alice)).toEqual({
      [caller.sessionId]: 'active',
      [phone.sessionId]: 'PASSWORD_CHANGED',
      [tablet.sessionId]: 'PASSWORD_CHANGED',
      [loggedOut.sessionId]: 'LOGOUT',
      [lapsed.sessionId]: 'active',
    });
    expect(await kit.sessionStates(bob)).toEqual({ [bobs.sessionId]: 'active' });
    expect(await rowsExcept('sessions', [phone.sessionId, tablet.sessionId])).toEqual(untouchedSessions);
    expect(await rowsExcept('users', [alice])).toEqual(otherUsers);
    const [row] = await query<{ password_changed_at: Date; updated_at: Date }>(url(), 'select password_changed_at, updated_at from users where id = $1', [alice]);
    expect(row).toEqual({ password_changed_at: new Date(clock.ms), updated_at: new Date(clock.ms) });

    // The caller's own session goes on; the others are over.
    const refreshed = await rpc<RefreshTokenResponse>('refreshToken', { refreshToken: caller.tokens!.refreshToken });
    expect(refreshed.error).toBeUndefined();
    const checked = await rpc('validateToken', { accessToken: refreshed.response!.tokens!.accessToken, checkRevocation: true });
    expect(checked.error).toBeUndefined();
    expect(failure((await rpc('refreshToken', { refreshToken: phone.tokens!.refreshToken })).error)).toMatchObject({
      code: status.UNAUTHENTICATED,
      reason: 'SESSION_REVOKED',
    });
    expect((await rpc('refreshToken', { refreshToken: bobs.tokens!.refreshToken })).error).toBeUndefined();

    expect(await loginFailure('change-alice@example.com', PASSWORD)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'INVALID_CREDENTIALS' });
    await login(server.client, 'change-alice@example.com', NEW_PASSWORD);
  });

  it('with revoke_other_sessions false keeps every session', async () => {
    const carl = await kit.newUser('change-keep@example.com');
    const caller = await login(server.client, 'change-keep@example.com');
    const other = await login(server.client, 'change-keep@example.com');
    const mark = await kit.mark();
    const { response, error } = await rpc<ChangePasswordResponse>(
      'changePassword',
      { currentPassword: PASSWORD, newPassword: NEW_PASSWORD, revokeOtherSessions: false },
      bearerOf(caller),
    );
    expect(error).toBeUndefined();
    expect(response).toEqual({ revokedSessionCount: 0 });
    const { changed, audit } = await kit.changesSince(mark);
    expect(changed).toEqual(['users', 'audit_events']);
    expect(audit).toEqual([
      { event_type: 'password.changed', user_id: carl, session_id: caller.sessionId, details: { revokeOtherSessions: false, revokedSessions: 0 } },
    ]);
    expect(await kit.sessionStates(carl)).toEqual({ [caller.sessionId]: 'active', [other.sessionId]: 'active' });
    await login(server.client, 'change-keep@example.com', NEW_PASSWORD);
  });

  it('with revoke_other_sessions true set explicitly revokes the others', async () => {
    const user = await kit.newUser('change-explicit@example.com');
    const caller = await login(server.client, 'change-explicit@example.com');
    const other = await login(server.client, 'change-explicit@example.com');
    const { response } = await rpc<ChangePasswordResponse>(
      'changePassword',
      { currentPassword: PASSWORD, newPassword: NEW_PASSWORD, revokeOtherSessions: true },
      bearerOf(caller),
    );
    expect(response).toEqual({ revokedSessionCount: 1 });
    expect(await kit.sessionStates(user)).toEqual({ [caller.sessionId]: 'active', [other.sessionId]: 'PASSWORD_CHANGED' });
  });

  it('a wrong current password is INVALID_CREDENTIALS: audited and counted against the lock, nothing else changes', async () => {
    const user = await kit.newUser('change-wrong@example.com');
    const caller = await login(server.client, 'change-wrong@example.com');
    const other = await login(server.client, 'change-wrong@example.com');
    const mark = await kit.mark();
    const { error } = await rpc('changePassword', { currentPassword: 'not my password', newPassword: NEW_PASSWORD }, bearerOf(caller));
    const seen = failure(error);
    expect(seen).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'INVALID_CREDENTIALS', fields: [] });
    expect(seen.message).not.toContain('not my password');
    expect(seen.message).not.toContain(NEW_PASSWORD);
    expect(await kit.changesSince(mark)).toEqual({
      changed: ['audit_events', 'login_throttles'],
      audit: [
        // The first failed password check of the window (issue 18: rate-limited).
        { event_type: 'login.failed', user_id: user, session_id: null, details: { reason: 'INVALID_CREDENTIALS', rpc: 'ChangePassword' } },
        { event_type: 'password.change_failed', user_id: user, session_id: caller.sessionId, details: { reason: 'INVALID_CREDENTIALS' } },
      ],
    });
    expect(await kit.sessionStates(user)).toEqual({ [caller.sessionId]: 'active', [other.sessionId]: 'active' });
    await login(server.client, 'change-wrong@example.com', PASSWORD);
  });

  it('of two concurrent changes from the same current password, exactly one wins', async () => {
    await kit.newUser('change-race@example.com');
    const caller = await login(server.client, 'change-race@example.com');
    const candidates = ['first new passphrase', 'second new passphrase'];
    const results = await Promise.all(
      candidates.map((newPassword) => rpc('changePassword', { currentPassword: PASSWORD, newPassword }, bearerOf(caller))),
    );
    expect(results.filter((r) => !r.error)).toHaveLength(1);
    expect(results.filter((r) => r.error).map((r) => failure(r.error).reason)).toEqual(['INVALID_CREDENTIALS']);
    const winner = candidates[results.findIndex((r) => !r.error)]!;
    const loser = candidates.find((c) => c !== winner)!;
    expect(await loginFailure('change-race@example.com', loser)).toMatchObject({ reason: 'INVALID_CREDENTIALS' });
    await login(server.client, 'change-race@example.com', winner);
  });
});

describe('password reset', () => {
  const NEW_PASSWORD = 'a reset passphrase';

  it('issues a single-use token and link; redeeming it sets the password and revokes every session of the user, and nothing else', async () => {
    const carol = await kit.newUser('reset-carol@example.com');
    const dave = await kit.newUser('reset-dave@example.com');
    const laptop = await login(server.client, 'reset-carol@example.com');
    const phone = await login(server.client, 'reset-carol@example.com');
    const loggedOut = await login(server.client, 'reset-carol@example.com');
    await rpc('logout', { refreshToken: loggedOut.tokens!.refreshToken });
    const daves = await login(server.client, 'reset-dave@example.com');

    let mark = await kit.mark();
    const issued = await requestReset('  Reset-Carol@Example.COM ');
    expect(issued.resetToken).toMatch(TOKEN_FORMAT);
    expect(issued.resetLink).toBe(`${RESET_PAGE}&token=${issued.resetToken}`);
    expect(new URL(issued.resetLink).searchParams.get('token')).toBe(issued.resetToken);
    expect(issued.expiresAt).toEqual(new Date(clock.ms + HOUR));
    expect(await kit.changesSince(mark)).toEqual({
      changed: ['one_time_tokens', 'audit_events'],
      audit: [
        {
          event_type: 'password.reset_requested',
          user_id: carol,
          session_id: null,
          details: { actor: 'api_key', email: 'reset-carol@example.com', outcome: 'issued' },
        },
      ],
    });
    const stored = await query(
      url(),
      `select purpose, encode(token_hash, 'hex') as token_hash, email, created_at, expires_at, used_at from one_time_tokens where user_id = $1`,
      [carol],
    );
    expect(stored).toEqual([
      {
        purpose: 'password_reset',
        token_hash: sha256(issued.resetToken),
        email: 'reset-carol@example.com',
        created_at: new Date(clock.ms),
        expires_at: new Date(clock.ms + HOUR),
        used_at: null,
      },
    ]);

    clock.advance(MINUTE);
    const untouchedSessions = await rowsExcept('sessions', [laptop.sessionId, phone.sessionId]);
    const otherUsers = await rowsExcept('users', [carol]);
    mark = await kit.mark();
    const reset = await rpc('resetPassword', { token: issued.resetToken, newPassword: NEW_PASSWORD });
    expect(reset).toEqual({ response: {} });
    const { changed, audit } = await kit.changesSince(mark);
    expect(changed).toEqual(['users', 'sessions', 'one_time_tokens', 'audit_events']);
    expect(sorted(audit)).toEqual([
      { event_type: 'password.reset', user_id: carol, session_id: null, details: { revokedSessions: 2 } },
      ...revokedRows(carol, [laptop.sessionId, phone.sessionId], 'PASSWORD_RESET'),
    ]);
    expect(await kit.sessionStates(carol)).toEqual({
      [laptop.sessionId]: 'PASSWORD_RESET',
      [phone.sessionId]: 'PASSWORD_RESET',
      [loggedOut.sessionId]: 'LOGOUT',
    });
    expect(await kit.sessionStates(dave)).toEqual({ [daves.sessionId]: 'active' });
    expect(await rowsExcept('sessions', [laptop.sessionId, phone.sessionId])).toEqual(untouchedSessions);
    expect(await rowsExcept('users', [carol])).toEqual(otherUsers);
    const [user] = await query(url(), 'select password_changed_at, updated_at from users where id = $1', [carol]);
    expect(user).toEqual({ password_changed_at: new Date(clock.ms), updated_at: new Date(clock.ms) });
    const [token] = await query(url(), 'select used_at from one_time_tokens where user_id = $1', [carol]);
    expect(token).toEqual({ used_at: new Date(clock.ms) });

    expect(await loginFailure('reset-carol@example.com', PASSWORD)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'INVALID_CREDENTIALS' });
    await login(server.client, 'reset-carol@example.com', NEW_PASSWORD);

    // Single use: the second redemption fails and changes nothing.
    await expectRejected('resetPassword', { token: issued.resetToken, newPassword: 'yet another passphrase' }, undefined, {
      code: status.UNAUTHENTICATED,
      reason: 'TOKEN_INVALID',
    });
  });

  it('a token works until PASSWORD_RESET_TTL has passed, then fails with TOKEN_EXPIRED', async () => {
    await kit.newUser('reset-early@example.com');
    await kit.newUser('reset-late@example.com');
    const early = await requestReset('reset-early@example.com');
    const late = await requestReset('reset-late@example.com');
    clock.advance(HOUR - 1);
    expect((await rpc('resetPassword', { token: early.resetToken, newPassword: NEW_PASSWORD })).error).toBeUndefined();
    clock.advance(1);
    const message = await expectRejected('resetPassword', { token: late.resetToken, newPassword: NEW_PASSWORD }, undefined, {
      code: status.UNAUTHENTICATED,
      reason: 'TOKEN_EXPIRED',
    });
    expect(message).toBe('the token has expired');
    await login(server.client, 'reset-late@example.com', PASSWORD);
  });

  it('a newer token supersedes the older one', async () => {
    const user = await kit.newUser('reset-twice@example.com');
    const older = await requestReset('reset-twice@example.com');
    const newer = await requestReset('reset-twice@example.com');
    expect(newer.resetToken).not.toBe(older.resetToken);
    const rows = await query(url(), `select encode(token_hash, 'hex') as hash from one_time_tokens where user_id = $1`, [user]);
    expect(rows).toEqual([{ hash: sha256(newer.resetToken) }]);
    await expectRejected('resetPassword', { token: older.resetToken, newPassword: NEW_PASSWORD }, undefined, {
      code: status.UNAUTHENTICATED,
      reason: 'TOKEN_INVALID',
    });
    expect((await rpc('resetPassword', { token: newer.resetToken, newPassword: NEW_PASSWORD })).error).toBeUndefined();
    await login(server.client, 'reset-twice@example.com', NEW_PASSWORD);
  });

  it.each([
    ['an unknown email', 'reset-nobody@example.com', 'unknown_email'],
    ['a disabled account', 'reset-disabled@example.com', 'account_disabled'],
  ])('%s gets the same shape, with a token that is never stored and never works', async (_name, email, outcome) => {
    const userId = outcome === 'account_disabled' ? await kit.newUser(email) : null;
    if (userId) expect((await rpc('disableUser', { userId }, asService)).error).toBeUndefined();
    await kit.newUser(`known-${email}`);
    const known = await requestReset(`known-${email}`);
    const mark = await kit.mark();
    const issued = await requestReset(email);
    expect(Object.keys(issued).sort()).toEqual(Object.keys(known).sort());
    expect(issued.resetToken).toMatch(TOKEN_FORMAT);
    expect(issued.resetLink).toBe(`${RESET_PAGE}&token=${issued.resetToken}`);
    expect(issued.expiresAt).toEqual(new Date(clock.ms + HOUR));
    expect(await kit.changesSince(mark)).toEqual({
      changed: ['audit_events'],
      audit: [{ event_type: 'password.reset_requested', user_id: userId, session_id: null, details: { actor: 'api_key', email, outcome } }],
    });
    await expectRejected('resetPassword', { token: issued.resetToken, newPassword: NEW_PASSWORD }, undefined, {
      code: status.UNAUTHENTICATED,
      reason: 'TOKEN_INVALID',
    });
  });

  it('a token issued before the account was disabled fails with ACCOUNT_DISABLED and changes nothing', async () => {
    const user = await kit.newUser('reset-then-disabled@example.com');
    const issued = await requestReset('reset-then-disabled@example.com');
    expect((await rpc('disableUser', { userId: user }, asService)).error).toBeUndefined();
    await expectRejected('resetPassword', { token: issued.resetToken, newPassword: NEW_PASSWORD }, undefined, {
      code: status.PERMISSION_DENIED,
      reason: 'ACCOUNT_DISABLED',
    });
  });

  it('a token issued for an address the user has since changed fails with TOKEN_INVALID', async () => {
    const user = await kit.newUser('reset-moved@example.com');
    const issued = await requestReset('reset-moved@example.com');
    await query(url(), `update users set email = 'reset-moved-new@example.com' where id = $1`, [user]);
    await expectRejected('resetPassword', { token: issued.resetToken, newPassword: NEW_PASSWORD }, undefined, {
      code: status.UNAUTHENTICATED,
      reason: 'TOKEN_INVALID',
    });
  });

  it('a weak new password is refused before the token is spent', async () => {
    await kit.newUser('reset-weak@example.com');
    const issued = await requestReset('reset-weak@example.com');
    await expectRejected('resetPassword', { token: issued.resetToken, newPassword: 'short' }, undefined, {
      code: status.INVALID_ARGUMENT,
      reason: 'WEAK_PASSWORD',
      fields: ['new_password'],
    });
    expect((await rpc('resetPassword', { token: issued.resetToken, newPassword: NEW_PASSWORD })).error).toBeUndefined();
  });

  it('of four concurrent redemptions of one token, exactly one succeeds', async () => {
    const user = await kit.newUser('reset-race@example.com');
    const issued = await requestReset('reset-race@example.com');
    const candidates = ['race passphrase one', 'race passphrase two', 'race passphrase three', 'race passphrase four'];
    const mark = await kit.mark();
    const results = await Promise.all(candidates.map((newPassword) => rpc('resetPassword', { token: issued.resetToken, newPassword })));
    expect(results.filter((r) => !r.error)).toHaveLength(1);
    expect(results.filter((r) => r.error).map((r) => failure(r.error))).toEqual(
      Array(3).fill(expect.objectContaining({ code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' })),
    );
    const { audit } = await kit.changesSince(mark);
    expect(audit).toEqual([{ event_type: 'password.reset', user_id: user, session_id: null, details: { revokedSessions: 0 } }]);
    const winner = candidates[results.findIndex((r) => !r.error)]!;
    for (const candidate of candidates.filter((c) => c !== winner)) {
      expect(await loginFailure('reset-race@example.com', candidate)).toMatchObject({ reason: 'INVALID_CREDENTIALS' });
    }
    await login(server.client, 'reset-race@example.com', winner);
  });

  it('a reset token is not a verification token, nor the other way round', async () => {
    const user = await kit.newUser('reset-purpose@example.com');
    const reset = await requestReset('reset-purpose@example.com');
    const verification = await requestVerification(user);
    await expectRejected('verifyEmail', { token: reset.resetToken }, undefined, { code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' });
    await expectRejected('resetPassword', { token: verification.verificationToken, newPassword: NEW_PASSWORD }, undefined, {
      code: status.UNAUTHENTICATED,
      reason: 'TOKEN_INVALID',
    });
  });
});

describe('email verification', () => {
  it('issues a single-use token for the current address; redeeming it marks the email verified', async () => {
    const user = await kit.newUser('verify-gina@example.com');
    const [before] = await query<{ updated_at: Date }>(url(), 'select updated_at from users where id = $1', [user]);
    clock.advance(MINUTE);
    let mark = await kit.mark();
    const issued = await requestVerification(user);
    expect(issued).toEqual({
      verificationToken: expect.stringMatching(TOKEN_FORMAT),
      verificationLink: `https://auth.example.com/verify-email?token=${issued.verificationToken}`,
      expiresAt: new Date(clock.ms + DAY),
      email: 'verify-gina@example.com',
    });
    expect(await kit.changesSince(mark)).toEqual({
      changed: ['one_time_tokens', 'audit_events'],
      audit: [
        {
          event_type: 'email.verification_requested',
          user_id: user,
          session_id: null,
          details: { actor: 'api_key', email: 'verify-gina@example.com' },
        },
      ],
    });
    const stored = await query(url(), `select purpose, encode(token_hash, 'hex') as hash, email from one_time_tokens where user_id = $1`, [user]);
    expect(stored).toEqual([{ purpose: 'email_verification', hash: sha256(issued.verificationToken), email: 'verify-gina@example.com' }]);

    clock.advance(MINUTE);
    mark = await kit.mark();
    const verified = await rpc<VerifyEmailResponse>('verifyEmail', { token: issued.verificationToken });
    expect(verified).toEqual({ response: { userId: user, email: 'verify-gina@example.com' } });
    expect(await kit.changesSince(mark)).toEqual({
      changed: ['users', 'one_time_tokens', 'audit_events'],
      audit: [{ event_type: 'email.verified', user_id: user, session_id: null, details: { email: 'verify-gina@example.com' } }],
    });
    const [after] = await query(url(), 'select email_verified_at, updated_at from users where id = $1', [user]);
    // Verification is not among the changes `updated_at` tracks (email, name, password, roles, disabled).
    expect(after).toEqual({ email_verified_at: new Date(clock.ms), updated_at: before!.updated_at });
    const got = await rpc<GetUserResponse>('getUser', { userId: user }, asService);
    expect(got.response?.user?.emailVerified).toBe(true);

    await expectRejected('verifyEmail', { token: issued.verificationToken }, undefined, { code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' });
    await expectRejected('requestEmailVerification', { userId: user }, asService, {
      code: status.FAILED_PRECONDITION,
      reason: 'EMAIL_ALREADY_VERIFIED',
    });
  });

  it('a token issued for an address the user has since changed fails with TOKEN_INVALID; a new one verifies the new address', async () => {
    const user = await kit.newUser('verify-old@example.com');
    const old = await requestVerification(user);
    await query(url(), `update users set email = 'verify-new@example.com' where id = $1`, [user]);
    await expectRejected('verifyEmail', { token: old.verificationToken }, undefined, { code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' });
    const [row] = await query(url(), 'select email_verified_at from users where id = $1', [user]);
    expect(row).toEqual({ email_verified_at: null });

    const fresh = await requestVerification(user);
    expect(fresh.email).toBe('verify-new@example.com');
    expect((await rpc<VerifyEmailResponse>('verifyEmail', { token: fresh.verificationToken })).response).toEqual({
      userId: user,
      email: 'verify-new@example.com',
    });
  });

  it('a token works until EMAIL_VERIFICATION_TTL has passed, then fails with TOKEN_EXPIRED', async () => {
    const early = await kit.newUser('verify-early@example.com');
    const late = await kit.newUser('verify-late@example.com');
    const earlyToken = await requestVerification(early);
    const lateToken = await requestVerification(late);
    clock.advance(DAY - 1);
    expect((await rpc('verifyEmail', { token: earlyToken.verificationToken })).error).toBeUndefined();
    clock.advance(1);
    await expectRejected('verifyEmail', { token: lateToken.verificationToken }, undefined, { code: status.UNAUTHENTICATED, reason: 'TOKEN_EXPIRED' });
  });

  it('a newer token supersedes the older one', async () => {
    const user = await kit.newUser('verify-twice@example.com');
    const older = await requestVerification(user);
    const newer = await requestVerification(user);
    await expectRejected('verifyEmail', { token: older.verificationToken }, undefined, { code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' });
    expect((await rpc('verifyEmail', { token: newer.verificationToken })).error).toBeUndefined();
  });

  it('an unknown user is USER_NOT_FOUND and a disabled one ACCOUNT_DISABLED, changing nothing', async () => {
    await expectRejected('requestEmailVerification', { userId: '00000000-0000-4000-8000-00000000abcd' }, asService, {
      code: status.NOT_FOUND,
      reason: 'USER_NOT_FOUND',
    });
    const user = await kit.newUser('verify-disabled@example.com');
    expect((await rpc('disableUser', { userId: user }, asService)).error).toBeUndefined();
    await expectRejected('requestEmailVerification', { userId: user }, asService, { code: status.PERMISSION_DENIED, reason: 'ACCOUNT_DISABLED' });
  });
});

describe('user administration', () => {
  it('GetUser returns the user as Login does', async () => {
    await kit.newUser('get-me@example.com');
    const signedIn = await login(server.client, 'get-me@example.com');
    const mark = await kit.mark();
    const { response, error } = await rpc<GetUserResponse>('getUser', { userId: signedIn.user!.id }, asService);
    expect(error).toBeUndefined();
    expect(response!.user).toEqual(signedIn.user);
    expect(await kit.changesSince(mark)).toEqual({ changed: [], audit: [] });
  });

  it('DisableUser revokes every active session of the user and nothing else; login is then refused', async () => {
    const erin = await kit.newUser('disable-erin@example.com');
    const frank = await kit.newUser('disable-frank@example.com');
    const first = await login(server.client, 'disable-erin@example.com');
    const second = await login(server.client, 'disable-erin@example.com');
    const loggedOut = await login(server.client, 'disable-erin@example.com');
    await rpc('logout', { refreshToken: loggedOut.tokens!.refreshToken });
    const franks = await login(server.client, 'disable-frank@example.com');

    clock.advance(MINUTE);
    const untouchedSessions = await rowsExcept('sessions', [first.sessionId, second.sessionId]);
    const otherUsers = await rowsExcept('users', [erin]);
    const mark = await kit.mark();
    const { response, error } = await rpc<DisableUserResponse>('disableUser', { userId: erin }, asService);
    expect(error).toBeUndefined();
    expect(response!.revokedSessionCount).toBe(2);
    expect(response!.user).toMatchObject({ id: erin, disabled: true, updatedAt: new Date(clock.ms) });
    const { changed, audit } = await kit.changesSince(mark);
    expect(changed).toEqual(['users', 'sessions', 'audit_events']);
    expect(sorted(audit)).toEqual([
      ...revokedRows(erin, [first.sessionId, second.sessionId], 'USER_DISABLED'),
      { event_type: 'user.disabled', user_id: erin, session_id: null, details: { actor: 'api_key', revokedSessions: 2 } },
    ]);
    expect(await kit.sessionStates(erin)).toEqual({
      [first.sessionId]: 'USER_DISABLED',
      [second.sessionId]: 'USER_DISABLED',
      [loggedOut.sessionId]: 'LOGOUT',
    });
    expect(await kit.sessionStates(frank)).toEqual({ [franks.sessionId]: 'active' });
    expect(await rowsExcept('sessions', [first.sessionId, second.sessionId])).toEqual(untouchedSessions);
    expect(await rowsExcept('users', [erin])).toEqual(otherUsers);

    expect(await loginFailure('disable-erin@example.com', PASSWORD)).toMatchObject({ code: status.PERMISSION_DENIED, reason: 'ACCOUNT_DISABLED' });
    expect(await loginFailure('disable-erin@example.com', 'a wrong password')).toMatchObject({
      code: status.UNAUTHENTICATED,
      reason: 'INVALID_CREDENTIALS',
    });
    expect(failure((await rpc('refreshToken', { refreshToken: first.tokens!.refreshToken })).error)).toMatchObject({ reason: 'SESSION_REVOKED' });
    expect(failure((await rpc('validateToken', { accessToken: first.tokens!.accessToken, checkRevocation: true })).error)).toMatchObject({
      reason: 'SESSION_REVOKED',
    });

    // Again: succeeds, revokes nothing more, changes nothing.
    const again = await kit.mark();
    const repeated = await rpc<DisableUserResponse>('disableUser', { userId: erin }, asService);
    expect(repeated.response).toEqual({ user: response!.user, revokedSessionCount: 0 });
    expect(await kit.changesSince(again)).toEqual({ changed: [], audit: [] });
  });

  it('DisableUser also revokes a session that a racing login left active, so EnableUser cannot revive it', async () => {
    const user = await kit.newUser('disable-race@example.com');
    const early = await login(server.client, 'disable-race@example.com');
    expect((await rpc('disableUser', { userId: user }, asService)).error).toBeUndefined();
    // What a login that committed while DisableUser's statement waited for the user's row leaves
    // behind: an active session of a disabled user (the statement's snapshot could not see it).
    await query(server.db.url, `update sessions set revoked_at = null, revoked_reason = null where id = $1`, [early.sessionId]);

    const repeated = await rpc<DisableUserResponse>('disableUser', { userId: user }, asService);
    expect(repeated.response!.revokedSessionCount).toBe(1);
    expect(await kit.sessionStates(user)).toEqual({ [early.sessionId]: 'USER_DISABLED' });
    expect((await rpc('enableUser', { userId: user }, asService)).error).toBeUndefined();
    expect(failure((await rpc('refreshToken', { refreshToken: early.tokens!.refreshToken })).error)).toMatchObject({ reason: 'SESSION_REVOKED' });
  });

  it('EnableUser lets the user sign in again; sessions revoked by the disabling stay revoked', async () => {
    const user = await kit.newUser('enable-me@example.com');
    const before = await login(server.client, 'enable-me@example.com');
    expect((await rpc('disableUser', { userId: user }, asService)).error).toBeUndefined();
    clock.advance(MINUTE);

    const mark = await kit.mark();
    const { response, error } = await rpc<EnableUserResponse>('enableUser', { userId: user }, asService);
    expect(error).toBeUndefined();
    expect(response!.user).toMatchObject({ id: user, disabled: false, updatedAt: new Date(clock.ms) });
    expect(await kit.changesSince(mark)).toEqual({
      changed: ['users', 'audit_events'],
      audit: [{ event_type: 'user.enabled', user_id: user, session_id: null, details: { actor: 'api_key' } }],
    });
    expect(await kit.sessionStates(user)).toEqual({ [before.sessionId]: 'USER_DISABLED' });
    expect(failure((await rpc('refreshToken', { refreshToken: before.tokens!.refreshToken })).error)).toMatchObject({ reason: 'SESSION_REVOKED' });
    const after = await login(server.client, 'enable-me@example.com');
    expect(after.user!.disabled).toBe(false);

    // Enabling an enabled user succeeds without change.
    const again = await kit.mark();
    const repeated = await rpc<EnableUserResponse>('enableUser', { userId: user }, asService);
    expect(repeated.error).toBeUndefined();
    expect(repeated.response!.user).toMatchObject({ disabled: false, updatedAt: new Date(clock.ms) });
    expect(await kit.changesSince(again)).toEqual({ changed: [], audit: [] });
  });

  it("SetUserRoles replaces the roles; they reach the next login's and refresh's tokens, not tokens already issued", async () => {
    const user = await kit.newUser('roles-me@example.com');
    const before = await login(server.client, 'roles-me@example.com');
    const admin = await kit.newAdmin('roles-admin@example.com');
    clock.advance(MINUTE);

    const mark = await kit.mark();
    const { response, error } = await rpc<SetUserRolesResponse>(
      'setUserRoles',
      { userId: user, roles: ['viewer', 'billing:read', 'viewer', 'ops.on-call_2'] },
      bearerOf(admin),
    );
    expect(error).toBeUndefined();
    expect(response!.user).toMatchObject({ id: user, roles: ['billing:read', 'ops.on-call_2', 'viewer'], updatedAt: new Date(clock.ms) });
    expect(await kit.changesSince(mark)).toEqual({
      changed: ['users', 'audit_events'],
      audit: [
        {
          event_type: 'user.roles_changed',
          user_id: user,
          session_id: null,
          details: {
            actor: 'user',
            actorUserId: admin.user!.id,
            actorSessionId: admin.sessionId,
            previousRoles: [],
            roles: ['billing:read', 'ops.on-call_2', 'viewer'],
          },
        },
      ],
    });
    const [stored] = await query(url(), 'select roles from users where id = $1', [user]);
    expect(stored).toEqual({ roles: ['billing:read', 'ops.on-call_2', 'viewer'] });

    const claimsOf = async (accessToken: string) =>
      (await rpc<ValidateTokenResponse>('validateToken', { accessToken, checkRevocation: false })).response!.claims!.roles;
    expect(await claimsOf(before.tokens!.accessToken)).toEqual([]);
    const refreshed = await rpc<RefreshTokenResponse>('refreshToken', { refreshToken: before.tokens!.refreshToken });
    expect(await claimsOf(refreshed.response!.tokens!.accessToken)).toEqual(['billing:read', 'ops.on-call_2', 'viewer']);
    const fresh: LoginResponse = await login(server.client, 'roles-me@example.com');
    expect(fresh.user!.roles).toEqual(['billing:read', 'ops.on-call_2', 'viewer']);
    expect(await claimsOf(fresh.tokens!.accessToken)).toEqual(['billing:read', 'ops.on-call_2', 'viewer']);

    // The same set in another order changes nothing; an empty list removes every role.
    const same = await kit.mark();
    const unchanged = await rpc<SetUserRolesResponse>('setUserRoles', { userId: user, roles: ['viewer', 'ops.on-call_2', 'billing:read'] }, asService);
    expect(unchanged.response!.user).toEqual(fresh.user);
    expect(await kit.changesSince(same)).toEqual({ changed: [], audit: [] });
    const cleared = await rpc<SetUserRolesResponse>('setUserRoles', { userId: user, roles: [] }, asService);
    expect(cleared.response!.user!.roles).toEqual([]);
    const [roles] = await query(url(), 'select roles from users where id = $1', [user]);
    expect(roles).toEqual({ roles: [] });
  });

  it('access tokens stay under 1 KB with typical claims, and bounded with the largest the limits allow', async () => {
    const typical = await kit.newUser('ada.lovelace@example.com');
    await rpc('setUserRoles', { userId: typical, roles: ['admin', 'billing:read', 'support'] }, asService);
    expect((await login(server.client, 'ada.lovelace@example.com')).tokens!.accessToken.length).toBeLessThan(1024);

    // The longest address and 16 roles of 32 characters: what the bounds on both allow.
    const longest = `${'a'.repeat(64)}@${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(57)}.com`;
    expect(longest).toHaveLength(254);
    const largest = await kit.newUser(longest);
    const roles = Array.from({ length: 16 }, (_, i) => `role-${String(i).padStart(2, '0')}-${'x'.repeat(24)}`);
    expect((await rpc('setUserRoles', { userId: largest, roles }, asService)).error).toBeUndefined();
    const token = (await login(server.client, longest)).tokens!.accessToken;
    expect(token.length).toBeGreaterThan(1024);
    expect(token.length).toBeLessThan(1700);
  });

  it('removing the admin role takes the service credential away at once', async () => {
    const admin = await kit.newAdmin('roles-former-admin@example.com');
    const target = await kit.newUser('roles-target@example.com');
    expect((await rpc('getUser', { userId: target }, bearerOf(admin))).error).toBeUndefined();
    expect((await rpc('setUserRoles', { userId: admin.user!.id, roles: ['viewer'] }, asService)).error).toBeUndefined();
    await expectRejected('getUser', { userId: target }, bearerOf(admin), { code: status.PERMISSION_DENIED, reason: 'PERMISSION_DENIED' });
  });
});

describe('secrets stay secret', () => {
  it('no password or one-time token reaches the store, an audit row or an error message', async () => {
    const passwords = ['first secret passphrase', 'second secret passphrase', 'third secret passphrase'];
    const user = await kit.newUser('secrets@example.com', passwords[0]);
    const signedIn = await login(server.client, 'secrets@example.com', passwords[0]);
    await rpc('changePassword', { currentPassword: passwords[0], newPassword: passwords[1] }, bearerOf(signedIn));
    const reset = await requestReset('secrets@example.com');
    await rpc('resetPassword', { token: reset.resetToken, newPassword: passwords[2] });
    const verification = await requestVerification(user);
    await rpc('verifyEmail', { token: verification.verificationToken });
    const tokens = [reset.resetToken, verification.verificationToken];

    const messages = [
      (await rpc('resetPassword', { token: reset.resetToken, newPassword: passwords[0] })).error?.details,
      (await rpc('verifyEmail', { token: verification.verificationToken })).error?.details,
      (await rpc('changePassword', { currentPassword: passwords[1], newPassword: passwords[0] }, bearerOf(signedIn))).error?.details,
    ];
    expect(messages.every((m) => typeof m === 'string' && m.length > 0)).toBe(true);
    const store = Object.values((await kit.mark()).snapshot).join('\n');
    for (const secret of [...passwords, ...tokens, ...tokens.map((t) => Buffer.from(t, 'base64url').toString('hex'))]) {
      expect(store).not.toContain(secret);
      for (const message of messages) expect(message).not.toContain(secret);
    }
  });
});
