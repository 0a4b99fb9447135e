/**
 * End-to-end: `latchkey keys list|rotate|retire <kid> --now|rewrap` through the compiled CLI (as
 * the image runs it), on PostgreSQL or on an embedded PGlite reached over its socket.
 */
import { Children, within } from '../support/children.js';
import { TEST_KEY_ENCRYPTION_KEY } from '../support/config.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { processEnv } from '../support/process-env.js';
import { runLatchkey } from '../support/process.js';

const children = new Children();
afterEach(() => children.killAll());

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  expect(await run(['migrate'], processEnv(db))).toMatchObject({ code: 0 });
});

afterAll(async () => {
  await children.killAll();
  await db?.drop();
});

async function run(args: string[], env: Record<string, string>) {
  const proc = children.track(runLatchkey(args, env));
  const exit = await within(proc.exited, 30_000, `latchkey ${args.join(' ')} to exit`, proc);
  return { ...exit, stdout: proc.stdout(), stderr: proc.stderr() };
}

/** stdout without the JSON log lines. */
const printed = (stdout: string) => stdout.split('\n').filter((line) => line !== '' && !line.startsWith('{'));
const KID = '[A-Za-z0-9_-]{43}';
const ISO = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z';
const KEK2 = Buffer.alloc(32, 42).toString('base64');

async function listed(env = processEnv(db)): Promise<string[][]> {
  const result = await run(['keys', 'list'], env);
  expect(result).toMatchObject({ code: 0, stderr: '' });
  const [header, ...rows] = printed(result.stdout).map((line) => line.split('\t'));
  expect(header).toEqual(['KID', 'STATE', 'KEK', 'CREATED', 'ACTIVATES', 'RETIRED', 'EXPIRES']);
  return rows.map(([kid, state, kek]) => [kid!, state!, kek!]);
}

it('lists, stages, retires at once and rewraps keys, and refuses what it cannot do', async () => {
  expect(await listed()).toEqual([]);

  const first = await run(['keys', 'rotate'], processEnv(db));
  expect(first).toMatchObject({ code: 0, stderr: '' });
  // No key signs yet: the first one signs at once.
  expect(printed(first.stdout)).toEqual([expect.stringMatching(new RegExp(`^staged ${KID}: published now, signs from ${ISO}$`))]);
  const [[k1]] = (await listed()) as [[string]];
  expect(await listed()).toEqual([[k1, 'active', 'default']]);

  const second = await run(['keys', 'rotate'], processEnv(db));
  const k2 = /^staged (\S+):/.exec(printed(second.stdout)[0]!)![1]!;
  expect(await listed()).toEqual([
    [k1, 'active', 'default'],
    [k2, 'next', 'default'],
  ]);
  // A second rotate while one is staged stages nothing.
  expect(printed((await run(['keys', 'rotate'], processEnv(db))).stdout)).toEqual(['a staged key is already waiting to sign (see `latchkey keys list`); nothing staged']);

  // retire needs --now; an unknown kid is an error; nothing changes either way.
  const withoutNow = await run(['keys', 'retire', k1], processEnv(db));
  expect(withoutNow).toMatchObject({ code: 64, stderr: 'latchkey: usage: latchkey keys retire <kid> --now\n' });
  const unknown = await run(['keys', 'retire', 'no-such-kid', '--now'], processEnv(db));
  expect(unknown).toMatchObject({ code: 1, stderr: 'latchkey: no published signing key has the kid no-such-kid\n' });
  expect((await listed()).map(([, state]) => state)).toEqual(['active', 'next']);

  // The staged key (already published) takes over at once.
  const retired = await run(['keys', 'retire', k1, '--now'], processEnv(db));
  expect(retired).toMatchObject({ code: 0, stderr: '' });
  expect(printed(retired.stdout)).toEqual([`retired and withdrew ${k1}; ${k2} signs now`]);
  expect(await listed()).toEqual([
    [k1, 'removed', 'default'],
    [k2, 'active', 'default'],
  ]);

  // Rewrap under a new first KEK; then only that KEK is needed.
  const both = processEnv(db, { KEY_ENCRYPTION_KEY: '', KEY_ENCRYPTION_KEYS: `k2:${KEK2},default:${TEST_KEY_ENCRYPTION_KEY}` });
  const rewrap = await run(['keys', 'rewrap'], both);
  expect(rewrap).toMatchObject({ code: 0, stderr: '' });
  expect(printed(rewrap.stdout)).toEqual([expect.stringMatching(/^re-encrypted 2 signing keys and [01] refresh-secret keys with key-encryption key 'k2'$/)]);
  const onlyNew = processEnv(db, { KEY_ENCRYPTION_KEY: '', KEY_ENCRYPTION_KEYS: `k2:${KEK2}` });
  expect(await listed(onlyNew)).toEqual([
    [k1, 'removed', 'k2'],
    [k2, 'active', 'k2'],
  ]);
  expect(await query(db.url, 'select distinct kek_id from signing_keys')).toEqual([{ kek_id: 'k2' }]);

  // Without the KEK the keys are sealed under, rewrap fails naming ids only.
  const wrong = await run(['keys', 'rewrap'], processEnv(db, { KEY_ENCRYPTION_KEY: '', KEY_ENCRYPTION_KEYS: `k3:${Buffer.alloc(32, 3).toString('base64')}` }));
  expect(wrong.code).toBe(1);
  expect(wrong.stderr).toMatch(/^latchkey: keys failed: cannot decrypt signing key \S+: it is sealed under key-encryption key 'k2', and none of the configured keys \(ids: k3\) opens it/);
  expect(wrong.stderr).not.toContain(KEK2);

  const bad = await run(['keys', 'frobnicate'], processEnv(db));
  expect(bad.code).toBe(64);
  expect(bad.stderr).toMatch(/^latchkey: unknown keys command 'frobnicate'/);
});
