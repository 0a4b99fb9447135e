/**
 * End-to-end: `latchkey healthcheck` (what the chart's `helm test` pods run) and `latchkey
 * --version`, from the compiled CLI against a running server. The checking process gets no
 * configuration at all: it must need none.
 */
import { readFileSync } from 'node:fs';
import { Children, closedPort, within } from '../support/children.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { processEnv } from '../support/process-env.js';
import { runLatchkey, startLatchkey, type LatchkeyProcess } from '../support/process.js';

const children = new Children();
/** Safety net for a command that should end promptly; never an assertion on duration. */
const PROMPTLY = 30_000;

async function run(args: string[], env: Record<string, string> = {}) {
  const proc = children.track(runLatchkey(args, env));
  const exit = await within(proc.exited, PROMPTLY, `latchkey ${args.join(' ')} to exit`, proc);
  return { code: exit.code, stdout: proc.stdout(), stderr: proc.stderr() };
}

describe('latchkey --version', () => {
  const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

  it.each([['--version'], ['-v'], ['version']])('`%s` prints the package version and exits 0, without configuration', async (arg) => {
    expect(await run([arg])).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
  });
});

describe('latchkey healthcheck', () => {
  let database: TestDatabase;
  let server: LatchkeyProcess & { grpcPort: number; httpPort: number };
  let jwks: string;

  beforeAll(async () => {
    database = await createTestDatabase();
    server = children.track(await startLatchkey(processEnv(database)));
    jwks = `http://127.0.0.1:${server.httpPort}/.well-known/jwks.json`;
  });
  afterAll(async () => {
    await children.killAll();
    await database?.drop();
  });

  it('passes against a serving server: gRPC health SERVING and a JWKS with a key', async () => {
    const result = await run(['healthcheck', '--grpc', `127.0.0.1:${server.grpcPort}`, '--jwks', jwks]);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect(result.stdout.split('\n')).toEqual([
      `ok: grpc 127.0.0.1:${server.grpcPort} service '': SERVING`,
      expect.stringMatching(new RegExp(`^ok: jwks ${jwks.replace(/[.]/g, '\\.')}: HTTP 200, [1-9]\\d* key\\(s\\)$`)),
      '',
    ]);
  });

  it('checks a named health service, and the gRPC port from GRPC_PORT by default', async () => {
    expect(await run(['healthcheck', '--service', 'liveness'], { GRPC_PORT: String(server.grpcPort) })).toEqual({
      code: 0,
      stdout: `ok: grpc 127.0.0.1:${server.grpcPort} service 'liveness': SERVING\n`,
      stderr: '',
    });
  });

  it('checks the JWKS alone with --no-grpc', async () => {
    const result = await run(['healthcheck', '--no-grpc', '--jwks', jwks]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^ok: jwks .*: HTTP 200, [1-9]\d* key\(s\)\n$/);
  });

  it('fails (exit 1) on a health service the server does not know: NOT_FOUND', async () => {
    const result = await run(['healthcheck', '--grpc', `127.0.0.1:${server.grpcPort}`, '--service', 'latchkey.nope.v1.Nothing']);
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(new RegExp(`^FAILED: grpc 127\\.0\\.0\\.1:${server.grpcPort} service 'latchkey\\.nope\\.v1\\.Nothing': error 5 \\(`));
  });

  it('fails (exit 1) when nothing listens, and when the JWKS is not where it is looked for; each check reported', async () => {
    const port = await closedPort();
    const result = await run([
      'healthcheck',
      '--grpc',
      `127.0.0.1:${port}`,
      '--jwks',
      `http://127.0.0.1:${server.httpPort}/.well-known/nothing.json`,
      '--timeout',
      '3000',
    ]);
    expect(result.code).toBe(1);
    const lines = result.stdout.split('\n');
    expect(lines[0]).toMatch(new RegExp(`^FAILED: grpc 127\\.0\\.0\\.1:${port} service '': error 14 \\(`));
    expect(lines.slice(1)).toEqual([`FAILED: jwks http://127.0.0.1:${server.httpPort}/.well-known/nothing.json: HTTP 404`, '']);
  });

  it.each([
    [['--bogus'], "Unknown option '--bogus'"],
    [['--timeout', 'soon'], '--timeout must be a whole number of milliseconds'],
    [['--no-grpc'], 'nothing to check'],
  ])('refuses bad usage %j with exit 64', async (args, message) => {
    const result = await run(['healthcheck', ...args]);
    expect({ code: result.code, stdout: result.stdout }).toEqual({ code: 64, stdout: '' });
    expect(result.stderr).toContain(message);
  });
});
