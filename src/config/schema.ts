import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { Cron } from 'croner';
import { z } from 'zod';
import { formatDuration, parseDuration } from './duration.js';

/**
 * Every environment variable Latchkey reads, in one place. Each entry carries its description,
 * its default (as it would be written in the environment) and whether its value is secret.
 * The README's configuration table is generated from this list (`npm run docs`), and a test
 * keeps the two in sync.
 */
export interface VariableSpec<T> {
  readonly description: string;
  /** The default as an environment string; undefined means "unset unless given". */
  readonly default?: string;
  /**
   * For a default computed at start-up from other settings (see loadConfig): how the docs show it.
   * Such a variable always has a value.
   */
  readonly derivedDefault?: string;
  /** Secret values never appear in errors, logs or docs. */
  readonly secret?: boolean;
  readonly schema: z.ZodType<T, string>;
}

/** Keeps each entry's literal type, so `Config` knows which variables always have a value. */
function variable<const S extends VariableSpec<unknown>>(spec: S): S {
  return spec;
}

/** A whole number written in plain digits (no signs, exponents or spaces), within [min, max]. */
const integer = (min: number, max: number) =>
  z.string().transform((text, ctx) => {
    const value = /^\d{1,15}$/.test(text) ? Number(text) : Number.NaN;
    if (!(value >= min && value <= max)) {
      ctx.addIssue({ code: 'custom', message: `must be a whole number between ${min} and ${max}` });
      return z.NEVER;
    }
    return value;
  });

const port = integer(0, 65535);
const positiveInt = (max: number) => integer(1, max);

const duration = (min: number, max: number) =>
  z.string().transform((text, ctx) => {
    const ms = parseDuration(text);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: 'must be a duration such as 500ms, 30s, 15m, 12h or 14d' });
      return z.NEVER;
    }
    if (ms < min || ms > max) {
      ctx.addIssue({ code: 'custom', message: `must be between ${formatDuration(min)} and ${formatDuration(max)}` });
      return z.NEVER;
    }
    return ms;
  });

const postgresUrl = z.string().refine(
  (text) => {
    try {
      const url = new URL(text);
      return (url.protocol === 'postgres:' || url.protocol === 'postgresql:') && url.hostname !== '';
    } catch {
      return false;
    }
  },
  { message: 'must be a postgres:// or postgresql:// URL with a host' },
);

const httpUrl = z.string().refine(
  (text) => {
    try {
      const url = new URL(text);
      return url.protocol === 'http:' || url.protocol === 'https:';
    } catch {
      return false;
    }
  },
  { message: 'must be an http:// or https:// URL' },
);

/**
 * A comma-separated list of API keys, kept only as SHA-256 digests from here on. Keys are long
 * random strings, so one fast hash is enough (unlike passwords).
 */
export const MIN_API_KEY_LENGTH = 32;
const apiKeyList = z.string().transform((text, ctx) => {
  const keys = text.split(',').map((key) => key.trim()).filter((key) => key !== '');
  if (keys.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'must list at least one key' });
    return z.NEVER;
  }
  if (keys.some((key) => key.length < MIN_API_KEY_LENGTH || key.length > 256 || !/^[\x21-\x7e]+$/.test(key))) {
    ctx.addIssue({ code: 'custom', message: `each key must be ${MIN_API_KEY_LENGTH} to 256 printable ASCII characters without spaces or commas` });
    return z.NEVER;
  }
  return [...new Set(keys)].map((key) => createHash('sha256').update(key).digest());
});

const boolean = z.enum(['true', 'false'], { error: 'must be true or false' }).transform((text) => text === 'true');

/** 32 random bytes, base64 (standard or url-safe) encoded: the AES-256-GCM key for private keys at rest. */
const encryptionKey = z.string().transform((text, ctx) => {
  const bytes = /^[A-Za-z0-9+/_-]+={0,2}$/.test(text) ? Buffer.from(text, 'base64') : Buffer.alloc(0);
  if (bytes.length !== 32) {
    ctx.addIssue({ code: 'custom', message: 'must be 32 bytes encoded as base64 (for example `openssl rand -base64 32`)' });
    return z.NEVER;
  }
  return bytes;
});

/** A key-encryption key's id: what `signing_keys.kek_id` records (never the key itself). */
export const KEK_ID = /^[A-Za-z0-9._-]{1,32}$/;

/** The id `KEY_ENCRYPTION_KEY` (or the generated development key) goes by. */
export const IMPLIED_KEK_ID = 'default';

export interface KeyEncryptionKeyEntry {
  readonly id: string;
  readonly key: Buffer;
}

/**
 * `id:base64,id:base64,…`: the key-encryption keys in order; the first encrypts, every one
 * decrypts. Messages name ids or positions, never key material.
 */
