import { ConfigError, type ConfigProblem, loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';

export const TEST_KEY_ENCRYPTION_KEY = Buffer.alloc(32, 7).toString('base64');

/** Environment for a server under test: loopback, free ports, quiet logs, its own database. */
export function testEnv(databaseUrl: string | undefined, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    GRPC_HOST: '127.0.0.1',
    GRPC_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    HTTP_PORT: '0',
    DATABASE_MIGRATE_ON_START: 'true',
    DATABASE_HEALTH_INTERVAL: '200ms',
    DATABASE_CONNECT_TIMEOUT: '5s',
    SHUTDOWN_TIMEOUT: '5s',
    // A fixed key: tests never write a generated one into the working tree.
    KEY_ENCRYPTION_KEY: TEST_KEY_ENCRYPTION_KEY,
    // The cheapest cost bcrypt allows; the cost only changes timing, which tests never assert.
    BCRYPT_COST: '4',
    // Every test's calls come from 127.0.0.1: the per-source buckets are off unless a test turns
    // them on (test/e2e/rate-limits.test.ts).
    RATE_LIMIT_LOGIN: '0',
    RATE_LIMIT_REGISTER: '0',
    RATE_LIMIT_PASSWORD_RESET: '0',
    RATE_LIMIT_VERIFY_EMAIL: '0',
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    // Without TEST_DATABASE_URL the test database is an embedded PGlite behind a socket, which
    // serves one connection at a time: use one, as the server itself does on its embedded database.
    ...(databaseUrl && !process.env.TEST_DATABASE_URL ? { DATABASE_POOL_MAX: '1' } : {}),
    ...overrides,
  };
}

export function testConfig(databaseUrl: string | undefined, overrides: Record<string, string> = {}): Config {
  return loadConfig(testEnv(databaseUrl, overrides));
}

/** The problems loadConfig reports for `env`; fails the test if it accepts it or throws anything else. */
export function configProblems(env: Record<string, string>): ConfigProblem[] {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return [...error.problems];
    throw error;
  }
  throw new Error('expected loadConfig to refuse the environment');
}
