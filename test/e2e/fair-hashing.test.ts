/**
 * The password-hashing queue is fair across sources (DESIGN.md "Staying up under load"): one
 * source flooding wrong passwords only waits behind itself. Beyond its share it is refused at once
 * with RATE_LIMITED and a RetryInfo, before any user lookup: a refused login sends no SQL.
 */
import { type Client, type ServiceError, status } from '@grpc/grpc-js';
import { startApp, type RunningApp } from '../../src/app.js';
import type { LoginResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { decodeStatusDetails } from '../../src/grpc/errors.js';
import { createLogger } from '../../src/observability/logger.js';
import { failure, register } from '../support/auth.js';
import { metadataFor } from '../support/accounts.js';
import { authClient, call } from '../support/clients.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { StatementLog } from '../support/statements.js';

const API_KEY = 'fair-hashing-test-service-key-0123456789abcdef';
const PASSWORD = 'correct horse battery';
/** Two end-user addresses a gateway (holding the service key) reports in `client.ip_address`: two sources. */
const ATTACKER = '198.51.100.66';
const USER = '203.0.113.20';
const ATTACKERS = 100;
const USER_LOGINS = 20;
/**
 * After a refusal an attacker waits this long before trying again (ignoring the RetryInfo's 1 s):
 * enough to keep its share of the queue full at all times, without a hot loop that would starve
 * the test's own event loop, which the in-process server shares.
 */
const RETRY_PAUSE_MS = 50;

let db: TestDatabase;
let app: RunningApp;
const log = new StatementLog();

beforeAll(async () => {
  db = await createTestDatabase();
  app = await startApp(
    testConfig(db.url, {
      SERVICE_API_KEYS: API_KEY,
      // A cost at which a hash takes a visible while, one at a time: hashing really queues.
      BCRYPT_COST: '10',
      PASSWORD_HASH_CONCURRENCY: '1',
      PASSWORD_HASH_QUEUE_LIMIT: '32',
      PASSWORD_HASH_QUEUE_PER_SOURCE: '4',
      MAX_SESSIONS_PER_USER: '0',
      // The flood would lock the victim's account (issue 18): this test is about the queue alone.
      LOGIN_LOCKOUT_THRESHOLD: '0',
      // No health pings in the statement log (the dedicated probe is not the ORM's, but be sure).
      DATABASE_HEALTH_INTERVAL: '10m',
    }),
    createLogger('trace', log),
  );
});

afterAll(async () => {
  await app?.stop();
  await db?.drop();
});

it('serves another source\'s 20 logins while one source floods 100 concurrent wrong-password logins; the flood is RATE_LIMITED without touching the database', async () => {
  const client = authClient(app.grpcPort);
  const viaGateway = metadataFor({ apiKey: API_KEY });
  const attempt = (password: string, ipAddress: string) =>
    call<object, LoginResponse>(
      client as unknown as Client,
      'login',
      { email: 'victim@example.com', password, client: { ipAddress, userAgent: 'jest', deviceName: '' } },
      { metadata: viaGateway, deadlineMs: 30_000 },
    );
  try {
    await register(client, 'victim@example.com', PASSWORD);
    log.statements = [];

    // The attacker keeps 100 wrong-password logins for the same account in flight until the user
    // is done: each attacker sends its next attempt as soon as the last one is answered.
    let userDone = false;
    const attackOutcomes: { error?: ServiceError }[] = [];
    const attackers = Array.from({ length: ATTACKERS }, async (_, a) => {
      while (!userDone) {
        const outcome = await attempt(`wrong password ${a}`, ATTACKER);
        attackOutcomes.push(outcome);
        if (outcome.error?.code === status.RESOURCE_EXHAUSTED) await new Promise((resolve) => setTimeout(resolve, RETRY_PAUSE_MS));
      }
    });

    // The user, from another source, signs in 20 times, one after another, all during the attack.
    const userOutcomes: { error?: ServiceError }[] = [];
    try {
      for (let i = 0; i < USER_LOGINS; i++) userOutcomes.push(await attempt(PASSWORD, USER));
    } finally {
      userDone = true;
      await Promise.all(attackers);
    }

    // The attack ran throughout: it was still answered after the user's last login.
    expect(attackOutcomes.length).toBeGreaterThan(ATTACKERS);
    // Every one of the user's logins succeeded.
    expect(userOutcomes.map((o) => failure(o.error))).toEqual(Array(USER_LOGINS).fill({ fields: [], reason: 'no error' }));

    // The attack got its share (wrong-password answers) and was refused beyond it, RATE_LIMITED
    // with a RetryInfo: never anything else.
    const byOutcome = (predicate: (f: ReturnType<typeof failure>) => boolean) => attackOutcomes.filter((o) => predicate(failure(o.error)));
    const invalid = byOutcome((f) => f.code === status.UNAUTHENTICATED && f.reason === 'INVALID_CREDENTIALS');
    const limited = byOutcome((f) => f.code === status.RESOURCE_EXHAUSTED && f.reason === 'RATE_LIMITED');
    expect(invalid.length + limited.length).toBe(attackOutcomes.length);
    expect(invalid.length).toBeGreaterThan(0);
    expect(limited.length).toBeGreaterThan(0);
    for (const { error } of limited) {
      expect(error!.details).toBe('too many sign-in attempts from this client are being processed; retry shortly');
      expect(decodeStatusDetails(error!.metadata).retryInfo?.retryDelay).toEqual({ seconds: 1, nanos: 0 });
    }

    // Every login that got a place in the hashing queue looked the user up once; a refused one
    // sent nothing: as many lookups as answered logins, and no more.
    const answered = USER_LOGINS + invalid.length;
    const lookups = log.statements.filter((s) => /^select .* left join users u on u\.email = k\.email /.test(s));
    expect(lookups).toHaveLength(answered);
    expect(log.statements.filter((s) => /^with p as materialized .* insert into login_throttles /.test(s))).toHaveLength(invalid.length);
    expect(log.statements.filter((s) => /^with signed_in as /.test(s))).toHaveLength(USER_LOGINS);
    expect(log.statements).toHaveLength(answered + invalid.length + USER_LOGINS);
    console.log(
      `fair hashing: user ${USER_LOGINS}/${USER_LOGINS} OK; attacker ${attackOutcomes.length} attempts: ` +
        `${invalid.length} INVALID_CREDENTIALS, ${limited.length} RATE_LIMITED; ${log.statements.length} statements`,
    );
  } finally {
    client.close();
  }
}, 120_000);
