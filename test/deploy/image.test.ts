import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { credentials, loadPackageDefinition, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import pg from 'pg';
import { BUILD_NPMRC, ROOT, check, containerEnv, requireSetup, run } from './support/tools.js';

// The image built from the repository's Dockerfile with buildah, run with podman against the
// local PostgreSQL, the way the chart runs it: `migrate`, then `serve` with a read-only root
// filesystem and a tmpfs at /tmp.

const IMAGE = 'localhost/latchkey:deploy-test';
// The local stand-in for the base image that test/deploy/setup.sh builds (there is no Docker Hub
// here): the build is given it in place of the Dockerfile's digest-pinned default.
const BASE_IMAGE = 'docker.io/library/node:24-bookworm-slim';
/** What the layers above the base image may add (issue 19), in bytes as podman counts them. */
const MAX_ADDED_BYTES = 60 * 1000 * 1000;
const HOST_CA = '/etc/ssl/certs/ca-certificates.crt';
const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
// Kubernetes' default terminationGracePeriodSeconds (and the chart's): SIGKILL would follow.
const GRACE_PERIOD_MS = 30_000;
const BUILD_TIMEOUT_MS = 20 * 60_000;

const database = `latchkey_deploy_${randomBytes(4).toString('hex')}`;
const container = `latchkey-deploy-test-${randomBytes(4).toString('hex')}`;
let databaseUrl = '';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: ADMIN_URL });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function podmanRunArgs(env: Record<string, string>, extra: string[] = []): string[] {
  // --network host: the container reaches PostgreSQL on 127.0.0.1 and listens on free host ports.
  return ['run', '--rm', '--network', 'host', '--read-only', '--tmpfs', '/tmp', ...Object.entries(env).flatMap(([k, v]) => ['--env', `${k}=${v}`]), ...extra];
}

function healthCheck(port: number): Promise<string> {
  type HealthClient = Client & {
    Check(request: { service: string }, options: { deadline: number }, callback: (error: ServiceError | null, response: { status: string }) => void): void;
  };
  const definition = loadPackageDefinition(loadSync(healthProtoPath, { keepCase: true, enums: String, defaults: true })) as unknown as {
    grpc: { health: { v1: { Health: new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => HealthClient } } };
  };
  const client = new definition.grpc.health.v1.Health(`127.0.0.1:${port}`, credentials.createInsecure());
  return new Promise((resolve) => {
    client.Check({ service: '' }, { deadline: Date.now() + 3_000 }, (error, response) => {
      client.close();
      resolve(error ? `error:${error.code}` : response.status);
    });
  });
}

function httpGet(port: number, path: string): Promise<number> {
  return new Promise((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path, agent: false }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    request.on('error', () => resolve(0));
  });
}

