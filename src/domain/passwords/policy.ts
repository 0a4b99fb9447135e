import { createRequire } from 'node:module';
import { checkUtf8Text, invalid, type Checked } from '../validation.js';

/** NIST SP 800-63B: at least 8 characters, no composition rules. */
export const MIN_PASSWORD_CODE_POINTS = 8;
/**
 * Far above the 64 characters NIST asks verifiers to accept in any script (64 four-byte code
 * points are 256 bytes), and low enough that hashing a hostile input stays cheap.
 */
export const MAX_PASSWORD_BYTES = 1024;

/**
 * NIST SP 800-63B §5.1.1.2: a new password is compared against values known to be commonly used.
 * The list is zxcvbn-ts's `passwords-common` (about 49,000 passwords ranked by how often they
 * appear in breach corpora, maintained with the library), pinned in package.json; only the
 * entries long enough to pass the length rule are kept. It is compared case-insensitively after
 * NFKC, so `Password1` is as refused as `password1`. Loaded once, on first use or at start-up
 * (loadCommonPasswords), from the package's one data file: about 0.4 MB on disk, 150 ms to load.
 */
let commonPasswords: ReadonlySet<string> | undefined;

export function loadCommonPasswords(): ReadonlySet<string> {
  if (!commonPasswords) {
    const list = createRequire(import.meta.url)('@zxcvbn-ts/language-common/dist/passwords.json.cjs') as unknown;
    if (!Array.isArray(list) || list.length < 10_000) throw new Error('the common-password list did not load as a list of passwords');
    commonPasswords = new Set(
      (list as unknown[])
        .filter((entry): entry is string => typeof entry === 'string')
        .map((entry) => entry.normalize('NFKC').toLowerCase())
        .filter((entry) => Array.from(entry).length >= MIN_PASSWORD_CODE_POINTS),
    );
  }
  return commonPasswords;
}

export const COMMON_PASSWORD = 'is one of the most commonly used passwords (found in breach corpora); choose another';

/**
 * Checks a password as typed and returns the text to hash, or the problem with it. The text is
 * normalised to NFKC (as SP 800-63B recommends), so the same password typed on two keyboards that
 * compose characters differently still matches. Nothing is trimmed or truncated.
 *
 * `strength` applies the minimum length and the common-password list (new passwords only: a later
 * policy change must never lock anyone out of Login). Rejected everywhere:
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
    if (loadCommonPasswords().has(text.toLowerCase())) return { violations: [{ field, description: COMMON_PASSWORD }], weakPassword: true };
  }
  return { value: text };
}
