import { createHash } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import type { LoginResponse, RefreshTokenResponse, TokenPair } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { type AuthServer, DAY, failure, login, ManualClock, MINUTE, register, startAuthServer, storeSnapshot } from '../support/auth.js';
import { query } from '../support/database.js';

/**
 * The session lifecycle of DESIGN.md "Tokens and sessions": the rotation contract (grace window
 * and reuse detection), idle and absolute expiry, and the per-user session limit. Time moves on a
 * ManualClock, never by sleeping.
 */
const clock = new ManualClock();
let server: AuthServer;

beforeAll(async () => {
  server = await startAuthServer({ REFRESH_REUSE_GRACE: '10s', MAX_SESSIONS_PER_USER: '10' }, clock);
});

afterAll(async () => {
  await server?.close();
});

const SECOND = 1_000;
const rpc = <Res>(method: string, request: object) => server.rpc<Res>(method, request);
const refresh = (refreshToken: string) => rpc<RefreshTokenResponse>('refreshToken', { refreshToken });

let users = 0;
/** A new user with one session. */
async function signIn(): Promise<LoginResponse> {
  const email = `lifecycle-${++users}@example.com`;
  await register(server.client, email);
  return login(server.client, email);
}

async function refreshed(refreshToken: string): Promise<TokenPair> {
  const { response, error } = await refresh(refreshToken);
  if (error) throw new Error(`refresh failed: ${error.code} ${error.details}`);
  return response!.tokens!;
}

interface SessionRow {
  generation: number;
  refresh_secret_hash: Buffer;
  revoked_at: Date | null;
  revoked_reason: string | null;
}

async function sessionRow(id: string): Promise<SessionRow> {
  const [row] = await query<SessionRow>(
    server.db.url,
    'select generation, refresh_secret_hash, revoked_at, revoked_reason from sessions where id = $1',
    [id],
  );
  return row!;
}

const secretHash = (refreshToken: string) => createHash('sha256').update(Buffer.from(refreshToken.split('.')[1]!, 'base64url')).digest();

async function auditTypes(sessionId: string): Promise<string[]> {
  const rows = await query<{ event_type: string }>(server.db.url, 'select event_type from audit_events where session_id = $1 order by id', [sessionId]);
  return rows.map((row) => row.event_type);
}

