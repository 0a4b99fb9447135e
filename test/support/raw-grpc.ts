import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';

/** A gRPC length-prefixed message: 1 byte "not compressed", 4 bytes big-endian length, then the bytes. */
export function grpcFrame(message: Uint8Array): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt8(0, 0);
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
}

export interface RawGrpcOutcome {
  /** The first HEADERS frame of the response (for a trailers-only response it also carries the status). */
  readonly headers: IncomingHttpHeaders | undefined;
  /** The trailing HEADERS frame, when the server sent one separately. */
  readonly trailers: IncomingHttpHeaders | undefined;
  readonly data: Buffer;
  /** The HTTP/2 error code the stream closed with: 0 (NO_ERROR) for a normally completed call. */
  readonly rstCode: number | undefined;
  /**
   * The gRPC status, from wherever the server put it (trailers, or a trailers-only response);
   * undefined when the stream ended without one (for example, it was reset).
   */
  readonly status: { code: number; message: string; details: Buffer | undefined } | undefined;
}

export interface RawGrpcCall {
  readonly session: ClientHttp2Session;
  readonly stream: ClientHttp2Stream;
  /** Resolves when the stream has closed, with everything the server sent. */
  readonly outcome: Promise<RawGrpcOutcome>;
  /** Resolves when the server sends GOAWAY on this connection. */
  readonly goaway: Promise<{ code: number; lastStreamId: number }>;
  write(chunk: Uint8Array): Promise<void>;
  /** Writes the last chunk (if any) and half-closes the request. */
  end(chunk?: Uint8Array): Promise<void>;
  /**
   * Round-trips an HTTP/2 PING. Frames on a connection are processed in order, so once the ack
   * arrives the server has seen the stream's HEADERS and everything written before.
   */
  flush(): Promise<void>;
  /** Tears the connection down (idempotent). */
  destroy(): void;
}

function statusOf(frame: IncomingHttpHeaders | undefined): RawGrpcOutcome['status'] {
  const code = frame?.['grpc-status'];
  if (typeof code !== 'string') return undefined;
  const message = frame?.['grpc-message'];
  const details = frame?.['grpc-status-details-bin'];
  return {
    code: Number(code),
    message: typeof message === 'string' ? decodeURIComponent(message) : '',
    details: typeof details === 'string' ? Buffer.from(details, 'base64') : undefined,
  };
}

/**
 * Opens one gRPC call over a hand-driven HTTP/2 connection, so a test controls exactly which
 * bytes of the request the server has seen (for example, half a message, then a signal).
 */
export async function openRawGrpcCall(port: number, path: string, extraHeaders: Record<string, string> = {}): Promise<RawGrpcCall> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  // Errors surface through the stream's outcome; an unhandled 'error' would crash the test worker.
  session.on('error', () => undefined);
  const goaway = new Promise<{ code: number; lastStreamId: number }>((resolve) =>
    session.once('goaway', (code: number, lastStreamId: number) => resolve({ code, lastStreamId })),
  );
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
    session.once('error', reject);
  });

  const stream = session.request(
    { ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...extraHeaders },
    { endStream: false },
  );
  stream.on('error', () => undefined);
  let headers: IncomingHttpHeaders | undefined;
  let trailers: IncomingHttpHeaders | undefined;
  const chunks: Buffer[] = [];
  stream.on('response', (h) => (headers = h));
  stream.on('trailers', (t) => (trailers = t));
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  const outcome = new Promise<RawGrpcOutcome>((resolve) =>
    stream.once('close', () =>
      resolve({
        headers,
        trailers,
        data: Buffer.concat(chunks),
        rstCode: stream.rstCode,
        status: statusOf(trailers) ?? statusOf(headers),
      }),
    ),
  );

  const write = (chunk: Uint8Array) =>
    new Promise<void>((resolve, reject) => stream.write(chunk, (error) => (error ? reject(error) : resolve())));
  return {
    session,
    stream,
    outcome,
    goaway,
    write,
    async end(chunk) {
      if (chunk) await write(chunk);
      await new Promise<void>((resolve) => stream.end(() => resolve()));
    },
    flush() {
      return new Promise<void>((resolve, reject) => {
        session.ping((error) => (error ? reject(error) : resolve()));
      });
    },
    destroy() {
      if (!session.destroyed) session.destroy();
    },
  };
}

/**
 * Makes one unary call whose request is given as bytes (for example, with invalid UTF-8 in a string
 * field, which no generated client will encode), and returns its failure in the shape grpc-js
 * clients give, so test/support/auth.ts's `failure` and `expectRejected` read it the same way.
 */
export async function rawUnaryCall(
  port: number,
  path: string,
  message: Uint8Array,
  headers: Record<string, string> = {},
): Promise<{ error?: ServiceError; outcome: RawGrpcOutcome }> {
  const raw = await openRawGrpcCall(port, path, headers);
  try {
    await raw.end(grpcFrame(message));
    const outcome = await raw.outcome;
    const seen = outcome.status;
    if (!seen) throw new Error(`${path}: the stream ended without a gRPC status (HTTP/2 code ${outcome.rstCode})`);
    if (seen.code === status.OK) return { outcome };
    const metadata = new Metadata();
    if (seen.details) metadata.set('grpc-status-details-bin', seen.details);
    return { error: Object.assign(new Error(seen.message), { code: seen.code, details: seen.message, metadata }), outcome };
  } finally {
    raw.destroy();
  }
}
