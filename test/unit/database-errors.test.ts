import { describeDatabaseHost, isDatabaseSlow, isDatabaseUnavailable } from '../../src/persistence/database.js';

describe('isDatabaseUnavailable', () => {
  const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code });

  it.each(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', '57P01', '57P03', '08006', '08001', '53300'])('treats %s as unavailable', (code) => {
    expect(isDatabaseUnavailable(withCode(code))).toBe(true);
  });

  it('looks through the cause chain', () => {
    expect(isDatabaseUnavailable(new Error('outer', { cause: new Error('mid', { cause: withCode('ECONNREFUSED') }) }))).toBe(true);
  });

  it('recognises pg client messages for a lost connection', () => {
    expect(isDatabaseUnavailable(new Error('Connection terminated unexpectedly'))).toBe(true);
  });

  // A busy pool or a slow statement is not an outage: such errors prompt a health check by the
  // probe instead of marking the database down (readiness must not confuse busy with down).
  it.each([
    ['a statement timeout', withCode('57014', 'canceling statement due to statement timeout')],
    ['no pool connection in time', new Error('timeout exceeded when trying to connect')],
    ['a client read timeout', new Error('Query read timeout')],
  ])('treats %s as slow, not unavailable', (_name, error) => {
    expect(isDatabaseSlow(error)).toBe(true);
    expect(isDatabaseUnavailable(error)).toBe(false);
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
