import { isStoredId } from './ids.js';
import { SESSION_STATE_FILTERS, type SessionStateFilter } from './session-state.js';

/** Where the next ListSessions page starts, and the request (user and filter) it belongs to. */
export interface SessionPageToken {
  readonly userId: string;
  readonly state: SessionStateFilter;
  /** The last listed session's last_used_at in microseconds since the epoch, as decimal text (exact). */
  readonly lastUsedMicros: string;
  readonly sessionId: string;
}

const VERSION = 1;
const MAX_TOKEN_LENGTH = 512;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const MICROS = /^(0|[1-9][0-9]{0,15})$/;

/** base64url of a small versioned JSON object. Opaque to clients; not a secret. */
export function encodeSessionPageToken(token: SessionPageToken): string {
  const body = { v: VERSION, u: token.userId, s: token.state, t: token.lastUsedMicros, i: token.sessionId };
  return Buffer.from(JSON.stringify(body), 'utf8').toString('base64url');
}

/** The token, or undefined for anything encodeSessionPageToken could not have produced. */
export function decodeSessionPageToken(text: string): SessionPageToken | undefined {
  if (text.length > MAX_TOKEN_LENGTH || !BASE64URL.test(text)) return undefined;
  const bytes = Buffer.from(text, 'base64url');
  if (bytes.toString('base64url') !== text) return undefined;
  let body: unknown;
  try {
    body = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const { v, u, s, t, i, ...rest } = body as Record<string, unknown>;
  if (Object.keys(rest).length > 0 || v !== VERSION) return undefined;
  if (typeof u !== 'string' || !isStoredId(u) || typeof i !== 'string' || !isStoredId(i)) return undefined;
  if (typeof t !== 'string' || !MICROS.test(t)) return undefined;
  if (typeof s !== 'string' || !(SESSION_STATE_FILTERS as readonly string[]).includes(s)) return undefined;
  return { userId: u, state: s as SessionStateFilter, lastUsedMicros: t, sessionId: i };
}
