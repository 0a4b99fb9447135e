import { status, type Metadata, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { performance } from 'node:perf_hooks';
import { DomainError } from '../domain/errors.js';
import { deadlineMarginMs, type DatabaseGate } from '../persistence/call-scope.js';
import type { DatabaseMonitor } from '../persistence/database.js';
import type { Logger } from '../observability/logger.js';
import type { GrpcType, Metrics } from '../observability/metrics.js';
import { traceHooks } from '../observability/trace-hooks.js';
import { toServiceError } from './errors.js';

/** What a handler may know about the call, without touching grpc-js types beyond metadata. */
export interface CallContext {
  readonly method: string;
  readonly metadata: Metadata;
  readonly peer: string;
  /** The peer's address without its port (`::ffff:` prefixes removed): the call's source by default. */
  readonly peerAddress: string;
  /** Aborted when the client cancels or the deadline passes. */
  readonly signal: AbortSignal;
}

export interface CallDependencies {
  readonly logger: Logger;
  readonly database: Pick<DatabaseMonitor, 'available' | 'reportFailure' | 'check'>;
  /** Optional members: test doubles may leave them out. */
  readonly metrics: Pick<Metrics, 'rpcHandled'> & Partial<Pick<Metrics, 'rpcStarted' | 'loginFailed'>>;
  /** Admission and deadlines for calls that need the database or a hash (call-scope.ts). */
  readonly gate: Pick<DatabaseGate, 'admit'>;
}

export interface HandlerOptions<Req = unknown, Res = unknown> {
  /**
   * Whether the RPC needs the database (or, per request, whether this request does). Such calls
   * fail fast with UNAVAILABLE while the database is known to be down, instead of queueing on a
   * dead pool until the deadline.
   */
  readonly usesDatabase: boolean | ((request: Req) => boolean);
  /**
   * The level of the log line for a call that succeeded (failures are always `info`). The RPCs a
   * mesh calls on every request (token validation, JWKS) log successes at `debug`: at thousands of
   * calls a second a line each would cost more than the call, and the metrics count them anyway.
   */
  readonly successLogLevel?: 'info' | 'debug';
  /**
   * For an RPC whose refusals are answers, not errors (ext_authz Check carries its decision in the
   * response): turns what the call failed with (a domain error, or anything mapped to `code`) into
   * the response sent with status OK. The log line and metrics keep the failure's code and reason.
   * Undefined leaves the failure a gRPC error.
   */
  readonly answerFailure?: (error: unknown, code: status) => Res | undefined;
}

/** Stands in for a request whose bytes are not a valid message of the RPC's request type. */
export const MALFORMED_REQUEST = Symbol('malformed request');

interface MethodDefinitionLike {
  readonly path: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  readonly requestDeserialize: (bytes: Buffer) => unknown;
  readonly responseSerialize: (value: never) => Buffer;
}

/**
 * A response already encoded as its message type's bytes: a handler whose answer is the same for
 * many calls (a remembered token's claims) encodes it once and returns this on every call.
 */
export class EncodedResponse {
  constructor(readonly bytes: Buffer) {}
}

/**
 * grpc-js answers an undecodable request with INTERNAL and the parser's own message. Decoding
 * failures are the caller's fault, so they are turned into a marker that `unary` rejects with
 * INVALID_ARGUMENT through the usual error mapping. Responses may also be given pre-encoded
 * (EncodedResponse), and are then sent as they are.
 */
export function withCallCodecs<D extends Record<string, MethodDefinitionLike>>(definition: D): D {
  const wrapped: Record<string, MethodDefinitionLike> = {};
  for (const [name, method] of Object.entries(definition)) {
    const serialize = method.responseSerialize as (value: unknown) => Buffer;
    wrapped[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return method.requestDeserialize(bytes);
        } catch {
          return MALFORMED_REQUEST;
        }
      },
      responseSerialize: ((value: unknown) => (value instanceof EncodedResponse ? value.bytes : serialize(value))) as MethodDefinitionLike['responseSerialize'],
    };
  }
  return wrapped as D;
}

const MAX_REQUEST_ID_LENGTH = 128;

/**
 * The caller's correlation id (`x-request-id`, as Envoy and most gateways set it), so a log line
 * can be matched with the mesh's access logs. It is caller-controlled text going into our logs:
 * bounded in length and kept to printable ASCII here, whatever the transport already filtered.
 */
function requestIdOf(metadata: Metadata): string | undefined {
  const value = metadata.get('x-request-id')[0];
  if (typeof value !== 'string' || value.length === 0) return undefined;
  return value.slice(0, MAX_REQUEST_ID_LENGTH).replace(/[^\x20-\x7e]/g, '?');
}

export function codeName(code: status): string {
  return status[code] ?? String(code);
}

/**
 * The handler's view of the call. `peer` and `signal` are built only when a handler asks for them:
 * this runs on every call, including the token-validation path, which needs neither.
 */
export function contextOf(method: string, call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>): CallContext {
  let controller: AbortController | undefined;
  return {
    method,
    metadata: call.metadata,
    get peer() {
      return call.getPeer();
    },
    get peerAddress() {
      return addressOf(call.getPeer());
    },
    get signal() {
      if (!controller) {
        const created = new AbortController();
        if (call.cancelled) created.abort();
        else call.once('cancelled', () => created.abort());
        controller = created;
      }
      return controller.signal;
    },
  };
}

