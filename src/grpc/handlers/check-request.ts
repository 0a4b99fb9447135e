/**
 * What a check reads from an `envoy.service.auth.v3.CheckRequest`, straight from its bytes: the
 * `authorization` header, the names of the headers with the identity prefix, and the context
 * extension `latchkey-required-roles`. A CheckRequest carries a dozen or more headers, peer
 * addresses, certificates and metadata; the generated decoder builds an object and decodes a
 * string for every one of them, which cost a Check about as much as the rest of it (see
 * docs/benchmarks.md). This reader walks the wire format, compares header names as bytes, and
 * decodes only the few strings it keeps. The field numbers are those of Envoy's protos
 * (envoy/service/auth/v3/attribute_context.proto, envoy/config/core/v3/base.proto); the generated
 * codec stays the reference, and test/unit/check-request.test.ts decodes the same bytes with both.
 *
 *   CheckRequest.attributes = 1
 *     AttributeContext.request = 4                  AttributeContext.context_extensions = 10 (map)
 *       Request.http = 2
 *         HttpRequest.headers = 3 (map)             HttpRequest.header_map = 13
 *                                                     HeaderMap.headers = 1: HeaderValue key = 1, value = 2, raw_value = 3
 */
import { REQUIRED_ROLES_EXTENSION } from '../../domain/gateway/gateway-check.js';

export interface CheckRequestView {
  /** Whether the request has the `http` attribute (Envoy's HTTP filter always sends it). */
  readonly http: boolean;
  /** The `authorization` header; repeated ones joined with a comma, as Envoy joins them. */
  readonly authorization: string | undefined;
  /** Lower-case names of the headers that start with the prefix, each once. */
  readonly prefixed: readonly string[];
  /** The context extension `latchkey-required-roles`, if set. */
  readonly requiredRoles: string | undefined;
}

class Malformed extends Error {
  constructor() {
    super('malformed CheckRequest');
  }
}

const AUTHORIZATION = Buffer.from('authorization');
const REQUIRED_ROLES = Buffer.from(REQUIRED_ROLES_EXTENSION);

/** Everything read so far; `headers` (field 3) wins over `header_map` (field 13) when both came. */
interface State {
  readonly bytes: Buffer;
  readonly prefix: Buffer;
  /** Where the varint just read ended. */
  pos: number;
  http: boolean;
  headerEntries: number;
  authorization: string | undefined;
  prefixed: string[];
  mapAuthorization: string[];
  mapPrefixed: string[];
  requiredRoles: string | undefined;
}

/** Reads a varint at `state.pos` (bounded by `end`): tags and lengths, so anything past 2^53 is malformed. */
function varint(state: State, end: number): number {
  const bytes = state.bytes;
  let pos = state.pos;
  let result = 0;
  for (let shift = 0; ; shift += 7) {
    if (pos >= end || shift > 63) throw new Malformed();
    const byte = bytes[pos++]!;
    result += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) {
      if (result > Number.MAX_SAFE_INTEGER) throw new Malformed();
      state.pos = pos;
      return result;
    }
  }
}

/** Skips a varint value of up to 10 bytes (a negative int64, such as `size: -1`, takes all ten). */
function skipVarint(state: State, end: number): void {
  for (let i = 0; i < 10; i++) {
    if (state.pos >= end) throw new Malformed();
    if (state.bytes[state.pos++]! < 0x80) return;
  }
  throw new Malformed();
}

/** Skips a field's value of `wireType` at `state.pos`. */
function skip(state: State, wireType: number, end: number): void {
  switch (wireType) {
    case 0:
      skipVarint(state, end);
      return;
    case 1:
      state.pos += 8;
      break;
    case 2: {
      // Read first: `state.pos += varint(…)` would add to the position from before the length.
      const length = varint(state, end);
      state.pos += length;
      break;
    }
    case 5:
      state.pos += 4;
      break;
    default:
      // Groups (3, 4) appear in no field of these messages; 6 and 7 are not protobuf.
      throw new Malformed();
  }
  if (state.pos > end) throw new Malformed();
}

/** The bounds of a length-delimited value at `state.pos`; leaves `state.pos` after it. */
function lengthDelimited(state: State, end: number): number {
  const length = varint(state, end);
  const stop = state.pos + length;
  if (stop > end) throw new Malformed();
  return stop;
}

/** Whether bytes [start, stop) are `target`, ASCII letters compared without case. */
function equalsLower(bytes: Buffer, start: number, stop: number, target: Buffer, prefixOnly = false): boolean {
  if (prefixOnly ? stop - start < target.length : stop - start !== target.length) return false;
  for (let i = 0; i < target.length; i++) {
    let byte = bytes[start + i]!;
    if (byte >= 0x41 && byte <= 0x5a) byte |= 0x20;
    if (byte !== target[i]) return false;
  }
  return true;
}

/**
 * A key/value pair: a map entry (key = 1, value = 2) or a HeaderValue (key = 1, value = 2,
 * raw_value = 3, used when value is empty). Returns the bounds of key and value.
 */
