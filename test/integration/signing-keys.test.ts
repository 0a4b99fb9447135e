import { createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApp } from '../../src/app.js';
import { KeyDecryptionError, openPrivateKey, sealPrivateKey } from '../../src/domain/keys/key-encryption.js';
import { resolveKeyEncryptionKey } from '../../src/domain/keys/key-encryption-key.js';
import { KeyRing } from '../../src/domain/keys/key-ring.js';
import { systemClock } from '../../src/domain/clock.js';
import { createLogger } from '../../src/observability/logger.js';
import { createOrm } from '../../src/persistence/orm.js';
import { TEST_KEY_ENCRYPTION_KEY, testConfig } from '../support/config.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';

const KEK = Buffer.from(TEST_KEY_ENCRYPTION_KEY, 'base64');
const silent = createLogger('silent');
let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  await db?.drop();
});

describe('signing keys', () => {
  it('are created once on first start and reused after a restart', async () => {
    const first = await startApp(testConfig(db.url), silent);
    const jwks = await (await fetch(`http://127.0.0.1:${first.httpPort}/.well-known/jwks.json`)).text();
    await first.stop();
    const second = await startApp(testConfig(db.url), silent);
    try {
      expect(await (await fetch(`http://127.0.0.1:${second.httpPort}/.well-known/jwks.json`)).text()).toBe(jwks);
      const rows = await query<{ kid: string; algorithm: string }>(db.url, 'select kid, algorithm from signing_keys');
      expect(rows).toEqual([{ kid: (JSON.parse(jwks) as { keys: { kid: string }[] }).keys[0]!.kid, algorithm: 'ES256' }]);
    } finally {
      await second.stop();
    }
  });

  it('store the private key only encrypted, bound to its kid', async () => {
    const [row] = await query<{ kid: string; private_key_encrypted: Buffer; public_jwk: Record<string, string> }>(
      db.url,
      'select kid, private_key_encrypted, public_jwk from signing_keys',
    );
    const der = openPrivateKey(KEK, row!.kid, row!.private_key_encrypted);
    expect(row!.private_key_encrypted.includes(der.subarray(-32))).toBe(false);
    expect(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).asymmetricKeyDetails).toEqual({ namedCurve: 'prime256v1' });
    expect(row!.public_jwk).not.toHaveProperty('d');
    expect(() => openPrivateKey(KEK, 'another-kid', row!.private_key_encrypted)).toThrow(KeyDecryptionError);
    const tampered = Buffer.from(row!.private_key_encrypted);
    tampered[tampered.length - 1]! ^= 1;
    expect(() => openPrivateKey(KEK, row!.kid, tampered)).toThrow(KeyDecryptionError);
  });

  it('refuse to start with another KEY_ENCRYPTION_KEY, naming the key id and the variables, never the key', async () => {
    const other = Buffer.alloc(32, 9).toString('base64');
    const failure = startApp(testConfig(db.url, { KEY_ENCRYPTION_KEY: other }), silent);
    await expect(failure).rejects.toThrow(
      /^cannot decrypt (refresh-secret|signing) key .+: it is sealed under key-encryption key 'default', and none of the configured keys \(ids: default\) opens it; list that key in KEY_ENCRYPTION_KEYS \(or KEY_ENCRYPTION_KEY\) again/,
    );
    const message = await failure.catch((error: Error) => error.message);
    expect(message).not.toContain(other);
    expect(message).not.toContain(TEST_KEY_ENCRYPTION_KEY);
  });

  it('are created once even when a replica that read its clock earlier takes the lock later', async () => {
    const fresh = await createTestDatabase();
    const orm = await createOrm({ clientUrl: fresh.url, poolMax: 2, connectTimeoutMs: 5_000, statementTimeoutMs: 5_000, logger: silent });
    try {
      await orm.migrator.up();
      const start = Date.now();
      // The replica whose clock says t + 5 ms gets the lock first and creates the key; the one that
      // read t comes second and must sign with that key, not create another.
      const ahead = await KeyRing.load(orm.em.fork(), KEK, { now: () => start + 5 });
      const behind = await KeyRing.load(orm.em.fork(), KEK, { now: () => start });
      expect(behind.signing.kid).toBe(ahead.signing.kid);
      expect(await query(fresh.url, 'select kid from signing_keys')).toHaveLength(1);
    } finally {
      await orm.close(true);
      await fresh.drop();
    }
  });

  it('are created once when several replicas start together on an empty table', async () => {
    const fresh = await createTestDatabase();
    const orms = await Promise.all(
      Array.from({ length: 3 }, () => createOrm({ clientUrl: fresh.url, poolMax: 2, connectTimeoutMs: 5_000, statementTimeoutMs: 5_000, logger: silent })),
    );
    try {
      await orms[0]!.migrator.up();
      const rings = await Promise.all(orms.map((orm) => KeyRing.load(orm.em.fork(), KEK, systemClock)));
      expect(new Set(rings.map((ring) => ring.signing.kid)).size).toBe(1);
      expect(await query(fresh.url, 'select kid from signing_keys')).toHaveLength(1);
    } finally {
      for (const orm of orms) await orm.close(true);
      await fresh.drop();
    }
  });
});

describe('sealPrivateKey', () => {
  it('never produces the same ciphertext twice', () => {
    const der = Buffer.from('not really a key');
    expect(sealPrivateKey(KEK, 'k', der)).not.toEqual(sealPrivateKey(KEK, 'k', der));
    expect(openPrivateKey(KEK, 'k', sealPrivateKey(KEK, 'k', der))).toEqual(der);
  });
});

describe('the development key-encryption key', () => {
  it('is generated once into the data directory (mode 0600) and read back on the next start', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'latchkey-kek-'));
    try {
      const config = testConfig(undefined, { LATCHKEY_DATA_DIR: dir, KEY_ENCRYPTION_KEY: '', NODE_ENV: 'development' });
      const first = await resolveKeyEncryptionKey(config, silent);
      expect(first).toHaveLength(32);
      const path = join(dir, 'key-encryption-key');
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      expect(Buffer.from((await readFile(path, 'utf8')).trim(), 'base64')).toEqual(first);
      expect(await resolveKeyEncryptionKey(config, silent)).toEqual(first);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a stored key that is not 32 bytes, saying which file and which variable', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'latchkey-kek-'));
    try {
      await writeFile(join(dir, 'key-encryption-key'), 'c2hvcnQ=\n');
      const config = testConfig(undefined, { LATCHKEY_DATA_DIR: dir, KEY_ENCRYPTION_KEY: '', NODE_ENV: 'development' });
      await expect(resolveKeyEncryptionKey(config, silent)).rejects.toThrow(
        `${join(dir, 'key-encryption-key')} does not hold a 32-byte base64 key: delete it or set KEY_ENCRYPTION_KEY`,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('is used as given when KEY_ENCRYPTION_KEY is set', async () => {
    expect(await resolveKeyEncryptionKey(testConfig(undefined), silent)).toEqual(KEK);
  });
});
