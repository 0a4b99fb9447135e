import { domainToASCII, domainToUnicode } from 'node:url';
import { checkUtf8Text, invalid, type Checked } from '../validation.js';

export const MAX_EMAIL_LENGTH = 254;

/**
 * A practical address check (RFC 5321 lengths, one `@`, a dotted domain, no spaces or control
 * characters), not full RFC 5322: the only real proof of an address is VerifyEmail.
 */
const SHAPE = /^[^\s@\p{Cc}]{1,64}@(?=.{1,253}$)[^\s@\p{Cc}.]+(?:\.[^\s@\p{Cc}.]+)+$/u;

/** Invisible format characters (zero-width spaces and joiners, bidi controls, soft hyphens). */
const FORMAT = /\p{Cf}/u;

/**
 * One spelling per address, so the unique index on `users.email` is the uniqueness check:
 * - trimmed, NFC (`josé` typed precomposed or as `e` + U+0301 is one account) and lower-cased;
 * - the domain through IDNA (UTS #46 mapping, node:url's domainToASCII): fullwidth letters, case,
 *   and the A-label (`xn--…`) and U-label spellings all give one domain, kept in its Unicode form;
 * - a local part holding compatibility characters (fullwidth `ｊｏｅ`, ligatures, superscripts:
 *   what NFKC would change) or invisible format characters is refused, not folded: the local part
 *   belongs to the receiving server, so folding could merge two mailboxes, while keeping it would
 *   let `ｊｏｅ@example.com` pose as `joe@example.com` in session lists and audit events. No
 *   address a provider hands out has them. (docs/architecture.md, "Text normalisation".)
 */
export function normaliseEmail(field: string, email: string): Checked<string> {
  // Bound the work before anything scans the text: an 8 KB "email" is refused on its length alone.
  if (email.length > MAX_EMAIL_LENGTH * 4) return invalid(field, `must be at most ${MAX_EMAIL_LENGTH} characters`);
  const notText = checkUtf8Text(field, email);
  if (notText) return notText;
  const trimmed = email.trim().normalize('NFC').toLowerCase();
  if (trimmed.length === 0) return invalid(field, 'is required');
  const at = trimmed.lastIndexOf('@');
  if (at <= 0) return invalid(field, 'must be an email address');
  const local = trimmed.slice(0, at);
  if (FORMAT.test(local) || local.normalize('NFKC') !== local) {
    return invalid(field, 'must not contain fullwidth, compatibility or invisible formatting characters before the @');
  }
  const ascii = domainToASCII(trimmed.slice(at + 1));
  if (ascii === '') return invalid(field, 'must be an email address');
  const normalised = `${local}@${domainToUnicode(ascii)}`;
  if (normalised.length > MAX_EMAIL_LENGTH) return invalid(field, `must be at most ${MAX_EMAIL_LENGTH} characters`);
  if (!SHAPE.test(normalised)) return invalid(field, 'must be an email address');
  return { value: normalised };
}
