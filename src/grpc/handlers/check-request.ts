/**
 * The parts of an `envoy.service.auth.v3.CheckRequest` a check reads, straight from its bytes: the
 * HTTP request's headers and the route's context extensions. A CheckRequest carries a dozen or more
 * header entries, peer addresses, certificates and metadata; the generated decoder builds an
 * object (and decodes a string) for every one of them, which cost a Check more than everything
 * else it does together (docs/benchmarks.md). This reader walks the wire format and keeps only
 * the fields below, skipping the rest unread. The field numbers are those of Envoy's protos
 * (envoy/service/auth/v3/attribute_context.proto, envoy/config/core/v3/base.proto); the generated
 * codec stays the reference, and test/unit/check-request.test.ts decodes the same bytes with both.
 *
 *   CheckRequest.attributes = 1
 *     AttributeContext.request = 4                  AttributeContext.context_extensions = 10 (map)
 *       Request.http = 2
 *         HttpRequest.headers = 3 (map)             HttpRequest.header_map = 13
 *                                                     HeaderMap.headers = 1: HeaderValue key = 1, value = 2, raw_value = 3
 */
export interface CheckRequestView {
  /** Lower-case header names (as Envoy sends them) → values; undefined without an `http` attribute. */
  readonly headers: Record<string, string> | undefined;
  readonly contextExtensions: Record<string, string>;
}

class Malformed extends Error {
  constructor() {
    super('malformed CheckRequest');
  }
}

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

/** A cursor over one message's bytes [pos, end). */
class Cursor {
  constructor(
    readonly bytes: Buffer,
    public pos: number,
    readonly end: number,
  ) {}

  get more(): boolean {
    return this.pos < this.end;
  }

  varint(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      if (this.pos >= this.end || shift > 63) throw new Malformed();
      const byte = this.bytes[this.pos++]!;
      // Only tags and lengths are read as numbers here: past 2^53 they are malformed anyway.
      if (shift < 53) result += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return result;
      shift += 7;
    }
  }

  /** A length-delimited field's bounds, as a cursor of its own. */
  sub(): Cursor {
    const length = this.varint();
    const start = this.pos;
    if (length > this.end - start) throw new Malformed();
    this.pos = start + length;
    return new Cursor(this.bytes, start, start + length);
  }

  string(): string {
    const inner = this.sub();
    return this.bytes.toString('utf8', inner.pos, inner.end);
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_I64:
        this.advance(8);
        return;
      case WIRE_LEN:
        this.sub();
        return;
      case WIRE_I32:
        this.advance(4);
        return;
      default:
        // Groups (3, 4) appear in no field of these messages; anything else is not protobuf.
        throw new Malformed();
    }
  }

  private advance(count: number): void {
    if (count > this.end - this.pos) throw new Malformed();
    this.pos += count;
  }
}

/** Reads fields until the end: `visit` takes the ones it knows (returns true), the rest are skipped. */
function fields(cursor: Cursor, visit: (field: number, wireType: number, cursor: Cursor) => boolean): void {
  while (cursor.more) {
    const tag = cursor.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field === 0) throw new Malformed();
    if (!visit(field, wireType, cursor)) cursor.skip(wireType);
  }
}

/** One `map<string, string>` entry (key = 1, value = 2) into `into`; a later entry of the same key wins, as in protobuf. */
function mapEntry(cursor: Cursor, into: Record<string, string>): void {
  let key = '';
  let value = '';
  fields(cursor, (field, wireType, c) => {
    if (wireType !== WIRE_LEN) return false;
    if (field === 1) key = c.string();
    else if (field === 2) value = c.string();
    else return false;
    return true;
  });
  into[key] = value;
}

/** One HeaderValue of a HeaderMap (key = 1, value = 2, raw_value = 3), joined as Envoy joins repeated headers. */
function headerValue(cursor: Cursor, into: Array<[string, string]>): void {
  let key = '';
  let value = '';
  let raw: string | undefined;
  fields(cursor, (field, wireType, c) => {
    if (wireType !== WIRE_LEN) return false;
    if (field === 1) key = c.string();
    else if (field === 2) value = c.string();
    else if (field === 3) raw = c.string();
    else return false;
    return true;
  });
  into.push([key.toLowerCase(), value !== '' ? value : (raw ?? '')]);
}

/**
 * Decodes what a check needs from a CheckRequest's bytes. Throws on bytes that are not a valid
 * protobuf encoding (the call wrapper turns that into INVALID_ARGUMENT, as for every RPC).
 */
export function readCheckRequest(bytes: Buffer): CheckRequestView {
  const root = new Cursor(bytes, 0, bytes.length);
  let headers: Record<string, string> | undefined;
  const mapped: Array<[string, string]> = [];
  // Without a prototype: a key such as `__proto__` is just a key.
  const contextExtensions: Record<string, string> = Object.create(null) as Record<string, string>;
  fields(root, (field, wireType, cursor) => {
    if (field !== 1 || wireType !== WIRE_LEN) return false;
    fields(cursor.sub(), (field, wireType, attributes) => {
      if (wireType !== WIRE_LEN) return false;
      if (field === 10) {
        mapEntry(attributes.sub(), contextExtensions);
        return true;
      }
      if (field !== 4) return false;
      fields(attributes.sub(), (field, wireType, request) => {
        if (field !== 2 || wireType !== WIRE_LEN) return false;
        headers ??= Object.create(null) as Record<string, string>;
        const into = headers;
        fields(request.sub(), (field, wireType, http) => {
          if (wireType !== WIRE_LEN) return false;
          if (field === 3) mapEntry(http.sub(), into);
          else if (field === 13) {
            fields(http.sub(), (field, wireType, map) => {
              if (field !== 1 || wireType !== WIRE_LEN) return false;
              headerValue(map.sub(), mapped);
              return true;
            });
          } else return false;
          return true;
        });
        return true;
      });
      return true;
    });
    return true;
  });
  // Envoy sends either `headers` or, with raw headers on, `header_map`.
  if (headers && mapped.length > 0 && Object.keys(headers).length === 0) {
    for (const [name, value] of mapped) headers[name] = name in headers ? `${headers[name]},${value}` : value;
  }
  return { headers, contextExtensions };
}
