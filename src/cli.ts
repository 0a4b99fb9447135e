import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { healthcheck } from './cli/healthcheck.js';
import { keysArguments } from './cli/keys-args.js';
import { startApp, type RunningApp } from './app.js';
import { ConfigError, loadConfig } from './config/load.js';
import { renderConfigTable } from './config/docs.js';
import type { Config } from './config/schema.js';
import { createLogger, routeGrpcLogs, type Logger } from './observability/logger.js';
import { traceHooks } from './observability/trace-hooks.js';
import { openDatabase } from './persistence/open.js';
import { sweepOnce, type KeyRotationReport } from './scheduler/index.js';
import { systemClock } from './domain/clock.js';
import { listSigningKeys, retireSigningKeyNow, rewrapKeys, rotateSigningKeys, rotationPolicy } from './domain/keys/key-admin.js';
import { resolveKeyEncryptionKeys } from './domain/keys/key-encryption-key.js';

const USAGE = `Usage: latchkey <command>
       latchkey --version

Commands:
  serve        Serve the gRPC API and HTTP probes (default)
  migrate      Apply pending database migrations to DATABASE_URL and exit
  sweep        Run every sweep once (expired sessions, used tokens, old audit events) and the
               signing-key rotation step, print a summary and exit
  keys list                 List the signing keys: kid, state (next, active, retired, removed),
                            key-encryption key id and timestamps
  keys rotate               Stage a new signing key now (published at once, signs after
                            SIGNING_KEY_PUBLISH_AHEAD)
  keys retire <kid> --now   Withdraw a compromised key at once: its tokens stop validating on
                            every replica within seconds, and another key signs at once
  keys rewrap               Re-encrypt every stored private key with the first key-encryption key
                            (KEY_ENCRYPTION_KEYS), after which the others can be dropped
  config       Print the configuration reference (Markdown) and exit
  healthcheck  Check a running server and exit 0 when it is healthy, 1 when not:
                 --grpc <host:port>  ask grpc.health.v1.Health/Check (default 127.0.0.1:$GRPC_PORT, or :50051)
                 --service <name>    the health service name to check (default '', the whole server)
                 --jwks <url>        also fetch the JWKS and require at least one key
                 --no-grpc           skip the gRPC check (with --jwks)
                 --timeout <ms>      per check (default 5000)
  version      Print the version and exit

Configuration comes from environment variables; see \`latchkey config\`.`;

/** The version of the package this build came from (package.json sits beside dist/ and src/). */
function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

async function healthcheckCommand(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      allowPositionals: false,
      strict: true,
      options: {
        grpc: { type: 'string' },
        'no-grpc': { type: 'boolean' },
        service: { type: 'string', default: '' },
        jwks: { type: 'string' },
        timeout: { type: 'string', default: '5000' },
      },
    }));
  } catch (error) {
    process.stderr.write(`latchkey healthcheck: ${(error as Error).message}\n\n${USAGE}\n`);
    return 64;
  }
  const timeoutMs = Number(values.timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    process.stderr.write('latchkey healthcheck: --timeout must be a whole number of milliseconds\n');
    return 64;
  }
  const grpc = values['no-grpc'] ? undefined : (values.grpc ?? `127.0.0.1:${process.env.GRPC_PORT || '50051'}`);
  if (grpc === undefined && values.jwks === undefined) {
    process.stderr.write('latchkey healthcheck: nothing to check (--no-grpc without --jwks)\n');
    return 64;
  }
  const results = await healthcheck({ grpc, service: values.service, jwks: values.jwks, timeoutMs });
  for (const result of results) process.stdout.write(`${result.ok ? 'ok' : 'FAILED'}: ${result.check}: ${result.detail}\n`);
  return results.every((result) => result.ok) ? 0 : 1;
}

/** How long an exit waits for buffered spans to reach the collector (an unreachable one must not hold it). */
const TRACE_FLUSH_LIMIT_MS = 2_000;

function exitAfterFlush(logger: Logger, code: number, flushTraces = true): void {
  const tracing = flushTraces ? traceHooks()?.shutdown() : undefined;
  if (!tracing) {
    logger.flush(() => process.exit(code));
    return;
  }
  // Spans still buffered for export go out first, for at most TRACE_FLUSH_LIMIT_MS.
  const limit = new Promise<void>((resolve) => setTimeout(resolve, TRACE_FLUSH_LIMIT_MS));
  void Promise.race([tracing.catch(() => undefined), limit]).then(() => logger.flush(() => process.exit(code)));
}