describe('the rotation contract', () => {
  it('answers 20 concurrent refreshes with one token alike: one new token, one new generation stored', async () => {
    const signedIn = await signIn();
    const results = await Promise.all(Array.from({ length: 20 }, () => refresh(signedIn.tokens!.refreshToken)));

    expect(results.map((r) => failure(r.error).reason)).toEqual(Array(20).fill('no error'));
    const tokens = new Set(results.map((r) => r.response!.tokens!.refreshToken));
    expect(tokens.size).toBe(1);
    const [next] = [...tokens];
    expect(next).not.toBe(signedIn.tokens!.refreshToken);

    const row = await sessionRow(signedIn.sessionId);
    expect(row.generation).toBe(1);
    expect(row.refresh_secret_hash.equals(secretHash(next!))).toBe(true);
    expect(row.revoked_at).toBeNull();
    // Every response carries a working access token of the session.
    for (const result of results) {
      const check = await rpc('validateToken', { accessToken: result.response!.tokens!.accessToken, checkRevocation: true });
      expect(check.error).toBeUndefined();
    }
    // And the one successor rotates on.
    expect((await refresh(next!)).error).toBeUndefined();
  });

  it('returns the same token to a retry of the previous one inside the window; after it, revokes the session', async () => {
    const signedIn = await signIn();
    const first = signedIn.tokens!.refreshToken;
    const next = await refreshed(first);

    clock.advance(9 * SECOND);
    const retry = await refreshed(first);
    expect(retry.refreshToken).toBe(next.refreshToken);
    expect(retry.refreshTokenExpiresAt).toEqual(next.refreshTokenExpiresAt);
    expect((await sessionRow(signedIn.sessionId)).generation).toBe(1);

    clock.advance(1 * SECOND);
    const late = await refresh(first);
    expect(failure(late.error)).toEqual({
      code: status.UNAUTHENTICATED,
      reason: 'REFRESH_TOKEN_REUSED',
      message: 'a rotated-out refresh token was presented; the session has been revoked',
      fields: [],
    });
    const row = await sessionRow(signedIn.sessionId);
    expect(row).toMatchObject({ generation: 1, revoked_at: new Date(clock.ms), revoked_reason: 'REFRESH_TOKEN_REUSED' });
    expect(await auditTypes(signedIn.sessionId)).toEqual(['login.succeeded', 'refresh_token.reused']);
    const [event] = await query<{ details: unknown }>(
      server.db.url,
      `select details from audit_events where session_id = $1 and event_type = 'refresh_token.reused'`,
      [signedIn.sessionId],
    );
    expect(event!.details).toEqual({ generationsBehind: 1, revoked: true });

    // The legitimate holder's newest token stops working too, and so do its access tokens.
    expect(failure((await refresh(next.refreshToken)).error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'SESSION_REVOKED' });
    const check = await rpc('validateToken', { accessToken: next.accessToken, checkRevocation: true });
    expect(failure(check.error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'SESSION_REVOKED' });
  });

  it('treats a token two or more generations old as reuse at any time, even at once', async () => {
    for (const depth of [2, 5]) {
      const signedIn = await signIn();
      const chain = [signedIn.tokens!.refreshToken];
      for (let i = 0; i < depth; i++) chain.push((await refreshed(chain.at(-1)!)).refreshToken);

      const replay = await refresh(chain[0]!);
      expect(failure(replay.error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'REFRESH_TOKEN_REUSED' });
      expect(await sessionRow(signedIn.sessionId)).toMatchObject({ generation: depth, revoked_reason: 'REFRESH_TOKEN_REUSED' });
      const [event] = await query<{ details: unknown }>(
        server.db.url,
        `select details from audit_events where session_id = $1 and event_type = 'refresh_token.reused'`,
        [signedIn.sessionId],
      );
      expect(event!.details).toEqual({ generationsBehind: depth, revoked: true });
      expect(failure((await refresh(chain.at(-1)!)).error).reason).toBe('SESSION_REVOKED');
      // Replaying again still reads as reuse, and is recorded again without changing the revocation.
      expect(failure((await refresh(chain[0]!)).error).reason).toBe('REFRESH_TOKEN_REUSED');
      expect(await auditTypes(signedIn.sessionId)).toEqual(['login.succeeded', 'refresh_token.reused', 'refresh_token.reused']);
    }
  });

  it('tells a made-up secret for a real session apart from reuse: TOKEN_INVALID, nothing changed', async () => {
    const signedIn = await signIn();
    await refreshed(await refreshed(signedIn.tokens!.refreshToken).then((t) => t.refreshToken));
    const forged = `${signedIn.sessionId}.${Buffer.alloc(32, 9).toString('base64url')}`;
    const before = await storeSnapshot(server.db.url);
    expect(failure((await refresh(forged)).error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' });
    expect(failure((await rpc('logout', { refreshToken: forged })).error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' });
    expect(await storeSnapshot(server.db.url)).toEqual(before);
  });

  it('answers a retry within the window with SESSION_REVOKED once the session was revoked meanwhile', async () => {
    const signedIn = await signIn();
    const next = await refreshed(signedIn.tokens!.refreshToken);
    expect((await rpc('logout', { refreshToken: next.refreshToken })).error).toBeUndefined();
    const before = await storeSnapshot(server.db.url);
    expect(failure((await refresh(signedIn.tokens!.refreshToken)).error).reason).toBe('SESSION_REVOKED');
    expect(await storeSnapshot(server.db.url)).toEqual(before);
  });

  it('treats Logout with a rotated-out token like a refresh: the previous one in the window logs out, an older one is reuse', async () => {
    const inWindow = await signIn();
    await refreshed(inWindow.tokens!.refreshToken);
    expect((await rpc('logout', { refreshToken: inWindow.tokens!.refreshToken })).error).toBeUndefined();
    expect(await sessionRow(inWindow.sessionId)).toMatchObject({ revoked_reason: 'LOGOUT' });
    expect(await auditTypes(inWindow.sessionId)).toEqual(['login.succeeded', 'session.logged_out']);

    const late = await signIn();
    await refreshed(late.tokens!.refreshToken);
    clock.advance(10 * SECOND);
    const { error } = await rpc('logout', { refreshToken: late.tokens!.refreshToken });
    expect(failure(error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'REFRESH_TOKEN_REUSED' });
    expect(await sessionRow(late.sessionId)).toMatchObject({ revoked_reason: 'REFRESH_TOKEN_REUSED' });
  });

  it('answers a retry within the window with SESSION_EXPIRED once the session has reached its absolute expiry', async () => {
    const brief = await startAuthServer({ SESSION_IDLE_TIMEOUT: '1m', SESSION_MAX_LIFETIME: '1m' }, clock);
    try {
      await register(brief.client, 'brief@example.com');
      const signedIn = await login(brief.client, 'brief@example.com');
      clock.advance(55 * SECOND);
      const next = await brief.rpc<RefreshTokenResponse>('refreshToken', { refreshToken: signedIn.tokens!.refreshToken });
      expect(next.error).toBeUndefined();
      clock.advance(6 * SECOND);
      const before = await storeSnapshot(brief.db.url);
      const retry = await brief.rpc('refreshToken', { refreshToken: signedIn.tokens!.refreshToken });
      expect(failure(retry.error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'SESSION_EXPIRED' });
      const newest = await brief.rpc('refreshToken', { refreshToken: next.response!.tokens!.refreshToken });
      expect(failure(newest.error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'SESSION_EXPIRED' });
      expect(await storeSnapshot(brief.db.url)).toEqual(before);
    } finally {
      await brief.close();
    }
  });

  it('with REFRESH_REUSE_GRACE=0s, the previous token is reuse at once', async () => {
    const strict = await startAuthServer({ REFRESH_REUSE_GRACE: '0s' }, clock);
    try {
      await register(strict.client, 'strict@example.com');
      const signedIn = await login(strict.client, 'strict@example.com');
      const first = await strict.rpc<RefreshTokenResponse>('refreshToken', { refreshToken: signedIn.tokens!.refreshToken });
      expect(first.error).toBeUndefined();
      const again = await strict.rpc('refreshToken', { refreshToken: signedIn.tokens!.refreshToken });
      expect(failure(again.error).reason).toBe('REFRESH_TOKEN_REUSED');
    } finally {
      await strict.close();
    }
  });
});

describe('expiry', () => {
  it('extends the idle expiry with each refresh', async () => {
    const signedIn = await signIn();
    clock.advance(13 * DAY);
    const next = await refreshed(signedIn.tokens!.refreshToken);
    expect(next.refreshTokenExpiresAt).toEqual(new Date(clock.ms + 14 * DAY));
    // Past the login's own idle expiry (day 14), inside the extended one (day 27).
    clock.advance(14 * DAY - 1);
    expect((await refresh(next.refreshToken)).error).toBeUndefined();
  });

  it('ends a session exactly at its idle expiry, at once and without a sweep', async () => {
    const signedIn = await signIn();
    clock.advance(14 * DAY);
    const before = await storeSnapshot(server.db.url);
    const { error } = await refresh(signedIn.tokens!.refreshToken);
    expect(failure(error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'SESSION_EXPIRED' });
    expect(await storeSnapshot(server.db.url)).toEqual(before);
    // The row is still there: the refusal did not depend on a sweep having deleted it.
    expect((await sessionRow(signedIn.sessionId)).revoked_at).toBeNull();
  });

  it('holds the absolute lifetime even while the session refreshes every minute', async () => {
    const short = await startAuthServer({ SESSION_IDLE_TIMEOUT: '10m', SESSION_MAX_LIFETIME: '1h' }, clock);
    try {
      await register(short.client, 'busy@example.com');
      const signedIn = await login(short.client, 'busy@example.com');
      const absolute = clock.ms + 60 * MINUTE;
      let token = signedIn.tokens!.refreshToken;
      let refreshes = 0;
      let refusal: ReturnType<typeof failure> | undefined;
      while (!refusal) {
        clock.advance(MINUTE);
        const { response, error } = await short.rpc<RefreshTokenResponse>('refreshToken', { refreshToken: token });
        if (error) {
          refusal = failure(error);
        } else {
          refreshes++;
          token = response!.tokens!.refreshToken;
          expect(response!.tokens!.refreshTokenExpiresAt!.getTime()).toBe(Math.min(clock.ms + 10 * MINUTE, absolute));
        }
      }
      // Minutes 1 to 59 refreshed; at minute 60 the session is at its absolute expiry.
      expect(refreshes).toBe(59);
      expect(clock.ms).toBe(absolute);
      expect(refusal).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'SESSION_EXPIRED' });
    } finally {
      await short.close();
    }
  });
});

describe('the per-user session limit', () => {
  it('revokes the least recently used active session at the 11th login, and only that one', async () => {
    const email = 'many-devices@example.com';
    await register(server.client, email);
    const other = await signIn();
    const sessions: LoginResponse[] = [];
    for (let i = 0; i < 10; i++) {
      clock.advance(MINUTE);
      sessions.push(await login(server.client, email));
    }
    // Session 0 is the oldest login, but it was used most recently: session 1 is the least recently used.
    clock.advance(MINUTE);
    const kept = await refreshed(sessions[0]!.tokens!.refreshToken);

    clock.advance(MINUTE);
    const eleventh = await login(server.client, email);

    const rows = await query<{ id: string; revoked_reason: string | null }>(
      server.db.url,
      'select s.id, s.revoked_reason from sessions s join users u on u.id = s.user_id where u.email = $1',
      [email],
    );
    expect(rows).toHaveLength(11);
    expect(rows.filter((r) => r.revoked_reason !== null)).toEqual([{ id: sessions[1]!.sessionId, revoked_reason: 'SESSION_LIMIT' }]);
    expect(await auditTypes(sessions[1]!.sessionId)).toEqual(['login.succeeded', 'session.evicted']);
    expect(failure((await refresh(sessions[1]!.tokens!.refreshToken)).error).reason).toBe('SESSION_REVOKED');
    expect((await refresh(kept.refreshToken)).error).toBeUndefined();
    expect((await refresh(eleventh.tokens!.refreshToken)).error).toBeUndefined();
    expect((await sessionRow(other.sessionId)).revoked_at).toBeNull();
  });

  it('counts only active sessions, and MAX_SESSIONS_PER_USER=0 means no limit', async () => {
    const unlimited = await startAuthServer({ MAX_SESSIONS_PER_USER: '0' }, clock);
    try {
      await register(unlimited.client, 'unlimited@example.com');
      for (let i = 0; i < 12; i++) await login(unlimited.client, 'unlimited@example.com');
      const [count] = await query<{ active: number }>(unlimited.db.url, 'select count(*)::int as active from sessions where revoked_at is null');
      expect(count!.active).toBe(12);
    } finally {
      await unlimited.close();
    }

    const limited = await startAuthServer({ MAX_SESSIONS_PER_USER: '2' }, clock);
    try {
      await register(limited.client, 'two@example.com');
      const first = await login(limited.client, 'two@example.com');
      clock.advance(MINUTE);
      const second = await login(limited.client, 'two@example.com');
      await limited.rpc('logout', { refreshToken: second.tokens!.refreshToken });
      clock.advance(MINUTE);
      // One active session and one logged out: the third login fits without evicting.
      await login(limited.client, 'two@example.com');
      const rows = await query<{ id: string; revoked_reason: string | null }>(limited.db.url, 'select id, revoked_reason from sessions order by created_at');
      expect(rows.map((r) => r.revoked_reason)).toEqual([null, 'LOGOUT', null]);
      expect(rows[0]!.id).toBe(first.sessionId);
    } finally {
      await limited.close();
    }
  });
});

describe('metrics', () => {
  async function metrics(): Promise<Record<string, number>> {
    const body = await (await fetch(`http://127.0.0.1:${server.app.httpPort}/metrics`)).text();
    const values: Record<string, number> = {};
    for (const match of body.matchAll(/^(latchkey_(?:sessions_revoked_total\{reason="\w+"\}|refresh_token_reuse_detected_total)) (\S+)$/gm)) {
      values[match[1]!] = Number(match[2]);
    }
    return values;
  }
  const delta = (before: Record<string, number>, after: Record<string, number>) =>
    Object.fromEntries(Object.entries(after).filter(([name, value]) => value !== before[name]).map(([name, value]) => [name, value - (before[name] ?? 0)]));

  it('count revocations by reason and every reuse detection, for dashboards and alerts', async () => {
    const before = await metrics();
    expect(before['latchkey_sessions_revoked_total{reason="USER_DISABLED"}']).toBeDefined();

    const stolen = await signIn();
    await refreshed(await refreshed(stolen.tokens!.refreshToken).then((t) => t.refreshToken));
    expect(failure((await refresh(stolen.tokens!.refreshToken)).error).reason).toBe('REFRESH_TOKEN_REUSED');
    expect(failure((await refresh(stolen.tokens!.refreshToken)).error).reason).toBe('REFRESH_TOKEN_REUSED');
    const leaving = await signIn();
    await rpc('logout', { refreshToken: leaving.tokens!.refreshToken });
    await rpc('logout', { refreshToken: leaving.tokens!.refreshToken });

    expect(delta(before, await metrics())).toEqual({
      'latchkey_refresh_token_reuse_detected_total': 2,
      'latchkey_sessions_revoked_total{reason="REFRESH_TOKEN_REUSED"}': 1,
      'latchkey_sessions_revoked_total{reason="LOGOUT"}': 1,
    });
  });
});
