import type { EntityManager } from '@mikro-orm/postgresql';
import { WRITE_DEADLINE } from '../call-scope.js';
import { BEFORE_DEADLINE, dateOrNull, queryAll, queryOne, run } from './sql.js';
import { AUDIT_COLUMNS, AUDIT_PLACEHOLDERS, auditValues, type AuditEntry } from './audit.js';

export interface UserRecord {
  readonly id: string;
  readonly email: string;
  readonly passwordHash: string;
  readonly displayName: string;
  readonly roles: readonly string[];
  readonly emailVerifiedAt: Date | null;
  readonly disabledAt: Date | null;
  /** When the password was last set by the user (registration, change, reset); a re-hash keeps it. */
  readonly passwordChangedAt: Date;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly lastLoginAt: Date | null;
}

export interface RawUser {
  id: string;
  email: string;
  password_hash: string;
  display_name: string;
  roles: string[];
  email_verified_at: string | null;
  disabled_at: string | null;
  password_changed_at: string;
  created_at: string;
  updated_at: string;
  last_login_at: string | null;
}

export const USER_COLUMNS =
  'id, email, password_hash, display_name, roles, email_verified_at, disabled_at, password_changed_at, created_at, updated_at, last_login_at';

export function toUserRecord(raw: RawUser): UserRecord {
  return {
    id: raw.id,
    email: raw.email,
    passwordHash: raw.password_hash,
    displayName: raw.display_name,
    roles: raw.roles,
    emailVerifiedAt: dateOrNull(raw.email_verified_at),
    disabledAt: dateOrNull(raw.disabled_at),
    passwordChangedAt: new Date(raw.password_changed_at),
    createdAt: new Date(raw.created_at),
    updatedAt: new Date(raw.updated_at),
    lastLoginAt: dateOrNull(raw.last_login_at),
  };
}

export const users = {
  async findByEmail(em: EntityManager, email: string): Promise<UserRecord | undefined> {
    const row = await queryOne<RawUser>(em, `select ${USER_COLUMNS} from users where email = ?`, [email]);
    return row ? toUserRecord(row) : undefined;
  },

  /**
   * Creates the user and its audit event in one statement. Undefined when the email is taken: the
   * unique index decides, so two registrations racing for one address cannot both succeed.
   */
  async insert(
    em: EntityManager,
    user: { id: string; email: string; passwordHash: string; displayName: string; now: Date },
    audit: AuditEntry,
  ): Promise<UserRecord | undefined> {
    const row = await queryOne<RawUser>(
      em,
      `with created as (
         insert into users (id, email, password_hash, display_name, password_changed_at, created_at, updated_at)
         values (?, ?, ?, ?, ?, ?, ?)
         on conflict (email) do nothing
         returning ${USER_COLUMNS}, ${BEFORE_DEADLINE}
       ), audited as (
         insert into audit_events (${AUDIT_COLUMNS}) select ${AUDIT_PLACEHOLDERS} from created
       )
       select * from created`,
      [user.id, user.email, user.passwordHash, user.displayName, user.now, user.now, user.now, WRITE_DEADLINE, ...auditValues(audit)],
    );
    return row ? toUserRecord(row) : undefined;
  },

  /** Replaces a hash only if it is still the one that was checked, so a concurrent password change wins. */
  async replacePasswordHash(em: EntityManager, id: string, previousHash: string, newHash: string): Promise<boolean> {
    return (await run(em, 'update users set password_hash = ? where id = ? and password_hash = ? and latchkey_before(?)', [newHash, id, previousHash, WRITE_DEADLINE])) === 1;
  },

  /**
   * How many stored hashes have each bcrypt cost (`$2b$12$…` → 12): the proportions the dummy
   * hashes of unknown emails follow (DummyHashes). A full scan of `users`, run at start-up and
   * every few minutes, never on a request's path.
   */
  async hashCosts(em: EntityManager): Promise<Map<number, number>> {
    const rows = await queryAll<{ cost: string; count: number }>(
      em,
      `select substring(password_hash from 5 for 2) as cost, count(*)::int as count from users where password_hash like '$2_$__$%' group by 1`,
    );
    return new Map(rows.map((row) => [Number(row.cost), row.count]).filter(([cost]) => Number.isInteger(cost)) as [number, number][]);
  },

  async findById(em: EntityManager, id: string): Promise<UserRecord | undefined> {
    const row = await queryOne<RawUser>(em, `select ${USER_COLUMNS} from users where id = ?`, [id]);
    return row ? toUserRecord(row) : undefined;
  },
};
