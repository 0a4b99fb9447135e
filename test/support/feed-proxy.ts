import net, { type AddressInfo } from 'node:net';

/** The application_name the revocation follower's own connection announces (persistence/revocation-feed.ts). */
export const FEED_APPLICATION_NAME = 'latchkey-revocation-feed';

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;

/** One proxied connection, classified by the application_name of its startup message. */
interface Link {
  readonly client: net.Socket;
  upstream: net.Socket | undefined;
  applicationName: string | undefined;
}

/**
 * A TCP proxy in front of the test database that can cut or black-hole only the connections of one
 * application (by the `application_name` of the PostgreSQL startup message), while every other
 * connection through it (the request pool, the readiness probe) keeps working: the database stays
 * reachable, only that one client's link to it fails.
 *
 * - `cut(name)`: every open connection of `name` is reset and new ones are closed as soon as their
 *   startup message names it, until `restore()`.
 * - `freeze(name)`: connections of `name` (open and new) stay open but nothing flows either way,
 *   until `restore()` (a black hole: reads hang instead of failing).
 */
export class ApplicationProxy {
  #server: net.Server | undefined;
  #port = 0;
  readonly #links = new Set<Link>();
  #cut: string | undefined;
  #frozen: string | undefined;
  /** Connections of the cut application refused since the cut began (its reconnection attempts). */
  refused = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  static forUrl(url: string): ApplicationProxy {
    const parsed = new URL(url);
    return new ApplicationProxy({ host: parsed.hostname, port: Number(parsed.port || 5432) });
  }

  /** The same URL, pointing through this proxy. */
  rewrite(url: string): string {
    const parsed = new URL(url);
    parsed.hostname = '127.0.0.1';
    parsed.port = String(this.#port);
    return parsed.toString();
  }

  /** Open connections that announced `applicationName`. */
  connections(applicationName: string): number {
    let count = 0;
    for (const link of this.#links) if (link.applicationName === applicationName && !link.client.destroyed) count += 1;
    return count;
  }

  async start(): Promise<void> {
    const server = net.createServer((client) => this.#accept(client));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.#port = (server.address() as AddressInfo).port;
    this.#server = server;
  }

  cut(applicationName: string): void {
    this.#cut = applicationName;
    this.refused = 0;
    for (const link of this.#links) {
      if (link.applicationName === applicationName) this.#destroy(link);
    }
  }

  freeze(applicationName: string): void {
    this.#frozen = applicationName;
    for (const link of this.#links) {
      if (link.applicationName === applicationName) {
        link.client.pause();
        link.upstream?.pause();
      }
    }
  }

  /** Ends a cut or a freeze: new connections pass again, frozen ones flow again. */
  restore(): void {
    this.#cut = undefined;
    const frozen = this.#frozen;
    this.#frozen = undefined;
    for (const link of this.#links) {
      if (link.applicationName === frozen && !link.client.destroyed) {
        link.client.resume();
        link.upstream?.resume();
      }
    }
  }

  async stop(): Promise<void> {
    for (const link of this.#links) this.#destroy(link);
    this.#links.clear();
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #destroy(link: Link): void {
    // The connection closes under the client, as when its backend is killed. (Not
    // resetAndDestroy(): it left a request pending that kept the process from exiting.)
    link.client.destroy();
    link.upstream?.destroy();
    this.#links.delete(link);
  }

  #accept(client: net.Socket): void {
    const link: Link = { client, upstream: undefined, applicationName: undefined };
    this.#links.add(link);
    client.on('error', () => this.#destroy(link));
    client.on('close', () => {
      link.upstream?.destroy();
      this.#links.delete(link);
    });
    const upstream = net.connect(this.target.port, this.target.host);
    link.upstream = upstream;
    upstream.on('error', () => this.#destroy(link));
    upstream.on('close', () => {
      if (!client.destroyed) client.destroy();
      this.#links.delete(link);
    });
    // Answers (to an SSLRequest, say) flow back from the start.
    upstream.pipe(client);
    // Reads the client's first messages up to the startup message, forwarding them as they come.
    let pending = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 8) {
        const length = pending.readInt32BE(0);
        if (pending.length < length) return;
        const message = pending.subarray(0, length);
        pending = pending.subarray(length);
        const code = message.readInt32BE(4);
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          upstream.write(message);
          continue;
        }
        // The startup message: protocol version, then name\0value\0 pairs.
        const fields = message.subarray(8).toString('utf8').split('\0');
        for (let i = 0; i + 1 < fields.length; i += 2) {
          if (fields[i] === 'application_name') link.applicationName = fields[i + 1];
        }
        client.off('data', onData);
        if (this.#cut !== undefined && link.applicationName === this.#cut) {
          this.refused += 1;
          this.#destroy(link);
          return;
        }
        upstream.write(message);
        if (pending.length > 0) upstream.write(pending);
        client.pipe(upstream);
        if (this.#frozen !== undefined && link.applicationName === this.#frozen) {
          client.pause();
          upstream.pause();
        }
        return;
      }
    };
    client.on('data', onData);
  }
}
