import { parseArgs } from 'node:util';
import { startApp, type RunningApp } from './app.js';
import { ConfigError, loadConfig } from './config/load.js';
import { renderConfigTable } from './config/docs.js';
import type { Config } from './config/schema.js';
import { createLogger, routeGrpcLogs, type Logger } from './observability/logger.js';
import { traceHooks } from './observability/trace-hooks.js';
import { openDatabase } from './persistence/open.js';
import { sweepOnce } from './scheduler/index.js';

const USAGE = `Usage: latchkey <command>

Commands:
  serve     Serve the gRPC API and HTTP probes (default)
  migrate   Apply pending database migrations to DATABASE_URL and exit
  sweep     Run every sweep once (expired sessions, used tokens, old audit events), print a summary and exit
  config    Print the configuration reference (Markdown) and exit

Configuration comes from environment variables; see \`latchkey config\`.`;

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
    const reports = await sweepOnce(config, { orm: database.orm, logger: logger.child({ component: 'sweep' }) }, interrupt.signal);
    for (const r of reports) {
      process.stdout.write(`${r.job}: ${r.outcome}, ${r.rowsDeleted} rows deleted in ${r.batches} batches (${r.durationMs} ms)\n`);
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

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: { help: { type: 'boolean', short: 'h' } }, strict: false });
  const command = positionals[0] ?? 'serve';
  if (values.help || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (command === 'config') {
    process.stdout.write(`${renderConfigTable()}\n`);
    return 0;
  }
  if (command !== 'serve' && command !== 'migrate' && command !== 'sweep') {
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
