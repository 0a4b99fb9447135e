import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { JWKS_MAX_AGE_SECONDS } from '../config/schema.js';
import { FORWARD_AUTH_PATH } from './forward-auth.js';

export interface HttpProbes {
  /** Ready to take traffic: database reachable and not shutting down. */
  ready(): boolean;
  /** Prometheus text exposition of the server's metrics. */
  metrics(): Promise<{ contentType: string; body: string }>;
  /** The public JSON Web Key Set, already rendered. */
  jwks(): string;
  /** The OpenID Connect discovery document, already rendered (served when given). */
  openidConfiguration?(): string;
  /** Gateway forward-auth (src/http/forward-auth.ts), served under FORWARD_AUTH_PATH when given. */
  forwardAuth?: (request: IncomingMessage, response: ServerResponse) => void;
}

/** A JSON response; `json` is sent as is when already rendered. Not cacheable unless `cacheControl` says so. */
function send(response: ServerResponse, statusCode: number, body: unknown, cacheControl = 'no-store'): void {
  const json = typeof body === 'string' ? body : JSON.stringify(body);
  response.writeHead(statusCode, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(json),
    'cache-control': cacheControl,
  });
  response.end(json);
}

/**
 * The plain-HTTP side: the JWKS for token verifiers, liveness, readiness and Prometheus metrics for
 * load balancers, scrapers and humans with curl; the OpenID discovery document; gateway forward-auth.
 * Anything else is 404; only GET and HEAD are allowed (forward-auth takes any method).
 */
export function createHttpServer(probes: HttpProbes): { server: Server; listen(port: number, host: string): Promise<number>; close(): Promise<void> } {
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const path = (request.url ?? '/').split('?')[0]!;
    // Any method: Envoy's HTTP ext_authz keeps the original request's (FORWARD_AUTH_PATH + its path).
    if (probes.forwardAuth && (path === FORWARD_AUTH_PATH || path.startsWith(`${FORWARD_AUTH_PATH}/`))) {
      probes.forwardAuth(request, response);
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.setHeader('allow', 'GET, HEAD');
      send(response, 405, { error: 'method not allowed' });
      return;
    }
    switch (path) {
      case '/.well-known/jwks.json':
        // A few minutes of caching: new keys are published SIGNING_KEY_PUBLISH_AHEAD (longer) before they sign.
        send(response, 200, probes.jwks(), `public, max-age=${JWKS_MAX_AGE_SECONDS}`);
        return;
      case '/.well-known/openid-configuration':
        if (!probes.openidConfiguration) break;
        send(response, 200, probes.openidConfiguration(), 'public, max-age=300');
        return;
      case '/healthz':
        send(response, 200, { status: 'ok' });
        return;
      case '/readyz': {
        const ready = probes.ready();
        send(response, ready ? 200 : 503, { status: ready ? 'ready' : 'not ready' });
        return;
      }
      case '/metrics':
        probes.metrics().then(
          ({ contentType, body }) => {
            response.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
            response.end(body);
          },
          () => send(response, 500, { error: 'metrics unavailable' }),
        );
        return;
    }
    send(response, 404, { error: 'not found' });
  });
  server.keepAliveTimeout = 5_000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;

  return {
    server,
    listen(port, host) {
      return new Promise((resolve, reject) => {
        const onError = (error: Error) => reject(new Error(`cannot listen for HTTP on ${host}:${port} (HTTP_HOST, HTTP_PORT): ${error.message}`));
        server.once('error', onError);
        server.listen(port, host, () => {
          server.off('error', onError);
          resolve((server.address() as AddressInfo).port);
        });
      });
    },
    /**
     * Called once the gRPC drain is over, so the probes answered (503) until then. Drops every
     * remaining connection, including one whose request is still arriving: once the listener is
     * closed Node no longer times those out, and one half-sent probe would keep the process alive.
     */
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
