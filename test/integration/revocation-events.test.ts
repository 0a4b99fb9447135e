/**
 * Every path that ends a session early (or cuts a user's roles) appends exactly one event of the
 * right kind to the revocation feed, in the same statement as the change (DESIGN.md "Revocation
 * reach"); a path that changes nothing appends none. Read straight from `revocation_events`.
 */
import type { Client, ServiceError } from '@grpc/grpc-js';
import type { LoginResponse, RefreshTokenResponse, RequestPasswordResetResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { type AuthServer, failure, login, ManualClock, register, startAuthServer } from '../support/auth.js';
import { call, sessionClient } from '../support/clients.js';
import { query } from '../support/database.js';
import { withApiKey, withBearer } from '../support/replicas.js';

const API_KEY = 'revocation-events-tests-key-0123456789abcdef';
const PASSWORD = 'correct horse battery';
const NEW_PASSWORD = 'another long passphrase';
const service = withApiKey(API_KEY);
const clock = new ManualClock();
let server: AuthServer;

beforeAll(async () => {
  server = await startAuthServer({ SERVICE_API_KEYS: API_KEY, MAX_SESSIONS_PER_USER: '2', PUBLIC_URL: 'https://auth.example.com' }, clock);
});
afterAll(async () => {
  await server?.close();
});

interface Row {
  kind: string;
  session_id: string | null;
  user_id: string;
  reason: string;
  roles: string[] | null;
}

/** The feed's last id now: `eventsSince` returns what was appended after it. */
async function mark(): Promise<string> {
  const [row] = await query<{ id: string }>(server.db.url, 'select coalesce(max(id), 0)::text as id from revocation_events');
  return row!.id;
}

async function eventsSince(mark: string): Promise<Row[]> {
  return query<Row>(
    server.db.url,
    'select kind, session_id, user_id, reason, roles from revocation_events where id > $1::bigint order by xid, id',
    [mark],
  );
}

const session = (userId: string, sessionId: string, reason: string): Row => ({ kind: 'session', session_id: sessionId, user_id: userId, reason, roles: null });
const bySession = (a: Row, b: Row) => (a.session_id ?? '').localeCompare(b.session_id ?? '');

async function rpc<Res>(method: string, request: object, metadata?: ReturnType<typeof withApiKey>): Promise<{ response?: Res; error?: ServiceError }> {
  return call(server.client as unknown as Client, method, request, metadata ? { metadata } : {});
}
async function sessionRpc<Res>(method: string, request: object, metadata: ReturnType<typeof withApiKey>): Promise<{ response?: Res; error?: ServiceError }> {
  const client = sessionClient(server.app.grpcPort);
  try {
    return await call(client as unknown as Client, method, request, { metadata });
  } finally {
    client.close();
  }
}
async function ok<Res>(result: Promise<{ response?: Res; error?: ServiceError }>): Promise<Res> {
  const { response, error } = await result;
  if (error) throw new Error(`call failed: ${error.code} ${error.details}`);
  return response!;
}

let people = 0;
async function newUser(sessions: number): Promise<{ userId: string; email: string; logins: LoginResponse[] }> {
  const email = `events-${++people}@example.com`;
  const userId = (await register(server.client, email, PASSWORD)).user!.id;
  const logins: LoginResponse[] = [];
  for (let i = 0; i < sessions; i++) {
    logins.push(await login(server.client, email, PASSWORD));
    // Sessions used at distinct moments: "least recently used" is then one of them.
    clock.advance(1_000);
  }
  return { userId, email, logins };
}

describe('each revocation path appends exactly one event per session it ends', () => {
  it('Logout: LOGOUT; a second logout appends nothing', async () => {
    const user = await newUser(1);
    const from = await mark();
    await ok(rpc('logout', { refreshToken: user.logins[0]!.tokens!.refreshToken }));
    expect(await eventsSince(from)).toEqual([session(user.userId, user.logins[0]!.sessionId, 'LOGOUT')]);
    const again = await mark();
    await ok(rpc('logout', { refreshToken: user.logins[0]!.tokens!.refreshToken }));
    expect(await eventsSince(again)).toEqual([]);
  });

  it('RevokeSession by the owner: REVOKED_BY_USER; by a service: REVOKED_BY_SERVICE; revoking again appends nothing', async () => {
    const user = await newUser(2);
    const [own, other] = user.logins;
    let from = await mark();
    await ok(sessionRpc('revokeSession', { sessionId: other!.sessionId }, withBearer(own!.tokens!.accessToken)));
    expect(await eventsSince(from)).toEqual([session(user.userId, other!.sessionId, 'REVOKED_BY_USER')]);

    from = await mark();
    await ok(sessionRpc('revokeSession', { sessionId: own!.sessionId }, service));
    await ok(sessionRpc('revokeSession', { sessionId: other!.sessionId }, service));
    expect(await eventsSince(from)).toEqual([session(user.userId, own!.sessionId, 'REVOKED_BY_SERVICE')]);
  });

  it('RevokeAllSessions: one event per active session (REVOKED_BY_SERVICE by a service, REVOKED_BY_USER by the owner), none for the session kept', async () => {
    const user = await newUser(2);
    let from = await mark();
    const all = await ok(sessionRpc<{ revokedCount: number }>('revokeAllSessions', { userId: user.userId, exceptSessionId: '' }, service));
    expect(all.revokedCount).toBe(2);
    expect((await eventsSince(from)).sort(bySession)).toEqual(
      user.logins.map((l) => session(user.userId, l.sessionId, 'REVOKED_BY_SERVICE')).sort(bySession),
    );

    const owner = await newUser(2);
    const [kept, ended] = owner.logins;
    from = await mark();
    const mine = await ok(
      sessionRpc<{ revokedCount: number }>('revokeAllSessions', { userId: '', exceptSessionId: kept!.sessionId }, withBearer(kept!.tokens!.accessToken)),
    );
    expect(mine.revokedCount).toBe(1);
    expect(await eventsSince(from)).toEqual([session(owner.userId, ended!.sessionId, 'REVOKED_BY_USER')]);
    // Nothing left to revoke: nothing appended.
    from = await mark();
    await ok(sessionRpc('revokeAllSessions', { userId: owner.userId, exceptSessionId: kept!.sessionId }, service));
    expect(await eventsSince(from)).toEqual([]);
  });

  it('refresh-token reuse: REFRESH_TOKEN_REUSED; presenting it again appends nothing', async () => {
    const user = await newUser(1);
    const original = user.logins[0]!.tokens!.refreshToken;
    const first = await ok(rpc<RefreshTokenResponse>('refreshToken', { refreshToken: original }));
    await ok(rpc<RefreshTokenResponse>('refreshToken', { refreshToken: first.tokens!.refreshToken }));
    const from = await mark();
    // Two generations behind: theft, whatever the grace window.
    expect(failure((await rpc('refreshToken', { refreshToken: original })).error).reason).toBe('REFRESH_TOKEN_REUSED');
    expect(await eventsSince(from)).toEqual([session(user.userId, user.logins[0]!.sessionId, 'REFRESH_TOKEN_REUSED')]);
    const again = await mark();
    expect(failure((await rpc('refreshToken', { refreshToken: original })).error).reason).toBe('REFRESH_TOKEN_REUSED');
    expect(await eventsSince(again)).toEqual([]);
  });

  it('the session limit on login (MAX_SESSIONS_PER_USER=2): SESSION_LIMIT for the session evicted', async () => {
    const user = await newUser(2);
    const from = await mark();
    const third = await login(server.client, user.email, PASSWORD);
    const rows = await eventsSince(from);
    expect(rows).toHaveLength(1);
    // The least recently used one: the first.
    expect(rows).toEqual([session(user.userId, user.logins[0]!.sessionId, 'SESSION_LIMIT')]);
    expect(third.sessionId).not.toBe(user.logins[0]!.sessionId);
  });

  it('ChangePassword with revoke_other_sessions: PASSWORD_CHANGED for the other session only; without it, nothing', async () => {
    const user = await newUser(2);
    const [caller, other] = user.logins;
    let from = await mark();
    const changed = await ok(
      rpc<{ revokedSessionCount: number }>('changePassword', { currentPassword: PASSWORD, newPassword: NEW_PASSWORD, revokeOtherSessions: true }, withBearer(caller!.tokens!.accessToken)),
    );
    expect(changed.revokedSessionCount).toBe(1);
    expect(await eventsSince(from)).toEqual([session(user.userId, other!.sessionId, 'PASSWORD_CHANGED')]);

    const keeper = await newUser(2);
    from = await mark();
    await ok(
      rpc('changePassword', { currentPassword: PASSWORD, newPassword: NEW_PASSWORD, revokeOtherSessions: false }, withBearer(keeper.logins[0]!.tokens!.accessToken)),
    );
    expect(await eventsSince(from)).toEqual([]);
  });

  it('ResetPassword: PASSWORD_RESET for every session', async () => {
    const user = await newUser(2);
    const issued = await ok(rpc<RequestPasswordResetResponse>('requestPasswordReset', { email: user.email }, service));
    const from = await mark();
    await ok(rpc('resetPassword', { token: issued.resetToken, newPassword: NEW_PASSWORD }));
    expect((await eventsSince(from)).sort(bySession)).toEqual(user.logins.map((l) => session(user.userId, l.sessionId, 'PASSWORD_RESET')).sort(bySession));
  });

  it('DisableUser: USER_DISABLED for every session; disabling again appends nothing', async () => {
    const user = await newUser(2);
    let from = await mark();
    const disabled = await ok(rpc<{ revokedSessionCount: number }>('disableUser', { userId: user.userId }, service));
    expect(disabled.revokedSessionCount).toBe(2);
    expect((await eventsSince(from)).sort(bySession)).toEqual(user.logins.map((l) => session(user.userId, l.sessionId, 'USER_DISABLED')).sort(bySession));
    from = await mark();
    await ok(rpc('disableUser', { userId: user.userId }, service));
    expect(await eventsSince(from)).toEqual([]);
  });

  it("SetUserRoles: a removal appends one 'user' event (ROLES_REMOVED, the roles left); an addition or no change appends none", async () => {
    const user = await newUser(1);
    const setRoles = (roles: string[]) => ok(rpc('setUserRoles', { userId: user.userId, roles }, service));
    const userEvent = (roles: string[]): Row => ({ kind: 'user', session_id: null, user_id: user.userId, reason: 'ROLES_REMOVED', roles });

    let from = await mark();
    await setRoles(['billing']);
    await setRoles(['billing', 'support']);
    await setRoles(['support', 'billing']);
    expect(await eventsSince(from)).toEqual([]);

    from = await mark();
    await setRoles(['support']);
    expect(await eventsSince(from)).toEqual([userEvent(['support'])]);

    // One removed and one added: a removal.
    from = await mark();
    await setRoles(['audit']);
    expect(await eventsSince(from)).toEqual([userEvent(['audit'])]);

    from = await mark();
    await setRoles([]);
    expect(await eventsSince(from)).toEqual([userEvent([])]);
  });

  it('no session has more than one event, and every revoked session has exactly one', async () => {
    const duplicates = await query(server.db.url, 'select session_id, count(*) from revocation_events where session_id is not null group by session_id having count(*) > 1');
    expect(duplicates).toEqual([]);
    const missing = await query(
      server.db.url,
      `select s.id from sessions s where s.revoked_at is not null
        and (select count(*) from revocation_events e where e.session_id = s.id) <> 1`,
    );
    expect(missing).toEqual([]);
  });
});
