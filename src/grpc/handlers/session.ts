import type { UntypedServiceImplementation } from '@grpc/grpc-js';
import type { CallerAuthenticator } from '../../domain/callers.js';
import type { SessionService } from '../../domain/sessions/session-service.js';
import type { CallDependencies } from '../call.js';

/**
 * SessionService handlers: they translate protobuf messages to domain calls and back, nothing more.
 * Methods not returned here answer UNIMPLEMENTED naming the RPC (see implementService).
 */
export function createSessionHandlers(
  _deps: CallDependencies,
  _services: { sessions: SessionService; callers: CallerAuthenticator },
): UntypedServiceImplementation {
  return {};
}
