import { createHash } from 'node:crypto';
import { CallerAuthenticator, ServiceApiKeys, type UserCaller } from '../../src/domain/callers.js';
import { DomainError } from '../../src/domain/errors.js';

const KEY = 'service-key-0123456789-abcdefghijklmnop';
const digest = (key: string) => createHash('sha256').update(key).digest();

const user: UserCaller = { kind: 'user', userId: 'u', sessionId: 's', email: 'a@example.com', roles: [], admin: false };
const admin: UserCaller = { ...user, roles: ['admin'], admin: true };

function authenticator(caller: UserCaller = user) {
  const seen: string[] = [];
  const callers = new CallerAuthenticator(new ServiceApiKeys([digest('other-key-0123456789-abcdefghijklmnop'), digest(KEY)]), async (token) => {
    seen.push(token);
    return caller;
  });
  return { callers, seen };
}

async function reasonOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof DomainError) return `${error.reason}: ${error.message}`;
    throw error;
  }
  return 'resolved';
}

describe('caller credentials', () => {
  it('accept any configured API key, and nothing close to one', () => {
    const keys = new ServiceApiKeys([digest(KEY)]);
    expect(keys.matches(KEY)).toBe(true);
    expect(keys.matches(KEY.slice(0, -1))).toBe(false);
    expect(keys.matches(`${KEY} `)).toBe(false);
    expect(keys.matches('')).toBe(false);
    expect(new ServiceApiKeys([]).matches(KEY)).toBe(false);
  });

  it('let x-api-key decide when both credentials are sent', async () => {
    const { callers, seen } = authenticator();
    expect(await callers.authenticate({ apiKey: KEY, authorization: 'Bearer abc' })).toEqual({ kind: 'service' });
    expect(seen).toEqual([]);
    expect(await reasonOf(callers.authenticate({ apiKey: 'wrong', authorization: 'Bearer abc' }))).toBe('TOKEN_INVALID: the API key is not valid');
  });

  it.each(['Bearer', 'Bearer ', 'Basic dXNlcjpwYXNz', 'abc', 'Bearer a b', `Bearer ${'a'.repeat(5000)}`, 'Bearer tok\u00e9n'])(
    'refuse the authorization value %p without verifying anything',
    async (authorization) => {
      const { callers, seen } = authenticator();
      expect(await reasonOf(callers.authenticate({ authorization }))).toBe(
        'TOKEN_INVALID: the authorization metadata must be `Bearer <access token>`',
      );
      expect(seen).toEqual([]);
    },
  );

  it('pass the bearer token on, whatever the scheme case', async () => {
    const { callers, seen } = authenticator();
    expect(await callers.authenticate({ authorization: 'bearer a.b.c' })).toBe(user);
    expect(seen).toEqual(['a.b.c']);
  });

  it('tell apart no credential, a user, an admin and a service', async () => {
    const plain = authenticator(user).callers;
    expect(await plain.authenticate({})).toBeUndefined();
    expect(await reasonOf(plain.require({}))).toMatch(/^TOKEN_INVALID: this call needs a credential/);
    expect(await reasonOf(plain.requireService({ authorization: 'Bearer t' }))).toBe('PERMISSION_DENIED: the caller is not allowed to make this call');
    expect(await plain.requireUser({ authorization: 'Bearer t' })).toBe(user);
    expect(await reasonOf(plain.requireUser({ apiKey: KEY }))).toMatch(/^PERMISSION_DENIED: this call acts for a user/);
    expect(await plain.requireService({ apiKey: KEY })).toEqual({ kind: 'service' });
    expect(await authenticator(admin).callers.requireService({ authorization: 'Bearer t' })).toBe(admin);
  });
});
