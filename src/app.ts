import { revocationRelevanceMs, type Config } from './config/schema.js';
import { AccountService } from './domain/accounts/account-service.js';
import { AuthService } from './domain/auth/auth-service.js';
import { CallerAuthenticator, ServiceApiKeys } from './domain/callers.js';
import { systemClock, type Clock } from './domain/clock.js';
import { resolveKeyEncryptionKeys } from './domain/keys/key-encryption-key.js';
import { loadRefreshSecretDeriver } from './domain/keys/key-admin.js';
import { KeyRingFollower, observeSigningKeys, SIGNING_KEYS_CHANNEL } from './domain/keys/key-follower.js';
import { KeyRing } from './domain/keys/key-ring.js';
import { PasswordHasher } from './domain/passwords/hasher.js';
import { loadCommonPasswords } from './domain/passwords/policy.js';
import { AccountLockout } from './domain/auth/lockout.js';
import { SourceLimits, TrustedProxies } from './domain/rate-limit.js';
import { outsideCall } from './persistence/call-scope.js';
import { users } from './persistence/repositories/users.js';
import { AccessTokens } from './domain/tokens/access-tokens.js';
import { SessionService } from './domain/sessions/session-service.js';
import { createGrpcServer } from './grpc/server.js';
import { createHttpServer } from './http/server.js';
import { createForwardAuth, openidConfiguration } from './http/forward-auth.js';
import { GatewayCheck } from './domain/gateway/gateway-check.js';
import { SIGNING_ALGORITHM } from './domain/keys/key-ring.js';
import type { Logger } from './observability/logger.js';
import { createMetrics } from './observability/metrics.js';
import { DatabaseGate } from './persistence/call-scope.js';
import { listeningConnection, ormFeedDb, polledConnection, PostgresRevocationFeed, RevocationFollower } from './persistence/revocation-feed.js';
import { RevocationView } from './domain/revocations/view.js';
import type { SessionEvents } from './domain/sessions/revocation.js';
import { DatabaseMonitor, DedicatedProbe, PoolProbe } from './persistence/database.js';
import { openDatabase } from './persistence/open.js';
import { lowerThreadPoolPriority, THREAD_POOL_NICE } from './runtime/thread-pool.js';
import { createSweepMetrics, createSweepScheduler } from './scheduler/index.js';

/** How often the dummy hashes' cost proportions are read again from the stored hashes. */
const COST_PROFILE_REFRESH_MS = 10 * 60_000;

export interface RunningApp {
  readonly grpcPort: number;
  readonly httpPort: number;
  /** Health and readiness go NOT_SERVING, new calls are refused, in-flight calls finish (bounded), then everything closes. */
  stop(): Promise<{ forced: boolean }>;
}

/**
 * The composition root: config → database → signing keys, password hasher → domain services →
 * gRPC handlers and HTTP endpoints. Plain functions taking their dependencies, so tests wire the same pieces.
 * `signal` abandons start-up (SIGTERM while waiting for the database); it rejects with an AbortError.
 */
export interface AppOverrides {
  /** Replaces the system clock, so tests can move time instead of sleeping. */
  readonly clock?: Clock;
}

