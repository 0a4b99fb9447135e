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
});
