import { Writable } from 'node:stream';
import { READINESS_PING } from '../../src/persistence/database.js';
import { FOLLOWER_READ } from '../../src/persistence/revocation-feed.js';
import { LIST_PUBLISHED, SIGNING_KEYS_FINGERPRINT } from '../../src/persistence/repositories/signing-keys.js';

/**
 * The server's own background statements, which share the pool only on the embedded database
 * (the key ring's reloads go through the pool everywhere): they are not a call's.
 */
const BACKGROUND = new Set([READINESS_PING, FOLLOWER_READ, SIGNING_KEYS_FINGERPRINT, LIST_PUBLISHED].map((sql) => sql.replace(/\s+/g, ' ').trim()));

/**
 * The SQL statements a server sent, read from its trace-level ORM log (statements only, never
 * parameters). Pass it as the destination of `createLogger('trace', log)`.
 */
export class StatementLog extends Writable {
  statements: string[] = [];

  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
      const entry = JSON.parse(line) as { component?: string; msg?: string };
      const match = entry.component === 'orm' ? /^\[query\] (.*?)(?: \[took .*)?$/s.exec(entry.msg ?? '') : null;
      const statement = match?.[1]!.replace(/\s+/g, ' ').trim();
      // Readiness pings and the revocation follower's reads share the pool only on a
      // single-connection database (the embedded one): they are the server's, not the call's.
      if (statement !== undefined && !BACKGROUND.has(statement)) this.statements.push(statement);
    }
    done();
  }
}
