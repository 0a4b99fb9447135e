import { loadConfig } from '../../src/config/load.js';
import { configProblems } from '../support/config.js';
import { formatDuration, parseDuration } from '../../src/config/duration.js';

describe('loadConfig', () => {
  it('applies the documented defaults to an empty environment', () => {
    const config = loadConfig({});
    expect(config.NODE_ENV).toBe('development');
    expect(config.GRPC_PORT).toBe(50051);
    expect(config.HTTP_PORT).toBe(8080);
    expect(config.DATABASE_URL).toBeUndefined();
    expect(config.SHUTDOWN_TIMEOUT).toBe(10_000);
    expect(config.DATABASE_CONNECT_TIMEOUT).toBe(30_000);
    expect(config.LATCHKEY_DATA_DIR).toBe('./.latchkey');
    expect(config.DATABASE_MIGRATE_ON_START).toBe(false);
    expect(config.KEY_ENCRYPTION_KEY).toBeUndefined();
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('treats an empty string as unset, as Helm renders a missing value', () => {
    expect(loadConfig({ GRPC_PORT: '', DATABASE_URL: '' }).GRPC_PORT).toBe(50051);
  });

  it('parses typed values', () => {
    const key = Buffer.alloc(32, 7).toString('base64');
    const config = loadConfig({
      GRPC_PORT: '0',
      SHUTDOWN_TIMEOUT: '1500ms',
      DATABASE_MIGRATE_ON_START: 'true',
      KEY_ENCRYPTION_KEY: key,
      DATABASE_URL: 'postgresql://u:p@db.internal:6543/latchkey',
    });
    expect(config.GRPC_PORT).toBe(0);
    expect(config.SHUTDOWN_TIMEOUT).toBe(1500);
    expect(config.DATABASE_MIGRATE_ON_START).toBe(true);
    expect(config.KEY_ENCRYPTION_KEY).toEqual(Buffer.alloc(32, 7));
  });

  it('lists every bad variable at once, by name', () => {
    const problems = configProblems({
      NODE_ENV: 'staging',
      GRPC_PORT: '70000',
      HTTP_PORT: '80.5',
      LOG_LEVEL: 'loud',
      SHUTDOWN_TIMEOUT: '10 minutes',
      DATABASE_URL: 'mysql://root@localhost/db',
      DATABASE_MIGRATE_ON_START: 'yes',
      GRPC_MAX_RECEIVE_MESSAGE_BYTES: '0',
      PUBLIC_URL: 'ftp://example.com',
    });
    expect(problems.map((p) => p.name).sort()).toEqual(
      [
        'DATABASE_MIGRATE_ON_START',
        'DATABASE_URL',
        'GRPC_MAX_RECEIVE_MESSAGE_BYTES',
        'GRPC_PORT',
        'HTTP_PORT',
        'LOG_LEVEL',
        'NODE_ENV',
        'PUBLIC_URL',
        'SHUTDOWN_TIMEOUT',
      ].sort(),
    );
  });

  it('rejects lenient number spellings that would hide a typo', () => {
    for (const port of ['1e3', ' 80', '-1', '0x50', '8080abc']) {
      expect(configProblems({ GRPC_PORT: port }).map((p) => p.name)).toEqual(['GRPC_PORT']);
    }
  });

  it('never echoes a secret value in its message', () => {
    const secretUrl = 'mysql://admin:hunter2-very-secret@db/x';
    const secretKey = 'c2hvcnQtYnV0LXNlY3JldC1rZXk=';
    try {
      loadConfig({ DATABASE_URL: secretUrl, KEY_ENCRYPTION_KEY: secretKey });
      throw new Error('expected failure');
    } catch (error) {
      const message = (error as Error).message;
      expect(message).toContain('DATABASE_URL');
      expect(message).toContain('KEY_ENCRYPTION_KEY');
      expect(message).not.toContain('hunter2');
      expect(message).not.toContain(secretKey);
    }
  });

  it('requires DATABASE_URL, KEY_ENCRYPTION_KEY and an https PUBLIC_URL in production', () => {
    const problems = configProblems({ NODE_ENV: 'production' });
    expect(problems).toEqual([
      { name: 'DATABASE_URL', message: 'is required when NODE_ENV=production' },
      { name: 'KEY_ENCRYPTION_KEY', message: 'is required when NODE_ENV=production' },
      { name: 'PUBLIC_URL', message: 'must be an https:// URL when NODE_ENV=production' },
    ]);
    const ok = loadConfig({
      NODE_ENV: 'production',
      DATABASE_URL: 'postgres://latchkey@db:5432/latchkey',
      KEY_ENCRYPTION_KEY: Buffer.alloc(32, 1).toString('base64'),
      PUBLIC_URL: 'https://auth.example.com',
    });
    expect(ok.NODE_ENV).toBe('production');
  });

  it('states a duration out of range in the same notation', () => {
    expect(configProblems({ DATABASE_CONNECT_TIMEOUT: '2h' })).toEqual([
      { name: 'DATABASE_CONNECT_TIMEOUT', message: 'must be between 100ms and 1h' },
    ]);
  });

  it('reports a malformed production variable once, not twice', () => {
    const problems = configProblems({ NODE_ENV: 'production', PUBLIC_URL: 'not a url', DATABASE_URL: 'x', KEY_ENCRYPTION_KEY: 'short' });
    expect(problems.map((p) => p.name)).toEqual(['DATABASE_URL', 'KEY_ENCRYPTION_KEY', 'PUBLIC_URL']);
  });

  it('accepts url-safe base64 for KEY_ENCRYPTION_KEY and rejects other lengths', () => {
    const bytes = Buffer.alloc(32, 0xfb);
    expect(loadConfig({ KEY_ENCRYPTION_KEY: bytes.toString('base64url') }).KEY_ENCRYPTION_KEY).toEqual(bytes);
    expect(configProblems({ KEY_ENCRYPTION_KEY: Buffer.alloc(16).toString('base64') }).map((p) => p.name)).toEqual(['KEY_ENCRYPTION_KEY']);
  });
});

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['15m', 900_000],
    ['12h', 43_200_000],
    ['14d', 1_209_600_000],
    ['0s', 0],
  ])('parses %s', (text, ms) => expect(parseDuration(text)).toBe(ms));

  it.each(['', '10', '1.5s', '-1s', '10 s', '1w', 's', '99999999999999999999d'])('rejects %p', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0ms'],
    [100, '100ms'],
    [1_500, '1500ms'],
    [30_000, '30s'],
    [3_600_000, '1h'],
    [90 * 60_000, '90m'],
    [14 * 86_400_000, '14d'],
  ])('writes %d as %s, which parses back to the same value', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
    expect(parseDuration(text)).toBe(ms);
  });
});
