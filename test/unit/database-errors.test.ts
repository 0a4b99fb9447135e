import { describeDatabaseHost, isDatabaseUnavailable } from '../../src/persistence/database.js';

describe('isDatabaseUnavailable', () => {
  const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code });

  it.each(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', '57P01', '57P03', '08006', '08001', '53300'])('treats %s as unavailable', (code) => {
    expect(isDatabaseUnavailable(withCode(code))).toBe(true);
  });

  it('looks through the cause chain', () => {
    expect(isDatabaseUnavailable(new Error('outer', { cause: new Error('mid', { cause: withCode('ECONNREFUSED') }) }))).toBe(true);
  });

  it('recognises pg pool and client messages', () => {
    expect(isDatabaseUnavailable(new Error('timeout exceeded when trying to connect'))).toBe(true);
    expect(isDatabaseUnavailable(new Error('Connection terminated unexpectedly'))).toBe(true);
  });

  it.each(['23505', '42P01', '22P02', '40001'])('does not treat SQLSTATE %s (a query problem) as unavailable', (code) => {
    expect(isDatabaseUnavailable(withCode(code))).toBe(false);
  });

  it('does not treat non-errors as unavailable', () => {
    expect(isDatabaseUnavailable('ECONNREFUSED')).toBe(false);
    expect(isDatabaseUnavailable(undefined)).toBe(false);
  });
});

describe('describeDatabaseHost', () => {
  it('names host and port, never the credentials', () => {
    expect(describeDatabaseHost('postgres://admin:s3cret@db.internal:6543/latchkey')).toBe('db.internal:6543');
    expect(describeDatabaseHost('postgres://admin:s3cret@db.internal/latchkey')).toBe('db.internal');
    expect(describeDatabaseHost('::not a url::')).toBe('the configured database');
  });
});
