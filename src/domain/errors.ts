/**
 * Domain errors: what went wrong, in the business' own terms. Each reason always has the same
 * kind (the contract in proto/latchkey/auth/v1/auth_service.proto lists them), and the transport
 * maps each kind to a status code in exactly one place (src/grpc/errors.ts). Domain code never
 * imports gRPC.
 */
export type ErrorKind =
  | 'invalid_argument'
  | 'unauthenticated'
  | 'permission_denied'
  | 'not_found'
  | 'already_exists'
  | 'failed_precondition'
  | 'out_of_range'
  | 'resource_exhausted'
  | 'unavailable'
  | 'unimplemented'
  | 'internal';

/** Stable, named reasons clients can switch on (google.rpc.ErrorInfo.reason, domain `latchkey`). */
export const REASON_KIND = {
  INVALID_ARGUMENT: 'invalid_argument',
  WEAK_PASSWORD: 'invalid_argument',
  INVALID_CREDENTIALS: 'unauthenticated',
  TOKEN_INVALID: 'unauthenticated',
  TOKEN_EXPIRED: 'unauthenticated',
  TOKEN_STALE: 'unauthenticated',
  SESSION_REVOKED: 'unauthenticated',
  SESSION_EXPIRED: 'unauthenticated',
  REFRESH_TOKEN_REUSED: 'unauthenticated',
  /** Gateway checks only: the request carries no bearer token. */
  TOKEN_MISSING: 'unauthenticated',
  PERMISSION_DENIED: 'permission_denied',
  ACCOUNT_DISABLED: 'permission_denied',
  ACCOUNT_LOCKED: 'permission_denied',
  /** Gateway checks only: the token lacks a role the route requires. */
  ROLE_REQUIRED: 'permission_denied',
  EMAIL_TAKEN: 'already_exists',
  USER_NOT_FOUND: 'not_found',
  SESSION_NOT_FOUND: 'not_found',
  EMAIL_ALREADY_VERIFIED: 'failed_precondition',
  CURSOR_EXPIRED: 'out_of_range',
  RATE_LIMITED: 'resource_exhausted',
  OVERLOADED: 'resource_exhausted',
  UNAVAILABLE: 'unavailable',
  UNIMPLEMENTED: 'unimplemented',
  INTERNAL: 'internal',
} as const satisfies Record<string, ErrorKind>;

export type ErrorReason = keyof typeof REASON_KIND;

export interface FieldViolation {
  /** Path of the offending field in the request, in proto field names (e.g. `client.ip_address`). */
  readonly field: string;
  /** What is wrong, safe to show: never echoes the value. */
  readonly description: string;
}

export class DomainError extends Error {
  readonly kind: ErrorKind;
  /** For RESOURCE_EXHAUSTED and the like: how long the caller should wait before retrying (google.rpc.RetryInfo). */
  retryAfterMs?: number;

  constructor(
    readonly reason: ErrorReason,
    message: string,
    readonly fieldViolations: readonly FieldViolation[] = [],
    readonly metadata: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'DomainError';
    this.kind = REASON_KIND[reason];
  }

  static invalidArgument(violations: readonly FieldViolation[], reason: 'INVALID_ARGUMENT' | 'WEAK_PASSWORD' = 'INVALID_ARGUMENT'): DomainError {
    const fields = violations.map((v) => v.field).join(', ');
    return new DomainError(reason, `invalid request: ${fields}`, violations);
  }

  static unavailable(message = 'the service is temporarily unavailable, retry with backoff'): DomainError {
    return new DomainError('UNAVAILABLE', message);
  }

  /** Refused for capacity before any work was done: safe to retry after `retryAfterMs`. */
  static overloaded(message: string, retryAfterMs: number): DomainError {
    const error = new DomainError('OVERLOADED', message);
    error.retryAfterMs = retryAfterMs;
    return error;
  }

  static rateLimited(message: string, retryAfterMs: number): DomainError {
    const error = new DomainError('RATE_LIMITED', message);
    error.retryAfterMs = retryAfterMs;
    return error;
  }

  /** Sign-in is locked after repeated failures (issue 18); `retryAfterMs` is until the lock lifts. */
  static accountLocked(retryAfterMs: number): DomainError {
    const error = new DomainError('ACCOUNT_LOCKED', 'sign-in to this account is temporarily locked after repeated failures; retry later');
    error.retryAfterMs = Math.max(0, retryAfterMs);
    return error;
  }

  static unimplemented(rpc: string): DomainError {
    return new DomainError('UNIMPLEMENTED', `${rpc} is not implemented yet`);
  }
}