async function serve(config: Config, logger: Logger): Promise<void> {
  // Signal handlers go in first: a SIGTERM while start-up waits for the database abandons it
  // cleanly instead of killing the process half-way through opening things.
  const startup = new AbortController();
  let app: RunningApp | undefined;
  let signals = 0;
  const stop = (running: RunningApp) =>
    running.stop().then(
      () => exitAfterFlush(logger, 0),
      (error: unknown) => {
        logger.error({ err: error }, 'error during shutdown');
        exitAfterFlush(logger, 1);
      },
    );
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting without waiting for in-flight calls');
      exitAfterFlush(logger, 1, false);
      return;
    }
    logger.info({ signal, shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT }, 'shutting down');
    if (app) void stop(app);
    else startup.abort();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // A stray rejection is a bug to log and fix, not a reason to drop every caller's in-flight call.
  process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled promise rejection'));

  try {
    app = await startApp(config, logger, startup.signal);
  } catch (error) {
    if (!startup.signal.aborted) throw error;
    logger.info('stopped during start-up');
    exitAfterFlush(logger, 0);
    return;
  }
  // The signal may have arrived after the last point start-up checks it.
  if (startup.signal.aborted) void stop(app);
}

async function migrate(config: Config, logger: Logger): Promise<void> {
  const database = await openDatabase(config, logger, { migrate: 'apply' });
  try {
    const executed = await database.orm.migrator.getExecuted();
    logger.info({ database: database.host, migrations: executed.length }, 'database schema is current');
  } finally {
    await database.close();
  }
}

/**
 * `latchkey sweep`, for a Kubernetes CronJob instead of the in-process scheduler: every sweep
 * once, through the same code as the scheduled runs. Prints one line per job; a failed job makes
 * the command fail. A SIGTERM lets the batch in flight finish, then stops.
 */
async function sweepCommand(config: Config, logger: Logger): Promise<number> {
  const interrupt = new AbortController();
  const onSignal = () => interrupt.abort();
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  let database;
  try {
    database = await openDatabase(config, logger, {
      migrate: config.DATABASE_MIGRATE_ON_START ? 'apply' : 'require-current',
      signal: interrupt.signal,
    });
  } catch (error) {
    if (interrupt.signal.aborted) return 0;
    throw error;
  }
  try {
    const keyEncryptionKeys = await resolveKeyEncryptionKeys(config, logger);
    const reports = await sweepOnce(config, { orm: database.orm, logger: logger.child({ component: 'sweep' }), keyEncryptionKeys }, interrupt.signal);
    for (const r of reports) {
      if ('retired' in r) {
        const k = r as KeyRotationReport;
        process.stdout.write(`${k.job}: ${k.outcome}, ${k.staged ? 1 : 0} keys staged, ${k.retired.length} retired, ${k.rowsDeleted} removed (${k.durationMs} ms)\n`);
      } else {
        process.stdout.write(`${r.job}: ${r.outcome}, ${r.rowsDeleted} rows deleted in ${r.batches} batches (${r.durationMs} ms)\n`);
      }
    }
    const failed = reports.filter((r) => r.outcome === 'failed');
    if (failed.length > 0) {
      throw new Error(failed.map((r) => `${r.job}: ${r.error?.message ?? 'unknown error'}`).join('; '));
    }
    return 0;
  } finally {
    await database.close();
  }
}

const KEY_COMMANDS = ['list', 'rotate', 'retire', 'rewrap'];

/**
 * `latchkey keys …`: the operator's handle on the signing-key lifecycle and the key-encryption
 * keys. Each change commits in one transaction under the signing keys' advisory lock; the
 * `signing_keys` trigger then notifies every replica, which reloads its key ring.
 */
