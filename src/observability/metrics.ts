import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { REVOCATION_REASONS, type SessionEvents } from '../domain/sessions/revocation.js';

/** Prometheus metrics of one server instance, on a registry of its own (so tests can run several). */
export interface Metrics {
  readonly registry: Registry;
  /** Counts an RPC as started (`grpc_server_started_total`), by its full method path. */
  rpcStarted(method: string, type?: GrpcType): void;
  /**
   * Records one finished RPC: its full method path, gRPC code name as grpc-js spells it
   * (`INVALID_ARGUMENT`), duration, and the ErrorInfo reason of a failure.
   */
  rpcHandled(method: string, code: string, seconds: number, reason?: string, type?: GrpcType): void;
  /** A Login that failed, by its ErrorInfo reason. */
  loginFailed(reason: string): void;
  setDatabaseUp(up: boolean): void;
  /** Records one HTTP forward-auth answer: its status code and duration. */
  forwardAuthHandled(status: number, seconds: number): void;
  /** Exposes the password hasher's load, read at scrape time. */
  observePasswordHashing(load: () => { running: number; queued: number; refused: number }): void;
  /** Exposes the revocation view's state, read at scrape time. */
  observeRevocations(read: () => { lagSeconds: number; size: number; fallbacks: number }): void;
  /** Exposes admission control's state (call-scope.ts), read at scrape time. */
  observeAdmission(load: () => { calls: number; running: number; waiting: number; refused: number; dropped: number }): void;
  /** Session revocations by reason, and refresh-token reuse detections. */
  readonly sessionEvents: SessionEvents;
}

/** go-grpc-prometheus's `grpc_type` values. */
export type GrpcType = 'unary' | 'client_stream' | 'server_stream' | 'bidi_stream';

/**
 * gRPC status codes as Go's codes.Code.String() names them, which is what go-grpc-prometheus puts
 * in `grpc_code` and what stock dashboards and alerts match (`grpc_code=~"Unavailable|Internal"`).
 */
export const GO_CODE_NAMES: Readonly<Record<string, string>> = {
  OK: 'OK',
  CANCELLED: 'Canceled',
  UNKNOWN: 'Unknown',
  INVALID_ARGUMENT: 'InvalidArgument',
  DEADLINE_EXCEEDED: 'DeadlineExceeded',
  NOT_FOUND: 'NotFound',
  ALREADY_EXISTS: 'AlreadyExists',
  PERMISSION_DENIED: 'PermissionDenied',
  RESOURCE_EXHAUSTED: 'ResourceExhausted',
  FAILED_PRECONDITION: 'FailedPrecondition',
  ABORTED: 'Aborted',
  OUT_OF_RANGE: 'OutOfRange',
  UNIMPLEMENTED: 'Unimplemented',
  INTERNAL: 'Internal',
  UNAVAILABLE: 'Unavailable',
  DATA_LOSS: 'DataLoss',
  UNAUTHENTICATED: 'Unauthenticated',
};

const methodLabelCache = new Map<string, { service: string; name: string }>();