const encryptionKeyList = z.string().transform((text, ctx) => {
  const entries: KeyEncryptionKeyEntry[] = [];
  const items = text.split(',').map((item) => item.trim()).filter((item) => item !== '');
  if (items.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'must list at least one `id:base64key`' });
    return z.NEVER;
  }
  for (const [index, item] of items.entries()) {
    const colon = item.indexOf(':');
    const id = colon > 0 ? item.slice(0, colon) : '';
    if (!KEK_ID.test(id)) {
      ctx.addIssue({ code: 'custom', message: `entry ${index + 1} must be \`id:base64key\` with an id of 1 to 32 letters, digits, \`.\`, \`_\` or \`-\`` });
      return z.NEVER;
    }
    const encoded = item.slice(colon + 1);
    const bytes = /^[A-Za-z0-9+/_-]+={0,2}$/.test(encoded) ? Buffer.from(encoded, 'base64') : Buffer.alloc(0);
    if (bytes.length !== 32) {
      ctx.addIssue({ code: 'custom', message: `key '${id}' must be 32 bytes encoded as base64` });
      return z.NEVER;
    }
    if (entries.some((entry) => entry.id === id)) {
      ctx.addIssue({ code: 'custom', message: `key id '${id}' is listed twice` });
      return z.NEVER;
    }
    entries.push({ id, key: bytes });
  }
  return entries;
});

/**
 * A cron expression, checked by croner itself (the library that will run it): five fields, six
 * with seconds first, or a nickname such as `@hourly`. A date (croner's one-off form) and an
 * expression that never matches (`0 0 30 2 *`) are refused too. The messages never echo the value.
 */
const cronExpression = z.string().transform((text, ctx) => {
  const pattern = text.trim();
  let job: Cron;
  try {
    job = new Cron(pattern, { paused: true, mode: '5-or-6-parts' });
  } catch {
    ctx.addIssue({ code: 'custom', message: 'must be a cron expression such as `*/30 * * * *` (5 fields, or 6 with seconds first)' });
    return z.NEVER;
  }
  if (job.getPattern() === undefined || job.nextRun() === null) {
    ctx.addIssue({ code: 'custom', message: 'must be a cron expression that matches a future time (not a date)' });
    return z.NEVER;
  }
  return pattern;
});

/**
 * A sustained rate for a token bucket: `<count>/<duration>` (`5/1s`, `30/1m`), or `0` for no
 * limit. Parsed to tokens per millisecond.
 */
const rate = z.string().transform((text, ctx) => {
  if (text.trim() === '0') return 0;
  const match = /^(\d{1,9})\/(.+)$/.exec(text.trim());
  const count = match ? Number(match[1]) : Number.NaN;
  const per = match ? parseDuration(match[2]!) : undefined;
  if (!(count > 0) || per === undefined || per < 1 || per > 86_400_000) {
    ctx.addIssue({ code: 'custom', message: 'must be `0` (no limit) or a count per duration such as `5/1s` or `30/1m` (at most a day)' });
    return z.NEVER;
  }
  return count / per;
});

/** A comma-separated list of CIDR blocks (`10.0.0.0/8, fd00::/8`); a bare address is a /32 or /128. */
const cidrList = z.string().transform((text, ctx) => {
  const blocks: { address: string; prefix: number; family: 'ipv4' | 'ipv6' }[] = [];
  for (const entry of text.split(',').map((item) => item.trim()).filter((item) => item !== '')) {
    const [address = '', prefixText, extra] = entry.split('/');
    const family = isIP(address);
    const max = family === 4 ? 32 : 128;
    const prefix = prefixText === undefined ? max : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : Number.NaN;
    if (family === 0 || extra !== undefined || !(prefix >= 0 && prefix <= max)) {
      ctx.addIssue({ code: 'custom', message: 'must be a comma-separated list of CIDR blocks such as `10.0.0.0/8` or `fd00::/8`' });
      return z.NEVER;
    }
    blocks.push({ address, prefix, family: family === 4 ? 'ipv4' : 'ipv6' });
  }
  return blocks;
});

