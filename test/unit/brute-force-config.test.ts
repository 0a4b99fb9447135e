/** The brute-force protection's settings (issue 18): defaults, parsing, and the messages for bad values. */
import { loadConfig } from '../../src/config/load.js';
import { TrustedProxies } from '../../src/domain/rate-limit.js';
import { configProblems } from '../support/config.js';

describe('lockout and rate-limit settings', () => {
  it('default as documented', () => {
    const config = loadConfig({});
    expect(config.LOGIN_LOCKOUT_THRESHOLD).toBe(10);
    expect(config.LOGIN_LOCKOUT_WINDOW).toBe(15 * 60_000);
    expect(config.LOGIN_LOCKOUT_DURATION).toBe(60_000);
    expect(config.LOGIN_LOCKOUT_MAX_DURATION).toBe(3_600_000);
    expect(config.TRUSTED_PROXIES).toBeUndefined();
    expect(config.RATE_LIMIT_LOGIN).toBe(5 / 1000);
    expect(config.RATE_LIMIT_LOGIN_BURST).toBe(50);
    expect(config.RATE_LIMIT_REGISTER).toBe(2 / 1000);
    expect(config.RATE_LIMIT_MAX_SOURCES).toBe(100_000);
  });

  it('reads rates as count per duration, 0 as no limit, and CIDR lists', () => {
    const config = loadConfig({ RATE_LIMIT_LOGIN: '30/1m', RATE_LIMIT_REGISTER: '0', TRUSTED_PROXIES: ' 10.0.0.0/8, fd00::/8 ,192.0.2.7' });
    expect(config.RATE_LIMIT_LOGIN).toBe(30 / 60_000);
    expect(config.RATE_LIMIT_REGISTER).toBe(0);
    expect(config.TRUSTED_PROXIES).toEqual([
      { address: '10.0.0.0', prefix: 8, family: 'ipv4' },
      { address: 'fd00::', prefix: 8, family: 'ipv6' },
      { address: '192.0.2.7', prefix: 32, family: 'ipv4' },
    ]);
    const trusted = new TrustedProxies(config.TRUSTED_PROXIES);
    expect(['10.1.2.3', 'fd12::1', '192.0.2.7'].map((a) => trusted.includes(a))).toEqual([true, true, true]);
    expect(['11.0.0.1', 'fe80::1', '192.0.2.8', 'not an address', ''].map((a) => trusted.includes(a))).toEqual([false, false, false, false, false]);
  });

  it('names every bad value, never echoing it', () => {
    const problems = configProblems({
      RATE_LIMIT_LOGIN: 'fast',
      RATE_LIMIT_REGISTER: '5/0s',
      RATE_LIMIT_VERIFY_EMAIL: '-1/1s',
      TRUSTED_PROXIES: '10.0.0.0/33',
      LOGIN_LOCKOUT_THRESHOLD: '-1',
      LOGIN_LOCKOUT_WINDOW: 'forever',
    });
    expect(problems.map((p) => p.name).sort()).toEqual([
      'LOGIN_LOCKOUT_THRESHOLD',
      'LOGIN_LOCKOUT_WINDOW',
      'RATE_LIMIT_LOGIN',
      'RATE_LIMIT_REGISTER',
      'RATE_LIMIT_VERIFY_EMAIL',
      'TRUSTED_PROXIES',
    ]);
    expect(problems.find((p) => p.name === 'TRUSTED_PROXIES')?.message).toBe('must be a comma-separated list of CIDR blocks such as `10.0.0.0/8` or `fd00::/8`');
    expect(JSON.stringify(problems)).not.toContain('fast');
    expect(configProblems({ TRUSTED_PROXIES: 'example.com' }).map((p) => p.name)).toEqual(['TRUSTED_PROXIES']);
  });
});
