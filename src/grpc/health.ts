import type { sendUnaryData, Server, ServerUnaryCall, ServerWritableStream, ServiceError, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { HealthImplementation } from 'grpc-health-check';
import { DomainError } from '../domain/errors.js';
import { MALFORMED_REQUEST, withCallCodecs, type CallDependencies } from './call.js';
import { toServiceError } from './errors.js';
import type { OpenStreams } from './stream.js';

/** What grpc-health-check hands to `addService`: the proto-loader definition and its handlers. */
type HealthTarget = Parameters<HealthImplementation['addToServer']>[0];
type HealthDefinition = Parameters<HealthTarget['addService']>[0];

/**
 * Adds grpc.health.v1.Health to the server, answered by grpc-health-check's implementation and
 * status map (so setStatus, Watch and List behave as the package documents), except that request
 * bytes that are not a valid message are INVALID_ARGUMENT, as on every Latchkey RPC. grpc-js
 * would answer them INTERNAL with the parser's text, which reads as a server fault to a prober.
 */
export function addHealthService(
  server: Server,
  health: HealthImplementation,
  deps: Pick<CallDependencies, 'logger'> & { readonly streams?: OpenStreams },
): void {
  health.addToServer({
    addService(definition: HealthDefinition, implementation) {
      server.addService(withCallCodecs(definition), refusingMalformed(definition, implementation as UntypedServiceImplementation, deps));
    },
  });
}

function refusingMalformed(
  definition: HealthDefinition,
  implementation: UntypedServiceImplementation,
  deps: Pick<CallDependencies, 'logger'> & { readonly streams?: OpenStreams },
): UntypedServiceImplementation {
  const wrapped: UntypedServiceImplementation = { ...implementation };
  for (const [key, method] of Object.entries(definition)) {
    // grpc-js finds a handler by the definition's key ('Check') or its `originalName` ('check',
    // which the package uses).
    const name = key in implementation ? key : (method.originalName ?? key);
    const handler = implementation[name];
    if (!handler || method.requestStream) continue;
    const malformed = () =>
      toServiceError(new DomainError('INVALID_ARGUMENT', `the request is not a valid protobuf message for ${method.path}`), deps.logger, method.path).error;
    if (method.responseStream) {
      const watch = handler as (call: ServerWritableStream<unknown, unknown>) => void;
      wrapped[name] = (call: ServerWritableStream<unknown, unknown>) => {
        if (call.request === MALFORMED_REQUEST) return void call.emit('error', malformed());
        deps.streams?.track(call, (error) => endWatch(call, toServiceError(error, deps.logger, method.path).error));
        watch(call);
      };
    } else {
      const check = handler as (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => void;
      wrapped[name] = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) =>
        call.request === MALFORMED_REQUEST ? callback(malformed(), null) : check(call, callback);
    }
  }
  return wrapped;
}

/**
 * Ends a health Watch with `error` (UNAVAILABLE at shutdown: the package's Watch never ends by
 * itself). The package keeps writing status changes to its watchers until their 'cancelled'
 * event; a write after the end would make Node destroy the stream before its status is sent, so
 * writes from here on are dropped.
 */
function endWatch(call: ServerWritableStream<unknown, unknown>, error: Partial<ServiceError>): void {
  if (call.writableEnded) return;
  call.write = () => true;
  call.emit('error', error);
}
