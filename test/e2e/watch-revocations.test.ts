/**
 * End-to-end: SessionService.WatchRevocations (issue 15) against the real server and database:
 * the snapshot, the in_sync marker and live events; resuming from a cursor; an expired cursor; a
 * consumer that never reads; callers without a service credential; the watcher cap; and a
 * spawned server receiving SIGTERM with streams open.
 */
import http2 from 'node:http2';
import { type Client, type ClientReadableStream, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { decodeCursor } from '../../src/domain/revocations/events.js';
import { decodeStatusDetails } from '../../src/grpc/errors.js';
import type { LoginResponse } from '../../src/generated/latchkey/auth/v1/auth_service.js';
import {
  RevocationReason,
  type SessionServiceClient,
  WatchRevocationsRequest,
  WatchRevocationsResponse,
} from '../../src/generated/latchkey/session/v1/session_service.js';
import { type AuthServer, login, ManualClock, register, startAuthServer } from '../support/auth.js';
import { Children, within } from '../support/children.js';
import { call, errorDetails, sessionClient } from '../support/clients.js';
import { createTestDatabase, query, type TestDatabase, waitUntilFeedSettled } from '../support/database.js';
import { watchHealth } from '../support/probes.js';
import { processEnv } from '../support/process-env.js';
import { grpcFrame } from '../support/raw-grpc.js';
import { startLatchkey } from '../support/process.js';
import { waitFor } from '../support/wait.js';

const API_KEY = 'watch-revocations-tests-key-0123456789abcdef';
const WATCH = '/latchkey.session.v1.SessionService/WatchRevocations';
/** Safety net for anything that should happen promptly; never an assertion on duration. */
const PROMPTLY = 15_000;

interface Credential {
  readonly authorization?: string;
  readonly apiKey?: string;
}
const SERVICE: Credential = { apiKey: API_KEY };

function metadataOf(credential: Credential): Metadata {
  const metadata = new Metadata();
  if (credential.authorization !== undefined) metadata.add('authorization', credential.authorization);
  if (credential.apiKey !== undefined) metadata.add('x-api-key', credential.apiKey);
  return metadata;
}

/** One WatchRevocations stream on a connection of its own. */
interface Watcher {
  readonly messages: WatchRevocationsResponse[];
  /** The error the stream ended with (code 0 when it ended cleanly). */
  readonly ended: Promise<Partial<ServiceError> & { code: number }>;
  /** Starts reading (for a watcher opened with `read: false`). */
  read(): void;
  /** Waits until the messages received satisfy `predicate` (or the stream ended, or the safety net). */
  until(predicate: (messages: WatchRevocationsResponse[]) => boolean, timeoutMs?: number): Promise<boolean>;
  /** The events received, as cursors, in order. */
  eventCursors(): string[];
  inSync(): WatchRevocationsResponse | undefined;
  close(): void;
}

const watchers: Watcher[] = [];

function openWatch(port: number, sinceCursor = '', credential: Credential = SERVICE, options: { read?: boolean } = {}): Watcher {
  const client: SessionServiceClient = sessionClient(port);
  const stream: ClientReadableStream<WatchRevocationsResponse> = client.watchRevocations({ sinceCursor }, metadataOf(credential));
  const messages: WatchRevocationsResponse[] = [];
  let ends = false;
  const ended = new Promise<Partial<ServiceError> & { code: number }>((resolve) => {
    stream.on('error', (error: ServiceError) => resolve(error));
    stream.on('status', (s: { code: number }) => {
      if (s.code === status.OK) resolve({ code: 0 });
    });
  }).then((end) => {
    ends = true;
    return end;
  });
  const read = () => stream.on('data', (message: WatchRevocationsResponse) => messages.push(message));
  if (options.read !== false) read();
  const watcher: Watcher = {
    messages,
    ended,
    read,
    until: (predicate, timeoutMs = PROMPTLY) => waitFor(async () => predicate(messages) || ends, (done) => done, timeoutMs, 10).then(() => predicate(messages)),
    eventCursors: () => messages.filter((m) => m.event).map((m) => m.cursor),
    inSync: () => messages.find((m) => m.inSync),
    close() {
      stream.cancel();
      client.close();
    },
  };
  watchers.push(watcher);
  return watcher;
}

/**
 * A WatchRevocations stream whose client does not read at all, down to HTTP/2: a paused Node
 * stream grants no flow-control window, so the server's messages pile up on its side. (A grpc-js
 * client that does not read still takes everything off the connection into its own memory.)
 */
function openIdleWatch(port: number) {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined);
  const stream = session.request({ ':method': 'POST', ':path': WATCH, 'content-type': 'application/grpc', te: 'trailers', 'x-api-key': API_KEY });
  stream.on('error', () => undefined);
  stream.end(grpcFrame(WatchRevocationsRequest.encode({ sinceCursor: '' }).finish()));
  stream.pause();
  let trailers: http2.IncomingHttpHeaders | undefined;
  stream.on('trailers', (t) => (trailers = t));
  const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
  return {
    /** Reads everything the server sent, until the stream closes. */
    async readAll(): Promise<{ messages: WatchRevocationsResponse[]; code?: number; reason?: string; message?: string }> {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.resume();
      await closed;
      const data = Buffer.concat(chunks);
      const messages: WatchRevocationsResponse[] = [];
      for (let at = 0; at + 5 <= data.length; ) {
        const length = data.readUInt32BE(at + 1);
        messages.push(WatchRevocationsResponse.decode(data.subarray(at + 5, at + 5 + length)));
        at += 5 + length;
      }
      const metadata = new Metadata();
      const details = trailers?.['grpc-status-details-bin'];
      if (typeof details === 'string') metadata.set('grpc-status-details-bin', Buffer.from(details, 'base64'));
      const code = trailers?.['grpc-status'];
      const message = trailers?.['grpc-message'];
      return {
        messages,
        code: typeof code === 'string' ? Number(code) : undefined,
        reason: decodeStatusDetails(metadata).errorInfo?.reason,
        message: typeof message === 'string' ? decodeURIComponent(message) : undefined,
      };
    },
    close: () => session.destroy(),
  };
}

