import { format } from 'node:util';
import { setLogger, setLogVerbosity, logVerbosity } from '@grpc/grpc-js';
import { pino, type Logger, type LevelWithSilent } from 'pino';
import { traceHooks } from './trace-hooks.js';

export type { Logger };

/**
 * Structured JSON logs on stdout, one object per line. Fields that could ever carry a secret are
 * redacted at the logger, as a second line of defence behind never logging them in the first place.
 */
export function createLogger(level: LevelWithSilent, destination?: pino.DestinationStream): Logger {
  // With tracing on, every line written inside a span carries its trace_id and span_id. With it
  // off there is no mixin at all, so logging costs what it did.
  const ids = traceHooks()?.ids;
  return pino(
    {
      level,
      ...(ids ? { mixin: () => ids() ?? {} } : {}),
      base: { service: 'latchkey' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: {
        paths: [
          'password',
          '*.password',
          'token',
          '*.token',
          'refreshToken',
          '*.refreshToken',
          'accessToken',
          '*.accessToken',
          'authorization',
          '*.authorization',
          'databaseUrl',
        ],
        censor: '[redacted]',
      },
    },
    // Lines are written in batches of 4 KiB, and at least every 250 ms: one write per log line
    // cost more CPU than the token check on the validation path. Exits flush what is buffered.
    destination ?? pino.destination({ sync: false, minLength: 4096, periodicFlush: 250 }),
  );
}

/**
 * grpc-js writes its own diagnostics to stderr in its own format; route them into the JSON log
 * instead, so every line the process prints can be parsed the same way.
 */
export function routeGrpcLogs(logger: Logger): void {
  const log = logger.child({ component: 'grpc-js' });
  setLogger({
    error: (...args: unknown[]) => log.warn(format(...args)),
    info: (...args: unknown[]) => log.debug(format(...args)),
    debug: (...args: unknown[]) => log.trace(format(...args)),
  });
  setLogVerbosity(logVerbosity.ERROR);
}
