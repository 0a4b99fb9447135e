import { Metadata, type Client, type ServiceError, type status } from '@grpc/grpc-js';
import type { LoginResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { type AuthServer, expectRejected, login, ManualClock, register, startAuthServer, storeSnapshot } from './auth.js';
import { call } from './clients.js';
import { query } from './database.js';

/** The service API key the account tests configure (SERVICE_API_KEYS). */
export const API_KEY = 'account-tests-service-key-0123456789abcdef';
export const PASSWORD = 'correct horse battery';

/** How a test call identifies itself. */
export type Credential = { apiKey: string } | { bearer: string } | undefined;

export function metadataFor(credential: Credential): Metadata {
  const metadata = new Metadata();
  if (credential && 'apiKey' in credential) metadata.set('x-api-key', credential.apiKey);
  if (credential && 'bearer' in credential) metadata.set('authorization', `Bearer ${credential.bearer}`);
  return metadata;
}

export const asService: Credential = { apiKey: API_KEY };
export const bearerOf = (signedIn: LoginResponse): Credential => ({ bearer: signedIn.tokens!.accessToken });

/** A server with unlimited sessions per user and one service API key. */
export function startAccountServer(clock: ManualClock, overrides: Record<string, string> = {}): Promise<AuthServer> {
  return startAuthServer({ MAX_SESSIONS_PER_USER: '0', SERVICE_API_KEYS: API_KEY, PUBLIC_URL: 'https://auth.example.com', ...overrides }, clock);
}

export interface AccountTestKit {
  rpc<Res>(method: string, request: object, credential?: Credential): Promise<{ response?: Res; error?: ServiceError }>;
  /** Registers a user and returns its id. */
  newUser(email: string, password?: string): Promise<string>;
  /** Registers a user with the `admin` role (set in SQL) and signs it in. */
  newAdmin(email: string): Promise<LoginResponse>;
  /** Where the store is now, to compare with later. */
  mark(): Promise<StoreMark>;
  /** The tables whose rows differ from `mark`, and the audit rows written since. */
  changesSince(mark: StoreMark): Promise<{ changed: string[]; audit: AuditRow[] }>;
  /** Each session of the user by id: its revoked_reason, or 'active'. */
  sessionStates(userId: string): Promise<Record<string, string>>;
  /** Calls `method`, asserts the exact code, reason and BadRequest fields, and that no table changed; returns the message. */
  expectRejected(method: string, request: object, credential: Credential, expected: { code: status; reason: string; fields?: string[] }): Promise<string | undefined>;
}

export interface StoreMark {
  readonly snapshot: Record<string, string>;
  readonly auditId: number;
}

export interface AuditRow {
  event_type: string;
  user_id: string | null;
  session_id: string | null;
  details: Record<string, unknown>;
}

export function accountTestKit(server: () => AuthServer): AccountTestKit {
  const url = () => server().db.url;
  const kit: AccountTestKit = {
    rpc: (method, request, credential) =>
      call(server().client as unknown as Client, method, request, credential ? { metadata: metadataFor(credential) } : {}),
    async newUser(email, password = PASSWORD) {
      return (await register(server().client, email, password)).user!.id;
    },
    async newAdmin(email) {
      const id = (await register(server().client, email)).user!.id;
      await query(url(), `update users set roles = '{admin}' where id = $1`, [id]);
      return login(server().client, email);
    },
    async mark() {
      const snapshot = await storeSnapshot(url());
      const [row] = await query<{ id: string }>(url(), 'select coalesce(max(id), 0) as id from audit_events');
      return { snapshot, auditId: Number(row!.id) };
    },
    async changesSince(mark) {
      const now = await storeSnapshot(url());
      const changed = Object.keys(now).filter((table) => now[table] !== mark.snapshot[table]);
      const audit = await query<AuditRow>(url(), 'select event_type, user_id, session_id, details from audit_events where id > $1 order by id', [
        mark.auditId,
      ]);
      return { changed, audit };
    },
    async sessionStates(userId) {
      const rows = await query<{ id: string; revoked_reason: string | null }>(url(), 'select id, revoked_reason from sessions where user_id = $1', [userId]);
      return Object.fromEntries(rows.map((row) => [row.id, row.revoked_reason ?? 'active']));
    },
    async expectRejected(method, request, credential, expected) {
      return (await expectRejected(url(), () => kit.rpc(method, request, credential), expected)).message;
    },
  };
  return kit;
}
