import { credentials, type Client, type ServiceError } from '@grpc/grpc-js';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { withLowSSignature } from '../../src/domain/tokens/low-s.js';
import { AuthorizationClient, type CheckRequest, type CheckResponse } from '../../src/generated/envoy/service/auth/v3/external_auth.js';
import { call } from './clients.js';

export function authorizationClient(port: number): AuthorizationClient {
  return new AuthorizationClient(`127.0.0.1:${port}`, credentials.createInsecure());
}

/**
 * A CheckRequest as Envoy sends one: the request's headers in `attributes.request.http.headers`
 * (lower-case names, repeated headers joined), the route's context extensions, the method and path.
 */
export function envoyCheckRequest(headers: Record<string, string>, contextExtensions: Record<string, string> = {}): CheckRequest {
  return {
    attributes: {
      source: undefined,
      destination: undefined,
      request: {
        time: new Date(),
        http: {
          id: '7215301283541405219',
          method: 'GET',
          headers: { ':authority': 'api.example.com', ':method': 'GET', ':path': '/orders', 'user-agent': 'curl/8.5.0', 'x-request-id': 'b3d5e7a1', ...headers },
          headerMap: undefined,
          path: '/orders',
          host: 'api.example.com',
          scheme: 'https',
          query: '',
          fragment: '',
          size: 0,
          protocol: 'HTTP/1.1',
          body: '',
          rawBody: Buffer.alloc(0),
        },
      },
      contextExtensions,
      metadataContext: undefined,
      routeMetadataContext: undefined,
      tlsSession: undefined,
    },
  };
}

export function check(client: AuthorizationClient, request: CheckRequest): Promise<{ response?: CheckResponse; error?: ServiceError }> {
  return call<CheckRequest, CheckResponse>(client as unknown as Client, 'check', request);
}

/** The parts of a CheckResponse a gateway acts on, in plain values (for exact assertions). */
export function decision(response: CheckResponse | undefined): unknown {
  if (!response) return undefined;
  const ok = response.okResponse;
  const denied = response.deniedResponse;
  return {
    code: response.status?.code,
    ...(ok
      ? {
          set: ok.headers.map((h) => [h.header?.key, h.header?.value, h.appendAction]),
          remove: ok.headersToRemove,
        }
      : {}),
    ...(denied
      ? {
          http: denied.status?.code,
          headers: denied.headers.map((h) => [h.header?.key, h.header?.value]),
          body: JSON.parse(denied.body) as unknown,
        }
      : {}),
  };
}

/** A token signed with a key of the attacker's own, under the server's key id. */
export function forgedToken(payload: object, kid: string): string {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' }) as { privateKey: KeyObject };
  // Low-S, as the server signs: refused for its signature, not for its form.
  return withLowSSignature(jwt.sign(payload, privateKey, { algorithm: 'ES256', header: { alg: 'ES256', typ: 'at+jwt', kid } }));
}

/** A token signed with the server's own key (`serverSigningKey`), with the claims given. */
export function signedToken(payload: object, key: { kid: string; key: KeyObject }): string {
  // Low-S, as the server signs (the high-S twin of a signature is refused as TOKEN_INVALID).
  return withLowSSignature(jwt.sign(payload, key.key, { algorithm: 'ES256', header: { alg: 'ES256', typ: 'at+jwt', kid: key.kid } }));
}

/** What a forward-auth call answered: status, the headers that matter, the JSON body. */
export async function forwardAuth(httpPort: number, headers: Record<string, string>, path = '/forward-auth', method = 'GET') {
  const response = await fetch(`http://127.0.0.1:${httpPort}${path}`, { method, headers });
  const picked: Record<string, string> = {};
  for (const [name, value] of response.headers) {
    if (name.startsWith('x-latchkey-') || name.startsWith('x-id-') || name === 'www-authenticate' || name === 'retry-after') picked[name] = value;
  }
  const text = await response.text();
  return { status: response.status, headers: picked, body: text === '' ? undefined : (JSON.parse(text) as unknown) };
}
