/**
 * End-to-end: how the compiled CLI meets its database at start-up — unreachable, behind on
 * migrations, migrated by `latchkey migrate`. Runs on the PostgreSQL in TEST_DATABASE_URL, or on
 * an embedded PGlite (reached over its socket, like any server) when that is unset.
 */
import net, { type AddressInfo } from 'node:net';
import { Children, closedPort, within } from '../support/children.js';
import { testEnv } from '../support/config.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { processEnv } from '../support/process-env.js';
import { runLatchkey, startLatchkey, type LatchkeyProcess } from '../support/process.js';
import { TcpProxy } from '../support/proxy.js';

const MIGRATIONS = ['Migration20261123000000Initial', 'Migration20261124000000OneTimeTokenEmail', 'Migration20261201000000SessionLimitIndex', 'Migration20261201000100SchedulerLeases'];

const children = new Children();
afterEach(() => children.killAll());

async function runToExit(proc: LatchkeyProcess, what: string) {
  children.track(proc);
  const exit = await within(proc.exited, 30_000, what, proc);
  return { ...exit, stdout: proc.stdout(), stderr: proc.stderr(), logs: proc.logs() };
}

describe('unreachable database at start-up', () => {
  it.each(['serve', 'migrate'])('`%s` gives up after DATABASE_CONNECT_TIMEOUT with exit 1, naming the host but not the password', async (command) => {
    const port = await closedPort();
    const result = await runToExit(
      runLatchkey(
        [command],
        testEnv(`postgres://latchkey:topsecret@127.0.0.1:${port}/db`, { LOG_LEVEL: 'info', DATABASE_CONNECT_TIMEOUT: '1s' }),
      ),
      `${command} to give up`,
    );

    expect(result).toMatchObject({ code: 1, signal: null });
    const fatal = result.logs.filter((line) => line.level === 'fatal');
    expect(fatal).toHaveLength(1);
    // The number of seconds waited comes from the clock: matched, never asserted.
    const reason = `${command} failed: database at 127\\.0\\.0\\.1:${port} is unreachable after \\d+\\.\\ds of retrying`;
    expect(fatal[0]!.msg).toMatch(new RegExp(`^${reason}$`));
    // The same reason reaches stderr whatever LOG_LEVEL says.
    expect(result.stderr).toMatch(new RegExp(`^latchkey: ${reason}\\n$`));
    // Each retry is logged with the host, so an operator sees what is being tried.
    const retries = result.logs.filter((line) => line.msg === 'database not reachable yet, retrying');
    expect(retries.length).toBeGreaterThanOrEqual(1);
    for (const retry of retries) expect(retry.host).toBe(`127.0.0.1:${port}`);
    expect(result.logs.some((line) => line.msg === 'latchkey serving')).toBe(false);

    expect(result.stdout + result.stderr).toContain(`127.0.0.1:${port}`);
    expect(result.stdout + result.stderr).not.toContain('topsecret');
  });
});

describe('signals during start-up', () => {
  it('SIGTERM while waiting for an unreachable database stops at once with exit 0', async () => {
    const port = await closedPort();
    const proc = children.track(
      runLatchkey(['serve'], testEnv(`postgres://latchkey@127.0.0.1:${port}/db`, { LOG_LEVEL: 'info', DATABASE_CONNECT_TIMEOUT: '10m' })),
    );
    // Wait until it is retrying, then ask it to stop; it must not wait out the 10 minutes.
    await within(
      (async () => {
        while (!proc.logs().some((line) => line.msg === 'database not reachable yet, retrying')) await new Promise((r) => setTimeout(r, 50));
      })(),
      15_000,
      'the first retry',
      proc,
    );
    proc.child.kill('SIGTERM');
    expect(await within(proc.exited, 15_000, 'the process to exit', proc)).toEqual({ code: 0, signal: null });
    expect(proc.logs().map((line) => line.msg)).toEqual(expect.arrayContaining(['shutting down', 'stopped during start-up']));
    expect(proc.logs().some((line) => line.level === 'fatal')).toBe(false);
  });
});

describe('signals during start-up against a hung database', () => {
  let database: TestDatabase;
  let proxy: TcpProxy;

  beforeAll(async () => {
    database = await createTestDatabase();
    proxy = TcpProxy.forUrl(database.url);
    await proxy.start();
  });
  afterAll(async () => {
    await children.killAll();
    await proxy?.stop();
    await database?.drop();
  });

  it('SIGTERM while a start-up ping hangs leaves the retry loop at once and exits 0', async () => {
    // The database accepts connections and never answers, so the first ping hangs until the
    // connection attempt times out. SIGTERM must end the wait for the ping and the retries (no
    // further retry is logged); closing the pool still lets that one attempt time out (≤ 5s).
    proxy.freeze();
    const proc = children.track(
      runLatchkey(['serve'], testEnv(proxy.rewrite(database.url), { LOG_LEVEL: 'info', DATABASE_CONNECT_TIMEOUT: '10m' })),
    );
    await within(
      (async () => {
        while (proxy.openSockets === 0) await new Promise((r) => setTimeout(r, 20));
      })(),
      15_000,
      'the first connection attempt',
      proc,
    );
    proc.child.kill('SIGTERM');
    expect(await within(proc.exited, 15_000, 'the process to exit', proc)).toEqual({ code: 0, signal: null });
    const messages = proc.logs().map((line) => line.msg);
    expect(messages.slice(messages.indexOf('shutting down'))).toEqual(['shutting down', 'stopped during start-up']);
    proxy.thaw();
  });
});