export const variables = {
  NODE_ENV: variable({
    description:
      'Deployment mode: `development`, `production` or `test`. `production` requires `DATABASE_URL`, `KEY_ENCRYPTION_KEY` (or `KEY_ENCRYPTION_KEYS`) and an `https://` `PUBLIC_URL`.',
    default: 'development',
    schema: z.enum(['development', 'production', 'test'], { error: 'must be development, production or test' }),
  }),
  LOG_LEVEL: variable({
    description: 'Minimum level of the JSON log lines written to stdout: `fatal`, `error`, `warn`, `info`, `debug`, `trace` or `silent`.',
    default: 'info',
    schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
      error: 'must be one of fatal, error, warn, info, debug, trace, silent',
    }),
  }),
  GRPC_HOST: variable({
    description: 'Address the gRPC server binds to.',
    default: '0.0.0.0',
    schema: z.string().min(1, 'must not be empty'),
  }),
  GRPC_PORT: variable({
    description: 'Port of the gRPC server (AuthService, SessionService, health, reflection). `0` picks a free port.',
    default: '50051',
    schema: port,
  }),
  HTTP_HOST: variable({
    description: 'Address the HTTP server binds to.',
    default: '0.0.0.0',
    schema: z.string().min(1, 'must not be empty'),
  }),
  HTTP_PORT: variable({
    description: 'Port of the plain HTTP server (`/healthz`, `/readyz`, `/metrics`). `0` picks a free port.',
    default: '8080',
    schema: port,
  }),
  GRPC_MAX_RECEIVE_MESSAGE_BYTES: variable({
    description:
      'Largest request message the server accepts; larger ones are refused with RESOURCE_EXHAUSTED before they reach a handler. Every Latchkey request is small, so the bound is tight.',
    default: '65536',
    schema: positiveInt(16 * 1024 * 1024),
  }),
  GRPC_MAX_SEND_MESSAGE_BYTES: variable({
    description: 'Largest response message the server sends.',
    default: '1048576',
    schema: positiveInt(64 * 1024 * 1024),
  }),
  GRPC_MAX_CONCURRENT_STREAMS: variable({
    description:
      'Calls one HTTP/2 connection may have open at once (the `SETTINGS_MAX_CONCURRENT_STREAMS` the server announces); a client queues the rest on its side. Bounds what one connection can make the server hold.',
    default: '1000',
    schema: positiveInt(100_000),
  }),
  GRPC_MAX_SESSION_MEMORY: variable({
    description:
      'Megabytes of HTTP/2 frames and headers one connection may have buffered in the server before new streams on it are refused (Node\'s `maxSessionMemory`). Requests are at most `GRPC_MAX_RECEIVE_MESSAGE_BYTES`, so this caps a connection that sends faster than it reads.',
    default: '64',
    schema: positiveInt(4096),
  }),
  GRPC_KEEPALIVE_TIME: variable({
    description: 'The server pings a connection that has been quiet this long, and closes it when the ping goes unanswered for `GRPC_KEEPALIVE_TIMEOUT`: dead peers do not hold streams and memory.',
    default: '1m',
    schema: duration(1_000, 86_400_000),
  }),
  GRPC_KEEPALIVE_TIMEOUT: variable({
    description: 'How long a keepalive ping may go unanswered before the connection is closed.',
    default: '20s',
    schema: duration(1_000, 3_600_000),
  }),
  GRPC_MAX_CONNECTION_AGE: variable({
    description:
      'A connection older than this (±10%) is asked to go away (HTTP/2 GOAWAY) and the client reconnects, so long-lived connections from meshes and gateways spread again across replicas after a scale-up or a rollout.',
    default: '30m',
    schema: duration(1_000, 30 * 86_400_000),
  }),
  GRPC_MAX_CONNECTION_AGE_GRACE: variable({
    description: 'After GOAWAY, calls still open on the old connection get this long to finish before it is closed.',
    default: '30s',
    schema: duration(0, 86_400_000),
  }),
  MAX_CALLS_IN_FLIGHT: variable({
    description:
      'Calls that need the database or a password hash admitted at once. Beyond it a call is refused at once, before any work, with RESOURCE_EXHAUSTED (`OVERLOADED`) and a RetryInfo. With `GRPC_MAX_RECEIVE_MESSAGE_BYTES` it bounds the memory such calls can hold. Token validation (with `check_revocation` too, while the revocation view is fresh), JWKS and health are not counted and never wait behind them. The default keeps the statement queue short enough (about 25 per pool connection) that an admitted call finishes well within `DATABASE_STATEMENT_TIMEOUT`.',
    default: '256',
    schema: positiveInt(100_000),
  }),
  OVERLOAD_RETRY_AFTER: variable({
    description: 'The retry delay a refused call is told in its RetryInfo (OVERLOADED, RATE_LIMITED).',
    default: '1s',
    schema: duration(0, 600_000),
  }),
  DATABASE_URL: variable({
    description:
      'PostgreSQL connection URL (`postgres://user:password@host:5432/db`). When unset, an embedded PGlite database under `LATCHKEY_DATA_DIR` is used (development only).',
    secret: true,
    schema: postgresUrl,
  }),
  DATABASE_POOL_MAX: variable({
    description: 'Maximum number of PostgreSQL connections per process (the embedded database always uses 1).',
    default: '10',
    schema: positiveInt(1000),
  }),
  DATABASE_CONNECT_TIMEOUT: variable({
    description:
      'How long start-up keeps retrying an unreachable database before exiting non-zero. While serving, a single connection attempt gives up after at most 5s.',
    default: '30s',
    schema: duration(100, 3_600_000),
  }),
  DATABASE_STATEMENT_TIMEOUT: variable({
    description:
      'Longest a single SQL statement of a call may take, waiting for a pool connection included; shorter when the call\'s own deadline comes first. A call that runs out of time answers UNAVAILABLE before its deadline, and a write that reaches the database after that is not applied. Also the server-side `statement_timeout`.',
    default: '5s',
    schema: duration(100, 600_000),
  }),
  DATABASE_HEALTH_INTERVAL: variable({
    description:
      'How often readiness pings the database on its own connection, outside the request pool (gRPC health and `/readyz`: NOT_SERVING while it is unreachable). A partition is noticed within this plus `DATABASE_HEALTH_TIMEOUT`.',
    default: '2s',
    schema: duration(100, 600_000),
  }),
  DATABASE_HEALTH_TIMEOUT: variable({
    description: 'How long a readiness ping may take before the database counts as unreachable. A busy request pool never delays it.',
    default: '1s',
    schema: duration(100, 60_000),
  }),
  DATABASE_MIGRATE_ON_START: variable({
    description:
      'Apply pending migrations when `serve` starts. Off by default for PostgreSQL, where `latchkey migrate` (the Helm hook Job) owns schema changes and `serve` refuses to start on an outdated schema; the embedded database always migrates at start-up.',
    default: 'false',
    schema: boolean,
  }),
  LATCHKEY_DATA_DIR: variable({
    description: 'Directory for the embedded database and other development-only state.',
    default: './.latchkey',
    schema: z.string().min(1, 'must not be empty'),
  }),
  KEY_ENCRYPTION_KEY: variable({
    description:
      'Base64-encoded 32-byte key that encrypts signing keys and the refresh-secret derivation key at rest (AES-256-GCM), under the key id `default`. Required in production unless `KEY_ENCRYPTION_KEYS` is set; ignored when it is.',
    secret: true,
    schema: encryptionKey,
  }),
  KEY_ENCRYPTION_KEYS: variable({
    description:
      'An ordered list of key-encryption keys, `id:base64key,id:base64key` (ids: 1 to 32 letters, digits, `.`, `_`, `-`; keys: 32 bytes). The first encrypts new keys; every one decrypts (each stored key records the id it was encrypted under). To rotate: list `new:…,old:…`, run `latchkey keys rewrap`, then list `new:…` only. The key given as `KEY_ENCRYPTION_KEY` so far goes by the id `default`. Start-up fails, naming key ids only, when a stored key opens with none of them.',
    secret: true,
    schema: encryptionKeyList,
  }),
  SIGNING_KEY_ROTATION_INTERVAL: variable({
    description:
      'How long a signing key signs before the next one takes over. The `rotate-signing-keys` job publishes the next key `SIGNING_KEY_PUBLISH_AHEAD` before that; the old key stays published (verifying) until every token it signed has expired (`ACCESS_TOKEN_TTL` plus 60 s of clock skew), then is removed.',
    default: '30d',
    schema: duration(3_600_000, 3650 * 86_400_000),
  }),
  SIGNING_KEY_PUBLISH_AHEAD: variable({
    description:
      'How long a new signing key is published in the JWKS before it signs. Must be longer than the JWKS `Cache-Control: max-age` (300 s) plus 60 s of clock skew, so that a verifier with a cached JWKS never meets an unknown `kid`, and shorter than `SIGNING_KEY_ROTATION_INTERVAL`.',
    default: '1h',
    schema: duration(60_000, 365 * 86_400_000),
  }),
  SIGNING_KEY_ROTATION_CRON: variable({
    description:
      'When `rotate-signing-keys` runs: stages the next signing key once it is due, retires the key it replaces, and removes retired keys whose tokens have all expired. Also run by `latchkey sweep`. Cron syntax, as for the sweeps below.',
    default: '*/5 * * * *',
    schema: cronExpression,
  }),
  SIGNING_KEY_RELOAD_INTERVAL: variable({
    description:
      'How often each replica re-reads the signing keys even without a change notification (the safety net behind LISTEN/NOTIFY on `latchkey_signing_keys`; on the embedded database, which has no notifications, it checks for changes every second instead).',
    default: '30s',
    schema: duration(1_000, 3_600_000),
  }),
  JWT_ISSUER: variable({
    description: 'The `iss` claim of access tokens, and the only issuer ValidateToken accepts.',
    derivedDefault: 'the value of `PUBLIC_URL`',
    schema: z.string().min(1, 'must not be empty').max(256, 'must be at most 256 characters'),
  }),
  JWT_AUDIENCE: variable({
    description: 'The `aud` claim of access tokens, and the only audience ValidateToken accepts.',
    default: 'latchkey',
    schema: z.string().min(1, 'must not be empty').max(256, 'must be at most 256 characters'),
  }),
  ACCESS_TOKEN_TTL: variable({
    description: 'Lifetime of an access token. Short, because a token stays valid until it expires unless checked with `check_revocation`.',
    default: '15m',
    schema: duration(60_000, 86_400_000),
  }),
  ACCESS_TOKEN_CACHE_SIZE: variable({
    description:
      'Access tokens ValidateToken remembers after verifying them (least recently used out, about 1 KB each), so that the same token presented again skips the ES256 signature check. Expiry and the signing key are checked on every call; a token differing in any character is verified in full. `0` verifies every token every time.',
    default: '10000',
    schema: integer(0, 1_000_000),
  }),
  SESSION_IDLE_TIMEOUT: variable({
    description: 'A session ends when its refresh token is not used for this long. Each refresh extends it, never past `SESSION_MAX_LIFETIME`.',
    default: '14d',
    schema: duration(60_000, 365 * 86_400_000),
  }),
  SESSION_MAX_LIFETIME: variable({
    description: 'A session ends this long after its login, however often it is refreshed.',
    default: '30d',
    schema: duration(60_000, 365 * 86_400_000),
  }),
  REFRESH_REUSE_GRACE: variable({
    description:
      'How long the immediately previous refresh token keeps working after a rotation: presented again within this window (a retry after a lost response, two tabs refreshing at once), it returns the same new token pair. Presented later, or any older token at any time, revokes the session (`REFRESH_TOKEN_REUSED`). `0s` turns the grace off.',
    default: '10s',
    schema: duration(0, 300_000),
  }),
  MAX_SESSIONS_PER_USER: variable({
    description:
      'Active sessions a user may have. A login beyond it revokes the least recently used active session of that user (reason `SESSION_LIMIT`). `0` means unlimited.',
    default: '10',
    schema: integer(0, 10_000),
  }),
  SERVICE_API_KEYS: variable({
    description:
      'Comma-separated API keys that grant a service credential through `x-api-key` metadata (user administration, password-reset and verification tokens, any user\'s sessions). Each at least 32 characters of printable ASCII; only their SHA-256 digests are kept in memory and compared in constant time. Unset means only `admin` bearer tokens act as services. Several keys allow rotation without downtime.',
    secret: true,
    schema: apiKeyList,
  }),
  PASSWORD_RESET_TTL: variable({
    description: 'How long a password-reset token from RequestPasswordReset works.',
    default: '1h',
    schema: duration(60_000, 7 * 86_400_000),
  }),
  PASSWORD_RESET_URL: variable({
    description: 'The page that redeems password-reset tokens; RequestPasswordReset returns it with `?token=<token>` appended as the reset link.',
    derivedDefault: '`PUBLIC_URL` + `/reset-password`',
    schema: httpUrl,
  }),
  EMAIL_VERIFICATION_TTL: variable({
    description: 'How long an email-verification token from RequestEmailVerification works.',
    default: '24h',
    schema: duration(60_000, 30 * 86_400_000),
  }),
  EMAIL_VERIFICATION_URL: variable({
    description: 'The page that redeems email-verification tokens; RequestEmailVerification returns it with `?token=<token>` appended.',
    derivedDefault: '`PUBLIC_URL` + `/verify-email`',
    schema: httpUrl,
  }),
  BCRYPT_COST: variable({
    description:
      'bcrypt cost factor for password hashes (each step doubles the work; 12 takes about 0.2 s per hash on one core). At least 10 in production. Hashes made at another cost are re-hashed on the next successful login.',
    default: '12',
    schema: integer(4, 16),
  }),
  PASSWORD_HASH_CONCURRENCY: variable({
    description:
      'Password hashes computed at once, on the libuv thread pool (4 threads unless `UV_THREADPOOL_SIZE` says otherwise). The default leaves a thread free for other pool work (DNS, files).',
    derivedDefault: 'CPU cores, at most 3',
    schema: positiveInt(64),
  }),
  PASSWORD_HASH_QUEUE_LIMIT: variable({
    description:
      'Password hashes allowed to wait for a free slot, from all sources. Waiting hashes are served in turn by source and by account. When the queue is full, a newcomer takes the place of the newest hash of the source with the most waiting, if that source has more waiting than the newcomer\'s; otherwise it fails at once with RESOURCE_EXHAUSTED (`OVERLOADED`). `0` means no waiting at all.',
    default: '32',
    schema: integer(0, 10_000),
  }),
  PASSWORD_HASH_QUEUE_PER_SOURCE: variable({
    description:
      'Password hashes one source may have waiting. A source is the client address a service-credentialed gateway passes in `client.ip_address`, otherwise the connection\'s peer address. Beyond it, that source\'s calls fail at once with RESOURCE_EXHAUSTED (`RATE_LIMITED`), before any lookup, and nobody else\'s do. Fairness does not depend on it (sources are served in turn, and a full queue makes room for a quieter source); lower it only when every caller reports end-user addresses with a service key, since a gateway without one is a single source for all its users.',
    derivedDefault: 'the value of `PASSWORD_HASH_QUEUE_LIMIT`',
    schema: integer(0, 10_000),
  }),
  // Brute-force protection (issue 18): per-account lockout and per-source rate limits.
  LOGIN_LOCKOUT_THRESHOLD: variable({
    description:
      'Failed password checks of one account (Login, and ChangePassword\'s current password) within `LOGIN_LOCKOUT_WINDOW` that lock it. While locked, Login answers PERMISSION_DENIED (`ACCOUNT_LOCKED`) with a RetryInfo, before any hash, even for the right password. Unknown emails are counted and answered exactly like registered ones. Counted atomically in the database, so parallel attempts overshoot by at most the hashes already running (`PASSWORD_HASH_CONCURRENCY` per replica). `0` turns the lockout off.',
    default: '10',
    schema: integer(0, 10_000),
  }),
  LOGIN_LOCKOUT_WINDOW: variable({
    description: 'How long failures count towards `LOGIN_LOCKOUT_THRESHOLD`: the window starts at the first failure and a failure after it starts a new one.',
    default: '15m',
    schema: duration(1_000, 30 * 86_400_000),
  }),
  LOGIN_LOCKOUT_DURATION: variable({
    description:
      'How long the first lock lasts. Each further lock doubles it, up to `LOGIN_LOCKOUT_MAX_DURATION`. A lock lifts by itself when it ends; a successful login (or `UnlockUser`) forgets every failure and lock; so does a quiet `LOGIN_LOCKOUT_MAX_DURATION` after the last window or lock ended.',
    default: '1m',
    schema: duration(1_000, 30 * 86_400_000),
  }),
  LOGIN_LOCKOUT_MAX_DURATION: variable({
    description: 'The longest a lock lasts however often it repeats (a value below `LOGIN_LOCKOUT_DURATION` counts as that), and how long the repeat count is remembered after the last lock or window ended.',
    default: '1h',
    schema: duration(1_000, 30 * 86_400_000),
  }),
  TRUSTED_PROXIES: variable({
    description:
      'Comma-separated CIDR blocks of peers (gateways, load balancers) trusted to report the end user\'s address in `client.ip_address`, as callers with a service API key are. For everyone else the source of a call, for the per-source rate limits and the hashing queue, is the connection\'s peer address, so a client cannot pick its own bucket. Empty: only service-credentialed callers are trusted.',
    schema: cidrList,
  }),
  RATE_LIMIT_LOGIN: variable({
    description:
      'Token bucket per source address for Login: the sustained rate, as `<count>/<duration>` (`5/1s`), or `0` for no limit. Beyond it a call is refused at once with RESOURCE_EXHAUSTED (`RATE_LIMITED`) and a RetryInfo saying when a token is back, before any database or hash work. Buckets live in each replica\'s memory, so the effective limit is this times the number of replicas a source reaches.',
    default: '5/1s',
    schema: rate,
  }),
  RATE_LIMIT_LOGIN_BURST: variable({
    description: 'Size of each Login bucket: calls a source may make at once after a quiet spell.',
    default: '50',
    schema: positiveInt(1_000_000),
  }),
  RATE_LIMIT_REGISTER: variable({ description: 'Token bucket per source address for Register (as `RATE_LIMIT_LOGIN`).', default: '2/1s', schema: rate }),
  RATE_LIMIT_REGISTER_BURST: variable({ description: 'Size of each Register bucket.', default: '20', schema: positiveInt(1_000_000) }),
  RATE_LIMIT_PASSWORD_RESET: variable({
    description: 'Token bucket per source address for RequestPasswordReset and, separately, ResetPassword (as `RATE_LIMIT_LOGIN`).',
    default: '2/1s',
    schema: rate,
  }),
  RATE_LIMIT_PASSWORD_RESET_BURST: variable({ description: 'Size of each RequestPasswordReset and ResetPassword bucket.', default: '20', schema: positiveInt(1_000_000) }),
  RATE_LIMIT_VERIFY_EMAIL: variable({ description: 'Token bucket per source address for VerifyEmail (as `RATE_LIMIT_LOGIN`).', default: '2/1s', schema: rate }),
  RATE_LIMIT_VERIFY_EMAIL_BURST: variable({ description: 'Size of each VerifyEmail bucket.', default: '20', schema: positiveInt(1_000_000) }),
  RATE_LIMIT_MAX_SOURCES: variable({
    description:
      'Source addresses whose buckets one replica remembers, per RPC. Beyond it the least recently seen source is forgotten (a forgotten source starts again with a full bucket), so a flood of distinct addresses costs bounded memory (about 200 bytes each).',
    default: '100000',
    schema: positiveInt(10_000_000),
  }),
  PUBLIC_URL: variable({
    description: 'Public base URL of the service, used to build links (password reset, email verification). Must be `https://` in production.',
    default: 'http://localhost:8080',
    schema: httpUrl,
  }),
  // Scheduled work (see src/scheduler/)
  SCHEDULER_ENABLED: variable({
    description:
      'Run the sweeps on their schedules inside `serve`. Defaults to `false` when `NODE_ENV=test` unless set explicitly. Set `false` to sweep from a Kubernetes CronJob with `latchkey sweep` instead.',
    default: 'true',
    schema: boolean,
  }),
  SESSION_SWEEP_CRON: variable({
    description:
      'When `sweep-sessions` runs: deletes sessions past their idle or absolute expiry, and revoked sessions older than `REVOKED_SESSION_RETENTION`. Cron syntax (5 fields, or 6 with seconds first), in the local time zone of the process (UTC unless `TZ` says otherwise).',
    default: '*/30 * * * *',
    schema: cronExpression,
  }),
  TOKEN_SWEEP_CRON: variable({
    description: 'When `sweep-one-time-tokens` runs: deletes used or expired password-reset and email-verification tokens. Cron syntax, as above.',
    default: '15 * * * *',
    schema: cronExpression,
  }),
  AUDIT_SWEEP_CRON: variable({
    description: 'When `sweep-audit-events` runs: deletes audit events older than `AUDIT_RETENTION`. Cron syntax, as above.',
    default: '45 3 * * *',
    schema: cronExpression,
  }),
  REVOCATION_SWEEP_CRON: variable({
    description:
      'When `sweep-revocation-events` runs: deletes revocation-feed events older than `ACCESS_TOKEN_TTL` plus 60 s of clock skew, which no unexpired token can be affected by. Cron syntax, as above.',
    default: '*/10 * * * *',
    schema: cronExpression,
  }),
  LOGIN_THROTTLE_SWEEP_CRON: variable({
    description: 'When `sweep-login-throttles` runs: deletes per-account failure counts whose window, lock and repeat memory are all over. Cron syntax, as above.',
    default: '20 * * * *',
    schema: cronExpression,
  }),
  REVOCATION_MAX_STALENESS: variable({
    description:
      'How old the in-memory revocation view may be for `check_revocation` to answer from it. The view follows the feed on a connection of its own (LISTEN/NOTIFY as the wake-up, reads at least every quarter of this, at most every 500ms); when that connection is lost or it has not read successfully for longer, `check_revocation` reads the database instead, so it never answers from a stale view. `0s` turns the view off: every `check_revocation` reads the database.',
    default: '2s',
    schema: duration(0, 600_000),
  }),
  SWEEP_BATCH_SIZE: variable({
    description:
      'Rows a sweep deletes per transaction. Each batch locks only the rows it deletes (skipping rows another transaction holds), so a sweep never makes a login or refresh wait for long.',
    default: '1000',
    schema: positiveInt(100_000),
  }),
  SWEEP_DUTY_CYCLE: variable({
    description:
      'Percentage of a sweep run\'s time spent deleting. After a batch that took t, the sweep rests t × (100 − p) / p before the next one (50: as long as the batch took), so that a backlog of expired rows never keeps a database core busy while logins and refreshes need it, and a sweep slows down by itself when the database is slow. `100` sweeps without resting.',
    default: '50',
    schema: integer(1, 100),
  }),
  SWEEP_MAX_DURATION: variable({
    description: 'A sweep run starts no new batch after this long; what is left is deleted by the next run.',
    default: '1m',
    schema: duration(1_000, 3_600_000),
  }),
  REVOKED_SESSION_RETENTION: variable({
    description:
      'How long a revoked (but not yet expired) session is kept before `sweep-sessions` deletes it, so that a replayed refresh token of that session is still recognised as reuse.',
    default: '7d',
    schema: duration(60_000, 365 * 86_400_000),
  }),
  AUDIT_RETENTION: variable({
    description: 'How long audit events are kept before `sweep-audit-events` deletes them.',
    default: '90d',
    schema: duration(86_400_000, 3650 * 86_400_000),
  }),
  SHUTDOWN_TIMEOUT: variable({
    description: 'On SIGTERM/SIGINT, how long in-flight calls may take to finish before they are cancelled.',
    default: '10s',
    schema: duration(0, 600_000),
  }),
  MAX_REVOCATION_WATCHERS: variable({
    description:
      'WatchRevocations streams a replica keeps open at once. Beyond it a new stream is refused at once with RESOURCE_EXHAUSTED (`OVERLOADED`) and a RetryInfo (`OVERLOAD_RETRY_AFTER`). Each open stream holds at most `REVOCATION_WATCH_BUFFER` messages.',
    default: '256',
    schema: positiveInt(100_000),
  }),
  REVOCATION_WATCH_BUFFER: variable({
    description:
      'Revocation events a WatchRevocations stream may hold for a consumer that reads slower than they happen. Beyond it the stream ends with RESOURCE_EXHAUSTED (`OVERLOADED`) and the consumer resumes from its last cursor, reading the backlog from the database. Keep it above the largest burst of revocations expected at once (a user with many sessions disabled, say).',
    default: '1000',
    schema: positiveInt(1_000_000),
  }),
  // OpenTelemetry tracing: the standard OTEL_* variables (read by src/observability/tracing.ts and the
  // SDK's OTLP exporter; documented and checked here like every other variable).
  OTEL_TRACES_EXPORTER: variable({
    description:
      'Where traces go: `otlp` (OTLP over HTTP/protobuf to `OTEL_EXPORTER_OTLP_ENDPOINT`), `console` (spans on stdout, for debugging) or `none`. Unset or `none`: tracing is off and the OpenTelemetry SDK is not even loaded. The exporter also reads the other standard `OTEL_EXPORTER_OTLP_*` variables (`_TRACES_ENDPOINT`, `_HEADERS`, `_TIMEOUT`, `_COMPRESSION`, `_CERTIFICATE`…), and the resource `OTEL_RESOURCE_ATTRIBUTES`; `OTEL_SDK_DISABLED=true` turns tracing off whatever is set.',
    schema: z
      .string()
      .transform((text) => text.split(',').map((name) => name.trim()).filter(Boolean))
      .refine((names) => names.every((name) => name === 'otlp' || name === 'console' || name === 'none'), 'must be otlp, console or none (comma-separated)'),
  }),
  OTEL_EXPORTER_OTLP_ENDPOINT: variable({
    description: 'Base URL of the OTLP/HTTP receiver (a collector); spans go to `<endpoint>/v1/traces` (or to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is).',
    default: 'http://localhost:4318',
    schema: httpUrl,
  }),
  OTEL_EXPORTER_OTLP_PROTOCOL: variable({
    description: 'OTLP transport. Only `http/protobuf` is built in (the smallest exporter; every collector accepts it).',
    default: 'http/protobuf',
    schema: z.enum(['http/protobuf'], { error: 'must be http/protobuf (the only OTLP transport built in)' }),
  }),
  OTEL_SERVICE_NAME: variable({
    description: 'The `service.name` resource attribute of every span.',
    default: 'latchkey',
    schema: z.string().min(1, 'must not be empty'),
  }),
  OTEL_TRACES_SAMPLER: variable({
    description:
      'Which traces are recorded: `parentbased_always_on` (follow the caller\'s `traceparent` sampled flag, record every root), `parentbased_traceidratio`, `parentbased_always_off`, `always_on`, `always_off` or `traceidratio`.',
    default: 'parentbased_always_on',
    schema: z.enum(['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'], {
      error: 'must be one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio',
    }),
  }),
  OTEL_TRACES_SAMPLER_ARG: variable({
    description: 'For the `traceidratio` samplers: the fraction of root traces recorded, from 0 to 1.',
    default: '1',
    schema: z.string().transform((text, ctx) => {
      const value = /^(0(\.\d+)?|1(\.0+)?|\.\d+)$/.test(text) ? Number(text) : Number.NaN;
      if (!(value >= 0 && value <= 1)) {
        ctx.addIssue({ code: 'custom', message: 'must be a number from 0 to 1' });
        return z.NEVER;
      }
      return value;
    }),
  }),
  OTEL_BSP_SCHEDULE_DELAY: variable({
    description: 'How long spans wait to be exported in a batch, in milliseconds.',
    default: '5000',
    schema: integer(1, 3_600_000),
  }),
  // Gateways (Envoy/Istio ext_authz Check, HTTP forward-auth; see src/domain/gateway/)
  GATEWAY_HEADER_PREFIX: variable({
    description:
      'Prefix of the identity headers a gateway check (`envoy.service.auth.v3.Authorization/Check`, `GET /forward-auth`) hands to the upstream: `<prefix>user-id`, `<prefix>session-id`, `<prefix>roles` (comma-separated), `<prefix>email`; `<prefix>required-roles` is what a gateway sets on a forward-auth check to ask for roles. Any header with this prefix that the client sent is removed from the upstream request by Check (and must be cleared by the gateway\'s own configuration for forward-auth, see the README). Lower-case letters, digits and dashes.',
    default: 'x-latchkey-',
    schema: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, { error: 'must be 1 to 63 lower-case letters, digits or dashes, starting with a letter or digit' }),
  }),
  GATEWAY_PASS_AUTHORIZATION: variable({
    description:
      'Whether a request allowed by `Check` keeps its `authorization` header on the way to the upstream (`false`: Check asks Envoy to remove it). For HTTP forward-auth the gateway decides (the README shows how to drop it).',
    default: 'true',
    schema: boolean,
  }),
} as const;

export type VariableName = keyof typeof variables;

type ValueOf<N extends VariableName> = z.output<(typeof variables)[N]['schema']>;

/** The parsed configuration: one typed field per variable; optional ones without a default may be undefined. */
export type Config = {
  readonly [N in VariableName]: (typeof variables)[N] extends { default: string } | { derivedDefault: string } ? ValueOf<N> : ValueOf<N> | undefined;
};

/** Clock skew allowed between the machines that issue, check and revoke tokens. */
export const CLOCK_SKEW_MS = 60_000;

/** `Cache-Control: max-age` of the JWKS document, in seconds; SIGNING_KEY_PUBLISH_AHEAD must exceed it (plus skew). */
export const JWKS_MAX_AGE_SECONDS = 300;

/** How long a revocation matters: an access token issued before it may be valid this long after. */
export function revocationRelevanceMs(config: Pick<Config, 'ACCESS_TOKEN_TTL'>): number {
  return config.ACCESS_TOKEN_TTL + CLOCK_SKEW_MS;
}
