import { fileURLToPath } from 'node:url';
import { credentials, loadPackageDefinition, type Client, type Metadata, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { AuthServiceClient } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import { SessionServiceClient } from '../../src/generated/latchkey/session/v1/session_service.js';
import { decodeStatusDetails } from '../../src/grpc/errors.js';

export function authClient(port: number): AuthServiceClient {
  return new AuthServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
}

export function sessionClient(port: number): SessionServiceClient {
  return new SessionServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
}

type Dynamic = Client & Record<string, (...args: unknown[]) => unknown>;

function dynamicClient(protoFile: string, includeDirs: string[], servicePath: string[], port: number): Dynamic {
  const definition = loadPackageDefinition(loadSync(protoFile, { includeDirs, keepCase: true, enums: String, defaults: true }));
  let ctor: unknown = definition;
  for (const part of servicePath) ctor = (ctor as Record<string, unknown>)[part];
  return new (ctor as new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => Dynamic)(
    `127.0.0.1:${port}`,
    credentials.createInsecure(),
  );
}

export function healthClient(port: number): Dynamic {
  return dynamicClient(healthProtoPath, [], ['grpc', 'health', 'v1', 'Health'], port);
}

const REFLECTION_PROTO = fileURLToPath(
  new URL('../../node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto', import.meta.url),
);

export function reflectionClient(port: number): Dynamic {
  return dynamicClient(REFLECTION_PROTO, [], ['grpc', 'reflection', 'v1', 'ServerReflection'], port);
}

/** Calls a unary method and resolves with either the response or the error (never rejects). */
export function call<Req, Res>(
  client: Client,
  method: string,
  request: Req,
  options: { metadata?: Metadata; deadlineMs?: number } = {},
): Promise<{ response?: Res; error?: ServiceError }> {
  return new Promise((resolve) => {
    const fn = (client as unknown as Record<string, (...args: unknown[]) => unknown>)[method];
    if (!fn) throw new Error(`no method ${method}`);
    const args: unknown[] = [request];
    if (options.metadata) args.push(options.metadata);
    args.push({ deadline: Date.now() + (options.deadlineMs ?? 10_000) });
    args.push((error: ServiceError | null, response: Res) => resolve(error ? { error } : { response }));
    fn.apply(client, args);
  });
}

/** The ErrorInfo reason and BadRequest field names carried by an error's status details. */
export function errorDetails(error: Partial<ServiceError> | null | undefined): { reason?: string; domain?: string; fields: string[] } {
  const { errorInfo, badRequest } = decodeStatusDetails(error?.metadata);
  return {
    reason: errorInfo?.reason,
    domain: errorInfo?.domain,
    fields: badRequest?.fieldViolations.map((v) => v.field) ?? [],
  };
}

export async function healthStatus(port: number, service = ''): Promise<string> {
  const client = healthClient(port);
  try {
    const { response, error } = await call<{ service: string }, { status: string }>(client, 'Check', { service }, { deadlineMs: 3_000 });
    if (error) return `error:${error.code}`;
    return response!.status;
  } finally {
    client.close();
  }
}
