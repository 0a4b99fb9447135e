import net, { type AddressInfo } from 'node:net';

/**
 * A TCP proxy in front of the test database, so a test can make the database "go away"
 * (every connection cut, new ones refused) and come back, without stopping a shared server.
 */
export class TcpProxy {
  #server: net.Server | undefined;
  readonly #sockets = new Set<net.Socket>();
  readonly #upstreams = new Set<net.Socket>();
  #port = 0;
  #frozen = false;
  #responsesFrozen = false;

  constructor(private readonly target: { host: string; port: number }) {}

  static forUrl(url: string): TcpProxy {
    const parsed = new URL(url);
    return new TcpProxy({ host: parsed.hostname, port: Number(parsed.port || 5432) });
  }

  /** The same URL, pointing through this proxy. */
  rewrite(url: string): string {
    const parsed = new URL(url);
    parsed.hostname = '127.0.0.1';
    parsed.port = String(this.#port);
    return parsed.toString();
  }

  /** Client and upstream sockets currently open through the proxy. */
  get openSockets(): number {
    return this.#sockets.size;
  }

  get port(): number {
    return this.#port;
  }

  async start(): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target.port, this.target.host);
      for (const socket of [client, upstream]) {
        this.#sockets.add(socket);
        socket.on('close', () => this.#sockets.delete(socket));
        socket.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      this.#upstreams.add(upstream);
      upstream.on('close', () => this.#upstreams.delete(upstream));
      client.pipe(upstream);
      upstream.pipe(client);
      if (this.#frozen) {
        client.pause();
        upstream.pause();
      }
      if (this.#responsesFrozen) upstream.pause();
    });
    await new Promise<void>((resolve) => server.listen(this.#port, '127.0.0.1', resolve));
    this.#port = (server.address() as AddressInfo).port;
    this.#server = server;
  }

  /**
   * The database stops answering without closing anything (a hung primary, a black-holed
   * network): connections stay open, bytes stop flowing in both directions.
   */
  freeze(): void {
    this.#frozen = true;
    for (const socket of this.#sockets) socket.pause();
  }

  /**
   * Requests still reach the database and run, but nothing comes back: a statement commits and
   * its response is lost on the way (a connection dropped after COMMIT).
   */
  freezeResponses(): void {
    this.#responsesFrozen = true;
    for (const socket of this.#upstreams) socket.pause();
  }

  thaw(): void {
    this.#responsesFrozen = false;
    this.#frozen = false;
    for (const socket of this.#sockets) socket.resume();
  }

  /** Cuts every connection and stops listening: the database is unreachable. */
  async stop(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
    this.#upstreams.clear();
    this.#responsesFrozen = false;
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