describe('quiet logs', () => {
  it('a start-up failure still reaches stderr with LOG_LEVEL=silent', async () => {
    const port = await closedPort();
    const result = await runToExit(
      runLatchkey(['serve'], testEnv(`postgres://u:pw@127.0.0.1:${port}/db`, { LOG_LEVEL: 'silent', DATABASE_CONNECT_TIMEOUT: '200ms' })),
      'serve to give up',
    );
    expect(result).toMatchObject({ code: 1, stdout: '' });
    expect(result.stderr).toMatch(new RegExp(`^latchkey: serve failed: database at 127\\.0\\.0\\.1:${port} is unreachable after \\d+\\.\\ds of retrying\\n$`));
  });
});

describe('schema migrations', () => {
  let database: TestDatabase;
  let env: Record<string, string>;

  beforeAll(async () => {
    database = await createTestDatabase();
    env = processEnv(database, { DATABASE_MIGRATE_ON_START: 'false' });
  });
  afterAll(async () => {
    await children.killAll();
    await database?.drop();
  });

  async function tablesPresent(): Promise<{ users: string | null; migrations: string | null }> {
    const [row] = await query<{ users: string | null; migrations: string | null }>(
      database.url,
      "select to_regclass('public.users')::text as users, to_regclass('public.mikro_orm_migrations')::text as migrations",
    );
    return row!;
  }

  it('serve refuses an outdated schema, migrate brings it current once, and serve then starts', async () => {
    // 1. A fresh database and DATABASE_MIGRATE_ON_START=false: serve refuses, changing nothing.
    const refused = await runToExit(runLatchkey(['serve'], env), 'serve to refuse the outdated schema');
    expect(refused).toMatchObject({
      code: 1,
      signal: null,
      stderr: `latchkey: serve failed: database schema is outdated: ${MIGRATIONS.length} pending migration(s) (${MIGRATIONS.join(', ')}); run \`latchkey migrate\`\n`,
    });
    const fatal = refused.logs.filter((line) => line.level === 'fatal');
    expect(fatal.map((line) => line.msg)).toEqual([
      `serve failed: database schema is outdated: ${MIGRATIONS.length} pending migration(s) (${MIGRATIONS.join(', ')}); run \`latchkey migrate\``,
    ]);
    expect(refused.logs.some((line) => line.msg === 'latchkey serving')).toBe(false);
    expect(refused.logs.some((line) => line.msg === 'migrations applied')).toBe(false);
    expect((await tablesPresent()).users).toBeNull();

    // 2. migrate applies the pending migration and exits 0.
    const first = await runToExit(runLatchkey(['migrate'], env), 'the first migrate');
    expect(first).toMatchObject({ code: 0, signal: null, stderr: '' });
    expect(first.logs.filter((line) => line.msg === 'migrations applied').map((line) => line.migrations)).toEqual([MIGRATIONS]);
    expect(first.logs.find((line) => line.msg === 'database schema is current')).toMatchObject({ migrations: MIGRATIONS.length });
    expect(first.logs.filter((line) => ['error', 'fatal'].includes(line.level as string))).toEqual([]);
    expect(await tablesPresent()).toEqual({ users: 'users', migrations: 'mikro_orm_migrations' });

    // 3. A second migrate is a no-op: exit 0, nothing applied, still every migration recorded once.
    const second = await runToExit(runLatchkey(['migrate'], env), 'the second migrate');
    expect(second).toMatchObject({ code: 0, signal: null, stderr: '' });
    expect(second.logs.some((line) => line.msg === 'migrations applied')).toBe(false);
    expect(second.logs.find((line) => line.msg === 'database schema is current')).toMatchObject({ migrations: MIGRATIONS.length });
    expect(await query<{ name: string }>(database.url, 'select name from mikro_orm_migrations order by id')).toEqual(MIGRATIONS.map((name) => ({ name })));

    // 4. serve now starts on the current schema (still without migrating on start) and stops cleanly.
    const server = children.track(await startLatchkey(env));
    expect(server.logs().some((line) => line.msg === 'migrations applied')).toBe(false);
    server.child.kill('SIGTERM');
    const exit = await within(server.exited, 30_000, 'serve to stop', server);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(server.logs().find((line) => line.msg === 'latchkey stopped')).toMatchObject({ forced: false });
  });
});

describe('ports already in use', () => {
  let database: TestDatabase;
  let blocker: net.Server;
  let blockedPort: number;

  beforeAll(async () => {
    database = await createTestDatabase();
    blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    blockedPort = (blocker.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await children.killAll();
    await new Promise((resolve) => blocker.close(resolve));
    await database?.drop();
  });

  it.each([
    ['GRPC_PORT', 'gRPC', 'GRPC_HOST, GRPC_PORT'],
    ['HTTP_PORT', 'HTTP', 'HTTP_HOST, HTTP_PORT'],
  ])('a taken %s fails start-up with exit 1 naming the address and the variables', async (variable, what, names) => {
    const result = await runToExit(runLatchkey(['serve'], processEnv(database, { [variable]: String(blockedPort) })), 'serve to fail');
    expect(result).toMatchObject({ code: 1, signal: null });
    expect(result.stderr).toMatch(
      new RegExp(`^latchkey: serve failed: cannot listen for ${what} on 127\\.0\\.0\\.1:${blockedPort} \\(${names}\\): .*EADDRINUSE.*\\n$`),
    );
    expect(result.logs.some((line) => line.msg === 'latchkey serving')).toBe(false);
  });
});
