import { status } from '@grpc/grpc-js';
import type { LoginResponse, RegisterResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { type AuthServer, expectRejected, failure, login, ManualClock, register, startAuthServer } from '../support/auth.js';
import { decodeStatusDetails } from '../../src/grpc/errors.js';
import { query } from '../support/database.js';

/**
 * One account per address however its text is composed, no bidi tricks in what session lists and
 * profiles show, and no password from the common-password list.
 */
const clock = new ManualClock();
const PASSWORD = 'correct horse battery';
let server: AuthServer;

beforeAll(async () => {
  server = await startAuthServer({}, clock);
});

afterAll(async () => {
  await server?.close();
});

const registerCall = (request: { email: string; password?: string; displayName?: string }) =>
  server.rpc<RegisterResponse>('register', { password: PASSWORD, displayName: '', ...request });

async function usersWith(emailLike: string): Promise<{ id: string; email: string }[]> {
  return query<{ id: string; email: string }>(server.db.url, 'select id, email from users where email like $1 order by email', [emailLike]);
}

describe('email addresses: one account per address', () => {
  const nfc = 'jos\u00e9@example.com';
  const nfd = 'jose\u0301@example.com';

  it('takes josé in NFC and in NFD as one address: the second Register is EMAIL_TAKEN and both log in to it', async () => {
    const { user } = await register(server.client, nfc);
    await expectRejected(server.db.url, () => registerCall({ email: nfd }), { code: status.ALREADY_EXISTS, reason: 'EMAIL_TAKEN' });
    expect(await usersWith('jos%@example.com')).toEqual([{ id: user!.id, email: nfc }]);
    expect((await login(server.client, nfd)).user!.id).toBe(user!.id);
    expect((await login(server.client, nfc)).user!.id).toBe(user!.id);
  });

  it('takes an NFD registration as the NFC address', async () => {
    const { user } = await register(server.client, 're\u0301sume\u0301@example.com');
    expect(await usersWith('r%sum%@example.com')).toEqual([{ id: user!.id, email: 'r\u00e9sum\u00e9@example.com' }]);
  });

  it('maps the domain through IDNA: fullwidth, A-label and U-label spellings are one domain', async () => {
    const { user } = await register(server.client, 'owner@b\u00fccher.de');
    for (const spelling of ['owner@xn--bcher-kva.de', 'owner@B\u00dcCHER.DE', 'owner@\uff42\u00fc\uff43\uff48\uff45\uff52.de']) {
      await expectRejected(server.db.url, () => registerCall({ email: spelling }), { code: status.ALREADY_EXISTS, reason: 'EMAIL_TAKEN' });
      expect((await login(server.client, spelling)).user!.id).toBe(user!.id);
    }
    await register(server.client, 'ascii@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.org');
    expect(await usersWith('ascii@%')).toEqual([expect.objectContaining({ email: 'ascii@example.org' })]);
  });

  it.each([
    ['a fullwidth local part', '\uff4a\uff4f\uff45@example.com'],
    ['a ligature in the local part', '\ufb01le@example.com'],
    ['a zero-width space in the local part', 'jo\u200be@example.com'],
    ['a bidi override in the local part', 'jo\u202ee@example.com'],
  ])('refuses %s with INVALID_ARGUMENT on email, storing nothing', async (_case, email) => {
    await expectRejected(server.db.url, () => registerCall({ email }), { code: status.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT', fields: ['email'] });
  });
});

describe('bidi controls', () => {
  it.each(['202A', '202B', '202C', '202D', '202E', '2066', '2067', '2068', '2069'])(
    'refuses U+%s in a display name with INVALID_ARGUMENT on display_name, storing nothing',
    async (hex) => {
      const control = String.fromCodePoint(parseInt(hex, 16));
      const seen = await expectRejected(
        server.db.url,
        () => registerCall({ email: `bidi-${hex}@example.com`, displayName: `Alice ${control}nimda` }),
        { code: status.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT', fields: ['display_name'] },
      );
      expect(seen.message).not.toContain(control);
    },
  );

  it('keeps right-to-left names with implicit direction marks', async () => {
    const { user } = await register(server.client, 'rtl-name@example.com', PASSWORD, '\u05d3\u05e0\u05d4 \u200f2\u200f');
    expect(user!.displayName).toBe('\u05d3\u05e0\u05d4 \u200f2\u200f');
  });

  it('stores a user agent and a device name with bidi controls neutralised to U+FFFD', async () => {
    const email = 'bidi-client@example.com';
    await register(server.client, email);
    const { response, error } = await server.rpc<LoginResponse>('login', {
      email,
      password: PASSWORD,
      client: { ipAddress: '203.0.113.9', userAgent: 'Mozilla/5.0 \u202egnp.exe\u202c (X11)', deviceName: 'Laptop \u2067cipher\u2069' },
    });
    expect(error).toBeUndefined();
    const [row] = await query<{ user_agent: string; device_name: string }>(server.db.url, 'select user_agent, device_name from sessions where id = $1', [
      response!.sessionId,
    ]);
    expect(row).toEqual({ user_agent: 'Mozilla/5.0 \ufffdgnp.exe\ufffd (X11)', device_name: 'Laptop \ufffdcipher\ufffd' });
  });
});

describe('common passwords', () => {
  it.each(['password1', 'PASSWORD1', 'iloveyou', 'qwertyuiop', 'baseball', '\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44\uff11'])(
    'refuses %s on Register with WEAK_PASSWORD and a field violation saying why, storing nothing',
    async (password) => {
      const { error } = await registerCall({ email: 'common@example.com', password });
      expect(failure(error)).toMatchObject({ code: status.INVALID_ARGUMENT, reason: 'WEAK_PASSWORD', fields: ['password'] });
      expect(decodeStatusDetails(error!.metadata).badRequest?.fieldViolations).toEqual([expect.objectContaining({ field: 'password', description: expect.stringMatching(/commonly used/) })]);
      expect(await usersWith('common@%')).toEqual([]);
    },
  );
});
