import http2 from 'node:http2';
import { performance } from 'node:perf_hooks';
import type { ServerWritableStream } from '@grpc/grpc-js';
import { DomainError } from '../domain/errors.js';
import { codeName, contextOf, MALFORMED_REQUEST, recordCall, type CallContext, type CallDependencies } from './call.js';
import { toServiceError } from './errors.js';

type AnyStream = ServerWritableStream<unknown, unknown>;

/**
 * Every server stream open on a server (WatchRevocations and health Watch), so that shutdown can
 * end them at once: a stream never ends by itself, and one left open holds `tryShutdown` until
 * SHUTDOWN_TIMEOUT.
 */
export class OpenStreams {
  readonly #stops = new Map<AnyStream, (error: DomainError) => void>();
  #closing: DomainError | undefined;
  #changed: (() => void) | undefined;

  /** Streams registered and not yet closed (their status sent, or the client gone). */
  get size(): number {
    return this.#stops.size;
  }

  /**
   * Registers a stream until it closes. `stop` ends it with the given status; it is called at
   * once for a stream that starts while the server is already closing.
   */
  track(call: AnyStream, stop: (error: DomainError) => void): void {
    if (call.cancelled) return;
    this.#stops.set(call, stop);
    // grpc-js emits 'cancelled' on every server call once it is over: its status was sent or the
    // client went away.
    call.once('cancelled', () => {
      this.#stops.delete(call);
      this.#changed?.();
    });
    if (this.#closing) stop(this.#closing);
  }

  /**
   * Ends every open stream with `error` (UNAVAILABLE at shutdown), and refuses the same way any
   * that starts from now on. A stream whose status cannot be sent within `graceMs` (a client that
   * stopped reading: the status queues behind the messages it has not read) is reset
   * (RST_STREAM CANCEL). Resolves when every stream is closed.
   */
  async endAll(error: DomainError, graceMs: number): Promise<void> {
    this.#closing = error;
    for (const stop of [...this.#stops.values()]) stop(error);
    if (this.#stops.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.#changed = () => {
          if (this.#stops.size > 0) return;
          clearTimeout(timer);
          resolve();
        };
      });
      this.#changed = undefined;
    }
    for (const call of [...this.#stops.keys()]) resetStream(call);
  }
}

/**
 * Resets the HTTP/2 stream under a call. grpc-js has no public way for a server to cancel a call;
 * its call object holds the Node stream (`call.call…stream`), which is what a forced shutdown
 * would destroy too, only for every call at once.
 */
function resetStream(call: AnyStream): void {
  let layer: unknown = (call as unknown as { call?: unknown }).call;
  for (let depth = 0; depth < 8 && layer; depth += 1) {
    const stream = (layer as { stream?: { close?: (code: number) => void; closed?: boolean } }).stream;
    if (stream && typeof stream.close === 'function') {
      if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
      return;
    }
    layer = (layer as { nextCall?: unknown }).nextCall;
  }
}

/** What a stream handler returns: messages pulled one at a time, as the client can take them. */
export interface MessageSource<T> {
  /** The next message (waiting for one as long as it takes); `done` ends the stream with OK. */
  next(): Promise<IteratorResult<T, undefined>>;
  /** Rejects when the source fails while the stream waits for the client (a consumer too far behind). */
  readonly failed?: Promise<never>;
  /** Releases what the source holds (a subscription); called once the stream ends, however it ends. */
  close(): void;
}

export interface StreamDependencies extends CallDependencies {
  readonly streams: OpenStreams;
}

export interface StreamOptions {
  /** Fail fast with UNAVAILABLE while the database is known to be down. */
  readonly usesDatabase: boolean;
  /** Streams of this RPC open at once; beyond it a new one is refused with OVERLOADED. */
  readonly maxOpen: number;
  /** The RetryInfo delay of that refusal. */
  readonly retryAfterMs: number;
  /** What the streams are, for the refusal's message ("revocation watchers"). */
  readonly what: string;
}

/** Why a stream stopped from outside its loop: the client went away, or the server is closing. */
class Stopped extends Error {
  constructor(readonly status: DomainError | 'cancelled') {
    super('stream stopped');
  }
}

/**
 * Wraps a server-streaming handler, as `unary` wraps a unary one: one JSON log line and one
 * metrics sample per stream when it ends (with the number of messages sent), error mapping
 * through the single mapper in errors.ts, undecodable requests as INVALID_ARGUMENT, and the
 * fail-fast database check. On top of that:
 * - at most `maxOpen` streams at once (counted per wrapped RPC), refused at once beyond it;
 * - backpressure: the next message is pulled from the source only once the call's buffer has
 *   room (`write()` returned true, or 'drain'), so the stream holds at most grpc-js's high-water
 *   mark of messages and whatever the source bounds itself to (its `failed` ends the stream);
 * - the call's cancellation, its deadline or shutdown (`OpenStreams.endAll`) close the source.
 */
export function serverStream<Req, Res>(
  deps: StreamDependencies,
  method: string,
  options: StreamOptions,
  handler: (request: Req, context: CallContext) => Promise<MessageSource<Res>>,
): (call: ServerWritableStream<Req, Res>) => void {
  let open = 0;
  return (typedCall) => {
    const call = typedCall as unknown as AnyStream;
    const started = performance.now();
    deps.metrics.rpcStarted?.(method, 'server_stream');
    const context = contextOf(method, call);
    let sent = 0;
    let counted = false;
    let ended = false;
    let source: MessageSource<Res> | undefined;
    let stop!: (reason: Stopped) => void;
    const stopped = new Promise<never>((_, reject) => (stop = reject));
    stopped.catch(() => undefined);
    deps.streams.track(call, (error) => stop(new Stopped(error)));
    if (call.cancelled) stop(new Stopped('cancelled'));
    else call.once('cancelled', () => stop(new Stopped('cancelled')));

    const finish = (code: string, details?: { reason?: string; errorId?: string }) => {
      ended = true;
      if (counted) open -= 1;
      counted = false;
      source?.close();
      recordCall(deps, method, call.metadata, code, performance.now() - started, { ...details, messages: sent }, 'info', 'server_stream');
    };

    const run = async (): Promise<void> => {
      if ((call.request as unknown) === MALFORMED_REQUEST) {
        throw new DomainError('INVALID_ARGUMENT', `the request is not a valid protobuf message for ${method}`);
      }
      if (options.usesDatabase && !deps.database.available) throw DomainError.unavailable();
      if (open >= options.maxOpen) {
        throw DomainError.overloaded(`too many ${options.what} are open on this server (${options.maxOpen}); retry later or on another replica`, options.retryAfterMs);
      }
      open += 1;
      counted = true;
      const created = handler(typedCall.request, context);
      // A source created after the stream ended (cancelled during authentication) is closed at once.
      created.then((made) => (ended ? made.close() : (source = made)), () => undefined);
      const messages = await Promise.race([created, stopped]);
      const failed = messages.failed ?? stopped;
      for (;;) {
        const result = await Promise.race([messages.next(), stopped, failed]);
        if (result.done) return;
        sent += 1;
        if (!call.write(result.value)) {
          await Promise.race([new Promise<void>((resolve) => call.once('drain', () => resolve())), stopped, failed]);
        }
      }
    };

    run().then(
      () => {
        if (call.cancelled) return finish('CANCELLED');
        call.end();
        finish('OK');
      },
      (error: unknown) => {
        if (error instanceof Stopped && error.status === 'cancelled') return finish('CANCELLED');
        if (call.cancelled) return finish('CANCELLED');
        const cause = error instanceof Stopped ? (error.status as DomainError) : error;
        const mapped = toServiceError(cause, deps.logger, method);
        // Shutdown's UNAVAILABLE says nothing about the database.
        if (!(error instanceof Stopped)) {
          if (mapped.databaseUnavailable && options.usesDatabase) deps.database.reportFailure(cause);
          else if (mapped.databaseSlow) void deps.database.check();
        }
        call.emit('error', mapped.error);
        finish(codeName(mapped.code), { reason: cause instanceof DomainError ? cause.reason : undefined, errorId: mapped.errorId });
      },
    );
  };
}

/** A source whose messages are another source's, converted. */
export function mapSource<T, R>(source: MessageSource<T>, convert: (message: T) => R): MessageSource<R> {
  return {
    async next() {
      const result = await source.next();
      return result.done ? result : { done: false, value: convert(result.value) };
    },
    failed: source.failed,
    close: () => source.close(),
  };
}