function pair(state: State, end: number, out: number[]): void {
  let keyStart = 0;
  let keyStop = 0;
  let valueStart = 0;
  let valueStop = 0;
  let rawStart = 0;
  let rawStop = 0;
  while (state.pos < end) {
    const tag = varint(state, end);
    const field = Math.floor(tag / 8);
    if (field === 0) throw new Malformed();
    if ((tag & 7) === 2 && field >= 1 && field <= 3) {
      const stop = lengthDelimited(state, end);
      if (field === 1) [keyStart, keyStop] = [state.pos, stop];
      else if (field === 2) [valueStart, valueStop] = [state.pos, stop];
      else [rawStart, rawStop] = [state.pos, stop];
      state.pos = stop;
    } else {
      skip(state, tag & 7, end);
    }
  }
  if (valueStop === valueStart) [valueStart, valueStop] = [rawStart, rawStop];
  out[0] = keyStart;
  out[1] = keyStop;
  out[2] = valueStart;
  out[3] = valueStop;
}

const bounds = [0, 0, 0, 0];

/** One header, from the `headers` map or the `header_map`. */
function header(state: State, end: number, fromMap: boolean): void {
  pair(state, end, bounds);
  const [keyStart, keyStop, valueStart, valueStop] = bounds as [number, number, number, number];
  const bytes = state.bytes;
  if (!fromMap) state.headerEntries += 1;
  if (equalsLower(bytes, keyStart, keyStop, AUTHORIZATION)) {
    const value = bytes.toString('utf8', valueStart, valueStop);
    // A map entry sent again replaces the earlier one; header_map entries of one name are joined.
    if (fromMap) state.mapAuthorization.push(value);
    else state.authorization = value;
  } else if (equalsLower(bytes, keyStart, keyStop, state.prefix, true)) {
    (fromMap ? state.mapPrefixed : state.prefixed).push(bytes.toString('utf8', keyStart, keyStop).toLowerCase());
  }
}

function httpRequest(state: State, end: number): void {
  state.http = true;
  while (state.pos < end) {
    const tag = varint(state, end);
    if (tag === 0x1a /* headers = 3, LEN */) {
      const stop = lengthDelimited(state, end);
      header(state, stop, false);
    } else if (tag === 0x6a /* header_map = 13, LEN */) {
      const mapEnd = lengthDelimited(state, end);
      while (state.pos < mapEnd) {
        const inner = varint(state, mapEnd);
        if (inner === 0x0a /* headers = 1, LEN */) {
          const stop = lengthDelimited(state, mapEnd);
          header(state, stop, true);
        } else if (inner < 8) throw new Malformed();
        else skip(state, inner & 7, mapEnd);
      }
    } else if (tag < 8) throw new Malformed();
    else skip(state, tag & 7, end);
  }
}

function attributeRequest(state: State, end: number): void {
  while (state.pos < end) {
    const tag = varint(state, end);
    if (tag === 0x12 /* http = 2, LEN */) {
      const stop = lengthDelimited(state, end);
      httpRequest(state, stop);
    } else if (tag < 8) throw new Malformed();
    else skip(state, tag & 7, end);
  }
}

function attributeContext(state: State, end: number): void {
  while (state.pos < end) {
    const tag = varint(state, end);
    if (tag === 0x22 /* request = 4, LEN */) {
      const stop = lengthDelimited(state, end);
      attributeRequest(state, stop);
    } else if (tag === 0x52 /* context_extensions = 10, LEN */) {
      const stop = lengthDelimited(state, end);
      pair(state, stop, bounds);
      const [keyStart, keyStop, valueStart, valueStop] = bounds as [number, number, number, number];
      if (keyStop - keyStart === REQUIRED_ROLES.length && state.bytes.compare(REQUIRED_ROLES, 0, REQUIRED_ROLES.length, keyStart, keyStop) === 0) {
        state.requiredRoles = state.bytes.toString('utf8', valueStart, valueStop);
      }
    } else if (tag < 8) throw new Malformed();
    else skip(state, tag & 7, end);
  }
}

/**
 * Reads what a check needs from a CheckRequest's bytes; `prefix` is the identity headers' prefix
 * in lower case. Throws on bytes that are not a valid protobuf encoding (the call wrapper turns
 * that into INVALID_ARGUMENT, as for every RPC).
 */
export function readCheckRequest(bytes: Buffer, prefix: Buffer): CheckRequestView {
  const state: State = {
    bytes,
    prefix,
    pos: 0,
    http: false,
    headerEntries: 0,
    authorization: undefined,
    prefixed: [],
    mapAuthorization: [],
    mapPrefixed: [],
    requiredRoles: undefined,
  };
  const end = bytes.length;
  while (state.pos < end) {
    const tag = varint(state, end);
    if (tag === 0x0a /* attributes = 1, LEN */) {
      const stop = lengthDelimited(state, end);
      attributeContext(state, stop);
    } else if (tag < 8) throw new Malformed();
    else skip(state, tag & 7, end);
  }
  // Envoy sends either the `headers` map or, with raw headers on, `header_map`.
  const fromMap = state.headerEntries === 0;
  const authorization = fromMap ? (state.mapAuthorization.length > 0 ? state.mapAuthorization.join(',') : undefined) : state.authorization;
  const prefixed = [...new Set(fromMap ? state.mapPrefixed : state.prefixed)];
  return { http: state.http, authorization, prefixed, requiredRoles: state.requiredRoles };
}
