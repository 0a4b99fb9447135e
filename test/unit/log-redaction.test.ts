import { Writable } from 'node:stream';
import { createLogger } from '../../src/observability/logger.js';

/** What a database error looks like when logged as `err` (node-postgres's DatabaseError fields). */
function databaseError(message: string, fields: Record<string, unknown>): Error {
  return Object.assign(new Error(message), { name: 'error', severity: 'ERROR', ...fields });
}

function logged(fields: object): string {
  let text = '';
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text += chunk.toString('utf8');
      done();
    },
  });
  createLogger('info', sink).error(fields, 'unexpected error in handler');
  return text;
}

describe('database errors in log lines', () => {
  it("leaves out a unique violation's detail and keeps its SQLSTATE and constraint", () => {
    const error = databaseError('duplicate key value violates unique constraint "users_email_key"', {
      code: '23505',
      detail: 'Key (email)=(ada@example.com) already exists.',
      constraint: 'users_email_key',
      table: 'users',
    });
    const line = logged({ err: error });
    expect(line).not.toContain('ada@example.com');
    expect(JSON.parse(line).err).toMatchObject({ code: '23505', constraint: 'users_email_key', table: 'users', message: 'duplicate key value violates unique constraint "users_email_key"' });
  });

  it('redacts the quoted input of a data exception, and a wrapped cause, and a where context', () => {
    const cause = databaseError('invalid input syntax for type uuid: "ada@example.com"', { code: '22P02', where: "unnamed portal parameter $1 = '...'" });
    const wrapper = new Error('statement failed', { cause });
    const line = logged({ err: wrapper });
    expect(line).not.toContain('ada@example.com');
    expect(line).not.toContain('unnamed portal');
    expect(line).toContain('invalid input syntax for type uuid: \\"[redacted]\\"');
  });

  it("cuts MikroORM's appended ' - detail: …' from message and stack", () => {
    const error = databaseError('new row for relation "users" violates check constraint "c"\n - detail: Failing row contains (1, ada@example.com, $2b$04$hash).', {
      code: '23514',
      detail: 'Failing row contains (1, ada@example.com, $2b$04$hash).',
    });
    const line = logged({ err: error });
    expect(line).not.toContain('ada@example.com');
    expect(line).not.toContain('$2b$');
    expect(line).toContain('violates check constraint');
  });

  it('logs other errors unchanged', () => {
    expect(JSON.parse(logged({ err: new Error('boom') })).err).toMatchObject({ message: 'boom', type: 'Error' });
  });
});
