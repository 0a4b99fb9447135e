import { checkUtf8Text, invalid, type Checked } from '../validation.js';

export const MAX_EMAIL_LENGTH = 254;

/**
 * A practical address check (RFC 5321 lengths, one `@`, a dotted domain, no spaces or control
 * characters), not full RFC 5322: the only real proof of an address is VerifyEmail.
 */
const SHAPE = /^[^\s@\p{Cc}]{1,64}@(?=.{1,253}$)[^\s@\p{Cc}.]+(?:\.[^\s@\p{Cc}.]+)+$/u;

/** Trimmed and lower-cased, so the unique index on `users.email` is the uniqueness check. */
export function normaliseEmail(field: string, email: string): Checked<string> {
  // Bound the work before anything scans the text: an 8 KB "email" is refused on its length alone.
  if (email.length > MAX_EMAIL_LENGTH * 4) return invalid(field, `must be at most ${MAX_EMAIL_LENGTH} characters`);
  const normalised = email.trim().toLowerCase();
  if (normalised.length === 0) return invalid(field, 'is required');
  if (normalised.length > MAX_EMAIL_LENGTH) return invalid(field, `must be at most ${MAX_EMAIL_LENGTH} characters`);
  const notText = checkUtf8Text(field, normalised);
  if (notText) return notText;
  if (!SHAPE.test(normalised)) return invalid(field, 'must be an email address');
  return { value: normalised };
}
