import { checkUtf8Text, invalid, type Checked } from '../validation.js';

/** NIST SP 800-63B: at least 8 characters, no composition rules. */
export const MIN_PASSWORD_CODE_POINTS = 8;
/**
 * Far above the 64 characters NIST asks verifiers to accept in any script (64 four-byte code
 * points are 256 bytes), and low enough that hashing a hostile input stays cheap.
 */
export const MAX_PASSWORD_BYTES = 1024;

/**
 * Checks a password as typed and returns the text to hash, or the problem with it. The text is
 * normalised to NFKC (as SP 800-63B recommends), so the same password typed on two keyboards that
 * compose characters differently still matches. Nothing is trimmed or truncated.
 *
 * `strength` applies the minimum length (new passwords only: a later policy change must never lock
 * anyone out of Login). Rejected everywhere:
 * - U+FFFD: the protobuf decoder puts it in place of invalid UTF-8 (a lone surrogate, a stray
 *   byte), so two different byte strings would hash the same. No keyboard types it.
 * - NUL: no login form can send it, and C-string tooling truncates at it.
 */
export function checkPassword(field: string, password: string, strength: boolean): Checked<string> {
  if (password.length === 0) return invalid(field, 'is required');
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) return invalid(field, `must be at most ${MAX_PASSWORD_BYTES} bytes of UTF-8`);
  const notText = checkUtf8Text(field, password);
  if (notText) return notText;
  if (password.includes('\u0000')) return invalid(field, 'must not contain NUL characters');
  const text = password.normalize('NFKC');
  if (strength) {
    let codePoints = 0;
    for (const _ of text) codePoints += 1;
    if (codePoints < MIN_PASSWORD_CODE_POINTS) {
      return { violations: [{ field, description: `must be at least ${MIN_PASSWORD_CODE_POINTS} characters` }], weakPassword: true };
    }
  }
  return { value: text };
}
