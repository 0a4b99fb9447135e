import { Writable } from 'node:stream';
import { READINESS_PING } from '../../src/persistence/database.js';

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
      // Readiness pings share the pool only on a single-connection database (the embedded one):
      // they are the server's, not the call's.
      if (statement !== undefined && statement !== READINESS_PING) this.statements.push(statement);
    }
    done();
  }
}
