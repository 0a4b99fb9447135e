/**
 * Key rotation without a restart (issue 17): the signing-key lifecycle across replicas with an
 * injected clock, `retire --now`, a removed key's tokens, and the key-encryption key replaced end
 * to end. Two replicas on one database need PostgreSQL; the rest also runs on the embedded one.
 */
import type { ServiceError } from '@grpc/grpc-js';
import jwt from 'jsonwebtoken';
import { withLowSSignature } from '../../src/domain/tokens/low-s.js';
import { createPrivateKey } from 'node:crypto';
import { startApp, type RunningApp } from '../../src/app.js';
import { listSigningKeys, loadRefreshSecretDeriver, retireSigningKeyNow, rewrapKeys, rotateSigningKeys, rotationPolicy } from '../../src/domain/keys/key-admin.js';
import { KeyEncryptionKeys, openPrivateKey } from '../../src/domain/keys/key-encryption.js';
import { RefreshSecretDeriver } from '../../src/domain/tokens/refresh-tokens.js';
import type { LoginResponse, RefreshTokenResponse, ValidateTokenResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { createLogger } from '../../src/observability/logger.js';
import { createOrm, type Orm } from '../../src/persistence/orm.js';
import { runKeyRotation } from '../../src/scheduler/index.js';
import { login, ManualClock, MINUTE, register } from '../support/auth.js';
import { authClient, call, errorDetails } from '../support/clients.js';
import { configProblems, TEST_KEY_ENCRYPTION_KEY, testConfig, testEnv } from '../support/config.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { type Replica, startReplica, withBearer } from '../support/replicas.js';
import { metricValue } from '../support/metrics.js';
import { waitFor } from '../support/wait.js';

const silent = createLogger('silent');
const onPostgres = process.env.TEST_DATABASE_URL ? describe : describe.skip;
const HOUR = 60 * MINUTE;
const KEK1 = Buffer.from(TEST_KEY_ENCRYPTION_KEY, 'base64');
const KEK2 = Buffer.alloc(32, 42);
const KEK3 = Buffer.alloc(32, 43);

/** The lifecycle settings of these tests: a 2-hour rotation, published 10 minutes ahead, 15-minute tokens. */
const LIFECYCLE = { SIGNING_KEY_ROTATION_INTERVAL: '2h', SIGNING_KEY_PUBLISH_AHEAD: '10m', ACCESS_TOKEN_TTL: '15m' };

const kidOf = (token: string) => (jwt.decode(token, { complete: true })!.header.kid as string);

async function jwksKids(httpPort: number): Promise<string[]> {
  const body = (await (await fetch(`http://127.0.0.1:${httpPort}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] };
  return body.keys.map((key) => key.kid);
}

async function validate(on: { auth: Replica['auth'] }, accessToken: string): Promise<string> {
  const { error } = await call<object, ValidateTokenResponse>(on.auth as never, 'validateToken', { accessToken, checkRevocation: false });
  return error ? `${error.code} ${errorDetails(error).reason ?? ''}` : 'OK';
}

async function asBearer(on: Replica, accessToken: string): Promise<string> {
  const { error } = await on.sessionRpc('listSessions', { userId: '', pageSize: 0, pageToken: '', state: 0 }, withBearer(accessToken));
  return error ? `${error.code} ${errorDetails(error).reason ?? error.details}` : 'OK';
}

const OK = 'OK';
const INVALID = '16 TOKEN_INVALID';

let people = 0;
async function newUser(on: { auth: Replica['auth'] }): Promise<string> {
  const email = `keys-${++people}@example.com`;
  await register(on.auth, email);
  return email;
}

async function ormOn(url: string): Promise<Orm> {
  return createOrm({ clientUrl: url, poolMax: 1, connectTimeoutMs: 5_000, statementTimeoutMs: 5_000, logger: silent });
}

describe('configuration of the key lifecycle', () => {
  it('refuses a publish-ahead no longer than the JWKS max-age plus skew, or not shorter than the interval', () => {
    expect(configProblems(testEnv(undefined, { SIGNING_KEY_PUBLISH_AHEAD: '5m' }))).toEqual([
      { name: 'SIGNING_KEY_PUBLISH_AHEAD', message: 'must be longer than the JWKS max-age (300s) plus 60s of clock skew' },
    ]);
    expect(configProblems(testEnv(undefined, { SIGNING_KEY_PUBLISH_AHEAD: '2h', SIGNING_KEY_ROTATION_INTERVAL: '2h' }))).toEqual([
      { name: 'SIGNING_KEY_PUBLISH_AHEAD', message: 'must be shorter than SIGNING_KEY_ROTATION_INTERVAL' },
    ]);
    // The defaults hold: a verifier's cached JWKS always has the next key before it signs.
    const config = testConfig(undefined);
    expect(config.SIGNING_KEY_PUBLISH_AHEAD).toBeGreaterThan(300_000 + 60_000);
  });

  it('parses KEY_ENCRYPTION_KEYS in order, and names ids or positions, never keys, when it is wrong', () => {
    const list = `k2:${KEK2.toString('base64')},k1:${KEK1.toString('base64')}`;
    expect(testConfig(undefined, { KEY_ENCRYPTION_KEYS: list }).KEY_ENCRYPTION_KEYS!.map((k) => k.id)).toEqual(['k2', 'k1']);
    const cases: [string, string][] = [
      [`k2:${KEK2.toString('base64')},k2:${KEK1.toString('base64')}`, "key id 'k2' is listed twice"],
      [`k2:${KEK2.subarray(0, 16).toString('base64')}`, "key 'k2' must be 32 bytes encoded as base64"],
      [KEK2.toString('base64'), 'entry 1 must be `id:base64key` with an id of 1 to 32 letters, digits, `.`, `_` or `-`'],
    ];
    for (const [value, message] of cases) {
      const problems = configProblems(testEnv(undefined, { KEY_ENCRYPTION_KEYS: value }));
      expect(problems).toEqual([{ name: 'KEY_ENCRYPTION_KEYS', message }]);
      expect(JSON.stringify(problems)).not.toContain(KEK2.toString('base64').slice(0, 12));
    }
  });
});

describe('a retired and removed key', () => {
  let db: TestDatabase;
  let replica: Replica;
  const clock = new ManualClock();

  beforeAll(async () => {
    db = await createTestDatabase();
    replica = await startReplica('solo', db.url, LIFECYCLE, { clock });
  });
  afterAll(async () => {
    await replica?.close();
    await db?.drop();
  });

  it('signs no more, and its tokens are refused by ValidateToken and as a bearer once removed', async () => {
    const email = await newUser(replica);
    const before = await login(replica.auth, email);
    const oldKid = kidOf(before.tokens!.accessToken);
    // Read the old key's private half now, to sign a token that has not expired with it later.
    const [row] = await query<{ private_key_encrypted: Buffer }>(db.url, 'select private_key_encrypted from signing_keys where kid = $1', [oldKid]);
    const oldKey = createPrivateKey({ key: openPrivateKey(KEK1, oldKid, row!.private_key_encrypted), format: 'der', type: 'pkcs8' });
    expect(await validate(replica, before.tokens!.accessToken)).toBe(OK);

    const orm = await ormOn(db.url);
    const keks = new KeyEncryptionKeys([{ id: 'default', key: KEK1 }]);
    const config = testConfig(db.url, LIFECYCLE);
    try {
      // Staged now (CLI `keys rotate`): published at once, signing 10 minutes later.
      const staged = await rotateSigningKeys(orm.em.fork(), keks, clock, rotationPolicy(config), { wait: true, force: true });
      const newKid = staged.staged!.kid;
      await waitFor(() => jwksKids(replica.app.httpPort), (kids) => kids.includes(newKid));
      expect(await metricValue(replica.app.httpPort, 'latchkey_signing_keys_published')).toBe(2);
      expect(kidOf((await login(replica.auth, email)).tokens!.accessToken)).toBe(oldKid);

      clock.advance(10 * MINUTE);
      const after = await login(replica.auth, email);
      expect(kidOf(after.tokens!.accessToken)).toBe(newKid);
      // The job retires the old key: still published (its tokens verify) until they have all expired.
      const retiring = await runKeyRotation(config, { orm, logger: silent, clock, keyEncryptionKeys: keks });
      expect(retiring).toMatchObject({ outcome: 'completed', retired: [oldKid], rowsDeleted: 0 });
      expect((await listSigningKeys(orm.em.fork(), clock)).map((k) => [k.kid, k.state])).toEqual([
        [oldKid, 'retired'],
        [newKid, 'active'],
      ]);
      expect(await validate(replica, before.tokens!.accessToken)).toBe(OK);

      // 15 minutes of token lifetime and a minute of skew later, the next run removes it.
      clock.advance(16 * MINUTE + 1_000);
      const removing = await runKeyRotation(config, { orm, logger: silent, clock, keyEncryptionKeys: keks });
      expect(removing).toMatchObject({ outcome: 'completed', rowsDeleted: 1 });
      await waitFor(() => jwksKids(replica.app.httpPort), (kids) => !kids.includes(oldKid));
      expect(await jwksKids(replica.app.httpPort)).toEqual([newKid]);
      expect(await metricValue(replica.app.httpPort, 'latchkey_signing_keys_published')).toBe(1);

      // A token the removed key signs now (unexpired, otherwise perfect) is refused, both ways.
      const now = Math.floor(clock.ms / 1000);
      // In low-S form, as the server signs: refused for its key, not for its signature's form.
      const forged = withLowSSignature(
        jwt.sign(
          { iss: config.JWT_ISSUER, aud: config.JWT_AUDIENCE, sub: after.user!.id, sid: after.sessionId, iat: now, exp: now + 600, jti: '00000000-0000-4000-8000-000000000001', roles: [], email },
          oldKey,
          { algorithm: 'ES256', header: { alg: 'ES256', typ: 'at+jwt', kid: oldKid } },
        ),
      );
      expect(await validate(replica, forged)).toBe(INVALID);
      expect(await asBearer(replica, forged)).toBe(INVALID);
      // The same token signed by the key that signs now is accepted: the key is what is refused.
      const fresh = (await login(replica.auth, email)).tokens!.accessToken;
      expect(await asBearer(replica, fresh)).toBe(OK);
    } finally {
      await orm.close(true);
    }
  });
});

onPostgres('two replicas', () => {
  let db: TestDatabase;
  const replicas: Replica[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterEach(async () => {
    for (const replica of replicas.splice(0)) await replica.close();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('rotate on schedule: every token is signed by a key the other replica already published, and old tokens verify until they expire', async () => {
    const clock = new ManualClock();
    // A rotates (its scheduler runs the job every second); B only follows.
    const a = await startReplica('a', db.url, { ...LIFECYCLE, SCHEDULER_ENABLED: 'true', SIGNING_KEY_ROTATION_CRON: '* * * * * *' }, { clock });
    const b = await startReplica('b', db.url, LIFECYCLE, { clock });
    replicas.push(a, b);
    const email = await newUser(a);

    // B's JWKS, sampled all along: every kid it has shown so far.
    const publishedOnB = new Set<string>();
    let sampling = true;
    for (const kid of await jwksKids(b.app.httpPort)) publishedOnB.add(kid);
    const sampler = (async () => {
      while (sampling) {
        for (const kid of await jwksKids(b.app.httpPort)) publishedOnB.add(kid);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    // Tokens issued on either replica, each with what B had published before it was asked for.
    const issued: { kid: string; publishedBefore: Set<string>; token: string }[] = [];
    const issue = async (on: Replica) => {
      const publishedBefore = new Set(publishedOnB);
      const signedIn = await login(on.auth, email);
      issued.push({ kid: kidOf(signedIn.tokens!.accessToken), publishedBefore, token: signedIn.tokens!.accessToken });
      return signedIn.tokens!.accessToken;
    };

    try {
      const first = kidOf(await issue(a));
      await issue(b);
      // The rotation is due 10 minutes (the publish-ahead) before the 2-hour interval ends.
      clock.advance(2 * HOUR - 10 * MINUTE + 1_000);
      const [staged] = await waitFor(
        () => query<{ kid: string }>(db.url, 'select kid from signing_keys where kid <> $1', [first]),
        (rows) => rows.length === 1,
      );
      const next = staged!.kid;
      // Still signing with the first key on both, while B publishes the next one.
      await issue(a);
      await issue(b);
      await waitFor(async () => publishedOnB.has(next), (seen) => seen);
      // A token from just before the switch.
      clock.advance(7 * MINUTE);
      const beforeSwitch = await issue(b);
      expect(kidOf(beforeSwitch)).toBe(first);

      // The switch: both replicas sign with the next key from its time (minus the skew allowance).
      clock.advance(3 * MINUTE);
      expect(kidOf(await issue(a))).toBe(next);
      expect(kidOf(await issue(b))).toBe(next);
      // The token signed before still validates on both until it expires...
      expect(await validate(a, beforeSwitch)).toBe(OK);
      expect(await validate(b, beforeSwitch)).toBe(OK);
      // ...the job has retired the first key, keeping it published...
      await waitFor(() => query<{ retired_at: Date | null }>(db.url, 'select retired_at from signing_keys where kid = $1', [first]), (rows) => rows[0]?.retired_at != null);
      expect(await jwksKids(b.app.httpPort)).toEqual([first, next]);
      clock.advance(7 * MINUTE);
      expect(await validate(b, beforeSwitch)).toBe(OK);
      // ...and removes it once every token it signed has expired: its tokens are refused everywhere.
      clock.advance(10 * MINUTE);
      await waitFor(() => query(db.url, 'select kid from signing_keys where kid = $1', [first]), (rows) => rows.length === 0);
      await waitFor(() => jwksKids(b.app.httpPort), (kids) => kids.length === 1 && kids[0] === next);
      await waitFor(() => jwksKids(a.app.httpPort), (kids) => kids.length === 1 && kids[0] === next);
      expect(await validate(a, beforeSwitch)).toBe(INVALID);
      expect(await validate(b, beforeSwitch)).toBe(INVALID);
    } finally {
      sampling = false;
      await sampler;
    }
    // The job ran on A's scheduler, counted like the sweeps.
    const runs = await fetch(`http://127.0.0.1:${a.app.httpPort}/metrics`).then((r) => r.text());
    expect(runs).toMatch(/^latchkey_sweep_runs_total\{sweep="rotate-signing-keys",outcome="completed"\} [1-9]\d*$/m);
    // Every token's key was in B's JWKS before the token was asked for.
    expect(issued.filter((t) => !t.publishedBefore.has(t.kid)).map((t) => t.kid)).toEqual([]);
    expect(new Set(issued.map((t) => t.kid)).size).toBe(2);
  });

  it('retire --now: the other replica refuses the key\'s tokens within seconds, without a restart, and signs with another key at once', async () => {
    const a = await startReplica('a', db.url, LIFECYCLE);
    const b = await startReplica('b', db.url, LIFECYCLE);
    replicas.push(a, b);
    const email = await newUser(a);
    const token = (await login(a.auth, email)).tokens!.accessToken;
    const kid = kidOf(token);
    // Remembered by B's verified-token cache (and its pre-encoded answer) before the retirement.
    expect(await validate(b, token)).toBe(OK);
    expect(await validate(b, token)).toBe(OK);
    expect(await asBearer(b, token)).toBe(OK);

    const orm = await ormOn(db.url);
    try {
      const result = await retireSigningKeyNow(orm.em.fork(), new KeyEncryptionKeys([{ id: 'default', key: KEK1 }]), { now: () => Date.now() }, kid);
      expect(result?.signing).not.toBe(kid);
      expect(await retireSigningKeyNow(orm.em.fork(), new KeyEncryptionKeys([{ id: 'default', key: KEK1 }]), { now: () => Date.now() }, 'no-such-kid')).toBeUndefined();
    } finally {
      await orm.close(true);
    }
    await waitFor(() => validate(b, token), (outcome) => outcome === INVALID, 5_000);
    await waitFor(() => validate(a, token), (outcome) => outcome === INVALID, 5_000);
    expect(await asBearer(b, token)).toBe(INVALID);
    const replacement = (await login(b.auth, email)).tokens!.accessToken;
    expect(kidOf(replacement)).not.toBe(kid);
    expect(await validate(a, replacement)).toBe(OK);
    expect(await jwksKids(a.app.httpPort)).not.toContain(kid);
  });

  it('two replicas starting at once on an empty database agree on one active key', async () => {
    const fresh = await createTestDatabase();
    const orm = await ormOn(fresh.url);
    await orm.migrator.up();
    await orm.close(true);
    try {
      const started = await Promise.all([startReplica('a', fresh.url), startReplica('b', fresh.url)]);
      replicas.push(...started);
      expect(await query(fresh.url, 'select kid from signing_keys')).toHaveLength(1);
      expect(await query(fresh.url, 'select id from refresh_secret_keys')).toHaveLength(1);
      const [a, b] = started;
      expect(await jwksKids(a!.app.httpPort)).toEqual(await jwksKids(b!.app.httpPort));
    } finally {
      for (const replica of replicas.splice(0)) await replica.close();
      await fresh.drop();
    }
  });
});

describe('the key-encryption key, replaced end to end', () => {
  let db: TestDatabase;
  const clock = new ManualClock();
  const list = (...entries: [string, Buffer][]) => entries.map(([id, key]) => `${id}:${key.toString('base64')}`).join(',');

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  async function start(env: Record<string, string>): Promise<{ app: RunningApp; rpc<Res>(method: string, request: object): Promise<{ response?: Res; error?: ServiceError }>; close(): Promise<void> }> {
    const app = await startApp(testConfig(db.url, env), silent, undefined, { clock });
    const client = authClient(app.grpcPort);
    return {
      app,
      rpc: (method, request) => call(client as never, method, request),
      async close() {
        client.close();
        await app.stop();
      },
    };
  }

  it('keeps refresh, the grace-window retry and reuse detection working through [KEK 1] → [KEK 2, KEK 1] + rewrap → [KEK 2]', async () => {
    // Sessions made under KEK 1 (the single KEY_ENCRYPTION_KEY, id `default`).
    const one = await start({});
    const email = `kek@example.com`;
    await register(authClient(one.app.grpcPort), email);
    const sessions: LoginResponse[] = [];
    for (let i = 0; i < 3; i++) sessions.push(await login(authClient(one.app.grpcPort), email));
    await one.close();

    // [KEK 2, KEK 1]: everything still opens; rewrap seals it all under KEK 2.
    const both = await start({ KEY_ENCRYPTION_KEY: '', KEY_ENCRYPTION_KEYS: list(['k2', KEK2], ['default', KEK1]) });
    const orm = await ormOn(db.url);
    try {
      const rewrapped = await rewrapKeys(orm.em.fork(), new KeyEncryptionKeys([{ id: 'k2', key: KEK2 }, { id: 'default', key: KEK1 }]));
      expect(rewrapped).toEqual({ signingKeys: 1, refreshSecretKeys: 1, kekId: 'k2' });
    } finally {
      await orm.close(true);
    }
    await both.close();
    expect(await query(db.url, 'select kek_id from signing_keys union all select kek_id from refresh_secret_keys')).toEqual([{ kek_id: 'k2' }, { kek_id: 'k2' }]);

    // A wrong list fails start-up, naming the key ids, never the keys.
    const wrong = start({ KEY_ENCRYPTION_KEY: '', KEY_ENCRYPTION_KEYS: list(['k3', KEK3]) });
    await expect(wrong).rejects.toThrow(/sealed under key-encryption key 'k2', and none of the configured keys \(ids: k3\) opens it/);
    const message = await wrong.catch((error: Error) => error.message);
    for (const key of [KEK1, KEK2, KEK3]) expect(message).not.toContain(key.toString('base64'));

    // [KEK 2] only: KEK 1 is gone, and every live session still works.
    const two = await start({ KEY_ENCRYPTION_KEY: '', KEY_ENCRYPTION_KEYS: list(['k2', KEK2]) });
    try {
      const [first, second, third] = sessions;
      // Refresh.
      const refreshed = await two.rpc<RefreshTokenResponse>('refreshToken', { refreshToken: first!.tokens!.refreshToken });
      expect(refreshed.error).toBeUndefined();
      expect((await two.rpc<ValidateTokenResponse>('validateToken', { accessToken: refreshed.response!.tokens!.accessToken, checkRevocation: true })).error).toBeUndefined();
      // The access token issued under KEK 1 still validates (the same signing key, re-sealed).
      expect((await two.rpc('validateToken', { accessToken: first!.tokens!.accessToken, checkRevocation: false })).error).toBeUndefined();
      // A retry within the grace window gets the very same pair.
      const once = await two.rpc<RefreshTokenResponse>('refreshToken', { refreshToken: second!.tokens!.refreshToken });
      const again = await two.rpc<RefreshTokenResponse>('refreshToken', { refreshToken: second!.tokens!.refreshToken });
      expect(again.error).toBeUndefined();
      expect(again.response!.tokens!.refreshToken).toBe(once.response!.tokens!.refreshToken);
      // Reuse of a rotated-out token after the window revokes the session.
      const rotated = await two.rpc<RefreshTokenResponse>('refreshToken', { refreshToken: third!.tokens!.refreshToken });
      expect(rotated.error).toBeUndefined();
      clock.advance(MINUTE);
      const reused = await two.rpc('refreshToken', { refreshToken: third!.tokens!.refreshToken });
      expect([reused.error?.code, errorDetails(reused.error).reason]).toEqual([16, 'REFRESH_TOKEN_REUSED']);
      const [state] = await query<{ revoked_reason: string }>(db.url, 'select revoked_reason from sessions where id = $1', [third!.sessionId]);
      expect(state!.revoked_reason).toBe('REFRESH_TOKEN_REUSED');
    } finally {
      await two.close();
    }
  });

  it('stores the KEK-derived refresh-secret key on a database that already has sessions, so they keep working after the upgrade', async () => {
    const fresh = await createTestDatabase();
    const orm = await ormOn(fresh.url);
    try {
      await orm.migrator.up();
      // A database as an earlier release left it: a signing key, and no stored derivation key.
      const keks = new KeyEncryptionKeys([{ id: 'default', key: KEK1 }]);
      await rotateSigningKeys(orm.em.fork(), keks, clock, rotationPolicy(testConfig(undefined)), { wait: true });
      const { deriver, id } = await loadRefreshSecretDeriver(orm.em.fork(), keks);
      expect(id).toBe('legacy-kek-derived');
      const sessionId = '00000000-0000-4000-8000-000000000009';
      const legacy = new RefreshSecretDeriver(KEK1);
      const secret = legacy.fresh(sessionId);
      expect(deriver.child(sessionId, secret)).toEqual(legacy.child(sessionId, secret));
      expect(deriver.issued(sessionId, secret)).toBe(true);
      // And on a new database the key is random: not derivable from the KEK.
      const other = await createTestDatabase();
      const otherOrm = await ormOn(other.url);
      try {
        await otherOrm.migrator.up();
        const random = await loadRefreshSecretDeriver(otherOrm.em.fork(), keks);
        expect(random.id).toMatch(/^rsk-/);
        expect(random.deriver.issued(sessionId, secret)).toBe(false);
      } finally {
        await otherOrm.close(true);
        await other.drop();
      }
    } finally {
      await orm.close(true);
      await fresh.drop();
    }
  });
});