async function until<T>(probe: () => Promise<T>, done: (value: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (done(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

beforeAll(async () => {
  requireSetup();
  // Only this run's build context: buildah honours .dockerignore. The host's CA bundle and an npmrc
  // pointing at it are mounted into each RUN step (this machine's TLS proxy), never into the image.
  const mounts = existsSync(HOST_CA) ? ['--volume', `${HOST_CA}:${HOST_CA}:ro`, '--volume', `${BUILD_NPMRC}:/usr/local/etc/npmrc:ro`] : [];
  const revision = (await run('git', ['rev-parse', 'HEAD'], { cwd: ROOT })).stdout.trim() || 'unknown';
  await check(
    'buildah',
    [
      'bud',
      '--isolation',
      'chroot',
      '--pull=never',
      '--layers',
      ...mounts,
      '--build-arg',
      `NODE_IMAGE=${BASE_IMAGE}`,
      '--build-arg',
      `REVISION=${revision}`,
      '--tag',
      IMAGE,
      ROOT,
    ],
    { env: containerEnv(), timeout: BUILD_TIMEOUT_MS },
  );
  await adminQuery(`create database "${database}"`);
  const url = new URL(ADMIN_URL);
  url.pathname = `/${database}`;
  databaseUrl = url.toString();
}, BUILD_TIMEOUT_MS + 60_000);

afterAll(async () => {
  await run('podman', ['rm', '--force', '--ignore', container], { env: containerEnv() });
  await adminQuery(`drop database if exists "${database}" with (force)`);
});

describe('the container image', () => {
  const secrets = () => ({
    DATABASE_URL: databaseUrl,
    KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    PUBLIC_URL: 'https://auth.example.test',
  });

  it('runs as a numeric non-root user under an init process, exposes both ports and carries OCI labels', async () => {
    const [config] = JSON.parse(await check('podman', ['image', 'inspect', IMAGE], { env: containerEnv() })) as {
      Config: { User: string; Entrypoint: string[]; Cmd: string[]; ExposedPorts: Record<string, unknown>; Env: string[]; Labels: Record<string, string> };
    }[];
    expect(config!.Config.User).toBe('1000:1000');
    expect(config!.Config.Entrypoint).toEqual(['/usr/bin/tini', '--']);
    expect(config!.Config.Cmd).toEqual(['node', 'dist/main.js', 'serve']);
    expect(Object.keys(config!.Config.ExposedPorts).sort()).toEqual(['50051/tcp', '8080/tcp']);
    expect(config!.Config.Env).toContain('NODE_ENV=production');
    const version = (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string }).version;
    expect(config!.Config.Labels).toMatchObject({
      'org.opencontainers.image.title': 'latchkey',
      'org.opencontainers.image.licenses': 'Apache-2.0',
      'org.opencontainers.image.version': version,
      'org.opencontainers.image.revision': expect.stringMatching(/^[0-9a-f]{40}$/),
    });
  });

  it('holds production dependencies and the runtime files only', async () => {
    const listing = await check('podman', ['run', '--rm', '--entrypoint', 'sh', IMAGE, '-c', 'ls /app; ls /app/node_modules; ls /app/node_modules/.bin 2>/dev/null'], {
      env: containerEnv(),
    });
    const lines = listing.split('\n');
    expect(lines.slice(0, 4)).toEqual(['dist', 'node_modules', 'package.json', 'proto']);
    // Code generation (google-proto-files) and the embedded development database (PGlite) are
    // development dependencies; @types only ever served the compiler.
    for (const devOnly of ['jest', 'typescript', '@swc', 'ts-proto', '@kubernetes', 'kubernetes-models', 'google-proto-files', '@electric-sql', '@types']) {
      expect(lines).not.toContain(devOnly);
    }
    for (const runtime of ['bcrypt', '@grpc', '@mikro-orm', 'pino', '@bufbuild', 'grpc-health-check']) expect(lines).toContain(runtime);
    // What Node never loads is pruned from node_modules: TypeScript, declarations, source maps.
    const leftovers = await check(
      'podman',
      ['run', '--rm', '--entrypoint', 'sh', IMAGE, '-c', "find /app/node_modules -type f \\( -name '*.ts' -o -name '*.map' -o -name '*.md' \\) | head -5"],
      { env: containerEnv() },
    );
    expect(leftovers).toBe('');
  });

  it(`adds at most ${MAX_ADDED_BYTES / 1e6} MB to its base image, which the Dockerfile pins by digest`, async () => {
    const size = async (image: string) =>
      Number((await check('podman', ['image', 'inspect', '--format', '{{.Size}}', image], { env: containerEnv() })).trim());
    const [total, base] = [await size(IMAGE), await size(BASE_IMAGE)];
    const added = total - base;
    // Printed for the README's "Container image" section.
    process.stdout.write(`image ${(total / 1e6).toFixed(1)} MB = base ${(base / 1e6).toFixed(1)} MB + ${(added / 1e6).toFixed(1)} MB\n`);
    expect(added).toBeGreaterThan(0);
    expect(added).toBeLessThanOrEqual(MAX_ADDED_BYTES);
    const dockerfile = readFileSync(`${ROOT}Dockerfile`, 'utf8');
    expect(/^ARG NODE_IMAGE=(\S+)$/m.exec(dockerfile)?.[1]).toMatch(/^docker\.io\/library\/node:24-bookworm-slim@sha256:[0-9a-f]{64}$/);
    expect(dockerfile.match(/^FROM \$\{NODE_IMAGE\}/gm)).toHaveLength(3);
  });

  it('prints its version with `latchkey --version`', async () => {
    const version = (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string }).version;
    const result = await run('podman', ['run', '--rm', IMAGE, 'node', 'dist/main.js', '--version'], { env: containerEnv() });
    expect(result).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
  });

  it('refuses to start without DATABASE_URL, saying the embedded development database is not in the image', async () => {
    // development mode, where DATABASE_URL is optional: production would refuse it as configuration.
    const result = await run('podman', [...podmanRunArgs({ NODE_ENV: 'development' }), IMAGE, 'node', 'dist/main.js', 'migrate'], { env: containerEnv() });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      'latchkey: migrate failed: DATABASE_URL is not set and the embedded development database (PGlite) is not installed in this build (the container image leaves it out): set DATABASE_URL to a PostgreSQL server\n',
    );
  });

  it('applies the migrations with `node dist/main.js migrate` and exits 0', async () => {
    const result = await run('podman', [...podmanRunArgs(secrets()), IMAGE, 'node', 'dist/main.js', 'migrate'], { env: containerEnv() });
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect(result.stdout).toContain('database schema is current');
  });

  it('serves (gRPC health SERVING, /readyz 200) as a non-root process, and stops cleanly on SIGTERM', async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const child = spawn('podman', [...podmanRunArgs({ ...secrets(), GRPC_PORT: String(grpcPort), HTTP_PORT: String(httpPort) }, ['--name', container]), IMAGE], {
      env: containerEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));

    try {
      const health = await until(() => healthCheck(grpcPort), (status) => status === 'SERVING', 60_000);
      expect({ health, output: health === 'SERVING' ? '' : output }).toEqual({ health: 'SERVING', output: '' });
      expect(await httpGet(httpPort, '/readyz')).toBe(200);
      // `latchkey healthcheck`, as the chart's `helm test` pods run it: from another container.
      const probe = await run(
        'podman',
        [
          ...podmanRunArgs({}),
          IMAGE,
          'node',
          'dist/main.js',
          'healthcheck',
          '--grpc',
          `127.0.0.1:${grpcPort}`,
          '--jwks',
          `http://127.0.0.1:${httpPort}/.well-known/jwks.json`,
        ],
        { env: containerEnv() },
      );
      expect(probe).toEqual({ code: 0, stdout: expect.any(String), stderr: '' });
      expect(probe.stdout.split('\n')).toEqual([
        `ok: grpc 127.0.0.1:${grpcPort} service '': SERVING`,
        expect.stringMatching(new RegExp(`^ok: jwks http://127\\.0\\.0\\.1:${httpPort}/\\.well-known/jwks\\.json: HTTP 200, [1-9]\\d* key\\(s\\)$`)),
        '',
      ]);

      // Every process in the container, as the host sees it: tini as PID 1, then node, none as root.
      const top = await check('podman', ['top', container, 'pid', 'hpid', 'args'], { env: containerEnv() });
      const processes = top
        .trim()
        .split('\n')
        .slice(1)
        .map((line) => line.trim().split(/\s+/))
        .map(([pid, hpid, ...args]) => ({ pid, hpid, args: args.join(' ') }));
      expect(processes.map(({ pid, args }) => [pid, args])).toEqual([
        ['1', '/usr/bin/tini -- node dist/main.js serve'],
        [expect.any(String), 'node dist/main.js serve'],
      ]);
      for (const { hpid } of processes) {
        const uids = /^Uid:\s+(.*)$/m.exec(readFileSync(`/proc/${hpid}/status`, 'utf8'))![1]!.split(/\s+/);
        expect(uids).toEqual(['1000', '1000', '1000', '1000']);
      }

      // SIGTERM to the container (to tini, PID 1, which passes it on to node), as Kubernetes does.
      await check('podman', ['kill', '--signal', 'TERM', container], { env: containerEnv() });
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([exited, new Promise<'still running'>((resolve) => (timer = setTimeout(() => resolve('still running'), GRACE_PERIOD_MS)))]);
      clearTimeout(timer);
      expect({ code, output: code === 0 ? '' : output }).toEqual({ code: 0, output: '' });
      expect(output).toContain('"msg":"shutting down"');
      expect(output).toContain('"msg":"latchkey stopped"');
    } finally {
      child.kill('SIGKILL');
    }
  });
});
