import { availableParallelism } from 'node:os';
import { CLOCK_SKEW_MS, type Config, JWKS_MAX_AGE_SECONDS, type VariableName, type VariableSpec, variables } from './schema.js';

export interface ConfigProblem {
  readonly name: VariableName;
  readonly message: string;
}

/** Thrown when the environment is invalid. Its message names every bad variable, never a value. */
export class ConfigError extends Error {
  constructor(readonly problems: readonly ConfigProblem[]) {
    super(
      `Invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n` +
        problems.map((p) => `  - ${p.name}: ${p.message}`).join('\n'),
    );
    this.name = 'ConfigError';
  }
}

/**
 * Parses the environment once, checking every variable and reporting all problems together.
 * Empty strings count as unset, as a Helm chart or shell often renders a missing value that way.
 */
export function loadConfig(env: Readonly<Record<string, string | undefined>> = process.env): Config {
  const problems: ConfigProblem[] = [];
  const values: Record<string, unknown> = {};

  for (const [name, spec] of Object.entries(variables) as [VariableName, VariableSpec<unknown>][]) {
    const given = env[name];
    const raw = given === undefined || given === '' ? spec.default : given;
    if (raw === undefined) {
      values[name] = undefined;
      continue;
    }
    const result = spec.schema.safeParse(raw);
    if (result.success) {
      values[name] = result.data;
    } else {
      // Zod messages here are our own fixed texts; none of them echoes the input value.
      problems.push({ name, message: result.error.issues.map((issue) => issue.message).join('; ') });
    }
  }

  const bad = new Set(problems.map((p) => p.name));
  // Tests sweep only when they mean to: under NODE_ENV=test the scheduler is off unless set explicitly.
  if (values.NODE_ENV === 'test' && (env.SCHEDULER_ENABLED ?? '') === '') values.SCHEDULER_ENABLED = false;
  if (values.NODE_ENV === 'production') {
    if (values.DATABASE_URL === undefined && !bad.has('DATABASE_URL')) {
      problems.push({ name: 'DATABASE_URL', message: 'is required when NODE_ENV=production' });
    }
    if (values.KEY_ENCRYPTION_KEY === undefined && values.KEY_ENCRYPTION_KEYS === undefined && !bad.has('KEY_ENCRYPTION_KEY') && !bad.has('KEY_ENCRYPTION_KEYS')) {
      problems.push({ name: 'KEY_ENCRYPTION_KEY', message: 'is required when NODE_ENV=production' });
    }
    if (!bad.has('PUBLIC_URL') && !String(values.PUBLIC_URL).startsWith('https://')) {
      problems.push({ name: 'PUBLIC_URL', message: 'must be an https:// URL when NODE_ENV=production' });
    }
    for (const name of ['PASSWORD_RESET_URL', 'EMAIL_VERIFICATION_URL'] as const) {
      if (typeof values[name] === 'string' && !String(values[name]).startsWith('https://')) {
        problems.push({ name, message: 'must be an https:// URL when NODE_ENV=production' });
      }
    }
  }

  if (values.NODE_ENV === 'production' && typeof values.BCRYPT_COST === 'number' && values.BCRYPT_COST < 10) {
    problems.push({ name: 'BCRYPT_COST', message: 'must be at least 10 when NODE_ENV=production' });
  }
  if (
    typeof values.SESSION_IDLE_TIMEOUT === 'number' &&
    typeof values.SESSION_MAX_LIFETIME === 'number' &&
    values.SESSION_IDLE_TIMEOUT > values.SESSION_MAX_LIFETIME
  ) {
    problems.push({ name: 'SESSION_IDLE_TIMEOUT', message: 'must not be longer than SESSION_MAX_LIFETIME' });
  }
  if (typeof values.SIGNING_KEY_PUBLISH_AHEAD === 'number') {
    if (values.SIGNING_KEY_PUBLISH_AHEAD <= JWKS_MAX_AGE_SECONDS * 1000 + CLOCK_SKEW_MS) {
      problems.push({ name: 'SIGNING_KEY_PUBLISH_AHEAD', message: `must be longer than the JWKS max-age (${JWKS_MAX_AGE_SECONDS}s) plus 60s of clock skew` });
    } else if (typeof values.SIGNING_KEY_ROTATION_INTERVAL === 'number' && values.SIGNING_KEY_PUBLISH_AHEAD >= values.SIGNING_KEY_ROTATION_INTERVAL) {
      problems.push({ name: 'SIGNING_KEY_PUBLISH_AHEAD', message: 'must be shorter than SIGNING_KEY_ROTATION_INTERVAL' });
    }
  }
  // Derived defaults: values that follow another variable unless given.
  values.JWT_ISSUER ??= values.PUBLIC_URL;
  if (typeof values.PUBLIC_URL === 'string') {
    values.PASSWORD_RESET_URL ??= linkUnder(values.PUBLIC_URL, 'reset-password');
    values.EMAIL_VERIFICATION_URL ??= linkUnder(values.PUBLIC_URL, 'verify-email');
  }
  values.PASSWORD_HASH_CONCURRENCY ??= Math.min(3, Math.max(1, availableParallelism()));
  values.PASSWORD_HASH_QUEUE_PER_SOURCE ??= values.PASSWORD_HASH_QUEUE_LIMIT;

  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(values) as Config;
}

/** `page` under the base URL, keeping the base's path (`https://example.com/auth` → `…/auth/reset-password`). */
function linkUnder(base: string, page: string): string {
  const url = new URL(base);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/${page}`;
  url.search = '';
  url.hash = '';
  return url.toString();
}
