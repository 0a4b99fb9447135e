import http from 'node:http';
import https from 'node:https';
import { credentials, loadPackageDefinition, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';

/**
 * `latchkey healthcheck`: a client for a running server, so a `helm test` pod (or a container
 * health check) needs no image but Latchkey's own. It asks grpc.health.v1.Health/Check on the gRPC
 * address and fetches the JWKS over HTTP, and passes only when the server answers SERVING and the
 * JWKS holds at least one key. It reads no configuration and opens no database.
 */
export interface HealthcheckOptions {
  /** host:port of the gRPC server; undefined skips the gRPC check. */
  readonly grpc?: string;
  /** grpc.health.v1 service name ('' is the whole server). */
  readonly service: string;
  /** URL of the JWKS document; undefined skips the HTTP check. */
  readonly jwks?: string;
  readonly timeoutMs: number;
}

export interface CheckResult {
  readonly check: string;
  readonly ok: boolean;
  readonly detail: string;
}

type HealthClient = Client & {
  Check(request: { service: string }, options: { deadline: number }, callback: (error: ServiceError | null, response?: { status: string }) => void): void;
};

export function checkGrpcHealth(address: string, service: string, timeoutMs: number): Promise<CheckResult> {
  const definition = loadPackageDefinition(loadSync(healthProtoPath, { keepCase: true, enums: String, defaults: true })) as unknown as {
    grpc: { health: { v1: { Health: new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => HealthClient } } };
  };
  const client = new definition.grpc.health.v1.Health(address, credentials.createInsecure());
  const check = `grpc ${address} service '${service}'`;
  return new Promise((resolve) => {
    client.Check({ service }, { deadline: Date.now() + timeoutMs }, (error, response) => {
      client.close();
      if (error) resolve({ check, ok: false, detail: `error ${error.code} (${error.details})` });
      else resolve({ check, ok: response?.status === 'SERVING', detail: response?.status ?? 'no status' });
    });
  });
}

export function checkJwks(url: string, timeoutMs: number): Promise<CheckResult> {
  const check = `jwks ${url}`;
  return new Promise((resolve) => {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      resolve({ check, ok: false, detail: 'not a URL' });
      return;
    }
    const get = parsed.protocol === 'https:' ? https.get : http.get;
    const request = get(parsed, { agent: false, timeout: timeoutMs, headers: { accept: 'application/json' } }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        if (response.statusCode !== 200) {
          resolve({ check, ok: false, detail: `HTTP ${response.statusCode}` });
          return;
        }
        let keys: unknown;
        try {
          keys = (JSON.parse(body) as { keys?: unknown }).keys;
        } catch {
          resolve({ check, ok: false, detail: 'HTTP 200, not JSON' });
          return;
        }
        const count = Array.isArray(keys) ? keys.length : 0;
        resolve({ check, ok: count > 0, detail: `HTTP 200, ${count} key(s)` });
      });
    });
    request.on('timeout', () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    request.on('error', (error) => resolve({ check, ok: false, detail: error.message }));
  });
}

export async function healthcheck(options: HealthcheckOptions): Promise<CheckResult[]> {
  const checks: Promise<CheckResult>[] = [];
  if (options.grpc !== undefined) checks.push(checkGrpcHealth(options.grpc, options.service, options.timeoutMs));
  if (options.jwks !== undefined) checks.push(checkJwks(options.jwks, options.timeoutMs));
  return Promise.all(checks);
}
