import { status } from '@grpc/grpc-js';
import type {
  LoginResponse,
  RequestEmailVerificationResponse,
  RequestPasswordResetResponse,
  SetUserRolesResponse,
} from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { type AuthServer, failure, login, ManualClock, MINUTE } from '../support/auth.js';
import { accountTestKit, API_KEY, asService, bearerOf, type Credential, PASSWORD, startAccountServer } from '../support/accounts.js';

const clock = new ManualClock();
let server: AuthServer;

beforeAll(async () => {
  server = await startAccountServer(clock);
});

afterAll(async () => {
  await server?.close();
});

const kit = accountTestKit(() => server);
const { rpc, expectRejected } = kit;

let counter = 0;
const uniqueEmail = (label: string) => `${label}-${++counter}@example.com`;

const INVALID = { code: status.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT' };
const TOKEN_INVALID = { code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' };
const USER_NOT_FOUND = { code: status.NOT_FOUND, reason: 'USER_NOT_FOUND' };
const PERMISSION_DENIED = { code: status.PERMISSION_DENIED, reason: 'PERMISSION_DENIED' };
const UNKNOWN_TOKEN = 'A'.repeat(43);

describe('who may call what', () => {
  const CREDENTIALS = ['no credential', 'an invalid API key', 'a plain user', 'an admin bearer', 'the API key'] as const;
  type CredentialName = (typeof CREDENTIALS)[number];
  type Outcome = 'OK' | { code: status; reason: string };

  interface Fixture {
    readonly user: LoginResponse;
    readonly admin: LoginResponse;
    readonly target: { id: string; email: string };
  }

  const service: Record<CredentialName, Outcome> = {
    'no credential': TOKEN_INVALID,
    'an invalid API key': TOKEN_INVALID,
    'a plain user': PERMISSION_DENIED,
    'an admin bearer': 'OK',
    'the API key': 'OK',
  };
  const anyone: Record<CredentialName, Outcome> = {
    'no credential': 'OK',
    'an invalid API key': 'OK',
    'a plain user': 'OK',
    'an admin bearer': 'OK',
    'the API key': 'OK',
  };
  const theUser: Record<CredentialName, Outcome> = {
    'no credential': TOKEN_INVALID,
    'an invalid API key': TOKEN_INVALID,
    'a plain user': 'OK',
    'an admin bearer': 'OK',
    'the API key': PERMISSION_DENIED,
  };

  const RPCS: { method: string; who: Record<CredentialName, Outcome>; request: (f: Fixture) => Promise<object> }[] = [
    { method: 'changePassword', who: theUser, request: async () => ({ currentPassword: PASSWORD, newPassword: 'a matrix passphrase' }) },
    { method: 'requestPasswordReset', who: service, request: async (f) => ({ email: f.target.email }) },
    {
      method: 'resetPassword',
      who: anyone,
      request: async (f) => {
        const { response } = await rpc<RequestPasswordResetResponse>('requestPasswordReset', { email: f.target.email }, asService);
        return { token: response!.resetToken, newPassword: 'a matrix passphrase' };
      },
    },
    { method: 'requestEmailVerification', who: service, request: async (f) => ({ userId: f.target.id }) },
    {
      method: 'verifyEmail',
      who: anyone,
      request: async (f) => {
        const { response } = await rpc<RequestEmailVerificationResponse>('requestEmailVerification', { userId: f.target.id }, asService);
        return { token: response!.verificationToken };
      },
    },
    { method: 'getUser', who: service, request: async (f) => ({ userId: f.target.id }) },
    { method: 'disableUser', who: service, request: async (f) => ({ userId: f.target.id }) },
    { method: 'enableUser', who: service, request: async (f) => ({ userId: f.target.id }) },
    { method: 'setUserRoles', who: service, request: async (f) => ({ userId: f.target.id, roles: ['viewer'] }) },
  ];

  const credentialOf = (name: CredentialName, f: Fixture): Credential =>
    ({
      'no credential': undefined,
      'an invalid API key': { apiKey: `${API_KEY}-but-not-quite` },
      'a plain user': bearerOf(f.user),
      'an admin bearer': bearerOf(f.admin),
      'the API key': asService,
    })[name];

  const cases = RPCS.flatMap(({ method, who, request }) =>
    CREDENTIALS.map((credential) => ({ method, credential, outcome: who[credential], request })),
  );

  it.each(cases)('$method with $credential', async ({ method, credential, outcome, request }) => {
    const userEmail = uniqueEmail('matrix-user');
    await kit.newUser(userEmail);
    const user = await login(server.client, userEmail);
    const admin = await kit.newAdmin(uniqueEmail('matrix-admin'));
    const targetEmail = uniqueEmail('matrix-target');
    const fixture: Fixture = { user, admin, target: { id: await kit.newUser(targetEmail), email: targetEmail } };
    const body = await request(fixture);

    if (outcome === 'OK') {
      const { error } = await rpc(method, body, credentialOf(credential, fixture));
      expect(failure(error)).toEqual({ fields: [], reason: 'no error' });
    } else {
      await expectRejected(method, body, credentialOf(credential, fixture), outcome);
    }
  });

  it('credentials are checked before the request: an empty request without one is UNAUTHENTICATED', async () => {
    await expectRejected('getUser', { userId: '' }, undefined, TOKEN_INVALID);
    await expectRejected('changePassword', { currentPassword: '', newPassword: '' }, asService, PERMISSION_DENIED);
  });

  it('a bearer token of a revoked session is SESSION_REVOKED, an expired one TOKEN_EXPIRED, a malformed header TOKEN_INVALID', async () => {
    const admin = await kit.newAdmin(uniqueEmail('ended-admin'));
    const target = await kit.newUser(uniqueEmail('ended-target'));
    await expectRejected('getUser', { userId: target }, { bearer: 'not a token' }, TOKEN_INVALID);
    clock.advance(15 * MINUTE + 1_000);
    await expectRejected('getUser', { userId: target }, bearerOf(admin), { code: status.UNAUTHENTICATED, reason: 'TOKEN_EXPIRED' });
    const fresh = await login(server.client, admin.user!.email);
    await rpc('logout', { refreshToken: fresh.tokens!.refreshToken });
    await expectRejected('disableUser', { userId: target }, bearerOf(fresh), { code: status.UNAUTHENTICATED, reason: 'SESSION_REVOKED' });
    await expectRejected('changePassword', { currentPassword: PASSWORD, newPassword: 'another passphrase' }, bearerOf(fresh), {
      code: status.UNAUTHENTICATED,
      reason: 'SESSION_REVOKED',
    });
  });
});

describe('ChangePassword refuses bad input with the exact reason and changes nothing', () => {
  let caller: LoginResponse;
  beforeAll(async () => {
    const email = uniqueEmail('change-input');
    await kit.newUser(email);
    caller = await login(server.client, email);
  });

  it.each([
    ['an empty current password', { currentPassword: '' }, INVALID, ['current_password']],
    ['a current password with NUL', { currentPassword: 'abc\u0000defgh' }, INVALID, ['current_password']],
    ['a current password over 1024 bytes', { currentPassword: 'ü'.repeat(513) }, INVALID, ['current_password']],
    ['an empty new password', { newPassword: '' }, INVALID, ['new_password']],
    ['a new password over 1024 bytes', { newPassword: 'ü'.repeat(513) }, INVALID, ['new_password']],
    ['a new password with a lone surrogate', { newPassword: 'abcd\uD800efghij' }, INVALID, ['new_password']],
    ['a new password of 7 characters', { newPassword: 'abcdefg' }, { code: status.INVALID_ARGUMENT, reason: 'WEAK_PASSWORD' }, ['new_password']],
    ['both bad', { currentPassword: '', newPassword: 'short' }, INVALID, ['current_password', 'new_password']],
  ])('%s', async (_name, change, expected, fields) => {
    const request = { currentPassword: PASSWORD, newPassword: 'a perfectly good passphrase', ...change };
    const message = await expectRejected('changePassword', request, bearerOf(caller), { ...expected, fields });
    expect(message).not.toContain(PASSWORD);
    if (request.newPassword.length > 0) expect(message).not.toContain(request.newPassword);
  });
});

describe('RequestPasswordReset refuses bad input', () => {
  it.each([
    ['an empty email', ''],
    ['a blank email', '   '],
    ['an email without @', 'someone.example.com'],
    ['an email of 255 characters', `${'a'.repeat(64)}@${'b'.repeat(186)}.com`],
    ['an 8 KB email', `${'a'.repeat(8 * 1024)}@example.com`],
  ])('%s → INVALID_ARGUMENT on email', async (_name, email) => {
    await expectRejected('requestPasswordReset', { email }, asService, { ...INVALID, fields: ['email'] });
  });
});

describe.each([
  ['resetPassword', { newPassword: 'a perfectly good passphrase' }],
  ['verifyEmail', {}],
])('%s refuses bad tokens and changes nothing', (method, rest) => {
  it.each([
    ['an empty token', ''],
    ['a token of 257 characters', 'A'.repeat(257)],
  ])('%s → INVALID_ARGUMENT on token', async (_name, token) => {
    await expectRejected(method, { ...rest, token }, undefined, { ...INVALID, fields: ['token'] });
  });

  it.each([
    ['42 characters', 'A'.repeat(42)],
    ['44 characters', 'A'.repeat(44)],
    ['standard base64 characters', `${'A'.repeat(41)}+/`],
    ['padding', `${'A'.repeat(42)}=`],
    ['a non-canonical last character', `${'A'.repeat(42)}B`],
    ['a refresh token', `00000000-0000-4000-8000-000000000000.${'A'.repeat(43)}`],
    ['256 characters of garbage', '%'.repeat(256)],
    ['a well-formed token nobody issued', UNKNOWN_TOKEN],
  ])('a token of %s → TOKEN_INVALID', async (_name, token) => {
    const message = await expectRejected(method, { ...rest, token }, undefined, TOKEN_INVALID);
    expect(message).toBe('the token is invalid, already used or superseded');
  });
});

describe('ResetPassword checks every field at once', () => {
  it.each([
    ['an empty token and an empty password', { token: '', newPassword: '' }, INVALID, ['token', 'new_password']],
    ['an empty token and a short password', { token: '', newPassword: 'short' }, INVALID, ['token', 'new_password']],
    ['an empty password', { token: UNKNOWN_TOKEN, newPassword: '' }, INVALID, ['new_password']],
    ['a password over 1024 bytes', { token: UNKNOWN_TOKEN, newPassword: 'ü'.repeat(513) }, INVALID, ['new_password']],
    ['a short password', { token: UNKNOWN_TOKEN, newPassword: 'short' }, { code: status.INVALID_ARGUMENT, reason: 'WEAK_PASSWORD' }, ['new_password']],
  ])('%s', async (_name, request, expected, fields) => {
    await expectRejected('resetPassword', request, undefined, { ...expected, fields });
  });
});

describe.each([
  ['requestEmailVerification', {}],
  ['getUser', {}],
  ['disableUser', {}],
  ['enableUser', {}],
  ['setUserRoles', { roles: ['viewer'] }],
])('%s refuses bad user ids and changes nothing', (method, rest) => {
  it.each([
    ['an empty id', ''],
    ['an id of 65 characters', 'a'.repeat(65)],
  ])('%s → INVALID_ARGUMENT on user_id', async (_name, userId) => {
    await expectRejected(method, { ...rest, userId }, asService, { ...INVALID, fields: ['user_id'] });
  });

  it.each([
    ['a word', 'not-a-uuid'],
    ['64 characters', 'a'.repeat(64)],
    ['SQL', "1' or '1'='1"],
    ['a UUID shape with non-hex digits', 'zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz'],
    ['a UUID in braces', '{00000000-0000-4000-8000-000000000000}'],
    ['a UUID nobody has', '00000000-0000-4000-8000-000000000000'],
  ])('%s → NOT_FOUND / USER_NOT_FOUND', async (_name, userId) => {
    const message = await expectRejected(method, { ...rest, userId }, asService, USER_NOT_FOUND);
    expect(message).toBe('no user has this id');
  });

  it("an existing user's id in upper case → USER_NOT_FOUND: ids are compared exactly", async () => {
    const id = await kit.newUser(uniqueEmail(`case-${method}`));
    await expectRejected(method, { ...rest, userId: id.toUpperCase() }, asService, USER_NOT_FOUND);
  });
});

describe('SetUserRoles bounds the roles', () => {
  let userId: string;
  beforeAll(async () => {
    userId = await kit.newUser(uniqueEmail('roles-input'));
  });

  const distinct = (n: number) => Array.from({ length: n }, (_, i) => `role-${String.fromCharCode(97 + i)}`);

  it.each([
    ['17 distinct roles', distinct(17), ['roles']],
    ['an empty role', [''], ['roles[0]']],
    ['an upper-case role', ['viewer', 'Admin'], ['roles[1]']],
    ['a role starting with a digit', ['1st'], ['roles[0]']],
    ['a role starting with a dash', ['-x'], ['roles[0]']],
    ['a role of 33 characters', ['a'.repeat(33)], ['roles[0]']],
    ['a role with a space', ['has space'], ['roles[0]']],
    ['a role with a slash', ['a/b'], ['roles[0]']],
    ['a role with a non-ASCII letter', ['rôle'], ['roles[0]']],
    ['a role with a NUL', ['ab\u0000'], ['roles[0]']],
    ['several bad roles', ['ok', 'B', 'fine', ' padded'], ['roles[1]', 'roles[3]']],
    ['too many roles, one of them bad', [...distinct(16), 'X'], ['roles', 'roles[16]']],
  ])('%s → INVALID_ARGUMENT', async (_name, roles, fields) => {
    await expectRejected('setUserRoles', { userId, roles }, asService, { ...INVALID, fields });
  });

  it('bad roles and an empty user id are reported together', async () => {
    await expectRejected('setUserRoles', { userId: '', roles: ['Bad'] }, asService, { ...INVALID, fields: ['user_id', 'roles[0]'] });
  });

  it('bad roles are reported before an id that names nobody is looked at', async () => {
    await expectRejected('setUserRoles', { userId: 'not-a-uuid', roles: ['Bad'] }, asService, { ...INVALID, fields: ['roles[0]'] });
  });

  it('accepts 16 distinct roles of every allowed character, with duplicates ignored', async () => {
    const roles = [...distinct(14), 'a', `z${'9._:-'.repeat(6)}x`];
    expect(roles.at(-1)).toHaveLength(32);
    const { response, error } = await rpc<SetUserRolesResponse>('setUserRoles', { userId, roles: [...roles, ...roles.slice(0, 4)] }, asService);
    expect(error).toBeUndefined();
    expect(response!.user!.roles).toEqual([...roles].sort());
  });
});
