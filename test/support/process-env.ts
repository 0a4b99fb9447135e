import { testEnv } from './config.js';
import type { TestDatabase } from './database.js';

/**
 * Environment for a spawned `latchkey` against a test database: info-level logs (the tests read
 * them) and, on an embedded PGlite reached over its socket, a single connection, because PGlite
 * serves one query at a time and can wedge when a second connection queries inside a transaction.
 */
export function processEnv(database: TestDatabase, overrides: Record<string, string> = {}): Record<string, string> {
  return testEnv(database.url, {
    LOG_LEVEL: 'info',
    ...(database.kind === 'embedded' ? { DATABASE_POOL_MAX: '1' } : {}),
    ...overrides,
  });
}
