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

/**
 * Waits until the revocation events of these sessions are settled: below the commit horizon
 * (`pg_snapshot_xmin`), the only events ordered readers and WatchRevocations snapshots return.
 * The horizon is the whole server's: a transaction left open by any other test file, in any
 * database, holds it back, so a test that expects an event in an ordered read waits for this
 * first. (The replica's own view applies unsettled events too and needs no wait.)
 */
export async function waitUntilSettled(url: string, sessionIds: readonly string[], timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const rows = await query<{ settled: boolean }>(
      url,
      'select coalesce(bool_and(xid < pg_snapshot_xmin(pg_current_snapshot())), false) and count(distinct session_id) = $2 as settled from revocation_events where session_id = any($1::uuid[])',
      [sessionIds, new Set(sessionIds).size],
    );
    if (rows[0]?.settled) return;
    if (Date.now() > deadline) throw new Error(`the revocation events of ${sessionIds.length} sessions did not settle within ${timeoutMs} ms (a transaction left open on the server?)`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Waits until every event in the feed is settled (see waitUntilSettled). */
export async function waitUntilFeedSettled(url: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const rows = await query<{ settled: boolean }>(url, 'select coalesce(bool_and(xid < pg_snapshot_xmin(pg_current_snapshot())), true) as settled from revocation_events');
    if (rows[0]?.settled) return;
    if (Date.now() > deadline) throw new Error(`the revocation feed did not settle within ${timeoutMs} ms (a transaction left open on the server?)`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
