import { CheckRequest } from '../../src/generated/envoy/service/auth/v3/external_auth.js';
import { readCheckRequest, type CheckRequestView } from '../../src/grpc/handlers/check-request.js';
import { envoyCheckRequest } from '../support/gateway.js';

const PREFIX = Buffer.from('x-latchkey-');

/** What a check needs, from the generated (reference) decoder, in the lean reader's terms. */
function reference(bytes: Uint8Array): CheckRequestView {
  const decoded = CheckRequest.decode(bytes);
  const http = decoded.attributes?.request?.http;
  let headers: Array<[string, string]> = Object.entries(http?.headers ?? {});
  if (headers.length === 0) {
    headers = (http?.headerMap?.headers ?? []).map((entry) => [entry.key.toLowerCase(), entry.value !== '' ? entry.value : entry.rawValue.toString('utf8')]);
  }
  const authorization = headers.filter(([name]) => name === 'authorization').map(([, value]) => value);
  return {
    http: http !== undefined,
    authorization: authorization.length > 0 ? authorization.join(',') : undefined,
    prefixed: [...new Set(headers.map(([name]) => name).filter((name) => name.startsWith('x-latchkey-')))],
    requiredRoles: decoded.attributes?.contextExtensions['latchkey-required-roles'],
  };
}

const read = (bytes: Uint8Array) => readCheckRequest(Buffer.from(bytes), PREFIX);

describe('readCheckRequest (the lean CheckRequest reader) against the generated decoder', () => {
  const full = envoyCheckRequest(
    { authorization: 'Bearer abc.def.ghi', 'x-latchkey-user-id': 'spoofed', 'x-latchkey-roles': 'admin', 'ünïcode': 'välue' },
    { 'latchkey-required-roles': 'admin,ops', 'latchkey-required-roles-x': 'no', other: 'x' },
  );
  full.attributes!.source = { address: undefined, service: 'client', labels: { app: 'web' }, principal: 'spiffe://cluster.local/ns/shop/sa/web', certificate: '-----BEGIN CERTIFICATE-----' };
  full.attributes!.request!.http!.size = -1; // Envoy's "unknown": a ten-byte varint
  full.attributes!.request!.http!.rawBody = Buffer.from([0, 1, 2, 255]);

  const noHttp = envoyCheckRequest({});
  noHttp.attributes!.request!.http = undefined;

  const headerMap = envoyCheckRequest({}, { 'latchkey-required-roles': 'admin' });
  headerMap.attributes!.request!.http!.headers = {};
  headerMap.attributes!.request!.http!.headerMap = {
    headers: [
      { key: 'Authorization', value: '', rawValue: Buffer.from('Bearer raw.token.value') },
      { key: 'X-Latchkey-User-Id', value: 'spoofed', rawValue: Buffer.alloc(0) },
      { key: 'x-forwarded-for', value: '203.0.113.7', rawValue: Buffer.alloc(0) },
    ],
  };

  it.each([
    ['an Envoy-shaped request with peers, context extensions and size -1', full],
    ['a request without the http attribute', noHttp],
    ['raw headers (header_map) instead of the headers map', headerMap],
    ['an empty request', { attributes: undefined }],
  ])('%s', (_name, request) => {
    const bytes = CheckRequest.encode(request as CheckRequest).finish();
    expect(read(bytes)).toEqual(reference(bytes));
  });

  it('reads exactly what a check needs', () => {
    expect(read(CheckRequest.encode(full).finish())).toEqual({
      http: true,
      authorization: 'Bearer abc.def.ghi',
      prefixed: ['x-latchkey-user-id', 'x-latchkey-roles'],
      requiredRoles: 'admin,ops',
    });
    expect(read(CheckRequest.encode(headerMap).finish())).toEqual({
      http: true,
      authorization: 'Bearer raw.token.value',
      prefixed: ['x-latchkey-user-id'],
      requiredRoles: 'admin',
    });
    expect(read(CheckRequest.encode(noHttp).finish())).toEqual({ http: false, authorization: undefined, prefixed: [], requiredRoles: undefined });
  });

  // The protobuf rule (a message field seen twice is merged; a map entry sent again replaces the
  // earlier one), where ts-proto's decoder keeps only the last occurrence of the message.
  it('merges a message field sent twice, as the protobuf encoding specifies', () => {
    const first = CheckRequest.encode(envoyCheckRequest({ authorization: 'Bearer first', 'x-latchkey-email': 'a' }, { 'latchkey-required-roles': 'admin' })).finish();
    const second = CheckRequest.encode(envoyCheckRequest({ authorization: 'Bearer second' })).finish();
    expect(read(Buffer.concat([first, second]))).toEqual({ http: true, authorization: 'Bearer second', prefixed: ['x-latchkey-email'], requiredRoles: 'admin' });
  });

  it.each([
    ['a truncated message', () => Buffer.from(CheckRequest.encode(full).finish()).subarray(0, 40)],
    ['a length past the end', () => Buffer.from([0x0a, 0x7f, 0x00])],
    ['a group wire type', () => Buffer.from([0x0b])],
    ['field number 0', () => Buffer.from([0x02, 0x00])],
    ['an endless varint', () => Buffer.alloc(12, 0xff)],
  ])('throws on %s', (_name, bytes) => {
    expect(() => readCheckRequest(bytes(), PREFIX)).toThrow('malformed CheckRequest');
  });
});
