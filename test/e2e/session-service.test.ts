import { type Client, Metadata, status } from '@grpc/grpc-js';
import { startApp, type RunningApp } from '../../src/app.js';
import type {
  AuthServiceClient,
  LoginResponse,
  RefreshTokenResponse,
  ValidateTokenResponse,
} from '../../src/generated/latchkey/auth/v1/auth_service.js';
import {
  GetSessionRequest,
  type GetSessionResponse,
  ListSessionsRequest,
  type ListSessionsResponse,
  RevocationReason,
  RevokeAllSessionsRequest,
  type RevokeAllSessionsResponse,
  RevokeSessionRequest,
  type RevokeSessionResponse,
  type Session,
  type SessionServiceClient,
  SessionState,
} from '../../src/generated/latchkey/session/v1/session_service.js';
import { createLogger } from '../../src/observability/logger.js';
import {
  type AuthServer,
  DAY,
  expectRejected as expectRejectedCall,
  type ExpectedFailure,
  failure,
  login,
  ManualClock,
  MINUTE,
  register,
  startAuthServer,
  storeSnapshot,
} from '../support/auth.js';
import { authClient, call, sessionClient } from '../support/clients.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { StatementLog } from '../support/statements.js';

const clock = new ManualClock();
const API_KEY = 'session-service-tests-key-0123456789abcdef';
let server: AuthServer;
let sessions: SessionServiceClient;

beforeAll(async () => {
  // The session limit is not this file's subject: unlimited, so logins never evict.
  server = await startAuthServer({ MAX_SESSIONS_PER_USER: '0', SERVICE_API_KEYS: API_KEY }, clock);
  sessions = sessionClient(server.app.grpcPort);
});

afterAll(async () => {
  sessions?.close();
  await server?.close();
});

// ---------------------------------------------------------------------------------------------
// Helpers

/** Credential metadata of a call; an array of API keys sends the header once per value. */
interface Credential {
  readonly authorization?: string;
  readonly apiKey?: string | string[];
}

const SERVICE: Credential = { apiKey: API_KEY };
const NO_CREDENTIAL: Credential = {};

function metadataOf(credential: Credential): Metadata {
  const metadata = new Metadata();
  if (credential.authorization !== undefined) metadata.add('authorization', credential.authorization);
  for (const value of [credential.apiKey ?? []].flat()) metadata.add('x-api-key', value);
  return metadata;
}

interface Person {
  readonly userId: string;
  readonly email: string;
}

/** One login: a session and its tokens. */
interface SignedIn {
  readonly userId: string;
  readonly sessionId: string;
  readonly accessToken: string;
  readonly refreshToken: string;
  /** When the login happened, on the test clock. */
  readonly at: number;
}

const bearer = (signedIn: SignedIn): Credential => ({ authorization: `Bearer ${signedIn.accessToken}` });

let people = 0;
async function newUser(label: string, roles: string[] = []): Promise<Person> {
  const email = `${label}-${++people}@example.com`;
  const { user } = await register(server.client, email);
  // Roles are set in SQL, like any seed data; they are signed into tokens at login.
  if (roles.length > 0) await query(server.db.url, 'update users set roles = $1 where id = $2', [roles, user!.id]);
  return { userId: user!.id, email };
}

async function signIn(person: Person): Promise<SignedIn> {
  const response: LoginResponse = await login(server.client, person.email);
  return {
    userId: person.userId,
    sessionId: response.sessionId,
    accessToken: response.tokens!.accessToken,
    refreshToken: response.tokens!.refreshToken,
    at: clock.ms,
  };
}

/** The request message of each method, to fill the fields a test leaves out with their defaults. */
const REQUESTS: Record<string, { fromPartial(fields: object): object }> = {
  getSession: GetSessionRequest,
  listSessions: ListSessionsRequest,
  revokeSession: RevokeSessionRequest,
  revokeAllSessions: RevokeAllSessionsRequest,
};

function rpc<Res>(method: string, request: object, credential: Credential) {
  return call<object, Res>(sessions as unknown as Client, method, REQUESTS[method]!.fromPartial(request), { metadata: metadataOf(credential) });
}

/** Calls a SessionService method that must succeed. */
async function succeed<Res>(method: string, request: object, credential: Credential): Promise<Res> {
  const { response, error } = await rpc<Res>(method, request, credential);
  if (error) throw new Error(`${method} failed: ${error.code} ${error.details}`);
  return response!;
}

/** Calls `method` and asserts the exact failure and that no table changed. */
const expectRejected = (method: string, request: object, credential: Credential, expected: ExpectedFailure) =>
  expectRejectedCall(server.db.url, () => rpc(method, request, credential), expected);

const getSession = (sessionId: string, credential: Credential) =>
  succeed<GetSessionResponse>('getSession', { sessionId }, credential).then((r) => r.session!);

const listIds = async (request: object, credential: Credential) =>
  (await succeed<ListSessionsResponse>('listSessions', request, credential)).sessions.map((s) => s.id);

/** Every page of a listing, following next_page_token. */
async function listAll(request: object, credential: Credential): Promise<{ pages: Session[][]; tokens: string[] }> {
  const pages: Session[][] = [];
  const tokens: string[] = [];
  let pageToken = '';
  do {
    const page = await succeed<ListSessionsResponse>('listSessions', { ...request, pageToken }, credential);
    pages.push(page.sessions);
    tokens.push(page.nextPageToken);
    pageToken = page.nextPageToken;
    if (pages.length > 50) throw new Error('the listing does not end');
  } while (pageToken !== '');
  return { pages, tokens };
}

async function revocationEvents(userId: string) {
  return query<{ session_id: string; details: unknown; occurred_at: Date; ip_address: string | null; user_agent: string | null }>(
    server.db.url,
    `select session_id, details, occurred_at, ip_address, user_agent from audit_events
      where event_type = 'session.revoked' and user_id = $1 order by id`,
    [userId],
  );
}

async function storedRevocation(sessionId: string) {
  const [row] = await query<{ revoked_at: Date | null; revoked_reason: string | null }>(
    server.db.url,
    'select revoked_at, revoked_reason from sessions where id = $1',
    [sessionId],
  );
  return row;
}

const refresh = (signedIn: SignedIn) => server.rpc<RefreshTokenResponse>('refreshToken', { refreshToken: signedIn.refreshToken });
const validate = (signedIn: SignedIn, checkRevocation: boolean) =>
  server.rpc<ValidateTokenResponse>('validateToken', { accessToken: signedIn.accessToken, checkRevocation });

