import type { UntypedServiceImplementation } from '@grpc/grpc-js';
import type { CallDependencies } from '../call.js';

/**
 * AuthService handlers: they translate protobuf messages to domain calls and back, nothing more.
 * Methods not returned here answer UNIMPLEMENTED naming the RPC (see implementService).
 */
export function createAuthHandlers(_deps: CallDependencies): UntypedServiceImplementation {
  return {};
}
