import { DomainError, type FieldViolation } from './errors.js';

/** The outcome of checking one input: its usable value, or what is wrong with it. */
export type Checked<T> = { readonly value: T } | { readonly violations: readonly FieldViolation[]; readonly weakPassword?: boolean };

export function invalid(field: string, description: string): Checked<never> {
  return { violations: [{ field, description }] };
}

/**
 * Whether a request's text arrived as valid UTF-8. The protobuf decoder never fails on a string
 * field: it puts U+FFFD in place of each invalid byte sequence, so that character is the only trace
 * left of bytes that were not text. Every free-text field of a request refuses it (the user agent
 * aside, see checkClientInfo), even though a well-encoded U+FFFD is valid UTF-8: no person types
 * it, and keeping the replacement would store something other than what was sent, making
 * different byte strings one password, one address or one device name. Lone surrogates cannot come
 * off the wire; they are refused for callers that reach the domain some other way.
 */
export function isUtf8Text(text: string): boolean {
  return !text.includes('\uFFFD') && text.isWellFormed();
}

export const NOT_UTF8 = 'must be valid UTF-8 text';

/** The violation for text that was not valid UTF-8 on the wire (see isUtf8Text), or undefined. */
export function checkUtf8Text(field: string, text: string): Checked<never> | undefined {
  return isUtf8Text(text) ? undefined : invalid(field, NOT_UTF8);
}

/** A required text field of at most `max` characters (a token, an id). Never echoes the value. */
export function checkRequiredText(field: string, text: string, max: number): Checked<string> {
  if (text.length === 0) return invalid(field, 'is required');
  if (text.length > max) return invalid(field, `must be at most ${max} characters`);
  return checkUtf8Text(field, text) ?? { value: text };
}

/** The value of a request's only check, or the INVALID_ARGUMENT (or WEAK_PASSWORD) it calls for. */
export function valid<T>(result: Checked<T>): T {
  const checks = new RequestChecks();
  const value = checks.check(result);
  checks.throwIfAny();
  return value as T;
}

/**
 * Collects the checks of one request, so a caller learns every bad field at once. `check` returns
 * the value, or undefined when the input is bad; `throwIfAny` then throws one INVALID_ARGUMENT
 * listing them all (WEAK_PASSWORD when a too-short password is the only problem).
 */
export class RequestChecks {
  private readonly violations: FieldViolation[] = [];
  private weakPassword = false;

  check<T>(result: Checked<T>): T | undefined {
    if ('value' in result) return result.value;
    this.violations.push(...result.violations);
    this.weakPassword ||= result.weakPassword === true;
    return undefined;
  }

  throwIfAny(): void {
    if (this.violations.length === 0) return;
    const onlyWeak = this.weakPassword && this.violations.length === 1;
    throw DomainError.invalidArgument(this.violations, onlyWeak ? 'WEAK_PASSWORD' : 'INVALID_ARGUMENT');
  }
}

/**
 * The bidirectional embedding, override and isolate controls (U+202A–U+202E, U+2066–U+2069): each
 * reorders the text after it until its terminator or the end of the paragraph, so one of them in a
 * name shown in a list ("Trojan Source") can make that line, or the next field on it, read as
 * something else. The implicit marks (U+200E, U+200F, U+061C) are left alone: they open nothing,
 * only set the direction of the characters next to them, and right-to-left names need them.
 */
export const BIDI_CONTROLS = /[\u202A-\u202E\u2066-\u2069]/u;
const BIDI_CONTROLS_ALL = /[\u202A-\u202E\u2066-\u2069]/gu;

/** Text with each bidi control (BIDI_CONTROLS) replaced by U+FFFD, visible and inert. */
export function neutraliseBidiControls(text: string): string {
  return text.replace(BIDI_CONTROLS_ALL, '\uFFFD');
}
