import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

export interface EmbeddedDatabase {
  /** A postgres:// URL for the loopback socket the embedded database listens on. */
  readonly url: string;
  stop(): Promise<void>;
}

/**
 * Starts PGlite (Postgres compiled to WASM, in this process) behind a loopback Postgres socket,
 * so the rest of the service talks to it exactly as it talks to a real server. `dataDir` of
 * `memory://` keeps everything in memory (tests); otherwise data persists under `dataDir/pgdata`.
 *
 * PGlite runs one query at a time; callers must use a pool of one connection, because a query on
 * a second connection while a transaction is open on the first can wedge it.
 */
export async function startEmbeddedDatabase(dataDir: string): Promise<EmbeddedDatabase> {
  let db: PGlite;
  if (dataDir === 'memory://') {
    db = await PGlite.create();
  } else {
    const pgdata = path.resolve(dataDir, 'pgdata');
    await mkdir(pgdata, { recursive: true });
    db = await PGlite.create(pgdata);
  }
  // A few connections are accepted so an operator can look in with psql while the service runs.
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: 4 });
  await server.start();
  const [, port] = server.getServerConn().split(':');
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres?sslmode=disable`,
    async stop() {
      await server.stop();
      await db.close();
    },
  };
}
