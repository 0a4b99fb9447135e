import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import type { Logger } from '../../observability/logger.js';
import { sessionAdmin, type SessionRecord } from '../../persistence/repositories/session-admin.js';
import { permissionDenied, type Caller } from '../callers.js';
import type { Clock } from '../clock.js';
import { DomainError } from '../errors.js';
import { invalid, isUtf8Text, NOT_UTF8, RequestChecks, valid, type Checked } from '../validation.js';
import { checkId, isStoredId } from './ids.js';
import { decodeSessionPageToken, encodeSessionPageToken } from './page-token.js';
import { REVOCATION_REASONS, type RevocationReason, type SessionEvents } from './revocation.js';
import { sessionStatusAt, type SessionStateFilter, type SessionStatus } from './session-state.js';

export interface SessionServiceDependencies {
  readonly orm: MikroORM;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly events: SessionEvents;
}

/** A session as a caller sees it at the time of the response. */
export interface SessionView extends SessionRecord {
  readonly status: SessionStatus;
  /** Set only when `status` is REVOKED and the stored reason is a known one. */
  readonly revocationReason: RevocationReason | null;
  /** The session of the caller's own bearer token. */
  readonly current: boolean;
}

/** The ListSessions filter as requested; UNRECOGNIZED for an enum value this server does not know. */
export type RequestedStateFilter = SessionStateFilter | 'UNRECOGNIZED';

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 200;

const sessionNotFound = () => new DomainError('SESSION_NOT_FOUND', 'the session does not exist');
const userNotFound = () => new DomainError('USER_NOT_FOUND', 'the user does not exist');
const notOwnSessions = () => permissionDenied('only a service credential may act on another user\'s sessions');
const notTheUsersSession = () =>
  DomainError.invalidArgument([{ field: 'except_session_id', description: 'is not a session of the user' }]);

/** The only user whose sessions a plain user may see: themselves. Null for a service credential (isService). */
function ownerRestriction(caller: Caller): string | null {
  return caller.kind === 'user' && !caller.admin ? caller.userId : null;
}

function checkPageSize(field: string, size: number): Checked<number> {
  if (size < 0) return invalid(field, 'must not be negative');
  if (size === 0) return { value: DEFAULT_PAGE_SIZE };
  return { value: Math.min(size, MAX_PAGE_SIZE) };
}

function checkStateFilter(field: string, state: RequestedStateFilter): Checked<SessionStateFilter> {
  return state === 'UNRECOGNIZED' ? invalid(field, 'is not a session state this server knows') : { value: state };
}

/**
 * Session listing and revocation for owners and services (SessionService). Each method takes the
 * authenticated Caller and plain values; the gRPC handlers translate. Every call forks its own
 * EntityManager and sends one statement (none for input it can answer without the database).
 */
export class SessionService {
  constructor(private readonly deps: SessionServiceDependencies) {}

  protected em(): EntityManager {
    return this.deps.orm.em.fork();
  }

  private now(): Date {
    return new Date(this.deps.clock.now());
  }

  /** A plain user sees only their own sessions; anyone else's is reported as missing, like an unknown id. */
  async getSession(caller: Caller, input: { sessionId: string }): Promise<SessionView> {
    const sessionId = valid(checkId('session_id', input.sessionId, true));
    if (!isStoredId(sessionId)) throw sessionNotFound();
    const session = await sessionAdmin.find(this.em(), { sessionId, ownerId: ownerRestriction(caller) });
    if (!session) throw sessionNotFound();
    return this.view(caller, session, this.now());
  }