/** `/latchkey.auth.v1.AuthService/Login` to its service and method, once per path. */
function methodLabels(path: string): { service: string; name: string } {
  let labels = methodLabelCache.get(path);
  if (!labels) {
    const slash = path.lastIndexOf('/');
    labels = { service: path.slice(path.startsWith('/') ? 1 : 0, slash), name: path.slice(slash + 1) };
    // Paths come from the registered services only, so the cache is bounded by them.
    methodLabelCache.set(path, labels);
  }
  return labels;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'latchkey_' });
  // RPC metrics in go-grpc-prometheus's shape (what the stock Grafana gRPC dashboards and most
  // alert libraries query): the service and method apart, the type, and the code as Go names it.
  const started = new Counter({
    name: 'grpc_server_started_total',
    help: 'RPCs started on the server.',
    labelNames: ['grpc_type', 'grpc_service', 'grpc_method'] as const,
    registers: [registry],
  });
  const handled = new Counter({
    name: 'grpc_server_handled_total',
    help: 'RPCs completed on the server, regardless of success or failure, by gRPC status code.',
    labelNames: ['grpc_type', 'grpc_service', 'grpc_method', 'grpc_code'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'grpc_server_handling_seconds',
    help: 'Time from receiving an RPC to sending its status (a stream: to its end).',
    labelNames: ['grpc_type', 'grpc_service', 'grpc_method'] as const,
    // From token validation (sub-millisecond) to password hashing (hundreds of milliseconds).
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  /**
   * Each method's series, looked up once: prom-client hashes the label values on every call made
   * with labels, which costs more than the rest of a ValidateToken's bookkeeping. Bounded by the
   * registered methods (and, per method, by the status codes). Nothing resets these metrics, so
   * the children stay attached.
   */
  type Labels = { grpc_type: GrpcType; grpc_service: string; grpc_method: string };
  const series = new Map<string, { labels: Labels; started: { inc(): void }; duration: { observe(seconds: number): void }; handled: Map<string, { inc(): void }> }>();
  const seriesOf = (method: string, type: GrpcType) => {
    const key = `${type} ${method}`;
    let found = series.get(key);
    if (!found) {
      const { service, name } = methodLabels(method);
      const labels: Labels = { grpc_type: type, grpc_service: service, grpc_method: name };
      found = { labels, started: started.labels(labels), duration: duration.labels(labels), handled: new Map() };
      series.set(key, found);
    }
    return found;
  };
  // grpc_code alone loses why a call failed (UNAUTHENTICATED: a bad password or a disabled account?).
  const failedByReason = new Counter({
    name: 'latchkey_grpc_server_errors_total',
    help: 'RPCs that failed with an ErrorInfo reason, by method, gRPC status code and reason (INVALID_CREDENTIALS, TOKEN_EXPIRED, OVERLOADED, …).',
    labelNames: ['grpc_service', 'grpc_method', 'grpc_code', 'reason'] as const,
    registers: [registry],
  });
  const loginFailures = new Counter({
    name: 'latchkey_login_failures_total',
    help: 'Failed logins by reason (INVALID_CREDENTIALS, ACCOUNT_DISABLED, ACCOUNT_LOCKED, RATE_LIMITED).',
    labelNames: ['reason'],
    registers: [registry],
  });
  for (const reason of ['INVALID_CREDENTIALS', 'ACCOUNT_DISABLED', 'ACCOUNT_LOCKED', 'RATE_LIMITED']) loginFailures.inc({ reason }, 0);
  const databaseUp = new Gauge({
    name: 'latchkey_database_up',
    help: '1 while the database answers health pings, 0 while it is unreachable.',
    registers: [registry],
  });
  databaseUp.set(1);
  const revoked = new Counter({
    name: 'latchkey_sessions_revoked_total',
    help: 'Sessions ended by revocation, by reason (LOGOUT, REFRESH_TOKEN_REUSED, SESSION_LIMIT, USER_DISABLED, …).',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  // Every reason is exported from the start, so a rate() over it never starts from a missing series.
  for (const reason of REVOCATION_REASONS) revoked.inc({ reason }, 0);
  const reuse = new Counter({
    name: 'latchkey_refresh_token_reuse_detected_total',
    help: 'Rotated-out refresh tokens presented again outside the grace window: a sign of token theft worth alerting on.',
    registers: [registry],
  });
  const forwardAuth = new Counter({
    name: 'latchkey_http_forward_auth_total',
    help: 'HTTP forward-auth checks answered, by status code (200 allowed, 401/403 denied, 503 undecided: the database was needed and unreachable).',
    labelNames: ['code'] as const,
    registers: [registry],
  });
  const forwardAuthDuration = new Histogram({
    name: 'latchkey_http_forward_auth_seconds',
    help: 'Time to answer an HTTP forward-auth check.',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [registry],
  });
  return {
    registry,
    forwardAuthHandled(status, seconds) {
      forwardAuth.inc({ code: String(status) });
      forwardAuthDuration.observe(seconds);
    },
    rpcStarted(method, type = 'unary') {
      seriesOf(method, type).started.inc();
    },
    rpcHandled(method, code, seconds, reason, type = 'unary') {
      const rpc = seriesOf(method, type);
      let byCode = rpc.handled.get(code);
      if (!byCode) {
        byCode = handled.labels({ ...rpc.labels, grpc_code: GO_CODE_NAMES[code] ?? code });
        rpc.handled.set(code, byCode);
      }
      byCode.inc();
      rpc.duration.observe(seconds);
      if (reason !== undefined) {
        failedByReason.inc({ grpc_service: rpc.labels.grpc_service, grpc_method: rpc.labels.grpc_method, grpc_code: GO_CODE_NAMES[code] ?? code, reason });
      }
    },
    loginFailed(reason) {
      loginFailures.inc({ reason });
    },
    sessionEvents: {
      revoked(reason, count) {
        if (count > 0) revoked.inc({ reason }, count);
      },
      reuseDetected() {
        reuse.inc();
      },
    },
    setDatabaseUp(up) {
      databaseUp.set(up ? 1 : 0);
    },
    observeRevocations(read) {
      new Gauge({
        name: 'latchkey_revocation_view_lag_seconds',
        help: 'Seconds since the revocation view last read the feed successfully. Beyond REVOCATION_MAX_STALENESS, check_revocation reads the database.',
        registers: [registry],
        collect() {
          const lag = read().lagSeconds;
          this.set(Number.isFinite(lag) ? lag : -1);
        },
      });
      new Gauge({
        name: 'latchkey_revocation_view_entries',
        help: 'Revoked sessions and users with removed roles the view holds (those within the access-token lifetime plus skew).',
        registers: [registry],
        collect() {
          this.set(read().size);
        },
      });
      new Counter({
        name: 'latchkey_revocation_view_fallbacks_total',
        help: 'check_revocation calls answered from the database because the view was not fresh enough.',
        registers: [registry],
        collect() {
          this.reset();
          this.inc(read().fallbacks);
        },
      });
    },
    observeAdmission(load) {
      new Gauge({
        name: 'latchkey_calls_in_flight',
        help: 'Calls needing the database or a password hash admitted now; beyond MAX_CALLS_IN_FLIGHT they are refused (OVERLOADED).',
        registers: [registry],
        collect() {
          this.set(load().calls);
        },
      });
      new Gauge({
        name: 'latchkey_database_pool_in_use',
        help: 'Statements holding a request-pool connection now (at most DATABASE_POOL_MAX).',
        registers: [registry],
        collect() {
          this.set(load().running);
        },
      });
      new Gauge({
        name: 'latchkey_database_pool_waiting',
        help: 'Statements of admitted calls waiting for a request-pool connection now. Saturation, never a reason to report not-ready.',
        registers: [registry],
        collect() {
          this.set(load().waiting);
        },
      });
      // The gate keeps running totals; these counters show them as they are at scrape time.
      new Counter({
        name: 'latchkey_admission_refused_total',
        help: 'Calls refused at admission with RESOURCE_EXHAUSTED (OVERLOADED) because MAX_CALLS_IN_FLIGHT calls were in flight.',
        registers: [registry],
        collect() {
          this.reset();
          this.inc(load().refused);
        },
      });
      new Counter({
        name: 'latchkey_database_deadline_dropped_total',
        help: 'Statements dropped because their call ran out of time before they could be sent (waiting for a connection, or past the deadline): they never reached the database.',
        registers: [registry],
        collect() {
          this.reset();
          this.inc(load().dropped);
        },
      });
    },
    observePasswordHashing(load) {
      new Gauge({
        name: 'latchkey_password_hashes_running',
        help: 'Password hashes (bcrypt) being computed on the thread pool now.',
        registers: [registry],
        collect() {
          this.set(load().running);
        },
      });
      new Gauge({
        name: 'latchkey_password_hashes_queued',
        help: 'Password hashes waiting for a slot; beyond PASSWORD_HASH_QUEUE_LIMIT, Register and Login answer RATE_LIMITED.',
        registers: [registry],
        collect() {
          this.set(load().queued);
        },
      });
      new Counter({
        name: 'latchkey_password_hashes_refused_total',
        help: 'Password hashes refused a place in the queue (RESOURCE_EXHAUSTED): the queue (PASSWORD_HASH_QUEUE_LIMIT) or one source\'s share of it (PASSWORD_HASH_QUEUE_PER_SOURCE) was full. Not the per-source RATE_LIMIT_* buckets.',
        registers: [registry],
        collect() {
          this.reset();
          this.inc(load().refused);
        },
      });
    },
  };
}