export async function startApp(config: Config, logger: Logger, signal?: AbortSignal, overrides: AppOverrides = {}): Promise<RunningApp> {
  const clock = overrides.clock ?? systemClock;
  // Loaded before serving, so the first Register does not pay for it.
  loadCommonPasswords();
  const keyEncryptionKeys = await resolveKeyEncryptionKeys(config, logger);
  const database = await openDatabase(config, logger, {
    migrate: config.DATABASE_MIGRATE_ON_START ? 'apply' : 'require-current',
    signal,
  });

  const metrics = createMetrics();
  // The revocation view, loaded and kept current by the follower (started below, before serving).
  const relevanceMs = revocationRelevanceMs(config);
  let follower: RevocationFollower | undefined = undefined;
  const view = new RevocationView({
    relevanceMs,
    maxStalenessMs: config.REVOCATION_MAX_STALENESS,
    lastReadAt: () => follower?.lastReadAt,
    // Not trusted while the database is known to be unreachable either: on the embedded database
    // the follower reads through the request pool, whose loss it would only notice at its next read.
    connected: () => (follower?.connected ?? false) && monitor.available,
  });
  // Revocations made here are refused here at once: the view defers to the database until the
  // follower has read past them (a read it is asked for now).
  const sessionEvents: SessionEvents = {
    revoked(reason, count) {
      metrics.sessionEvents.revoked(reason, count);
      if (count > 0) {
        view.noteLocalRevocation();
        void follower?.refresh().catch(() => undefined);
      }
    },
    reuseDetected: () => metrics.sessionEvents.reuseDetected(),
    rolesChanged() {
      view.noteLocalRevocation();
      void follower?.refresh().catch(() => undefined);
    },
  };
  let auth: AuthService;
  let accounts: AccountService;
  let sessionService: SessionService;
  let callers: CallerAuthenticator;
  let keys: KeyRing;
  let hasher: PasswordHasher;
  try {
    // The refresh-secret derivation key first (on an upgraded database it must be stored before
    // this release creates anything), then the signing keys (the first pair created): a wrong
    // key-encryption key list fails start-up here, loudly, naming key ids, instead of failing every login.
    const refreshSecrets = await loadRefreshSecretDeriver(database.orm.em.fork(), keyEncryptionKeys);
    keys = await KeyRing.load(database.orm.em.fork(), keyEncryptionKeys, clock);
    // Made once at start-up: the dummy hashes compared against for unknown emails, one for each
    // cost the stored hashes have, in their proportions (DummyHashes; kept current below).
    const storedCosts = await outsideCall(() => users.hashCosts(database.orm.em.fork()));
    hasher = await PasswordHasher.create(
      {
        cost: config.BCRYPT_COST,
        concurrency: config.PASSWORD_HASH_CONCURRENCY,
        queueLimit: config.PASSWORD_HASH_QUEUE_LIMIT,
        queuePerSource: config.PASSWORD_HASH_QUEUE_PER_SOURCE,
        retryAfterMs: config.OVERLOAD_RETRY_AFTER,
      },
      storedCosts,
    );
    logger.debug({ costs: hasher.dummies.costs }, 'dummy password hashes follow the stored hashes\' costs');
    // Per-account throttling: its key is derived from the stored refresh-secret key, which a
    // key-encryption key change re-encrypts but never replaces, so lock state survives one.
    const lockout = new AccountLockout(
      AccountLockout.keyFrom(refreshSecrets.material),
      {
        threshold: config.LOGIN_LOCKOUT_THRESHOLD,
        windowMs: config.LOGIN_LOCKOUT_WINDOW,
        durationMs: config.LOGIN_LOCKOUT_DURATION,
        maxDurationMs: config.LOGIN_LOCKOUT_MAX_DURATION,
      },
      logger.child({ component: 'lockout' }),
    );
    metrics.observePasswordHashing(() => hasher.load);
    // The dummy hash above started libuv's pool; from here on its threads yield to the event loop.
    const pool = lowerThreadPoolPriority();
    if (pool.lowered > 0) logger.debug({ threads: pool.lowered, nice: THREAD_POOL_NICE }, 'password hashing runs below the event loop priority');
    else if (process.platform === 'linux') logger.warn({ threads: pool.threads, error: pool.error }, 'could not lower the priority of the password hashing threads');
    auth = new AuthService({
      orm: database.orm,
      hasher,
      keys,
      accessTokens: new AccessTokens(keys, { issuer: config.JWT_ISSUER, audience: config.JWT_AUDIENCE, ttlMs: config.ACCESS_TOKEN_TTL, cacheSize: config.ACCESS_TOKEN_CACHE_SIZE }, clock),
      refreshSecrets: refreshSecrets.deriver,
      sessionPolicy: {
        idleTimeoutMs: config.SESSION_IDLE_TIMEOUT,
        maxLifetimeMs: config.SESSION_MAX_LIFETIME,
        reuseGraceMs: config.REFRESH_REUSE_GRACE,
        maxSessionsPerUser: config.MAX_SESSIONS_PER_USER,
      },
      clock,
      logger: logger.child({ component: 'auth' }),
      events: sessionEvents,
      revocations: view,
      lockout,
    });
    accounts = new AccountService({
      orm: database.orm,
      hasher,
      passwordReset: { url: config.PASSWORD_RESET_URL, ttlMs: config.PASSWORD_RESET_TTL },
      emailVerification: { url: config.EMAIL_VERIFICATION_URL, ttlMs: config.EMAIL_VERIFICATION_TTL },
      clock,
      logger: logger.child({ component: 'accounts' }),
      events: sessionEvents,
      lockout,
    });
    sessionService = new SessionService({
      orm: database.orm,
      clock,
      logger: logger.child({ component: 'sessions' }),
      events: sessionEvents,
    });
    const verifier = auth;
    callers = new CallerAuthenticator(new ServiceApiKeys(config.SERVICE_API_KEYS ?? []), (token) => verifier.authenticateBearer(token));
    logger.info({ kid: keys.signing.kid, publishedKeys: keys.keyIds.length }, 'signing keys loaded');
  } catch (error) {
    await database.close();
    throw error;
  }

  // Readiness has a connection of its own, so a saturated request pool never reads as "down";
  // on a single-connection database (the embedded PGlite) it shares that connection.
  const probe = database.url && database.poolMax > 1 ? new DedicatedProbe(database.url) : new PoolProbe(database.orm);
  // The monitor asks the gate whether the pool is busy, and the gate asks the monitor for the
  // database clock's offset: declared first, assigned below.
  let gate: DatabaseGate;
  const monitor = new DatabaseMonitor(probe, {
    intervalMs: config.DATABASE_HEALTH_INTERVAL,
    pingTimeoutMs: config.DATABASE_HEALTH_TIMEOUT,
    logger: logger.child({ component: 'database' }),
    poolBusy: () => gate.load.running > 0,
  });
  gate = new DatabaseGate({
    maxCalls: config.MAX_CALLS_IN_FLIGHT,
    statementSlots: database.poolMax,
    statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT,
    retryAfterMs: config.OVERLOAD_RETRY_AFTER,
    clockOffset: () => monitor.clockOffset,
  });
  metrics.observeAdmission(() => gate.load);

  // The feed is followed on a connection of its own (LISTEN/NOTIFY), outside the request pool; on
  // a single-connection database (the embedded PGlite) by polling through that connection.
  const dedicated = database.url && database.poolMax > 1 ? database.url : undefined;
  const feedLogger = logger.child({ component: 'revocations' });
  // Every replica's key ring follows `signing_keys`: a NOTIFY on the revocation follower's own
  // LISTEN connection reloads it at once, a periodic reload is the safety net; on the embedded
  // database (no notifications) it checks the table for changes every second instead.
  const keyFollower = new KeyRingFollower(keys, {
    em: () => database.orm.em.fork(),
    reloadIntervalMs: config.SIGNING_KEY_RELOAD_INTERVAL,
    pollIntervalMs: dedicated ? undefined : Math.min(1_000, config.SIGNING_KEY_RELOAD_INTERVAL),
    logger: logger.child({ component: 'signing-keys' }),
  });
  observeSigningKeys(metrics.registry, keys, keyFollower);
  const keyChannels = { [SIGNING_KEYS_CHANNEL]: () => void keyFollower.changed() };
  follower = new RevocationFollower(view, {
    connect: (handlers) =>
      dedicated
        ? listeningConnection(dedicated, config.DATABASE_HEALTH_TIMEOUT, handlers, keyChannels).then((connection) => {
            // Changes made while the connection was down went unnoticed: read once now.
            void keyFollower.changed();
            return connection;
          })
        : Promise.resolve(polledConnection(database.orm)),
    relevanceMs,
    pollIntervalMs: Math.min(500, Math.max(50, Math.floor(config.REVOCATION_MAX_STALENESS / 4) || 500)),
    readTimeoutMs: Math.max(config.DATABASE_HEALTH_TIMEOUT, 1_000),
    logger: feedLogger,
  });
  const revocationReader = new PostgresRevocationFeed(ormFeedDb(database.orm));
  metrics.observeRevocations(() => ({ lagSeconds: view.lagSeconds, size: view.size, fallbacks: view.fallbacks }));
  // Loaded before serving when the database allows; otherwise the view is simply not trusted
  // (check_revocation reads the database) until the follower's retries get through.
  await follower.start().catch((error: unknown) => feedLogger.warn({ err: { message: (error as Error).message } }, 'revocation view not loaded yet; check_revocation reads the database until it is'));
  const pruning = setInterval(() => view.prune(clock.now()), 60_000);
  pruning.unref();
  keyFollower.start();
  // The stored hashes' costs, read again every 10 minutes (re-hashes and registrations on other
  // replicas, password changes and resets): the dummy hashes follow them.
  const costRefresh = setInterval(() => {
    void outsideCall(() => users.hashCosts(database.orm.em.fork()))
      .then((costs) => hasher.dummies.setCounts(costs))
      .catch((error: unknown) => logger.warn({ err: { message: (error as Error).message } }, 'could not read the stored password hashes\' costs; keeping the last ones'));
  }, COST_PROFILE_REFRESH_MS);
  costRefresh.unref();

  // Gateway checks (ext_authz Check, HTTP forward-auth): ValidateToken with check_revocation, as a decision.
  const gateway = new GatewayCheck(auth, view, { headerPrefix: config.GATEWAY_HEADER_PREFIX, passAuthorization: config.GATEWAY_PASS_AUTHORIZATION });
  const discovery = openidConfiguration({ issuer: config.JWT_ISSUER, publicUrl: config.PUBLIC_URL, signingAlgorithm: SIGNING_ALGORITHM });

  let stopping = false;
  const grpc = createGrpcServer(
    { logger: logger.child({ component: 'grpc' }), database: monitor, metrics, gate },
    {
      auth,
      accounts,
      sessions: sessionService,
      callers,
      gateway,
      revocationView: view,
      trustedProxies: new TrustedProxies(config.TRUSTED_PROXIES),
      sourceLimits: new SourceLimits(
        {
          Login: { perMs: config.RATE_LIMIT_LOGIN, burst: config.RATE_LIMIT_LOGIN_BURST },
          Register: { perMs: config.RATE_LIMIT_REGISTER, burst: config.RATE_LIMIT_REGISTER_BURST },
          RequestPasswordReset: { perMs: config.RATE_LIMIT_PASSWORD_RESET, burst: config.RATE_LIMIT_PASSWORD_RESET_BURST },
          ResetPassword: { perMs: config.RATE_LIMIT_PASSWORD_RESET, burst: config.RATE_LIMIT_PASSWORD_RESET_BURST },
          VerifyEmail: { perMs: config.RATE_LIMIT_VERIFY_EMAIL, burst: config.RATE_LIMIT_VERIFY_EMAIL_BURST },
        },
        config.RATE_LIMIT_MAX_SOURCES,
        clock,
      ),
      loginFailed: (reason) => metrics.loginFailed(reason),
      revocations: {
        reader: revocationReader,
        follower,
        relevanceMs,
        maxWatchers: config.MAX_REVOCATION_WATCHERS,
        bufferLimit: config.REVOCATION_WATCH_BUFFER,
        retryAfterMs: config.OVERLOAD_RETRY_AFTER,
        clock,
      },
    },
    {
      maxReceiveMessageBytes: config.GRPC_MAX_RECEIVE_MESSAGE_BYTES,
      maxSendMessageBytes: config.GRPC_MAX_SEND_MESSAGE_BYTES,
      maxConcurrentStreams: config.GRPC_MAX_CONCURRENT_STREAMS,
      maxSessionMemoryMb: config.GRPC_MAX_SESSION_MEMORY,
      keepaliveTimeMs: config.GRPC_KEEPALIVE_TIME,
      keepaliveTimeoutMs: config.GRPC_KEEPALIVE_TIMEOUT,
      maxConnectionAgeMs: config.GRPC_MAX_CONNECTION_AGE,
      maxConnectionAgeGraceMs: config.GRPC_MAX_CONNECTION_AGE_GRACE,
    },
  );
  monitor.onChange((status) => {
    metrics.setDatabaseUp(status === 'available');
    if (!stopping) grpc.setServing(status === 'available' ? 'SERVING' : 'NOT_SERVING');
  });
  const scheduler = createSweepScheduler(config, {
    orm: database.orm,
    logger: logger.child({ component: 'scheduler' }),
    metrics: createSweepMetrics(metrics.registry),
    clock,
    keyEncryptionKeys,
  });
  const http = createHttpServer({
    ready: () => !stopping && monitor.available,
    metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
    jwks: () => auth.jwks().json,
    openidConfiguration: () => discovery,
    forwardAuth: createForwardAuth({
      check: gateway,
      database: monitor,
      gate,
      logger: logger.child({ component: 'http' }),
      handled: (status, seconds) => metrics.forwardAuthHandled(status, seconds),
    }),
  });

  let grpcPort: number;
  let httpPort: number;
  try {
    grpcPort = await grpc.listen(config.GRPC_HOST, config.GRPC_PORT);
    httpPort = await http.listen(config.HTTP_PORT, config.HTTP_HOST);
  } catch (error) {
    grpc.server.forceShutdown();
    await http.close();
    clearInterval(pruning);
    await keyFollower.stop();
    clearInterval(costRefresh);
    await follower.stop();
    await database.close();
    throw error;
  }
  monitor.start();
  grpc.setServing('SERVING');
  grpc.setAlive(true);
  logger.info({ grpcPort, httpPort, database: database.host }, 'latchkey serving');
  scheduler.start();

  let stopped: Promise<{ forced: boolean }> | undefined;
  return {
    grpcPort,
    httpPort,
    stop() {
      stopped ??= (async () => {
        stopping = true;
        // The scheduler stops first: no run or batch starts from here on, and the batch in flight
        // commits or rolls back (awaited below) before the database closes.
        const schedulerStopped = scheduler.stop();
        grpc.setServing('NOT_SERVING');
        grpc.setAlive(false);
        const started = Date.now();
        const { forced } = await grpc.shutdown(config.SHUTDOWN_TIMEOUT);
        await http.close();
        await auth.drain();
        await accounts.drain();
        clearInterval(pruning);
        await keyFollower.stop();
        clearInterval(costRefresh);
        await follower?.stop();
        await monitor.stop();
        await schedulerStopped;
        await database.close();
        logger.info({ forced, durationMs: Date.now() - started }, 'latchkey stopped');
        return { forced };
      })();
      return stopped;
    },
  };
}