const NOT_FOUND = { code: status.NOT_FOUND, reason: 'SESSION_NOT_FOUND', message: 'the session does not exist' };
const USER_NOT_FOUND = { code: status.NOT_FOUND, reason: 'USER_NOT_FOUND', message: 'the user does not exist' };
const DENIED = { code: status.PERMISSION_DENIED, reason: 'PERMISSION_DENIED' };
const invalid = (...fields: string[]) => ({ code: status.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT', fields });
const UNKNOWN_ID = '7a1c3b2e-0000-4000-8000-000000000000';

// ---------------------------------------------------------------------------------------------

describe('credentials: every RPC refuses a missing or unusable credential and changes nothing', () => {
  let target: SignedIn;
  let stale: SignedIn;
  let loggedOut: SignedIn;
  let idle: SignedIn;

  beforeAll(async () => {
    const owner = await newUser('cred-owner');
    stale = await signIn(owner);
    // The stale token's 15 minutes pass; everything signed in from here on is fresh.
    clock.advance(16 * MINUTE);
    target = await signIn(owner);
    loggedOut = await signIn(owner);
    await server.rpc('logout', { refreshToken: loggedOut.refreshToken });
    idle = await signIn(owner);
    await query(server.db.url, 'update sessions set idle_expires_at = $1 where id = $2', [new Date(clock.ms - 1), idle.sessionId]);
  });

  const RPCS: { method: string; request: () => object }[] = [
    { method: 'getSession', request: () => ({ sessionId: target.sessionId }) },
    { method: 'listSessions', request: () => ({ userId: target.userId }) },
    { method: 'revokeSession', request: () => ({ sessionId: target.sessionId }) },
    { method: 'revokeAllSessions', request: () => ({ userId: target.userId }) },
  ];

  const CREDENTIALS: { name: string; credential: () => Credential; reason: string; secret?: () => string }[] = [
    { name: 'no credential', credential: () => NO_CREDENTIAL, reason: 'TOKEN_INVALID' },
    { name: 'an unknown API key', credential: () => ({ apiKey: 'x'.repeat(40) }), reason: 'TOKEN_INVALID', secret: () => 'x'.repeat(40) },
    { name: 'an empty API key', credential: () => ({ apiKey: '' }), reason: 'TOKEN_INVALID' },
    { name: 'the API key sent twice', credential: () => ({ apiKey: [API_KEY, API_KEY] }), reason: 'TOKEN_INVALID', secret: () => API_KEY },
    { name: 'Basic authorization', credential: () => ({ authorization: 'Basic dXNlcjpwYXNz' }), reason: 'TOKEN_INVALID' },
    { name: '"Bearer" without a token', credential: () => ({ authorization: 'Bearer' }), reason: 'TOKEN_INVALID' },
    { name: 'a bearer that is not a JWT', credential: () => ({ authorization: 'Bearer not.a.jwt' }), reason: 'TOKEN_INVALID' },
    { name: 'a refresh token as bearer', credential: () => ({ authorization: `Bearer ${target.refreshToken}` }), reason: 'TOKEN_INVALID', secret: () => target.refreshToken },
    { name: 'an expired access token', credential: () => bearer(stale), reason: 'TOKEN_EXPIRED', secret: () => stale.accessToken },
    { name: 'the token of a logged-out session', credential: () => bearer(loggedOut), reason: 'SESSION_REVOKED' },
    { name: 'the token of an expired session', credential: () => bearer(idle), reason: 'SESSION_EXPIRED' },
  ];

  const cases = RPCS.flatMap((rpcCase) => CREDENTIALS.map((credentialCase) => ({ ...rpcCase, ...credentialCase })));

  it.each(cases)('$method with $name → UNAUTHENTICATED $reason', async ({ method, request, credential, reason, secret }) => {
    const seen = await expectRejected(method, request(), credential(), { code: status.UNAUTHENTICATED, reason });
    if (secret) expect(seen.message).not.toContain(secret());
    expect(await storedRevocation(target.sessionId)).toEqual({ revoked_at: null, revoked_reason: null });
  });
});

describe('GetSession', () => {
  let owner: Person;
  let mine: SignedIn;
  let myOther: SignedIn;
  let stranger: SignedIn;
  let admin: SignedIn;

  beforeAll(async () => {
    owner = await newUser('get-owner');
    mine = await signIn(owner);
    clock.advance(1_000);
    myOther = await signIn(owner);
    stranger = await signIn(await newUser('get-stranger'));
    admin = await signIn(await newUser('get-admin', ['admin']));
  });

  it('reports every field: device, creation, last use, idle and absolute expiry, state and reason', async () => {
    const person = await newUser('fields');
    const loginAt = clock.ms;
    const { response } = await server.rpc<LoginResponse>('login', {
      email: person.email,
      password: 'correct horse battery',
      client: { ipAddress: '2001:db8::17', userAgent: 'Mozilla/5.0 (X11; Linux x86_64)', deviceName: 'Work laptop' },
    });
    clock.advance(5 * MINUTE);
    const refreshed = await server.rpc<RefreshTokenResponse>('refreshToken', { refreshToken: response!.tokens!.refreshToken });
    expect(refreshed.error).toBeUndefined();
    const token = refreshed.response!.tokens!.accessToken;

    const session = await getSession(response!.sessionId, { authorization: `Bearer ${token}` });
    expect(session).toEqual<Session>({
      id: response!.sessionId,
      userId: person.userId,
      ipAddress: '2001:db8::17',
      userAgent: 'Mozilla/5.0 (X11; Linux x86_64)',
      deviceName: 'Work laptop',
      createdAt: new Date(loginAt),
      lastUsedAt: new Date(clock.ms),
      idleExpiresAt: new Date(clock.ms + 14 * DAY),
      absoluteExpiresAt: new Date(loginAt + 30 * DAY),
      revokedAt: undefined,
      current: true,
      state: SessionState.SESSION_STATE_ACTIVE,
      revocationReason: RevocationReason.REVOCATION_REASON_UNSPECIFIED,
    });
  });

  it('the owner sees their own sessions; `current` marks only the bearer token\'s own', async () => {
    expect(await getSession(mine.sessionId, bearer(mine))).toMatchObject({ id: mine.sessionId, userId: owner.userId, current: true });
    expect(await getSession(myOther.sessionId, bearer(mine))).toMatchObject({ id: myOther.sessionId, userId: owner.userId, current: false });
    expect(await getSession(mine.sessionId, bearer(myOther))).toMatchObject({ id: mine.sessionId, current: false });
  });

  it('another user gets NOT_FOUND, exactly as for an id that does not exist', async () => {
    const foreign = await expectRejected('getSession', { sessionId: mine.sessionId }, bearer(stranger), NOT_FOUND);
    const unknown = await expectRejected('getSession', { sessionId: UNKNOWN_ID }, bearer(stranger), NOT_FOUND);
    expect(foreign).toEqual(unknown);
  });

  it('a service key sees any session, never as current', async () => {
    expect(await getSession(mine.sessionId, SERVICE)).toMatchObject({ id: mine.sessionId, userId: owner.userId, current: false });
  });

  it('an admin bearer sees any session; only its own is current', async () => {
    expect(await getSession(mine.sessionId, bearer(admin))).toMatchObject({ id: mine.sessionId, userId: owner.userId, current: false });
    expect(await getSession(admin.sessionId, bearer(admin))).toMatchObject({ id: admin.sessionId, current: true });
  });

  it('an admin whose role was removed is a plain user again at once', async () => {
    const demoted = await signIn(await newUser('get-demoted', ['admin']));
    expect(await getSession(mine.sessionId, bearer(demoted))).toMatchObject({ id: mine.sessionId });
    await query(server.db.url, `update users set roles = '{}' where id = $1`, [demoted.userId]);
    await expectRejected('getSession', { sessionId: mine.sessionId }, bearer(demoted), NOT_FOUND);
  });

  it('a user role that merely looks like admin grants nothing', async () => {
    const pretender = await signIn(await newUser('get-pretender', ['Admin', 'administrator']));
    await expectRejected('getSession', { sessionId: mine.sessionId }, bearer(pretender), NOT_FOUND);
  });
});

describe('session ids are checked before any lookup', () => {
  let caller: SignedIn;
  let victim: SignedIn;

  beforeAll(async () => {
    caller = await signIn(await newUser('ids-caller'));
    victim = await signIn(await newUser('ids-victim'));
  });

  describe.each(['getSession', 'revokeSession'])('%s', (method) => {
    it.each([
      ['an empty id', ''],
      ['65 characters', 'a'.repeat(65)],
      ['65 emoji', '😀'.repeat(65)],
      ['8 KB', 'f'.repeat(8192)],
    ])('%s → INVALID_ARGUMENT on session_id', async (_name, sessionId) => {
      for (const credential of [bearer(caller), SERVICE]) {
        await expectRejected(method, { sessionId }, credential, invalid('session_id'));
      }
    });

    it.each([
      ['64 characters that are not a UUID', '0'.repeat(64)],
      ['64 emoji', '😀'.repeat(64)],
      ['text that would break a uuid cast', "x' or '1'='1"],
      ['a UUID with a trailing space', `${UNKNOWN_ID} `],
      ['a UUID nobody has', UNKNOWN_ID],
    ])('%s → NOT_FOUND, never INTERNAL', async (_name, sessionId) => {
      for (const credential of [bearer(caller), SERVICE]) {
        await expectRejected(method, { sessionId }, credential, NOT_FOUND);
      }
    });

    it('an existing id in upper case is another (unknown) id: ids are opaque', async () => {
      await expectRejected(method, { sessionId: victim.sessionId.toUpperCase() }, SERVICE, NOT_FOUND);
    });
  });
});

describe('ListSessions', () => {
  let owner: Person;
  let first: SignedIn;
  let second: SignedIn;
  let stranger: SignedIn;
  let admin: SignedIn;

  beforeAll(async () => {
    owner = await newUser('list-owner');
    first = await signIn(owner);
    clock.advance(1_000);
    second = await signIn(owner);
    stranger = await signIn(await newUser('list-stranger'));
    admin = await signIn(await newUser('list-admin', ['admin']));
  });

  it('the owner lists their own sessions, most recently used first, with an empty user_id or their own id', async () => {
    const page = await succeed<ListSessionsResponse>('listSessions', {}, bearer(first));
    expect(page.sessions.map((s) => [s.id, s.current])).toEqual([
      [second.sessionId, false],
      [first.sessionId, true],
    ]);
    expect(page.nextPageToken).toBe('');
    expect(page.sessions.every((s) => s.userId === owner.userId && s.state === SessionState.SESSION_STATE_ACTIVE)).toBe(true);
    expect(await listIds({ userId: owner.userId }, bearer(first))).toEqual([second.sessionId, first.sessionId]);
  });

  it('a plain user naming another user gets PERMISSION_DENIED, whether or not that user exists', async () => {
    await expectRejected('listSessions', { userId: owner.userId }, bearer(stranger), DENIED);
    await expectRejected('listSessions', { userId: UNKNOWN_ID }, bearer(stranger), DENIED);
    await expectRejected('listSessions', { userId: 'not-a-user-id' }, bearer(stranger), DENIED);
  });

  it('a service key lists any user by user_id, never marking a session current', async () => {
    const page = await succeed<ListSessionsResponse>('listSessions', { userId: owner.userId }, SERVICE);
    expect(page.sessions.map((s) => [s.id, s.current])).toEqual([
      [second.sessionId, false],
      [first.sessionId, false],
    ]);
  });

  it('a service key without user_id → INVALID_ARGUMENT on user_id', async () => {
    await expectRejected('listSessions', {}, SERVICE, invalid('user_id'));
  });

  it('an admin bearer lists any user by user_id, and its own sessions with an empty user_id', async () => {
    expect(await listIds({ userId: owner.userId }, bearer(admin))).toEqual([second.sessionId, first.sessionId]);
    const own = await succeed<ListSessionsResponse>('listSessions', {}, bearer(admin));
    expect(own.sessions.map((s) => [s.id, s.userId, s.current])).toEqual([[admin.sessionId, admin.userId, true]]);
  });

  it('a service naming a user that does not exist gets NOT_FOUND USER_NOT_FOUND', async () => {
    await expectRejected('listSessions', { userId: UNKNOWN_ID }, SERVICE, USER_NOT_FOUND);
    await expectRejected('listSessions', { userId: 'not-a-user-id' }, SERVICE, USER_NOT_FOUND);
    await expectRejected('listSessions', { userId: owner.userId.toUpperCase() }, bearer(admin), USER_NOT_FOUND);
  });

  it('a user without sessions of the state asked for gets an empty page', async () => {
    const page = await succeed<ListSessionsResponse>('listSessions', { userId: owner.userId, state: SessionState.SESSION_STATE_REVOKED }, SERVICE);
    expect(page).toEqual({ sessions: [], nextPageToken: '' });
  });

  it.each([
    ['a negative page_size', { pageSize: -1 }, ['page_size']],
    ['the most negative page_size', { pageSize: -2147483648 }, ['page_size']],
    ['a state this server does not know', { state: 4 }, ['state']],
    ['a large unknown state', { state: 1000 }, ['state']],
    ['a negative state', { state: -1 }, ['state']],
    ['a user_id of 65 characters', { userId: 'u'.repeat(65) }, ['user_id']],
    ['a page_token that is not one', { pageToken: 'garbage' }, ['page_token']],
    ['everything wrong at once', { userId: 'u'.repeat(65), pageSize: -5, state: 9, pageToken: '%%%' }, ['user_id', 'page_size', 'state', 'page_token']],
  ])('%s → INVALID_ARGUMENT naming the field', async (_name, request, fields) => {
    await expectRejected('listSessions', request, bearer(first), invalid(...fields));
  });
});

describe('ListSessions state filter', () => {
  let person: Person;
  let expired: SignedIn;
  let active: SignedIn;
  let loggedOut: SignedIn;
  let revokedByUser: SignedIn;
  let revokedByService: SignedIn;
  let revokedAt: number;

  beforeAll(async () => {
    person = await newUser('states');
    expired = await signIn(person);
    clock.advance(14 * DAY + MINUTE);
    active = await signIn(person);
    clock.advance(1_000);
    loggedOut = await signIn(person);
    await server.rpc('logout', { refreshToken: loggedOut.refreshToken });
    clock.advance(1_000);
    revokedByUser = await signIn(person);
    clock.advance(1_000);
    revokedByService = await signIn(person);
    revokedAt = clock.ms;
    await succeed('revokeSession', { sessionId: revokedByUser.sessionId }, bearer(active));
    await succeed('revokeSession', { sessionId: revokedByService.sessionId }, SERVICE);
  });

  const list = (state: number) => succeed<ListSessionsResponse>('listSessions', { userId: person.userId, state }, SERVICE);

  it('UNSPECIFIED and ACTIVE both list active sessions only', async () => {
    for (const state of [SessionState.SESSION_STATE_UNSPECIFIED, SessionState.SESSION_STATE_ACTIVE]) {
      const page = await list(state);
      expect(page.sessions.map((s) => [s.id, s.state, s.revocationReason])).toEqual([
        [active.sessionId, SessionState.SESSION_STATE_ACTIVE, RevocationReason.REVOCATION_REASON_UNSPECIFIED],
      ]);
    }
  });

  it('REVOKED lists revoked sessions with when and why', async () => {
    const page = await list(SessionState.SESSION_STATE_REVOKED);
    expect(page.sessions.map((s) => [s.id, s.state, s.revocationReason, s.revokedAt])).toEqual([
      [revokedByService.sessionId, SessionState.SESSION_STATE_REVOKED, RevocationReason.REVOCATION_REASON_REVOKED_BY_SERVICE, new Date(revokedAt)],
      [revokedByUser.sessionId, SessionState.SESSION_STATE_REVOKED, RevocationReason.REVOCATION_REASON_REVOKED_BY_USER, new Date(revokedAt)],
      [loggedOut.sessionId, SessionState.SESSION_STATE_REVOKED, RevocationReason.REVOCATION_REASON_LOGOUT, new Date(loggedOut.at)],
    ]);
  });

  it('EXPIRED lists sessions past their expiry that nobody revoked, with no revocation time or reason', async () => {
    const page = await list(SessionState.SESSION_STATE_EXPIRED);
    expect(page.sessions.map((s) => [s.id, s.state, s.revocationReason, s.revokedAt])).toEqual([
      [expired.sessionId, SessionState.SESSION_STATE_EXPIRED, RevocationReason.REVOCATION_REASON_UNSPECIFIED, undefined],
    ]);
  });

  it('GetSession reports revoked and expired sessions until the sweep deletes them', async () => {
    expect(await getSession(loggedOut.sessionId, bearer(active))).toMatchObject({
      state: SessionState.SESSION_STATE_REVOKED,
      revocationReason: RevocationReason.REVOCATION_REASON_LOGOUT,
      revokedAt: new Date(loggedOut.at),
    });
    expect(await getSession(expired.sessionId, bearer(active))).toMatchObject({
      state: SessionState.SESSION_STATE_EXPIRED,
      revocationReason: RevocationReason.REVOCATION_REASON_UNSPECIFIED,
      revokedAt: undefined,
    });
  });

  it('the state is computed at response time: an active session becomes EXPIRED when its idle time passes', async () => {
    const later = await newUser('states-later');
    const session = await signIn(later);
    await query(server.db.url, 'update sessions set idle_expires_at = $1 where id = $2', [new Date(clock.ms + 1), session.sessionId]);
    expect((await getSession(session.sessionId, SERVICE)).state).toBe(SessionState.SESSION_STATE_ACTIVE);
    clock.advance(1);
    expect((await getSession(session.sessionId, SERVICE)).state).toBe(SessionState.SESSION_STATE_EXPIRED);
    expect(await listIds({ userId: later.userId }, SERVICE)).toEqual([]);
    expect(await listIds({ userId: later.userId, state: SessionState.SESSION_STATE_EXPIRED }, SERVICE)).toEqual([session.sessionId]);
  });

  it('an unknown revocation reason in the store is reported as UNSPECIFIED, still REVOKED', async () => {
    const odd = await signIn(await newUser('states-odd'));
    await query(server.db.url, `update sessions set revoked_at = $1, revoked_reason = 'SOMETHING_NEW' where id = $2`, [new Date(clock.ms), odd.sessionId]);
    expect(await getSession(odd.sessionId, SERVICE)).toMatchObject({
      state: SessionState.SESSION_STATE_REVOKED,
      revocationReason: RevocationReason.REVOCATION_REASON_UNSPECIFIED,
      revokedAt: new Date(clock.ms),
    });
  });
});

describe('ListSessions pages', () => {
  let owner: Person;
  let logins: SignedIn[];
  let other: Person;

  beforeAll(async () => {
    owner = await newUser('pages');
    other = await newUser('pages-other');
    await signIn(other);
    logins = [];
    for (let i = 0; i < 25; i++) {
      logins.push(await signIn(owner));
      clock.advance(1_000);
    }
  });

  const newestFirst = () => logins.map((l) => l.sessionId).reverse();

  it('25 sessions in pages of 10: 10, 10, 5, newest first, each exactly once', async () => {
    const caller = logins[0]!;
    const { pages, tokens } = await listAll({ pageSize: 10 }, bearer(caller));
    expect(pages.map((p) => p.length)).toEqual([10, 10, 5]);
    expect(tokens.map((t) => t !== '')).toEqual([true, true, false]);
    expect(pages.flat().map((s) => s.id)).toEqual(newestFirst());
    expect(pages.flat().filter((s) => s.current).map((s) => s.id)).toEqual([caller.sessionId]);
    const lastUsed = pages.flat().map((s) => s.lastUsedAt!.getTime());
    expect(lastUsed).toEqual([...lastUsed].sort((a, b) => b - a));
  });

  it('a service key pages the same way by user_id', async () => {
    const { pages } = await listAll({ userId: owner.userId, pageSize: 7 }, SERVICE);
    expect(pages.map((p) => p.length)).toEqual([7, 7, 7, 4]);
    expect(pages.flat().map((s) => s.id)).toEqual(newestFirst());
  });

  it('a page size that divides the count exactly ends without an empty page', async () => {
    const { pages, tokens } = await listAll({ userId: owner.userId, pageSize: 25 }, SERVICE);
    expect(pages.map((p) => p.length)).toEqual([25]);
    expect(tokens).toEqual(['']);
  });

  it('a page token names the user, not the caller: the owner\'s token works for a service listing the same user', async () => {
    const first = await succeed<ListSessionsResponse>('listSessions', { pageSize: 10 }, bearer(logins[0]!));
    const next = await succeed<ListSessionsResponse>('listSessions', { userId: owner.userId, pageSize: 10, pageToken: first.nextPageToken }, SERVICE);
    expect(next.sessions.map((s) => s.id)).toEqual(newestFirst().slice(10, 20));
  });

  it('a page token used with another user_id or state → INVALID_ARGUMENT on page_token, nothing changed', async () => {
    const first = await succeed<ListSessionsResponse>('listSessions', { userId: owner.userId, pageSize: 10 }, SERVICE);
    const pageToken = first.nextPageToken;
    await expectRejected('listSessions', { userId: other.userId, pageSize: 10, pageToken }, SERVICE, invalid('page_token'));
    await expectRejected('listSessions', { userId: owner.userId, pageSize: 10, pageToken, state: SessionState.SESSION_STATE_REVOKED }, SERVICE, invalid('page_token'));
    // UNSPECIFIED lists what ACTIVE lists, but the token is bound to the filter as requested.
    await expectRejected('listSessions', { userId: owner.userId, pageSize: 10, pageToken, state: SessionState.SESSION_STATE_ACTIVE }, SERVICE, invalid('page_token'));
    // The other user's own bearer with an empty user_id means the other user too.
    const otherBearer = await signIn(other);
    await expectRejected('listSessions', { pageSize: 10, pageToken }, bearer(otherBearer), invalid('page_token'));
    // A different page size is fine.
    expect(await listIds({ userId: owner.userId, pageSize: 3, pageToken }, SERVICE)).toEqual(newestFirst().slice(10, 13));
  });

  it.each([
    ['not base64url', '!!!'],
    ['base64url of text that is not JSON', Buffer.from('hello').toString('base64url')],
    ['an empty JSON object', Buffer.from('{}').toString('base64url')],
    ['a JSON array', Buffer.from('[]').toString('base64url')],
    ['JSON null', Buffer.from('null').toString('base64url')],
    ['padded base64', 'eyJ2IjoxfQ=='],
    ['over 512 characters', 'A'.repeat(513)],
    ['8 KB', 'A'.repeat(8192)],
  ])('a page_token that is %s → INVALID_ARGUMENT on page_token', async (_name, pageToken) => {
    const seen = await expectRejected('listSessions', { userId: owner.userId, pageToken }, SERVICE, invalid('page_token'));
    expect(seen.message).toBe('invalid request: page_token');
  });

  it('a tampered page token → INVALID_ARGUMENT on page_token, never INTERNAL', async () => {
    const first = await succeed<ListSessionsResponse>('listSessions', { userId: owner.userId, pageSize: 10 }, SERVICE);
    const body = JSON.parse(Buffer.from(first.nextPageToken, 'base64url').toString('utf8')) as Record<string, unknown>;
    const tampered = (change: Record<string, unknown>) => Buffer.from(JSON.stringify({ ...body, ...change })).toString('base64url');
    const variants = [
      { v: 2 },
      { v: '1' },
      { u: 'not-a-uuid' },
      { u: owner.userId.toUpperCase() },
      { i: "x' or '1'='1" },
      { i: 42 },
      { t: 'yesterday' },
      { t: '-1' },
      { t: '1e15' },
      { t: '99999999999999999999' },
      { t: 1700000000000000 },
      { s: 'SESSION_STATE_ACTIVE' },
      { s: 'UNRECOGNIZED' },
      { extra: true },
    ];
    for (const change of variants) {
      await expectRejected('listSessions', { userId: owner.userId, pageToken: tampered(change) }, SERVICE, invalid('page_token'));
    }
    // The untampered body still works, so each rejection above is down to its change.
    expect(await listIds({ userId: owner.userId, pageSize: 10, pageToken: tampered({}) }, SERVICE)).toEqual(newestFirst().slice(10, 20));
  });

  it('orders ties on last_used_at by id and keeps microsecond differences across pages', async () => {
    // Groups of equal timestamps one microsecond apart: a token that rounded to milliseconds
    // would skip or repeat sessions.
    await query(
      server.db.url,
      `update sessions s set last_used_at = timestamptz '2030-01-01 00:00:00+00' + (n.k % 4) * interval '1 microsecond'
         from (select id, row_number() over (order by id) as k from sessions where user_id = $1) n
        where s.id = n.id`,
      [owner.userId],
    );
    const expected = (
      await query<{ id: string }>(server.db.url, 'select id from sessions where user_id = $1 order by last_used_at desc, id desc', [owner.userId])
    ).map((r) => r.id);
    const { pages } = await listAll({ userId: owner.userId, pageSize: 3 }, SERVICE);
    expect(pages.flat().map((s) => s.id)).toEqual(expected);
    expect(new Set(expected).size).toBe(25);
  });
});

describe('ListSessions page sizes', () => {
  let person: Person;

  beforeAll(async () => {
    person = await newUser('bulk');
    // 230 active sessions, written directly: the page-size bounds need more than 200.
    await query(
      server.db.url,
      `insert into sessions (id, user_id, refresh_secret_hash, created_at, last_used_at, idle_expires_at, absolute_expires_at)
       select gen_random_uuid(), $1, decode(md5(g::text), 'hex'), $2, $2::timestamptz + g * interval '1 second', $3, $3
         from generate_series(1, 230) g`,
      [person.userId, new Date(clock.ms), new Date(clock.ms + DAY)],
    );
  });

  const page = (pageSize: number, pageToken = '') =>
    succeed<ListSessionsResponse>('listSessions', { userId: person.userId, pageSize, pageToken }, SERVICE);

  it('0 means 50', async () => {
    const result = await page(0);
    expect(result.sessions).toHaveLength(50);
    expect(result.nextPageToken).not.toBe('');
  });

  it('above 200 means 200, and the rest follows', async () => {
    for (const size of [201, 1000, 2147483647]) {
      const first = await page(size);
      expect(first.sessions).toHaveLength(200);
      const rest = await page(size, first.nextPageToken);
      expect(rest.sessions).toHaveLength(30);
      expect(rest.nextPageToken).toBe('');
      expect(new Set([...first.sessions, ...rest.sessions].map((s) => s.id)).size).toBe(230);
    }
  });

  it('200 and 1 are taken as given', async () => {
    expect((await page(200)).sessions).toHaveLength(200);
    expect((await page(1)).sessions).toHaveLength(1);
  });
});

describe('RevokeSession', () => {
  it('the owner revokes another of their sessions: REVOKED_BY_USER, refresh and check_revocation fail, the rest keeps working', async () => {
    const person = await newUser('revoke-owner');
    const phone = await signIn(person);
    const laptop = await signIn(person);
    clock.advance(MINUTE);

    const { session } = await succeed<RevokeSessionResponse>('revokeSession', { sessionId: phone.sessionId }, bearer(laptop));
    expect(session).toMatchObject({
      id: phone.sessionId,
      userId: person.userId,
      current: false,
      state: SessionState.SESSION_STATE_REVOKED,
      revocationReason: RevocationReason.REVOCATION_REASON_REVOKED_BY_USER,
      revokedAt: new Date(clock.ms),
      createdAt: new Date(phone.at),
    });
    expect(await storedRevocation(phone.sessionId)).toEqual({ revoked_at: new Date(clock.ms), revoked_reason: 'REVOKED_BY_USER' });
    expect(await revocationEvents(person.userId)).toEqual([
      { session_id: phone.sessionId, details: { reason: 'REVOKED_BY_USER', by: 'user' }, occurred_at: new Date(clock.ms), ip_address: null, user_agent: null },
    ]);

    expect(failure((await refresh(phone)).error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'SESSION_REVOKED' });
    expect(failure((await validate(phone, true)).error)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'SESSION_REVOKED' });
    // Without check_revocation the token stays valid until it expires: verification is local.
    expect((await validate(phone, false)).error).toBeUndefined();
    await expectRejected('getSession', { sessionId: phone.sessionId }, bearer(phone), { code: status.UNAUTHENTICATED, reason: 'SESSION_REVOKED' });

    expect((await validate(laptop, true)).error).toBeUndefined();
    expect((await refresh(laptop)).error).toBeUndefined();
  });

  it('revoking an already revoked session succeeds without change', async () => {
    const person = await newUser('revoke-twice');
    const caller = await signIn(person);
    const other = await signIn(person);
    const first = await succeed<RevokeSessionResponse>('revokeSession', { sessionId: other.sessionId }, bearer(caller));
    clock.advance(MINUTE);
    for (const credential of [bearer(caller), SERVICE]) {
      const before = await storeSnapshot(server.db.url);
      const again = await succeed<RevokeSessionResponse>('revokeSession', { sessionId: other.sessionId }, credential);
      expect(again.session).toEqual(first.session);
      expect(await storeSnapshot(server.db.url)).toEqual(before);
    }
    expect(await revocationEvents(person.userId)).toHaveLength(1);
  });

  it('revoking an expired session succeeds without change and reports it EXPIRED', async () => {
    const person = await newUser('revoke-expired');
    const old = await signIn(person);
    clock.advance(14 * DAY + MINUTE);
    const caller = await signIn(person);
    for (const credential of [bearer(caller), SERVICE]) {
      const before = await storeSnapshot(server.db.url);
      const { session } = await succeed<RevokeSessionResponse>('revokeSession', { sessionId: old.sessionId }, credential);
      expect(session).toMatchObject({ id: old.sessionId, state: SessionState.SESSION_STATE_EXPIRED, revokedAt: undefined, revocationReason: 0 });
      expect(await storeSnapshot(server.db.url)).toEqual(before);
    }
    expect(await revocationEvents(person.userId)).toEqual([]);
  });

  it('the owner may revoke the session of the very token making the call', async () => {
    const caller = await signIn(await newUser('revoke-self'));
    const { session } = await succeed<RevokeSessionResponse>('revokeSession', { sessionId: caller.sessionId }, bearer(caller));
    expect(session).toMatchObject({ id: caller.sessionId, current: true, state: SessionState.SESSION_STATE_REVOKED, revocationReason: RevocationReason.REVOCATION_REASON_REVOKED_BY_USER });
    await expectRejected('revokeSession', { sessionId: caller.sessionId }, bearer(caller), { code: status.UNAUTHENTICATED, reason: 'SESSION_REVOKED' });
  });

  it('another user gets NOT_FOUND and the session stays active', async () => {
    const victim = await signIn(await newUser('revoke-victim'));
    const stranger = await signIn(await newUser('revoke-stranger'));
    await expectRejected('revokeSession', { sessionId: victim.sessionId }, bearer(stranger), NOT_FOUND);
    expect((await validate(victim, true)).error).toBeUndefined();
  });

  it('a service key revokes any session: REVOKED_BY_SERVICE', async () => {
    const target = await signIn(await newUser('revoke-by-service'));
    clock.advance(MINUTE);
    const { session } = await succeed<RevokeSessionResponse>('revokeSession', { sessionId: target.sessionId }, SERVICE);
    expect(session).toMatchObject({ current: false, state: SessionState.SESSION_STATE_REVOKED, revocationReason: RevocationReason.REVOCATION_REASON_REVOKED_BY_SERVICE, revokedAt: new Date(clock.ms) });
    expect(await revocationEvents(target.userId)).toEqual([
      { session_id: target.sessionId, details: { reason: 'REVOKED_BY_SERVICE', by: 'service' }, occurred_at: new Date(clock.ms), ip_address: null, user_agent: null },
    ]);
    expect(failure((await refresh(target)).error)).toMatchObject({ reason: 'SESSION_REVOKED' });
    expect(failure((await validate(target, true)).error)).toMatchObject({ reason: 'SESSION_REVOKED' });
  });

  it('an admin bearer revokes another user\'s session as a service, and its own other session as its owner', async () => {
    const adminUser = await newUser('revoke-admin', ['admin']);
    const admin = await signIn(adminUser);
    const adminOther = await signIn(adminUser);
    const target = await signIn(await newUser('revoke-admin-target'));

    const theirs = await succeed<RevokeSessionResponse>('revokeSession', { sessionId: target.sessionId }, bearer(admin));
    expect(theirs.session).toMatchObject({ state: SessionState.SESSION_STATE_REVOKED, revocationReason: RevocationReason.REVOCATION_REASON_REVOKED_BY_SERVICE });
    expect((await revocationEvents(target.userId)).map((e) => e.details)).toEqual([{ reason: 'REVOKED_BY_SERVICE', by: 'service' }]);

    const own = await succeed<RevokeSessionResponse>('revokeSession', { sessionId: adminOther.sessionId }, bearer(admin));
    expect(own.session).toMatchObject({ state: SessionState.SESSION_STATE_REVOKED, revocationReason: RevocationReason.REVOCATION_REASON_REVOKED_BY_USER });
    expect((await revocationEvents(adminUser.userId)).map((e) => e.details)).toEqual([{ reason: 'REVOKED_BY_USER', by: 'user' }]);
  });

  it('concurrent revocations of one session write one revocation and one audit event', async () => {
    const target = await signIn(await newUser('revoke-race'));
    const results = await Promise.all(Array.from({ length: 5 }, () => rpc<RevokeSessionResponse>('revokeSession', { sessionId: target.sessionId }, SERVICE)));
    expect(results.map((r) => r.error)).toEqual(Array(5).fill(undefined));
    // Each answer reports the session as it is after the call, including those that lost the race.
    expect(results.map((r) => [r.response!.session!.state, r.response!.session!.revokedAt])).toEqual(
      Array(5).fill([SessionState.SESSION_STATE_REVOKED, new Date(clock.ms)]),
    );
    expect(await revocationEvents(target.userId)).toHaveLength(1);
  });
});

describe('RevokeAllSessions', () => {
  it('"sign out everywhere else": keeps exactly the excepted session, counts the active ones it ended', async () => {
    const person = await newUser('all-owner');
    const expired = await signIn(person);
    clock.advance(14 * DAY + MINUTE);
    const kept = await signIn(person);
    const others = [await signIn(person), await signIn(person), await signIn(person)];
    const loggedOut = await signIn(person);
    await server.rpc('logout', { refreshToken: loggedOut.refreshToken });
    const bystander = await signIn(await newUser('all-bystander'));
    clock.advance(MINUTE);

    const { revokedCount } = await succeed<RevokeAllSessionsResponse>('revokeAllSessions', { exceptSessionId: kept.sessionId }, bearer(kept));
    expect(revokedCount).toBe(3);

    const events = await revocationEvents(person.userId);
    expect(events.map((e) => e.session_id).sort()).toEqual(others.map((o) => o.sessionId).sort());
    for (const event of events) {
      expect(event).toMatchObject({ details: { reason: 'REVOKED_BY_USER', by: 'user' }, occurred_at: new Date(clock.ms) });
    }
    for (const other of others) {
      expect(await storedRevocation(other.sessionId)).toEqual({ revoked_at: new Date(clock.ms), revoked_reason: 'REVOKED_BY_USER' });
      expect(failure((await refresh(other)).error)).toMatchObject({ reason: 'SESSION_REVOKED' });
      expect(failure((await validate(other, true)).error)).toMatchObject({ reason: 'SESSION_REVOKED' });
    }
    // Already ended sessions keep their own story.
    expect(await storedRevocation(loggedOut.sessionId)).toEqual({ revoked_at: new Date(loggedOut.at), revoked_reason: 'LOGOUT' });
    expect(await storedRevocation(expired.sessionId)).toEqual({ revoked_at: null, revoked_reason: null });
    expect((await validate(bystander, true)).error).toBeUndefined();

    expect(await listIds({}, bearer(kept))).toEqual([kept.sessionId]);
    expect((await refresh(kept)).error).toBeUndefined();

    // Again: nothing left to end, nothing written.
    const before = await storeSnapshot(server.db.url);
    const again = await succeed<RevokeAllSessionsResponse>('revokeAllSessions', { exceptSessionId: kept.sessionId }, bearer(kept));
    expect(again.revokedCount).toBe(0);
    expect(await storeSnapshot(server.db.url)).toEqual(before);
  });

  it('without except_session_id the owner ends every session, the calling one included', async () => {
    const person = await newUser('all-everything');
    const caller = await signIn(person);
    await signIn(person);
    const { revokedCount } = await succeed<RevokeAllSessionsResponse>('revokeAllSessions', { userId: person.userId }, bearer(caller));
    expect(revokedCount).toBe(2);
    await expectRejected('revokeAllSessions', {}, bearer(caller), { code: status.UNAUTHENTICATED, reason: 'SESSION_REVOKED' });
    expect(await listIds({ userId: person.userId }, SERVICE)).toEqual([]);
  });

  it('keeping a session that has already ended is allowed and keeps nothing active', async () => {
    const person = await newUser('all-keep-ended');
    const ended = await signIn(person);
    await server.rpc('logout', { refreshToken: ended.refreshToken });
    await signIn(person);
    const { revokedCount } = await succeed<RevokeAllSessionsResponse>('revokeAllSessions', { userId: person.userId, exceptSessionId: ended.sessionId }, SERVICE);
    expect(revokedCount).toBe(1);
    expect(await storedRevocation(ended.sessionId)).toMatchObject({ revoked_reason: 'LOGOUT' });
  });

  it('a service key ends any user\'s sessions: REVOKED_BY_SERVICE, one audit event each', async () => {
    const person = await newUser('all-service');
    const sessionsOf = [await signIn(person), await signIn(person)];
    const { revokedCount } = await succeed<RevokeAllSessionsResponse>('revokeAllSessions', { userId: person.userId }, SERVICE);
    expect(revokedCount).toBe(2);
    const events = await revocationEvents(person.userId);
    expect(events.map((e) => e.session_id).sort()).toEqual(sessionsOf.map((s) => s.sessionId).sort());
    expect(events.map((e) => e.details)).toEqual([
      { reason: 'REVOKED_BY_SERVICE', by: 'service' },
      { reason: 'REVOKED_BY_SERVICE', by: 'service' },
    ]);
    const page = await succeed<ListSessionsResponse>('listSessions', { userId: person.userId, state: SessionState.SESSION_STATE_REVOKED }, SERVICE);
    expect(page.sessions.map((s) => s.revocationReason)).toEqual([
      RevocationReason.REVOCATION_REASON_REVOKED_BY_SERVICE,
      RevocationReason.REVOCATION_REASON_REVOKED_BY_SERVICE,
    ]);
  });

  it('an admin bearer ends another user\'s sessions as a service, and its own (empty user_id) as their owner', async () => {
    const adminUser = await newUser('all-admin', ['admin']);
    const admin = await signIn(adminUser);
    const adminOther = await signIn(adminUser);
    const person = await newUser('all-admin-target');
    await signIn(person);

    expect((await succeed<RevokeAllSessionsResponse>('revokeAllSessions', { userId: person.userId }, bearer(admin))).revokedCount).toBe(1);
    expect((await revocationEvents(person.userId)).map((e) => e.details)).toEqual([{ reason: 'REVOKED_BY_SERVICE', by: 'service' }]);

    expect((await succeed<RevokeAllSessionsResponse>('revokeAllSessions', { exceptSessionId: admin.sessionId }, bearer(admin))).revokedCount).toBe(1);
    expect(await revocationEvents(adminUser.userId)).toMatchObject([{ session_id: adminOther.sessionId, details: { reason: 'REVOKED_BY_USER', by: 'user' } }]);
  });

  it('a user without active sessions: 0, nothing written', async () => {
    const person = await newUser('all-none');
    const before = await storeSnapshot(server.db.url);
    expect((await succeed<RevokeAllSessionsResponse>('revokeAllSessions', { userId: person.userId }, SERVICE)).revokedCount).toBe(0);
    expect(await storeSnapshot(server.db.url)).toEqual(before);
  });

  describe('refuses, changing nothing', () => {
    let person: Person;
    let caller: SignedIn;
    let stranger: SignedIn;

    beforeAll(async () => {
      person = await newUser('all-refused');
      caller = await signIn(person);
      await signIn(person);
      stranger = await signIn(await newUser('all-refused-stranger'));
    });

    it('a plain user naming another user → PERMISSION_DENIED', async () => {
      await expectRejected('revokeAllSessions', { userId: person.userId }, bearer(stranger), DENIED);
      await expectRejected('revokeAllSessions', { userId: UNKNOWN_ID }, bearer(stranger), DENIED);
    });

    it('a service key without user_id → INVALID_ARGUMENT on user_id', async () => {
      await expectRejected('revokeAllSessions', {}, SERVICE, invalid('user_id'));
      await expectRejected('revokeAllSessions', { exceptSessionId: caller.sessionId }, SERVICE, invalid('user_id'));
    });

    it('a user that does not exist → NOT_FOUND USER_NOT_FOUND', async () => {
      await expectRejected('revokeAllSessions', { userId: UNKNOWN_ID }, SERVICE, USER_NOT_FOUND);
      await expectRejected('revokeAllSessions', { userId: 'not-a-user-id' }, SERVICE, USER_NOT_FOUND);
      await expectRejected('revokeAllSessions', { userId: UNKNOWN_ID, exceptSessionId: caller.sessionId }, SERVICE, USER_NOT_FOUND);
    });

    it.each([
      ['another user\'s session', () => stranger.sessionId],
      ['a UUID nobody has', () => UNKNOWN_ID],
      ['an id that is not a UUID', () => 'not-a-session'],
      ['64 characters', () => '0'.repeat(64)],
    ])('except_session_id that is %s → INVALID_ARGUMENT on except_session_id', async (_name, exceptSessionId) => {
      for (const [request, credential] of [
        [{ exceptSessionId: exceptSessionId() }, bearer(caller)],
        [{ userId: person.userId, exceptSessionId: exceptSessionId() }, SERVICE],
      ] as const) {
        const seen = await expectRejected('revokeAllSessions', request, credential, invalid('except_session_id'));
        expect(seen.message).toBe('invalid request: except_session_id');
      }
      expect((await validate(caller, true)).error).toBeUndefined();
    });

    it.each([
      ['a user_id of 65 characters', { userId: 'u'.repeat(65) }, ['user_id']],
      ['an except_session_id of 65 characters', { exceptSessionId: 'e'.repeat(65) }, ['except_session_id']],
      ['both', { userId: 'u'.repeat(65), exceptSessionId: 'e'.repeat(65) }, ['user_id', 'except_session_id']],
    ])('%s → INVALID_ARGUMENT naming it', async (_name, request, fields) => {
      await expectRejected('revokeAllSessions', request, bearer(caller), invalid(...fields));
      await expectRejected('revokeAllSessions', { userId: person.userId, ...request }, SERVICE, invalid(...fields));
    });
  });
});

describe('each call sends one statement and opens no transaction', () => {
  let db: TestDatabase;
  let app: RunningApp;
  let client: SessionServiceClient;
  let auth: AuthServiceClient;
  const log = new StatementLog();
  /** Where the statements of this describe's calls begin. */
  let firstCall = 0;

  beforeAll(async () => {
    db = await createTestDatabase();
    const config = testConfig(db.url, { MAX_SESSIONS_PER_USER: '0', SERVICE_API_KEYS: API_KEY });
    app = await startApp(config, createLogger('trace', log), undefined, { clock });
    client = sessionClient(app.grpcPort);
    auth = authClient(app.grpcPort);
    firstCall = log.statements.length;
  });

  afterAll(async () => {
    client?.close();
    auth?.close();
    await app?.stop();
    await db?.drop();
  });

  /** Start-up migrates inside transactions, so this looks only at what the calls sent. */
  function expectNoTransaction(): void {
    expect(log.statements.slice(firstCall).join('\n')).not.toMatch(/\b(begin|commit|rollback|savepoint)\b/i);
  }

  /** Makes one call; returns its response or error and the statements it sent. */
  async function traced<Res>(method: string, request: object, credential: Credential) {
    const start = log.statements.length;
    const result = await call<object, Res>(client as unknown as Client, method, REQUESTS[method]!.fromPartial(request), {
      metadata: metadataOf(credential),
    });
    return { ...result, statements: log.statements.slice(start) };
  }

  it('with a service key: one statement per call, none for an id that cannot exist, never a transaction', async () => {
    const { user } = await register(auth, 'statements@example.com');
    const [a, b] = [await login(auth, 'statements@example.com'), await login(auth, 'statements@example.com')];
    await login(auth, 'statements@example.com');
    const userId = user!.id;

    const firstPage = await traced<ListSessionsResponse>('listSessions', { userId, pageSize: 1 }, SERVICE);
    const calls: { name: string; sent: Awaited<ReturnType<typeof traced>>; statement: RegExp }[] = [
      { name: 'first page', sent: firstPage, statement: /^select u\.id as found_user_id, p\.\* from users u left join lateral/ },
      {
        name: 'next page',
        sent: await traced('listSessions', { userId, pageSize: 1, pageToken: firstPage.response!.nextPageToken }, SERVICE),
        statement: /^select u\.id as found_user_id, p\.\* from users u left join lateral/,
      },
      { name: 'get', sent: await traced('getSession', { sessionId: a.sessionId }, SERVICE), statement: /^select .* from sessions s where s\.id = \?/ },
      {
        name: 'revoke',
        sent: await traced('revokeSession', { sessionId: b.sessionId }, SERVICE),
        statement: /^with target as \( select .* for update \), revoked as \( update sessions .* insert into audit_events /,
      },
      {
        name: 'revoke all',
        sent: await traced('revokeAllSessions', { userId, exceptSessionId: a.sessionId }, SERVICE),
        statement: /^with target as \( select id as user_id from users .* update sessions .* insert into audit_events /,
      },
    ];
    for (const { name, sent, statement } of calls) {
      expect({ name, error: sent.error, statements: sent.statements.length }).toEqual({ name, error: undefined, statements: 1 });
      expect(sent.statements[0]).toMatch(statement);
    }

    const unknown = await traced('revokeSession', { sessionId: 'not-a-session' }, SERVICE);
    expect({ reason: failure(unknown.error).reason, statements: unknown.statements }).toEqual({ reason: 'SESSION_NOT_FOUND', statements: [] });
    const unknownUser = await traced('listSessions', { userId: 'not-a-user' }, SERVICE);
    expect({ reason: failure(unknownUser.error).reason, statements: unknownUser.statements }).toEqual({ reason: 'USER_NOT_FOUND', statements: [] });
    expectNoTransaction();
  });

  it("with a bearer token: the credential's session read, then the call's one statement", async () => {
    await register(auth, 'statements-bearer@example.com');
    const signedIn = await login(auth, 'statements-bearer@example.com');
    const sent = await traced('listSessions', {}, { authorization: `Bearer ${signedIn.tokens!.accessToken}` });
    expect(sent.error).toBeUndefined();
    expect(sent.statements).toHaveLength(2);
    expect(sent.statements[0]).toMatch(/^select .* from sessions s join users u on u\.id = s\.user_id where s\.id = \?$/);
    expect(sent.statements[1]).toMatch(/^select u\.id as found_user_id/);
    expectNoTransaction();
  });
});
