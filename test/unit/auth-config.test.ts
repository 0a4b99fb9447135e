import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { loadConfig } from '../../src/config/load.js';
import { configProblems } from '../support/config.js';

const problemsOf = (env: Record<string, string>) => configProblems(env).map((p) => `${p.name}: ${p.message}`);

describe('token, session and password settings', () => {
  it('default as documented', () => {
    const config = loadConfig({});
    expect(config.ACCESS_TOKEN_TTL).toBe(15 * 60_000);
    expect(config.SESSION_IDLE_TIMEOUT).toBe(14 * 86_400_000);
    expect(config.SESSION_MAX_LIFETIME).toBe(30 * 86_400_000);
    expect(config.BCRYPT_COST).toBe(12);
    expect(config.PASSWORD_HASH_QUEUE_LIMIT).toBe(32);
    expect(config.PASSWORD_HASH_CONCURRENCY).toBe(Math.min(3, availableParallelism()));
    expect(config.JWT_AUDIENCE).toBe('latchkey');
    expect(config.JWT_ISSUER).toBe('http://localhost:8080');
    expect(config.REFRESH_REUSE_GRACE).toBe(10_000);
    expect(config.MAX_SESSIONS_PER_USER).toBe(10);
    expect(config.SERVICE_API_KEYS).toBeUndefined();
    expect(config.PASSWORD_RESET_TTL).toBe(3_600_000);
    expect(config.EMAIL_VERIFICATION_TTL).toBe(86_400_000);
    expect(config.PASSWORD_RESET_URL).toBe('http://localhost:8080/reset-password');
    expect(config.EMAIL_VERIFICATION_URL).toBe('http://localhost:8080/verify-email');
  });

  it('build the one-time-token pages under PUBLIC_URL, path included, unless given', () => {
    const config = loadConfig({ PUBLIC_URL: 'https://example.com/auth/?x=1' });
    expect(config.PASSWORD_RESET_URL).toBe('https://example.com/auth/reset-password');
    expect(config.EMAIL_VERIFICATION_URL).toBe('https://example.com/auth/verify-email');
    expect(loadConfig({ PASSWORD_RESET_URL: 'https://app.example.com/reset?from=mail' }).PASSWORD_RESET_URL).toBe('https://app.example.com/reset?from=mail');
  });

  it('keep service API keys only as SHA-256 digests, de-duplicated', () => {
    const key = 'k'.repeat(32);
    const config = loadConfig({ SERVICE_API_KEYS: ` ${key} , ${key}, ${'z'.repeat(40)},` });
    expect(config.SERVICE_API_KEYS).toHaveLength(2);
    expect(config.SERVICE_API_KEYS![0]).toEqual(createHash('sha256').update(key).digest());
  });

  it('take the issuer from PUBLIC_URL unless JWT_ISSUER is given', () => {
    expect(loadConfig({ PUBLIC_URL: 'https://id.example.com' }).JWT_ISSUER).toBe('https://id.example.com');
    expect(loadConfig({ PUBLIC_URL: 'https://id.example.com', JWT_ISSUER: 'latchkey-prod' }).JWT_ISSUER).toBe('latchkey-prod');
  });

  it.each([
    [{ BCRYPT_COST: '3' }, 'BCRYPT_COST: must be a whole number between 4 and 16'],
    [{ BCRYPT_COST: '17' }, 'BCRYPT_COST: must be a whole number between 4 and 16'],
    [{ BCRYPT_COST: '12.5' }, 'BCRYPT_COST: must be a whole number between 4 and 16'],
    [{ ACCESS_TOKEN_TTL: '30s' }, 'ACCESS_TOKEN_TTL: must be between 1m and 1d'],
    [{ ACCESS_TOKEN_TTL: 'forever' }, 'ACCESS_TOKEN_TTL: must be a duration such as 500ms, 30s, 15m, 12h or 14d'],
    [{ PASSWORD_HASH_CONCURRENCY: '0' }, 'PASSWORD_HASH_CONCURRENCY: must be a whole number between 1 and 64'],
    [{ PASSWORD_HASH_QUEUE_LIMIT: '-1' }, 'PASSWORD_HASH_QUEUE_LIMIT: must be a whole number between 0 and 10000'],
    [{ SESSION_IDLE_TIMEOUT: '40d' }, 'SESSION_IDLE_TIMEOUT: must not be longer than SESSION_MAX_LIFETIME'],
    [{ JWT_AUDIENCE: 'a'.repeat(257) }, 'JWT_AUDIENCE: must be at most 256 characters'],
    [{ REFRESH_REUSE_GRACE: '10m' }, 'REFRESH_REUSE_GRACE: must be between 0ms and 5m'],
    [{ MAX_SESSIONS_PER_USER: '-1' }, 'MAX_SESSIONS_PER_USER: must be a whole number between 0 and 10000'],
    [{ SERVICE_API_KEYS: 'short' }, 'SERVICE_API_KEYS: each key must be 32 to 256 printable ASCII characters without spaces or commas'],
    [{ SERVICE_API_KEYS: `${'k'.repeat(32)},with space ${'k'.repeat(32)}` }, 'SERVICE_API_KEYS: each key must be 32 to 256 printable ASCII characters without spaces or commas'],
    [{ SERVICE_API_KEYS: ' , ' }, 'SERVICE_API_KEYS: must list at least one key'],
    [{ PASSWORD_RESET_TTL: '30s' }, 'PASSWORD_RESET_TTL: must be between 1m and 7d'],
    [{ EMAIL_VERIFICATION_URL: 'ftp://example.com' }, 'EMAIL_VERIFICATION_URL: must be an http:// or https:// URL'],
  ])('refuse %p', (env, problem) => {
    expect(problemsOf(env)).toEqual([problem]);
  });

  it('require a bcrypt cost of at least 10 in production', () => {
    const production = {
      NODE_ENV: 'production',
      DATABASE_URL: 'postgres://db/latchkey',
      KEY_ENCRYPTION_KEY: Buffer.alloc(32, 1).toString('base64'),
      PUBLIC_URL: 'https://id.example.com',
    };
    expect(problemsOf({ ...production, BCRYPT_COST: '9' })).toEqual(['BCRYPT_COST: must be at least 10 when NODE_ENV=production']);
    expect(loadConfig({ ...production, BCRYPT_COST: '10' }).BCRYPT_COST).toBe(10);
  });

  it('require https links for password reset and email verification in production', () => {
    const production = {
      NODE_ENV: 'production',
      DATABASE_URL: 'postgres://db/latchkey',
      KEY_ENCRYPTION_KEY: Buffer.alloc(32, 1).toString('base64'),
      PUBLIC_URL: 'https://id.example.com',
    };
    expect(problemsOf({ ...production, PASSWORD_RESET_URL: 'http://app.example.com/reset' })).toEqual([
      'PASSWORD_RESET_URL: must be an https:// URL when NODE_ENV=production',
    ]);
  });
});
