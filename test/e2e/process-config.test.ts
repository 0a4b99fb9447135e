/**
 * End-to-end: the compiled CLI's configuration surface, before any database is touched.
 * Exit codes follow sysexits: 64 usage error, 78 configuration error.
 */
import { renderConfigTable } from '../../src/config/docs.js';
import { variables, type VariableSpec } from '../../src/config/schema.js';
import { Children, within } from '../support/children.js';
import { runLatchkey } from '../support/process.js';

const children = new Children();
afterEach(() => children.killAll());

async function run(args: string[], env: Record<string, string>) {
  const proc = children.track(runLatchkey(args, env));
  const exit = await within(proc.exited, 30_000, `latchkey ${args.join(' ')} to exit`, proc);
  return { ...exit, stdout: proc.stdout(), stderr: proc.stderr() };
}

describe('bad configuration', () => {
  // Distinctive secret values: neither may ever be echoed back.
  const dbPassword = 's3cret-pass';
  const wrongLengthKey = Buffer.from('sixteen-byte-key-but-not-32').toString('base64');

  const badEnv = {
    NODE_ENV: 'staging',
    LOG_LEVEL: 'loud',
    GRPC_PORT: '70000',
    DATABASE_URL: `mysql://admin:${dbPassword}@x/y`,
    DATABASE_MIGRATE_ON_START: 'yes',
    KEY_ENCRYPTION_KEY: wrongLengthKey,
    SHUTDOWN_TIMEOUT: 'soon',
  };

  it.each(['serve', 'migrate'])('`%s` exits 78 listing every bad variable by name, never a value', async (command) => {
    const result = await run([command], badEnv);

    expect(result).toMatchObject({ code: 78, signal: null });
    // One line per problem, in schema order; the format is fixed (src/config/load.ts).
    const problems: Partial<Record<keyof typeof variables, string>> = {
      NODE_ENV: 'must be development, production or test',
      LOG_LEVEL: 'must be one of fatal, error, warn, info, debug, trace, silent',
      GRPC_PORT: 'must be a whole number between 0 and 65535',
      DATABASE_URL: 'must be a postgres:// or postgresql:// URL with a host',
      DATABASE_MIGRATE_ON_START: 'must be true or false',
      KEY_ENCRYPTION_KEY: 'must be 32 bytes encoded as base64 (for example `openssl rand -base64 32`)',
      SHUTDOWN_TIMEOUT: 'must be a duration such as 500ms, 30s, 15m, 12h or 14d',
    };
    const inSchemaOrder = (Object.keys(variables) as (keyof typeof variables)[]).filter((name) => problems[name] !== undefined);
    expect(inSchemaOrder).toHaveLength(Object.keys(badEnv).length);
    expect(result.stderr).toBe(
      [
        'latchkey: Invalid configuration (7 problems):',
        ...inSchemaOrder.map((name) => `  - ${name}: ${problems[name]}`),
        '',
      ].join('\n'),
    );
    expect(result.stdout).toBe('');
    for (const secret of [dbPassword, wrongLengthKey, 'admin:', 'mysql://']) {
      expect(result.stderr).not.toContain(secret);
      expect(result.stdout).not.toContain(secret);
    }
  });

  it('NODE_ENV=production alone exits 78 requiring DATABASE_URL, KEY_ENCRYPTION_KEY and an https PUBLIC_URL', async () => {
    const result = await run(['serve'], { NODE_ENV: 'production' });

    expect(result).toMatchObject({ code: 78, signal: null });
    expect(result.stderr).toBe(
      [
        'latchkey: Invalid configuration (3 problems):',
        '  - DATABASE_URL: is required when NODE_ENV=production',
        '  - KEY_ENCRYPTION_KEY: is required when NODE_ENV=production',
        '  - PUBLIC_URL: must be an https:// URL when NODE_ENV=production',
        '',
      ].join('\n'),
    );
    expect(result.stdout).toBe('');
  });
});

describe('CLI commands', () => {
  it('`config` prints the Markdown table of every variable, even when the environment is invalid', async () => {
    const result = await run(['config'], { NODE_ENV: 'staging', GRPC_PORT: 'nope' });

    expect(result).toMatchObject({ code: 0, signal: null, stderr: '' });
    expect(result.stdout).toBe(`${renderConfigTable()}\n`);

    const lines = result.stdout.trimEnd().split('\n');
    expect(lines.slice(0, 2)).toEqual(['| Variable | Default | Description |', '| --- | --- | --- |']);
    const rows = lines.slice(2);
    // One row per variable, in schema order, each naming it in the first column.
    expect(rows.map((row) => /^\| `([A-Z_]+)` \| /.exec(row)?.[1])).toEqual(Object.keys(variables));
    for (const [index, [name, spec]] of (Object.entries(variables) as [string, VariableSpec<unknown>][]).entries()) {
      const row = rows[index]!;
      expect(row).toContain(spec.default !== undefined ? `| \`${spec.default}\` |` : `| ${spec.derivedDefault ?? '—'} |`);
      expect(row.endsWith(spec.secret ? ' *Secret.* |' : ' |')).toBe(true);
      expect(row.includes('*Secret.*')).toBe(Boolean(spec.secret));
      expect(row.startsWith(`| \`${name}\` |`)).toBe(true);
    }
  });

  it('an unknown command exits 64 with the usage on stderr', async () => {
    const result = await run(['frobnicate'], {});

    expect(result).toMatchObject({ code: 64, signal: null, stdout: '' });
    const [first, blank, usage, ...rest] = result.stderr.split('\n');
    expect([first, blank, usage]).toEqual(["latchkey: unknown command 'frobnicate'", '', 'Usage: latchkey <command>']);
    for (const command of ['serve', 'migrate', 'config']) {
      expect(rest.some((line) => line.trimStart().startsWith(`${command} `))).toBe(true);
    }
  });

  it('`--help` prints the usage on stdout and exits 0', async () => {
    const result = await run(['--help'], {});

    expect(result).toMatchObject({ code: 0, signal: null, stderr: '' });
    expect(result.stdout.startsWith('Usage: latchkey <command>\n')).toBe(true);
  });
});
