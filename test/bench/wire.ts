import http2, { type ClientHttp2Session } from 'node:http2';

/** A gRPC length-prefixed message: 1 byte "not compressed", 4 bytes big-endian length, then the bytes. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.length);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

export interface UnaryResult {
  /** The gRPC status code (from the trailers, or a trailers-only response); -1 when the stream failed. */
  readonly code: number;
  /** The response message without its 5-byte prefix (empty unless the code is 0). */
  readonly message: Buffer;
  /** `reason` of an error's detail is not decoded here; the status message is enough to report. */
  readonly statusMessage: string;
  /** `grpc-status-details-bin` as sent (base64 google.rpc.Status), for callers that tally reasons. */
  readonly details?: string;
}

/**
 * A bare HTTP/2 gRPC client for unary calls: the request bytes are encoded by the caller once (or
 * per call, for refresh chains) and written as they are. It does the least a client can do per
 * call, so that what the harness measures is the server, not the client library.
 */
export class UnaryClient {
  private constructor(private readonly session: ClientHttp2Session) {}

  static async connect(port: number): Promise<UnaryClient> {
    const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 1 << 20 } });
    session.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      session.once('connect', () => resolve());
      session.once('error', reject);
    });
    return new UnaryClient(session);
  }

  call(path: string, frame: Buffer, headers: Record<string, string> = {}): Promise<UnaryResult> {
    return new Promise((resolve) => {
      const stream = this.session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
      const chunks: Buffer[] = [];
      let code = -1;
      let statusMessage = '';
      let details: string | undefined;
      const status = (h: http2.IncomingHttpHeaders) => {
        const value = h['grpc-status'];
        if (typeof value === 'string') {
          code = Number(value);
          const m = h['grpc-message'];
          statusMessage = typeof m === 'string' ? decodeURIComponent(m) : '';
          const d = h['grpc-status-details-bin'];
          details = typeof d === 'string' ? d : undefined;
        }
      };
      stream.on('response', status);
      stream.on('trailers', status);
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('error', () => undefined);
      stream.on('close', () => {
        const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        resolve({ code, message: body.length >= 5 ? body.subarray(5) : Buffer.alloc(0), statusMessage, ...(details ? { details } : {}) });
      });
      stream.end(frame);
    });
  }

  close(): void {
    this.session.close();
  }
}

/** Opens `count` connections; calls are spread over them round-robin by the caller. */
export async function connectAll(port: number, count: number): Promise<UnaryClient[]> {
  return Promise.all(Array.from({ length: count }, () => UnaryClient.connect(port)));
}
