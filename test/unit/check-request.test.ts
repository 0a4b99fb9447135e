import { CheckRequest } from '../../src/generated/envoy/service/auth/v3/external_auth.js';
import { readCheckRequest } from '../../src/grpc/handlers/check-request.js';
import { envoyCheckRequest } from '../support/gateway.js';

/** What the generated (reference) decoder says a check needs, in the lean reader's terms. */
function reference(bytes: Uint8Array): { headers: Record<string, string> | undefined; contextExtensions: Record<string, string> } {
  const decoded = CheckRequest.decode(bytes);
  const http = decoded.attributes?.request?.http;
  let headers: Record<string, string> | undefined;
  if (http) {
    headers = { ...http.headers };
    if (Object.keys(headers).length === 0) {
      for (const entry of http.headerMap?.headers ?? []) {
        const name = entry.key.toLowerCase();
        const value = entry.value !== '' ? entry.value : entry.rawValue.toString('utf8');
        headers[name] = name in headers ? `${headers[name]},${value}` : value;
      }
    }
  }
  return { headers, contextExtensions: { ...(decoded.attributes?.contextExtensions ?? {}) } };
}

const plain = (view: ReturnType<typeof readCheckRequest>) => ({
  headers: view.headers && { ...view.headers },
  contextExtensions: { ...view.contextExtensions },
});

describe('readCheckRequest (the lean CheckRequest reader) against the generated decoder', () => {
  const full = envoyCheckRequest({ authorization: 'Bearer abc.def.ghi', 'x-latchkey-user-id': 'spoofed', 'ünïcode': 'välue' }, { 'latchkey-required-roles': 'admin,ops', other: 'x' });
  full.attributes!.source = {
    address: undefined,
    service: 'client',
    labels: { app: 'web' },
    principal: 'spiffe://cluster.local/ns/shop/sa/web',
    certificate: '-----BEGIN CERTIFICATE-----',
  };
  full.attributes!.request!.http!.size = 2 ** 40;
  full.attributes!.request!.http!.rawBody = Buffer.from([0, 1, 2, 255]);

  const noHttp = envoyCheckRequest({});
  noHttp.attributes!.request!.http = undefined;

  const headerMap = envoyCheckRequest({}, { 'latchkey-required-roles': 'admin' });
  headerMap.attributes!.request!.http!.headers = {};
  headerMap.attributes!.request!.http!.headerMap = {
    headers: [
      { key: 'Authorization', value: '', rawValue: Buffer.from('Bearer raw.token.value') },
      { key: 'x-forwarded-for', value: '203.0.113.7', rawValue: Buffer.alloc(0) },
      { key: 'x-forwarded-for', value: '10.0.0.1', rawValue: Buffer.alloc(0) },
    ],
  };

  it.each([
    ['an Envoy-shaped request with peers, context extensions and a large size', full],
    ['a request without the http attribute', noHttp],
    ['raw headers (header_map) instead of the headers map', headerMap],
    ['an empty request', { attributes: undefined }],
  ])('%s', (_name, request) => {
    const bytes = CheckRequest.encode(request as CheckRequest).finish();
    expect(plain(readCheckRequest(Buffer.from(bytes)))).toEqual(reference(bytes));
  });

  it('reads the raw-header form as the joined, lower-case map', () => {
    const view = readCheckRequest(Buffer.from(CheckRequest.encode(headerMap).finish()));
    expect(plain(view)).toEqual({
      headers: { authorization: 'Bearer raw.token.value', 'x-forwarded-for': '203.0.113.7,10.0.0.1' },
      contextExtensions: { 'latchkey-required-roles': 'admin' },
    });
  });

  // The protobuf rule (a message field seen twice is merged) where ts-proto's decoder keeps only
  // the last occurrence: Envoy never sends this, but the reader must not let a second copy hide
  // or add to the first in a way the specification does not.
  it('merges a message field sent twice, as the protobuf encoding specifies (the later map entry wins)', () => {
    const first = Buffer.from(CheckRequest.encode(envoyCheckRequest({ authorization: 'Bearer first' }, { a: '1' })).finish());
    const second = Buffer.from(CheckRequest.encode(envoyCheckRequest({ authorization: 'Bearer second' }, { b: '2' })).finish());
    const view = readCheckRequest(Buffer.concat([first, second]));
    expect(view.headers!.authorization).toBe('Bearer second');
    expect({ ...view.contextExtensions }).toEqual({ a: '1', b: '2' });
  });

  it('keeps a `__proto__` key as a key', () => {
    const view = readCheckRequest(Buffer.from(CheckRequest.encode(envoyCheckRequest({ __proto__: 'x' } as Record<string, string>)).finish()));
    expect(Object.getPrototypeOf(view.headers)).toBeNull();
  });

  it.each([
    ['a truncated message', () => Buffer.from(CheckRequest.encode(full).finish()).subarray(0, 40)],
    ['a length past the end', () => Buffer.from([0x0a, 0x7f, 0x00])],
    ['a group wire type', () => Buffer.from([0x0b])],
    ['field number 0', () => Buffer.from([0x02, 0x00])],
    ['an endless varint', () => Buffer.alloc(12, 0xff)],
  ])('throws on %s', (_name, bytes) => {
    expect(() => readCheckRequest(bytes())).toThrow('malformed CheckRequest');
  });
});