  /**
   * One page of a user's sessions, most recently used first. The page token carries the user and
   * filter it was made for, and the keyset (last_used_at, id) of the page's last session.
   */
  async listSessions(
    caller: Caller,
    input: { userId: string; pageSize: number; pageToken: string; state: RequestedStateFilter },
  ): Promise<{ sessions: SessionView[]; nextPageToken: string }> {
    const checks = new RequestChecks();
    const userId = checks.check(this.targetUser(caller, input.userId));
    const pageSize = checks.check(checkPageSize('page_size', input.pageSize));
    const state = checks.check(checkStateFilter('state', input.state));
    let after: { lastUsedMicros: string; sessionId: string } | null = null;
    if (input.pageToken !== '') {
      const token = decodeSessionPageToken(input.pageToken);
      if (!token) {
        checks.check(invalid('page_token', isUtf8Text(input.pageToken) ? 'is not a page token from ListSessions' : NOT_UTF8));
      } else if (userId !== undefined && state !== undefined && (token.userId !== userId || token.state !== state)) {
        checks.check(invalid('page_token', 'must come from a call with the same user_id and state'));
      } else {
        after = { lastUsedMicros: token.lastUsedMicros, sessionId: token.sessionId };
      }
    }
    checks.throwIfAny();
    this.authorizeUser(caller, userId!);
    if (!isStoredId(userId!)) throw userNotFound();

    const now = this.now();
    // One more than asked for tells whether another page follows.
    const page = await sessionAdmin.page(this.em(), {
      userId: userId!,
      status: state === 'UNSPECIFIED' ? 'ACTIVE' : state!,
      now,
      after,
      limit: pageSize! + 1,
    });
    if (!page.userFound) throw userNotFound();
    const listed = page.sessions.slice(0, pageSize);
    const last = listed.at(-1);
    const nextPageToken =
      page.sessions.length > pageSize! && last
        ? encodeSessionPageToken({ userId: userId!, state: state!, lastUsedMicros: last.lastUsedMicros, sessionId: last.id })
        : '';
    return { sessions: listed.map((session) => this.view(caller, session, now)), nextPageToken };
  }

  /**
   * Revokes one session if it is active; an already revoked or expired session is returned as it
   * is. The owner's own revocation is REVOKED_BY_USER (an admin's too), anyone else's
   * REVOKED_BY_SERVICE.
   */
  async revokeSession(caller: Caller, input: { sessionId: string }): Promise<SessionView> {
    const sessionId = valid(checkId('session_id', input.sessionId, true));
    if (!isStoredId(sessionId)) throw sessionNotFound();
    const now = this.now();
    const result = await sessionAdmin.revoke(this.em(), {
      sessionId,
      ownerId: ownerRestriction(caller),
      actingUserId: caller.kind === 'user' ? caller.userId : null,
      now,
    });
    if (!result) throw sessionNotFound();
    if (result.revokedNow) this.deps.events.revoked(result.session.revokedReason as RevocationReason, 1);
    return this.view(caller, result.session, now);
  }

  /** Revokes every active session of a user but `exceptSessionId`; returns how many it revoked. */
  async revokeAllSessions(caller: Caller, input: { userId: string; exceptSessionId: string }): Promise<number> {
    const checks = new RequestChecks();
    const userId = checks.check(this.targetUser(caller, input.userId));
    const exceptSessionId = checks.check(checkId('except_session_id', input.exceptSessionId, false));
    checks.throwIfAny();
    this.authorizeUser(caller, userId!);
    if (!isStoredId(userId!)) throw userNotFound();
    if (exceptSessionId !== '' && !isStoredId(exceptSessionId!)) throw notTheUsersSession();

    const byOwner = caller.kind === 'user' && caller.userId === userId;
    const reason = byOwner ? 'REVOKED_BY_USER' : 'REVOKED_BY_SERVICE';
    const result = await sessionAdmin.revokeAll(this.em(), {
      userId: userId!,
      exceptSessionId: exceptSessionId || null,
      now: this.now(),
      reason,
      by: byOwner ? 'user' : 'service',
    });
    if (!result.userFound) throw userNotFound();
    if (!result.exceptFound) throw notTheUsersSession();
    this.deps.events.revoked(reason, result.revokedCount);
    return result.revokedCount;
  }


  /**
   * The `user_id` of a request: empty means the caller's own, which an API key (acting for no
   * user) does not have.
   */
  private targetUser(caller: Caller, userId: string): Checked<string> {
    if (userId !== '') return checkId('user_id', userId, true);
    if (caller.kind === 'user') return { value: caller.userId };
    return invalid('user_id', 'is required with an API key');
  }

  /** A plain user may name only themselves; a wrong id is refused without looking it up. */
  private authorizeUser(caller: Caller, userId: string): void {
    const owner = ownerRestriction(caller);
    if (owner !== null && owner !== userId) throw notOwnSessions();
  }

  private view(caller: Caller, session: SessionRecord, now: Date): SessionView {
    const status = sessionStatusAt(session, now);
    const stored = session.revokedReason;
    const known = stored !== null && (REVOCATION_REASONS as readonly string[]).includes(stored);
    return {
      ...session,
      status,
      revocationReason: status === 'REVOKED' && known ? (stored as RevocationReason) : null,
      current: caller.kind === 'user' && caller.sessionId === session.id,
    };
  }
}