/** Events written straight into the feed (as the triggers would), `count` in one transaction. */
async function insertEvents(url: string, count: number, age = '0 seconds'): Promise<void> {
  await query(
    url,
    `insert into revocation_events (kind, session_id, user_id, reason, occurred_at)
     select 'session', gen_random_uuid(), gen_random_uuid(), 'LOGOUT', now() - $2::interval from generate_series(1, $1::int)`,
    [count, age],
  );
}

/** Every message's cursor: an event's is its own; none moves backwards; events never repeat. */
function expectWellFormed(messages: WatchRevocationsResponse[]): void {
  let previous: { xid: bigint; id: bigint } | undefined;
  const seen = new Set<string>();
  for (const message of messages) {
    const position = decodeCursor(message.cursor);
    expect(position).toBeDefined();
    if (message.event) {
      expect(message.inSync).toBe(false);
      expect(message.event.cursor).toBe(message.cursor);
      expect(seen.has(message.cursor)).toBe(false);
      seen.add(message.cursor);
    } else {
      expect(message.inSync).toBe(true);
    }
    if (previous) {
      const order = position!.xid === previous.xid ? Number(position!.id - previous.id) : Number(position!.xid - previous.xid);
      expect(order).toBeGreaterThanOrEqual(message.event ? 1 : 0);
    }
    previous = position;
  }
}

async function handled(httpPort: number, code: string): Promise<number> {
  const body = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const [service, method] = WATCH.slice(1).split('/');
  const line = body
    .split('\n')
    .find(
      (l) =>
        l.startsWith('grpc_server_handled_total{grpc_type="server_stream"') &&
        l.includes(`grpc_service="${service}"`) &&
        l.includes(`grpc_method="${method}"`) &&
        l.includes(`grpc_code="${code}"`),
    );
  return line ? Number(line.split(' ').at(-1)) : 0;
}

afterEach(() => {
  for (const watcher of watchers.splice(0)) watcher.close();
});

