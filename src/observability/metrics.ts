import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { REVOCATION_REASONS, type SessionEvents } from '../domain/sessions/revocation.js';

/** Prometheus metrics of one server instance, on a registry of its own (so tests can run several). */
export interface Metrics {
  readonly registry: Registry;
  /** Records one finished RPC: its full method path, gRPC code name and duration. */
  rpcHandled(method: string, code: string, seconds: number): void;
  setDatabaseUp(up: boolean): void;
  /** Records one HTTP forward-auth answer: its status code and duration. */
  forwardAuthHandled(status: number, seconds: number): void;
  /** Exposes the password hasher's load, read at scrape time. */
  observePasswordHashing(load: () => { running: number; queued: number }): void;
  /** Exposes the revocation view's state, read at scrape time. */
  observeRevocations(read: () => { lagSeconds: number; size: number; fallbacks: number }): void;
  /** Exposes admission control's state (call-scope.ts), read at scrape time. */
  observeAdmission(load: () => { calls: number; running: number; waiting: number; refused: number; dropped: number }): void;
  /** Session revocations by reason, and refresh-token reuse detections. */
  readonly sessionEvents: SessionEvents;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'latchkey_' });
  const handled = new Counter({
    name: 'latchkey_grpc_server_handled_total',
    help: 'RPCs completed on the server, by method and gRPC status code.',
    labelNames: ['method', 'code'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'latchkey_grpc_server_handling_seconds',
    help: 'Time from receiving an RPC to sending its status, by method.',
    labelNames: ['method'] as const,
    // From token validation (sub-millisecond) to password hashing (hundreds of milliseconds).
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
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
    rpcHandled(method, code, seconds) {
      handled.inc({ method, code });
      duration.observe({ method }, seconds);
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
    },
  };
}
