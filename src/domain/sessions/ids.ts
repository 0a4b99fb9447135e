import { checkUtf8Text, invalid, type Checked } from '../validation.js';

/** Ids in the API are opaque strings of at most this many characters (proto: Session.id). */
export const MAX_ID_LENGTH = 64;

const STORED_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** An id field: empty only when optional, at most MAX_ID_LENGTH characters of valid UTF-8. Never echoes the value. */
export function checkId(field: string, id: string, required: boolean): Checked<string> {
  if (id === '') return required ? invalid(field, 'is required') : { value: '' };
  if (id.length > MAX_ID_LENGTH * 2 || Array.from(id).length > MAX_ID_LENGTH) {
    return invalid(field, `must be at most ${MAX_ID_LENGTH} characters`);
  }
  return checkUtf8Text(field, id) ?? { value: id };
}

/**
 * Whether an id has the form Latchkey assigns (a lowercase UUID). Any other id cannot name a
 * stored row, so it is answered as not found without a query: in SQL it would be a uuid cast error.
 */
export function isStoredId(id: string): boolean {
  return STORED_ID.test(id);
}
