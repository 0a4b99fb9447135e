/**
 * Per-source token buckets (issue 18): RATE_LIMITED (RESOURCE_EXHAUSTED) with a RetryInfo, before
 * any database or hash work. The source is `client.ip_address` only for a caller trusted to report
 * it (a service API key, or a TRUSTED_PROXIES peer); otherwise the peer address, so a direct
 * caller cannot pick its own bucket. The clock is injected: buckets refill by moving it.
 */
import { status, type ServiceError } from '@grpc/grpc-js';
import type { LoginResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { decodeStatusDetails } from '../../src/grpc/errors.js';
import { SourceBuckets } from '../../src/domain/rate-limit.js';
import { type AuthServer, failure, ManualClock, storeSnapshot } from '../support/auth.js';
import { accountTestKit, asService, PASSWORD, startAccountServer } from '../support/accounts.js';

const clock = new ManualClock(Date.parse('2026-06-01T12:00:00.000Z'));
const BURST = 3;
/** One token a second. */
const limits = { RATE_LIMIT_LOGIN: '1/1s', RATE_LIMIT_LOGIN_BURST: String(BURST), RATE_LIMIT_REGISTER: '1/1s', RATE_LIMIT_REGISTER_BURST: String(BURST) };

function answer(outcome: { error?: ServiceError }): { reason: string | undefined; code?: number; retryMs: number | 'none' } {
  const seen = failure(outcome.error);
  const delay = decodeStatusDetails(outcome.error?.metadata).retryInfo?.retryDelay;
  return { code: seen.code, reason: seen.reason, retryMs: delay ? delay.seconds * 1000 + delay.nanos / 1e6 : 'none' };
}
const OK = { code: undefined, reason: 'no error', retryMs: 'none' as const };
const LIMITED = (retryMs: number) => ({ code: status.RESOURCE_EXHAUSTED, reason: 'RATE_LIMITED', retryMs });

describe('without TRUSTED_PROXIES', () => {
  let server: AuthServer;
  beforeAll(async () => {
    server = await startAccountServer(clock, { ...limits, LOGIN_LOCKOUT_THRESHOLD: '0' });
    await accountTestKit(() => server).newUser('bucket@example.com');
  });
  afterAll(async () => server?.close());
  const kit = accountTestKit(() => server);
  const login = (ipAddress: string, credential = undefined as typeof asService | undefined) =>
    kit.rpc<LoginResponse>('login', { email: 'bucket@example.com', password: PASSWORD, client: { ipAddress, userAgent: 'jest', deviceName: '' } }, credential);

  it('a caller without a credential stays in its peer\'s bucket whatever client.ip_address it sets; refused calls change nothing', async () => {
    const outcomes = [];
    for (let i = 0; i < BURST; i++) outcomes.push(answer(await login(`198.51.100.${i + 1}`)));
    expect(outcomes).toEqual(Array(BURST).fill(OK));
    const before = await storeSnapshot(server.db.url);
    expect(answer(await login('198.51.100.200'))).toEqual(LIMITED(1000));
    expect(answer(await login('2001:db8::1'))).toEqual(LIMITED(1000));
    expect(await storeSnapshot(server.db.url)).toEqual(before);
    // Half a token back: the RetryInfo says the other half.
    clock.advance(500);
    expect(answer(await login('198.51.100.201'))).toEqual(LIMITED(500));
    clock.advance(500);
    expect(answer(await login('198.51.100.202'))).toEqual(OK);
  });

  it('a caller with a service API key gets a bucket per reported address', async () => {
    clock.advance(10_000);
    for (const address of ['192.0.2.1', '192.0.2.2']) {
      for (let i = 0; i < BURST; i++) expect(answer(await login(address, asService))).toEqual(OK);
      expect(answer(await login(address, asService))).toEqual(LIMITED(1000));
    }
    // The peer's own bucket (used without a key) is untouched by those.
    expect(answer(await login('192.0.2.3'))).toEqual(OK);
  });

  it('limits Register per source too, before any hash or write', async () => {
    clock.advance(10_000);
    for (let i = 0; i < BURST; i++) expect(answer(await kit.rpc('register', { email: `reg${i}@example.com`, password: PASSWORD, displayName: '' }))).toEqual(OK);
    await kit.expectRejected('register', { email: 'reg-late@example.com', password: PASSWORD, displayName: '' }, undefined, { code: status.RESOURCE_EXHAUSTED, reason: 'RATE_LIMITED' });
  });

  it('counts RATE_LIMITED logins in latchkey_login_failures_total', async () => {
    const body = await (await fetch(`http://127.0.0.1:${server.app.httpPort}/metrics`)).text();
    expect(Number(/^latchkey_login_failures_total\{reason="RATE_LIMITED"\} (\S+)$/m.exec(body)?.[1])).toBe(5);
  });
});

describe('with the test client\'s address in TRUSTED_PROXIES', () => {
  let server: AuthServer;
  beforeAll(async () => {
    server = await startAccountServer(clock, { ...limits, TRUSTED_PROXIES: '10.0.0.0/8, 127.0.0.0/8', LOGIN_LOCKOUT_THRESHOLD: '0' });
    await accountTestKit(() => server).newUser('proxied@example.com');
  });
  afterAll(async () => server?.close());
  const kit = accountTestKit(() => server);

  it('gives each reported client address a bucket of its own, without a credential', async () => {
    const login = (ipAddress: string) =>
      kit.rpc<LoginResponse>('login', { email: 'proxied@example.com', password: PASSWORD, client: { ipAddress, userAgent: 'jest', deviceName: '' } });
    for (const address of ['198.51.100.1', '198.51.100.2', '2001:db8::7']) {
      for (let i = 0; i < BURST; i++) expect(answer(await login(address))).toEqual(OK);
      expect(answer(await login(address))).toEqual(LIMITED(1000));
    }
  });
});

describe('SourceBuckets', () => {
  it('keeps at most maxSources buckets under a flood of distinct sources', () => {
    const buckets = new SourceBuckets({ perMs: 1 / 1000, burst: 2 }, 1000, { now: () => 0 });
    for (let i = 0; i < 100_000; i++) buckets.take(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    expect(buckets.size).toBe(1000);
    // A recent source still has its debt.
    expect(buckets.take('10.1.134.159')).toBeUndefined();
    expect(buckets.take('10.1.134.159')).toBe(1000);
  });

  it('never limits with a rate of 0', () => {
    const buckets = new SourceBuckets({ perMs: 0, burst: 1 }, 10, { now: () => 0 });
    for (let i = 0; i < 100; i++) expect(buckets.take('a')).toBeUndefined();
    expect(buckets.size).toBe(0);
  });
});