/** `1.2.3.4:5678`, `[::1]:5678` or `::ffff:1.2.3.4` to the bare address. */
export function addressOf(peer: string): string {
  let address = peer;
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(address);
  if (bracketed) address = bracketed[1]!;
  else if (/^[^:]+:\d+$/.test(address)) address = address.slice(0, address.lastIndexOf(':'));
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

/**
 * Until when the call's database work may run: its gRPC deadline less a margin, so that the
 * UNAVAILABLE for work that ran out of time reaches the caller before the deadline does.
 * Infinity for a call without a deadline (the statement timeout still bounds each statement).
 */
function databaseDeadlineOf(call: ServerUnaryCall<unknown, unknown>): number {
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  if (!Number.isFinite(at)) return Number.POSITIVE_INFINITY;
  return at - deadlineMarginMs(at - Date.now());
}

/** Records one finished call: a metrics sample and one JSON log line (never the payload). */
export function recordCall(
  deps: CallDependencies,
  method: string,
  metadata: Metadata,
  code: string,
  ms: number,
  details?: { reason?: string; errorId?: string; messages?: number },
  level: 'info' | 'debug' = 'info',
  type: GrpcType = 'unary',
): void {
  deps.metrics.rpcHandled(method, code, ms / 1000, details?.reason, type);
  if (level === 'debug' && !deps.logger.isLevelEnabled('debug')) return;
  deps.logger[level]({ method, code, ...details, durationMs: Math.round(ms * 100) / 100, requestId: requestIdOf(metadata) }, 'rpc');
}

/**
 * Wraps a unary handler: one JSON log line per call (method, code, duration; never a payload),
 * the fail-fast database check, and error mapping through the single mapper in errors.ts.
 */
export function unary<Req, Res>(
  deps: CallDependencies,
  method: string,
  options: HandlerOptions<Req, Res>,
  handler: (request: Req, context: CallContext) => Promise<Res>,
): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
  const successLevel = options.successLogLevel ?? 'info';
  const annotate = traceHooks()?.annotateCall;
  return (call, callback) => {
    const started = performance.now();
    deps.metrics.rpcStarted?.(method);
    const context = contextOf(method, call as ServerUnaryCall<unknown, unknown>);
    // Refusals for capacity log at debug: under a flood they come by the thousand a second, a line
    // each would cost more than the refusal, and the metrics count every one.
    const finish = (code: string, details?: { reason?: string; errorId?: string }) =>
      recordCall(deps, method, call.metadata, code, performance.now() - started, details, code === 'OK' ? successLevel : code === 'RESOURCE_EXHAUSTED' ? 'debug' : 'info');
    let usesDatabase = false;
    const run = async (): Promise<Res> => {
      if ((call.request as unknown) === MALFORMED_REQUEST) {
        throw new DomainError('INVALID_ARGUMENT', `the request is not a valid protobuf message for ${method}`);
      }
      usesDatabase = typeof options.usesDatabase === 'function' ? options.usesDatabase(call.request) : options.usesDatabase;
      if (!usesDatabase) return handler(call.request, context);
      if (!deps.database.available) throw DomainError.unavailable();
      // Admitted or refused here, before the handler forks an EntityManager or sends anything.
      return deps.gate.admit(databaseDeadlineOf(call as ServerUnaryCall<unknown, unknown>), () => handler(call.request, context));
    };
    run().then(
      (response) => {
        annotate?.('OK', undefined);
        callback(null, response);
        finish('OK');
      },
      (error: unknown) => {
        const mapped = toServiceError(error, deps.logger, method);
        if (mapped.databaseUnavailable && usesDatabase) deps.database.reportFailure(error);
        else if (mapped.databaseSlow) void deps.database.check();
        const code = codeName(mapped.code);
        const reason = error instanceof DomainError ? error.reason : undefined;
        // On the RPC's span before the callback: grpc-js's instrumentation ends it with the status.
        annotate?.(code, reason);
        // A Check (ext_authz) answers every failure as a CheckResponse carrying that status.
        const answer = options.answerFailure?.(error, mapped.code);
        if (answer !== undefined) callback(null, answer);
        else callback(mapped.error, null);
        finish(code, { reason, errorId: mapped.errorId });
      },
    );
  };
}

/**
 * Implements every method of a service definition: the ones in `implemented` as given, the rest
 * as UNIMPLEMENTED with a message naming the RPC (through the same logging and error mapping).
 */
export function implementService(
  deps: CallDependencies,
  definition: Record<string, MethodDefinitionLike>,
  implemented: UntypedServiceImplementation,
): UntypedServiceImplementation {
  const implementation: UntypedServiceImplementation = {};
  for (const [name, method] of Object.entries(definition)) {
    const rpc = method.path.slice(1).replace('/', '.');
    const given = implemented[name];
    if (given) {
      implementation[name] = given;
    } else if (method.responseStream && !method.requestStream) {
      implementation[name] = (call: ServerWritableStream<unknown, unknown>) => {
        const error = DomainError.unimplemented(rpc);
        const mapped = toServiceError(error, deps.logger, method.path);
        deps.metrics.rpcStarted?.(method.path, 'server_stream');
        call.emit('error', mapped.error);
        recordCall(deps, method.path, call.metadata, codeName(mapped.code), 0, { reason: error.reason }, 'info', 'server_stream');
      };
    } else {
      implementation[name] = unary(deps, method.path, { usesDatabase: false }, async () => {
        throw DomainError.unimplemented(rpc);
      });
    }
  }
  return implementation;
}