async function keysCommand(config: Config, logger: Logger, args: string[], now: boolean): Promise<number> {
  const keks = await resolveKeyEncryptionKeys(config, logger);
  const database = await openDatabase(config, logger, { migrate: config.DATABASE_MIGRATE_ON_START ? 'apply' : 'require-current' });
  const em = () => database.orm.em.fork();
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const iso = (date: Date | null | undefined) => date?.toISOString() ?? '-';
  try {
    switch (args[0]) {
      case 'list': {
        const keys = await listSigningKeys(em(), systemClock);
        out(['KID', 'STATE', 'KEK', 'CREATED', 'ACTIVATES', 'RETIRED', 'EXPIRES'].join('\t'));
        for (const key of keys) out([key.kid, key.state, key.kekId, iso(key.createdAt), iso(key.activatesAt), iso(key.retiredAt), iso(key.expiresAt)].join('\t'));
        return 0;
      }
      case 'rotate': {
        const result = await rotateSigningKeys(em(), keks, systemClock, rotationPolicy(config), { wait: true, force: true });
        if (result.staged) out(`staged ${result.staged.kid}: published now, signs from ${result.staged.activatesAt.toISOString()}`);
        else out('a staged key is already waiting to sign (see `latchkey keys list`); nothing staged');
        for (const kid of result.retired) out(`retired ${kid}`);
        return 0;
      }
      case 'retire': {
        const kid = args[1];
        if (!kid || !now) {
          process.stderr.write('latchkey: usage: latchkey keys retire <kid> --now\n');
          return 64;
        }
        const result = await retireSigningKeyNow(em(), keks, systemClock, kid);
        if (!result) {
          process.stderr.write(`latchkey: no published signing key has the kid ${kid}\n`);
          return 1;
        }
        out(`retired and withdrew ${kid}; ${result.signing} signs now${result.created ? ' (new key, published now)' : ''}`);
        return 0;
      }
      case 'rewrap': {
        const result = await rewrapKeys(em(), keks);
        out(`re-encrypted ${result.signingKeys} signing keys and ${result.refreshSecretKeys} refresh-secret keys with key-encryption key '${result.kekId}'`);
        return 0;
      }
      default:
        process.stderr.write(`latchkey: unknown keys command '${args[0] ?? ''}'\n\n${USAGE}\n`);
        return 64;
    }
  } finally {
    await database.close();
  }
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'healthcheck') return healthcheckCommand(argv.slice(1));
  // A key id may begin with '-': `keys` reads its own arguments (keysArguments).
  const keys = argv[0] === 'keys' ? keysArguments(argv.slice(1)) : undefined;
  const { positionals, values } = parseArgs({
    args: keys ? ['keys'] : argv,
    allowPositionals: true,
    options: { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'v' } },
    strict: false,
  });
  const command = positionals[0] ?? 'serve';
  if (values.help || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (values.version || command === 'version') {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  if (command === 'config') {
    process.stdout.write(`${renderConfigTable()}\n`);
    return 0;
  }
  if (keys && !KEY_COMMANDS.includes(keys.args[0] ?? '')) {
    process.stderr.write(`latchkey: unknown keys command '${keys.args[0] ?? ''}'\n\n${USAGE}\n`);
    return 64;
  }
  if (command !== 'serve' && command !== 'migrate' && command !== 'sweep' && command !== 'keys') {
    process.stderr.write(`latchkey: unknown command '${command}'\n\n${USAGE}\n`);
    return 64;
  }

  let config: Config;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      // Plain text on stderr, written synchronously before exiting: the first thing an operator
      // sees in `kubectl logs`. It names variables, never their values.
      process.stderr.write(`latchkey: ${error.message}\n`);
      return 78;
    }
    throw error;
  }
  const logger = createLogger(config.LOG_LEVEL);
  routeGrpcLogs(logger);
  try {
    if (command === 'serve') {
      await serve(config, logger);
      return -1;
    }
    if (command === 'sweep') return await sweepCommand(config, logger);
    if (keys) return await keysCommand(config, logger, keys.args, keys.now);
    await migrate(config, logger);
    return 0;
  } catch (error) {
    const message = `${command} failed: ${(error as Error).message}`;
    logger.fatal({ err: error }, message);
    logger.flush();
    // Also on stderr, so the reason is visible whatever LOG_LEVEL says.
    process.stderr.write(`latchkey: ${message}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  async (code) => {
    // -1: a long-running command; the signal handlers decide when to exit.
    if (code >= 0) {
      process.exitCode = code;
      const tracing = traceHooks()?.shutdown().catch(() => undefined);
      if (tracing) await Promise.race([tracing, new Promise<void>((resolve) => setTimeout(resolve, TRACE_FLUSH_LIMIT_MS).unref())]);
    }
  },
  (error: unknown) => {
    process.stderr.write(`latchkey: unexpected error: ${(error as Error).message}\n`);
    process.exitCode = 1;
  },
);