describe('WatchRevocations', () => {
  const clock = new ManualClock();
  let server: AuthServer;
  let url: string;
  let port: number;

  beforeAll(async () => {
    server = await startAuthServer(
      { SERVICE_API_KEYS: API_KEY, MAX_SESSIONS_PER_USER: '0', REVOCATION_WATCH_BUFFER: '200', MAX_REVOCATION_WATCHERS: '3' },
      clock,
    );
    url = server.db.url;
    port = server.app.grpcPort;
  });
  afterAll(async () => {
    for (const watcher of watchers.splice(0)) watcher.close();
    await server?.close();
  });

  let people = 0;
  async function signedIn(roles: string[] = []): Promise<{ userId: string; login: LoginResponse }> {
    const email = `watcher-${++people}@example.com`;
    const { user } = await register(server.client, email);
    if (roles.length > 0) await query(url, 'update users set roles = $1 where id = $2', [roles, user!.id]);
    return { userId: user!.id, login: await login(server.client, email) };
  }

  const sessions = () => sessionClient(port);
  async function revokeSession(sessionId: string): Promise<void> {
    const client = sessions();
    try {
      const { error } = await call(client as unknown as Client, 'revokeSession', { sessionId }, { metadata: metadataOf(SERVICE) });
      if (error) throw error;
    } finally {
      client.close();
    }
  }

  /** Every event from an empty cursor, the marker and what follows, as one watcher sees them. */
  let firstStream: WatchRevocationsResponse[] = [];

  it('from no cursor: every relevant event, then the in_sync marker, then live events, each with its cursor', async () => {
    await insertEvents(url, 1, '2 days'); // long past any access token's lifetime: not part of the snapshot
    // Settled before the watch starts (an unsettled one would come live, ahead of the marker).
    await waitUntilFeedSettled(url);
    const alice = await signedIn();
    const bob = await signedIn(['admin', 'support']);
    await revokeSession(alice.login.sessionId);

    const watcher = openWatch(port);
    expect(await watcher.until((m) => m.some((x) => x.inSync))).toBe(true);
    const snapshot = watcher.messages.slice();
    expect(snapshot.filter((m) => m.event).map((m) => m.event!.sessionId)).toEqual([alice.login.sessionId]);
    expect(snapshot[0]!.event).toMatchObject({
      sessionId: alice.login.sessionId,
      userId: alice.userId,
      reason: RevocationReason.REVOCATION_REASON_REVOKED_BY_SERVICE,
      roles: [],
    });
    expect(snapshot[0]!.event!.revokedAt).toBeInstanceOf(Date);
    const marker = snapshot.at(-1)!;
    expect(marker).toMatchObject({ inSync: true, event: undefined });
    expect(marker.cursor).not.toBe('');

    // Live: a revoked session, and a removed role (a user event: no session, the roles now).
    await revokeSession(bob.login.sessionId);
    const roles = await call(server.client as unknown as Client, 'setUserRoles', { userId: bob.userId, roles: ['support'] }, { metadata: metadataOf(SERVICE) });
    expect(roles.error).toBeUndefined();
    expect(await watcher.until((m) => m.length >= snapshot.length + 2)).toBe(true);
    const live = watcher.messages.slice(snapshot.length);
    expect(live.map((m) => m.event)).toEqual([
      expect.objectContaining({ sessionId: bob.login.sessionId, userId: bob.userId, reason: RevocationReason.REVOCATION_REASON_REVOKED_BY_SERVICE }),
      expect.objectContaining({ sessionId: '', userId: bob.userId, reason: RevocationReason.REVOCATION_REASON_ROLES_REMOVED, roles: ['support'] }),
    ]);
    expectWellFormed(watcher.messages);
    firstStream = watcher.messages.slice();
  });

  it('from a cursor: every event after it, then the marker, then live events', async () => {
    const events = firstStream.filter((m) => m.event);
    expect(events.length).toBe(3);

    // After the first event: the two that followed it, then the marker.
    const fromFirst = openWatch(port, events[0]!.cursor);
    expect(await fromFirst.until((m) => m.some((x) => x.inSync))).toBe(true);
    expect(fromFirst.eventCursors()).toEqual([events[1]!.cursor, events[2]!.cursor]);
    expectWellFormed(fromFirst.messages);

    // After the last event: nothing but the marker; then the next revocation, live.
    const fromLast = openWatch(port, events[2]!.cursor);
    expect(await fromLast.until((m) => m.some((x) => x.inSync))).toBe(true);
    expect(fromLast.eventCursors()).toEqual([]);
    const carol = await signedIn();
    await revokeSession(carol.login.sessionId);
    expect(await fromLast.until((m) => m.some((x) => x.event?.sessionId === carol.login.sessionId))).toBe(true);
    expect(await fromFirst.until((m) => m.some((x) => x.event?.sessionId === carol.login.sessionId))).toBe(true);
    // The marker's cursor resumes just as well: the live event, nothing before it.
    const fromMarker = openWatch(port, firstStream.find((m) => m.inSync)!.cursor);
    expect(await fromMarker.until((m) => m.some((x) => x.inSync))).toBe(true);
    expect(fromMarker.messages.filter((m) => m.event).map((m) => m.event!.sessionId)).toEqual([
      ...fromFirst.messages.slice(fromFirst.messages.findIndex((m) => m.inSync) - 2).filter((m) => m.event).map((m) => m.event!.sessionId),
    ]);
    expectWellFormed(fromMarker.messages);
  });

  it('refuses a malformed cursor with INVALID_ARGUMENT naming since_cursor', async () => {
    const watcher = openWatch(port, 'not-a-cursor');
    const end = await within(watcher.ended, PROMPTLY, 'the stream to end');
    expect(end.code).toBe(status.INVALID_ARGUMENT);
    expect(errorDetails(end)).toMatchObject({ reason: 'INVALID_ARGUMENT', domain: 'latchkey', fields: ['since_cursor'] });
    expect(watcher.messages).toEqual([]);
  });

  it('requires a service credential', async () => {
    const dave = await signedIn();
    const cases: [Credential, number, string][] = [
      [{}, status.UNAUTHENTICATED, 'TOKEN_INVALID'],
      [{ apiKey: 'not-the-key' }, status.UNAUTHENTICATED, 'TOKEN_INVALID'],
      [{ authorization: 'Bearer not-a-token' }, status.UNAUTHENTICATED, 'TOKEN_INVALID'],
      [{ authorization: `Bearer ${dave.login.tokens!.accessToken}` }, status.PERMISSION_DENIED, 'PERMISSION_DENIED'],
    ];
    for (const [credential, code, reason] of cases) {
      const watcher = openWatch(port, '', credential);
      const end = await within(watcher.ended, PROMPTLY, 'the stream to end');
      expect({ code: end.code, reason: errorDetails(end).reason }).toEqual({ code, reason });
      expect(watcher.messages).toEqual([]);
    }
    // An admin's bearer token is a service credential.
    const admin = await signedIn(['admin']);
    const watcher = openWatch(port, '', { authorization: `Bearer ${admin.login.tokens!.accessToken}` });
    expect(await watcher.until((m) => m.some((x) => x.inSync))).toBe(true);
  });

  it('refuses streams beyond MAX_REVOCATION_WATCHERS at once with RESOURCE_EXHAUSTED (OVERLOADED) and RetryInfo', async () => {
    const open = [openWatch(port), openWatch(port), openWatch(port)];
    for (const watcher of open) expect(await watcher.until((m) => m.some((x) => x.inSync))).toBe(true);
    const refused = openWatch(port);
    const end = await within(refused.ended, PROMPTLY, 'the refusal');
    expect(end.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(errorDetails(end).reason).toBe('OVERLOADED');
    expect(decodeStatusDetails(end.metadata).retryInfo?.retryDelay).toBeDefined();

    // A slot freed is a slot taken.
    open[0]!.close();
    await waitFor(async () => {
      const again = openWatch(port);
      const inSync = await again.until((m) => m.some((x) => x.inSync), 2_000);
      if (!inSync) again.close();
      return inSync;
    }, (ok) => ok);
  });

  it('ends a consumer that never reads with RESOURCE_EXHAUSTED (OVERLOADED); other streams and calls carry on; it resumes from its cursor', async () => {
    const reader = openWatch(port);
    const idle = openIdleWatch(port);
    try {
      expect(await reader.until((m) => m.some((x) => x.inSync))).toBe(true);
      const before = reader.messages.length;
      const refusedBefore = await handled(server.app.httpPort, 'ResourceExhausted');

      // Bursts smaller than the buffer (200), each read by the reader before the next: the reader
      // keeps up, the idle consumer falls further behind with each one.
      const BURST = 100;
      let bursts = 0;
      for (; bursts < 40; bursts++) {
        await insertEvents(url, BURST);
        expect(await reader.until((m) => m.length >= before + (bursts + 1) * BURST)).toBe(true);
        if ((await handled(server.app.httpPort, 'ResourceExhausted')) > refusedBefore) break;
      }
      expect(bursts).toBeLessThan(40);
      expectWellFormed(reader.messages);

      // The server is fine: another stream gets in sync, a revocation reaches the reader.
      const late = openWatch(port);
      expect(await late.until((m) => m.some((x) => x.inSync))).toBe(true);
      late.close();
      const dave = await signedIn();
      await revokeSession(dave.login.sessionId);
      expect(await reader.until((m) => m.some((x) => x.event?.sessionId === dave.login.sessionId))).toBe(true);

      // The idle consumer reads at last: what was sent before the end, then RESOURCE_EXHAUSTED.
      const seen = await within(idle.readAll(), PROMPTLY, 'the idle stream to end');
      expect({ code: seen.code, reason: seen.reason }).toEqual({ code: status.RESOURCE_EXHAUSTED, reason: 'OVERLOADED' });
      expect(seen.message).toMatch(/more than 200 events behind.*cursor/);
      expectWellFormed(seen.messages);
      expect(seen.messages.length).toBeGreaterThan(0);

      // Resuming from its last cursor, it gets exactly what the reader got after that point.
      const resumed = openWatch(port, seen.messages.at(-1)!.cursor);
      expect(await resumed.until((m) => m.some((x) => x.event?.sessionId === dave.login.sessionId))).toBe(true);
      const all = reader.eventCursors();
      const got = [...seen.messages.filter((m) => m.event).map((m) => m.cursor), ...resumed.eventCursors()];
      expect(got).toEqual(all.slice(all.length - got.length));
      expect(got.length).toBeGreaterThan(bursts * BURST);
    } finally {
      idle.close();
    }
  });

  it('answers a cursor older than the retained history with OUT_OF_RANGE (CURSOR_EXPIRED)', async () => {
    const events = firstStream.filter((m) => m.event);
    // The sweep deletes the oldest events; the horizon moves past the first cursor.
    const second = decodeCursor(events[1]!.cursor)!;
    await query(url, 'delete from revocation_events where (xid, id) <= ($1::text::xid8, $2::bigint)', [second.xid.toString(), second.id.toString()]);

    const watcher = openWatch(port, events[0]!.cursor);
    const end = await within(watcher.ended, PROMPTLY, 'the stream to end');
    expect(end.code).toBe(status.OUT_OF_RANGE);
    expect(errorDetails(end)).toMatchObject({ reason: 'CURSOR_EXPIRED', domain: 'latchkey' });
    expect(end.details).toMatch(/empty since_cursor/);
    expect(watcher.messages).toEqual([]);

    // At the horizon itself nothing after it is gone.
    const atHorizon = openWatch(port, events[1]!.cursor);
    expect(await atHorizon.until((m) => m.some((x) => x.inSync))).toBe(true);
    expect(atHorizon.eventCursors()[0]).toBe(events[2]!.cursor);
  });
});

describe('WatchRevocations at shutdown', () => {
  const children = new Children();
  let database: TestDatabase;

  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await children.killAll();
    await database?.drop();
  });

  it('SIGTERM ends every stream (revocations and health Watch) with UNAVAILABLE and exits without waiting for SHUTDOWN_TIMEOUT', async () => {
    // Far above the safety nets below: an exit before them was not the timeout.
    const server = children.track(await startLatchkey(processEnv(database, { SHUTDOWN_TIMEOUT: '30s', SERVICE_API_KEYS: API_KEY })));
    const reading = openWatch(server.grpcPort);
    const stalled = openIdleWatch(server.grpcPort);
    const health = watchHealth(server.grpcPort);
    expect(await reading.until((m) => m.some((x) => x.inSync))).toBe(true);
    expect(await health.until('SERVING')).toBe(true);
    // More than the transport holds for a consumer that does not read, fewer than the buffer: the
    // stalled stream has messages stuck in the server when shutdown comes.
    await insertEvents(database.url, 800);
    expect(await reading.until((m) => m.length >= 801)).toBe(true);

    server.child.kill('SIGTERM');

    const readingEnd = await within(reading.ended, PROMPTLY, 'the reading stream to end', server);
    expect(readingEnd.code).toBe(status.UNAVAILABLE);
    expect(errorDetails(readingEnd).reason).toBe('UNAVAILABLE');
    expect((await within(health.ended, PROMPTLY, 'the health Watch to end', server)).code).toBe(status.UNAVAILABLE);
    expect(health.statuses).toEqual(['SERVING', 'NOT_SERVING']);

    const exit = await within(server.exited, 10_000, 'the process to exit', server);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(server.logs().find((line) => line.msg === 'latchkey stopped')).toMatchObject({ forced: false });
    // The stalled consumer could not take its status behind the messages it never read: its
    // stream was reset instead, and what it did receive is well-formed.
    const stalledEnd = await within(stalled.readAll(), PROMPTLY, 'the stalled stream to end');
    expect(stalledEnd.code).toBeUndefined();
    expectWellFormed(stalledEnd.messages);
    stalled.close();
    const streamEnds = server.logs().filter((line) => line.msg === 'rpc' && line.method === WATCH);
    expect(streamEnds.map((line) => line.code)).toEqual(['UNAVAILABLE', 'UNAVAILABLE']);
    expect(server.logs().filter((line) => ['error', 'fatal'].includes(line.level as string))).toEqual([]);
  });
});
