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
      serializers: { err: (error: unknown) => pino.stdSerializers.err(withoutDatabaseValues(error) as Error) },
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

/**
 * Fields of a PostgreSQL error (node-postgres's DatabaseError, and MikroORM's exceptions that copy
 * them) that can carry the values of the statement: `detail` ("Failing row contains (…)", "Key
 * (email)=(…) already exists"), `where` (the PL/pgSQL context, with arguments), `hint`, and the
 * statement text or parameters a wrapper may attach. The SQLSTATE, the constraint, table and
 * column names stay: they are what an operator needs and hold no value.
 */
const VALUE_BEARING = new Set(['detail', 'where', 'hint', 'internalQuery', 'query', 'sql', 'params', 'parameters']);

function isDatabaseError(error: Error): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && ('severity' in error || 'sqlState' in error || 'detail' in error);
}

/**
 * A copy of a database error (and of its causes) without the parts that can hold values. Class 22
 * (data exception) messages quote the offending input (`invalid input syntax for type uuid:
 * "…"`), and MikroORM appends ` - detail: …` to its messages: both are cut from message and stack.
 */
export function withoutDatabaseValues(error: unknown, depth = 0): unknown {
  if (!(error instanceof Error) || depth > 8) return error;
  const cause = withoutDatabaseValues(error.cause, depth + 1);
  if (!isDatabaseError(error)) {
    if (cause === error.cause) return error;
    const copy = Object.assign(Object.create(Object.getPrototypeOf(error) as object) as Error, error);
    Object.defineProperty(copy, 'message', { value: error.message, enumerable: false, writable: true });
    Object.defineProperty(copy, 'stack', { value: error.stack, enumerable: false, writable: true });
    Object.defineProperty(copy, 'cause', { value: cause, enumerable: false, writable: true });
    return copy;
  }
  const code = (error as unknown as { code: string }).code;
  const scrub = (text: string) => {
    let out = text.replace(/\n - (detail|hint|where): [\s\S]*?(?=\n {4}at |$)/g, '');
    if (code.startsWith('22')) out = out.replace(/"(?:[^"]|"")*"/g, '"[redacted]"');
    return out;
  };
  const copy = Object.create(Object.getPrototypeOf(error) as object) as Error;
  for (const key of Object.keys(error)) {
    if (!VALUE_BEARING.has(key)) (copy as unknown as Record<string, unknown>)[key] = (error as unknown as Record<string, unknown>)[key];
  }
  Object.defineProperty(copy, 'message', { value: scrub(error.message), enumerable: false, writable: true });
  Object.defineProperty(copy, 'stack', { value: error.stack === undefined ? undefined : scrub(error.stack), enumerable: false, writable: true });
  if (cause !== undefined) Object.defineProperty(copy, 'cause', { value: cause, enumerable: false, writable: true });
  return copy;
}
