import { type Client, type ServiceError } from '@grpc/grpc-js';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { openPrivateKey } from '../../src/domain/keys/key-encryption.js';
import type { AuthServiceClient, LoginResponse, RegisterResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import type { LevelWithSilent } from 'pino';
import { startApp, type RunningApp } from '../../src/app.js';
import { createLogger } from '../../src/observability/logger.js';
import { authClient, call, errorDetails } from './clients.js';
import { TEST_KEY_ENCRYPTION_KEY, testConfig } from './config.js';
import { createTestDatabase, query, type TestDatabase } from './database.js';

/** A clock tests move by hand. */
export class ManualClock {
  constructor(public ms = Date.now()) {}
  now = () => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}

export const MINUTE = 60_000;
export const DAY = 24 * 60 * MINUTE;

/** The rows of every table Latchkey writes, as text: equal before and after means nothing changed. */
export async function storeSnapshot(url: string): Promise<Record<string, string>> {
  const tables = ['users', 'sessions', 'one_time_tokens', 'signing_keys', 'audit_events', 'login_throttles'];
  const snapshot: Record<string, string> = {};
  for (const table of tables) {
    const [row] = await query<{ rows: string }>(url, `select coalesce(string_agg(t::text, E'\\n' order by t::text), '') as rows from ${table} t`);
    snapshot[table] = row!.rows;
  }
  return snapshot;
}

export interface Failure {
  code?: number;
  reason?: string;
  message?: string;
  fields: string[];
}

/** The parts of a failed call a client can see: code, ErrorInfo reason, message and BadRequest fields. */
export function failure(error: ServiceError | undefined): Failure {
  if (!error) return { fields: [], reason: 'no error' };
  const details = errorDetails(error);
  return { code: error.code, reason: details.reason, message: error.details, fields: details.fields };
}

export interface ExpectedFailure {
  readonly code: number;
  readonly reason?: string;
  /** BadRequest field names; none when left out. */
  readonly fields?: string[];
  readonly message?: string;
}

/**
 * Makes a call that must fail, and asserts the exact code, reason and BadRequest fields (and the
 * message, when given), and that no table of the store at `url` changed.
 */
export async function expectRejected(
  url: string,
  attempt: () => Promise<{ error?: ServiceError }>,
  expected: ExpectedFailure,
): Promise<Failure> {
  const before = await storeSnapshot(url);
  const seen = failure((await attempt()).error);
  expect({ code: seen.code, reason: seen.reason, fields: seen.fields }).toEqual({
    code: expected.code,
    reason: expected.reason,
    fields: expected.fields ?? [],
  });
  if (expected.message) expect(seen.message).toBe(expected.message);
  expect(await storeSnapshot(url)).toEqual(before);
  return seen;
}

export async function register(client: AuthServiceClient, email: string, password = 'correct horse battery', displayName = ''): Promise<RegisterResponse> {
  const { response, error } = await call<object, RegisterResponse>(client as unknown as Client, 'register', { email, password, displayName });
  if (error) throw new Error(`register failed: ${error.code} ${error.details}`);
  return response!;
}

export async function login(client: AuthServiceClient, email: string, password = 'correct horse battery'): Promise<LoginResponse> {
  const { response, error } = await call<object, LoginResponse>(client as unknown as Client, 'login', {
    email,
    password,
    client: { ipAddress: '203.0.113.7', userAgent: 'jest', deviceName: 'test runner' },
  });
  if (error) throw new Error(`login failed: ${error.code} ${error.details}`);
  return response!;
}

/** The server's current signing key, decrypted with the test KEK: lets a test forge tokens the server would otherwise accept. */
export async function serverSigningKey(url: string): Promise<{ kid: string; key: KeyObject }> {
  const [row] = await query<{ kid: string; private_key_encrypted: Buffer }>(
    url,
    'select kid, private_key_encrypted from signing_keys where retired_at is null order by activates_at desc limit 1',
  );
  const der = openPrivateKey(Buffer.from(TEST_KEY_ENCRYPTION_KEY, 'base64'), row!.kid, row!.private_key_encrypted);
  return { kid: row!.kid, key: createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }) };
}

/** A server on a database of its own, with an AuthService client, for the auth e2e tests. */
export interface AuthServer {
  readonly db: TestDatabase;
  readonly app: RunningApp;
  readonly client: AuthServiceClient;
  /** Calls a unary AuthService method; resolves with the response or the error. */
  rpc<Res>(method: string, request: object): Promise<{ response?: Res; error?: ServiceError }>;
  close(): Promise<void>;
}

export async function startAuthServer(overrides: Record<string, string>, clock: ManualClock): Promise<AuthServer> {
  const db = await createTestDatabase();
  const level = (process.env.TEST_LOG_LEVEL ?? 'silent') as LevelWithSilent;
  const app = await startApp(testConfig(db.url, overrides), createLogger(level), undefined, { clock });
  const client = authClient(app.grpcPort);
  return {
    db,
    app,
    client,
    rpc: (method, request) => call(client as unknown as Client, method, request),
    async close() {
      client.close();
      await app.stop();
      await db.drop();
    },
  };
}
