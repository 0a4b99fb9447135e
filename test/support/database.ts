import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { startEmbeddedDatabase } from '../../src/persistence/embedded.js';

export interface TestDatabase {
  /** Connection URL of a database that belongs to this test file alone. */
  readonly url: string;
  readonly kind: 'postgresql' | 'embedded';
  drop(): Promise<void>;
}

/**
 * A fresh, empty database for one test file: a new database on the server in TEST_DATABASE_URL
 * (real PostgreSQL, as in CI), or an in-memory embedded PGlite when that is unset.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const serverUrl = process.env.TEST_DATABASE_URL;
  if (!serverUrl) {
    const embedded = await startEmbeddedDatabase('memory://');
    return { url: embedded.url, kind: 'embedded', drop: () => embedded.stop() };
  }
  const name = `latchkey_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    await admin.query(`create database "${name}"`);
  } finally {
    await admin.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    kind: 'postgresql',
    async drop() {
      const client = new pg.Client({ connectionString: serverUrl });
      await client.connect();
      try {
        await client.query(`drop database if exists "${name}" with (force)`);
      } finally {
        await client.end();
      }
    },
  };
}

/** Runs one query on a short-lived connection (for assertions on what is stored). */
export async function query<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}
