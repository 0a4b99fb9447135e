import { randomUUID } from 'node:crypto';
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { DomainError, type ErrorKind } from '../domain/errors.js';
import { Any } from '../generated/google/protobuf/any.js';
import { BadRequest, ErrorInfo, RetryInfo } from '../generated/google/rpc/error_details.js';
import { Status } from '../generated/google/rpc/status.js';
import { isDatabaseSlow, isDatabaseUnavailable } from '../persistence/database.js';
import { CallDeadlineError } from '../persistence/call-scope.js';
import type { Logger } from '../observability/logger.js';

export const ERROR_DOMAIN = 'latchkey';
const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
const TYPE_URL_PREFIX = 'type.googleapis.com/';

const CODE_BY_KIND: Record<ErrorKind, status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  unauthenticated: status.UNAUTHENTICATED,
  permission_denied: status.PERMISSION_DENIED,
  not_found: status.NOT_FOUND,
  already_exists: status.ALREADY_EXISTS,
  failed_precondition: status.FAILED_PRECONDITION,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  out_of_range: status.OUT_OF_RANGE,
  unimplemented: status.UNIMPLEMENTED,
  internal: status.INTERNAL,
};

function packAny(typeName: string, value: Uint8Array): Any {
  return { typeUrl: TYPE_URL_PREFIX + typeName, value: Buffer.from(value) };
}

/** Builds the error a handler returns, with google.rpc.Status in the `grpc-status-details-bin` trailer. */
function serviceError(error: DomainError): { error: Partial<ServiceError>; code: status } {
  const code = CODE_BY_KIND[error.kind];
  const details: Any[] = [
    packAny(
      'google.rpc.ErrorInfo',
      ErrorInfo.encode({ reason: error.reason, domain: ERROR_DOMAIN, metadata: { ...error.metadata } }).finish(),
    ),
  ];
  if (error.fieldViolations.length > 0) {
    const fieldViolations = error.fieldViolations.map((v) => ({ field: v.field, description: v.description, reason: '', localizedMessage: undefined }));
    details.push(packAny('google.rpc.BadRequest', BadRequest.encode({ fieldViolations }).finish()));
  }
  if (error.retryAfterMs !== undefined) {
    const ms = Math.max(0, Math.round(error.retryAfterMs));
    const retryDelay = { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
    details.push(packAny('google.rpc.RetryInfo', RetryInfo.encode({ retryDelay }).finish()));
  }
  const metadata = new Metadata();
  metadata.set(STATUS_DETAILS_KEY, Buffer.from(Status.encode({ code, message: error.message, details }).finish()));
  return { error: { code, details: error.message, metadata }, code };
}

export interface MappedError {
  readonly error: Partial<ServiceError>;
  readonly code: status;
  /** Set for unexpected errors: the id that ties the generic message to the logged original. */
  readonly errorId?: string;
  readonly databaseUnavailable: boolean;
  /**
   * The database did not answer within the call's time (a slow or partitioned database, or a full
   * pool): not proof that it is down, but worth an immediate health check.
   */
  readonly databaseSlow?: boolean;
}

/**
 * The one place where anything thrown by a handler becomes a gRPC status. Domain errors keep their
 * kind and reason; a lost database becomes UNAVAILABLE; anything else becomes INTERNAL with a
 * generic message and an id, and the original is logged (never sent: it may hold a stack or a
 * value the caller must not see).
 */
export function toServiceError(error: unknown, logger: Logger, method: string): MappedError {
  if (error instanceof DomainError) {
    return { ...serviceError(error), databaseUnavailable: error.kind === 'unavailable' };
  }
  // The caller cancelled or its deadline passed while the call waited (for a hashing slot, say):
  // nobody will read the answer, and it is not a server fault worth an error log line.
  if (typeof error === 'object' && error !== null && (error as { name?: unknown }).name === 'AbortError') {
    return { error: { code: status.CANCELLED, details: 'the call was cancelled' }, code: status.CANCELLED, databaseUnavailable: false };
  }
  if (error instanceof CallDeadlineError || isDatabaseSlow(error)) {
    return { ...serviceError(DomainError.unavailable('the database did not answer within the call\'s deadline; retry with backoff')), databaseUnavailable: false, databaseSlow: true };
  }
  if (isDatabaseUnavailable(error)) {
    return { ...serviceError(DomainError.unavailable()), databaseUnavailable: true };
  }
  const errorId = randomUUID();
  logger.error({ method, errorId, err: error }, 'unexpected error in handler');
  const internal = new DomainError('INTERNAL', `internal error (reference ${errorId})`, [], { error_id: errorId });
  return { ...serviceError(internal), errorId, databaseUnavailable: false };
}

/** Decodes the rich error details of a status (used by clients and tests). */
export function decodeStatusDetails(metadata: Metadata | undefined): { errorInfo?: ErrorInfo; badRequest?: BadRequest; retryInfo?: RetryInfo } {
  const raw = metadata?.get(STATUS_DETAILS_KEY)[0];
  if (!(raw instanceof Buffer)) return {};
  const decoded = Status.decode(raw);
  const result: { errorInfo?: ErrorInfo; badRequest?: BadRequest; retryInfo?: RetryInfo } = {};
  for (const any of decoded.details) {
    if (any.typeUrl === `${TYPE_URL_PREFIX}google.rpc.ErrorInfo`) result.errorInfo = ErrorInfo.decode(any.value);
    if (any.typeUrl === `${TYPE_URL_PREFIX}google.rpc.BadRequest`) result.badRequest = BadRequest.decode(any.value);
    if (any.typeUrl === `${TYPE_URL_PREFIX}google.rpc.RetryInfo`) result.retryInfo = RetryInfo.decode(any.value);
  }
  return result;
}
