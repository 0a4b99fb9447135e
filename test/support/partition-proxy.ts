import net, { type AddressInfo } from 'node:net';

/**
 * A TCP proxy in front of the test database that can partition the network like a black hole:
 * while frozen it keeps reading from both sides but forwards nothing (bytes and half-closes are
 * held in order, connections stay open, new connections are accepted and held the same way).
 * thaw() then delivers everything it held, late, in order: a statement sent during the partition
 * reaches the database after the partition, as it would when a real network heals.
 *
 * Unlike TcpProxy (proxy.ts), it can also start the partition at one chosen statement
 * (freezeOnStatement), so that what the network holds is that write and not a read before it, and
 * it can tell when every statement it held has been answered by the database after the heal
 * (thaw() resolves then), so a test can look at the store only once the late writes have run.
 */
export class PartitionProxy {
  #server: net.Server | undefined;
  #port = 0;
  #frozen = false;
  readonly #links = new Set<Link>();
  #trigger: { pattern: string; fired: () => void } | undefined;

  constructor(private readonly target: { host: string; port: number }) {}

  static forUrl(url: string): PartitionProxy {
    const parsed = new URL(url);
    return new PartitionProxy({ host: parsed.hostname, port: Number(parsed.port || 5432) });
  }

  /** The same URL, pointing through this proxy. */
  rewrite(url: string): string {
    const parsed = new URL(url);
    parsed.hostname = '127.0.0.1';
    parsed.port = String(this.#port);
    return parsed.toString();
  }

  get frozen(): boolean {
    return this.#frozen;
  }

  async start(): Promise<void> {
    const server = net.createServer((client) => this.#accept(client));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.#port = (server.address() as AddressInfo).port;
    this.#server = server;
  }

  /** Black hole from now on: nothing passes in either direction until thaw(). */
  freeze(): void {
    this.#frozen = true;
    this.#trigger = undefined;
  }

  /**
   * Arms a partition that starts with the first chunk the service sends containing `sqlFragment`
   * (matched in the raw protocol bytes, so the statement's text as sent): that chunk is the first
   * thing held. Resolves when it fired.
   */
  freezeOnStatement(sqlFragment: string): Promise<void> {
    return new Promise((resolve) => {
      this.#trigger = { pattern: sqlFragment, fired: resolve };
    });
  }

  /** Whether the requests held right now (service to database) include `sqlFragment`. */
  holds(sqlFragment: string): boolean {
    for (const link of this.#links) if (link.toServer.heldText().includes(sqlFragment)) return true;
    return false;
  }

  /**
   * Ends the partition: delivers what was held (requests to the database, answers to the
   * service) and resumes forwarding. Resolves, with the number of connections on which it
   * delivered held requests, once the database has answered (or closed) each of them.
   */
  async thaw(timeoutMs = 15_000): Promise<number> {
    this.#frozen = false;
    this.#trigger = undefined;
    const answered: Promise<void>[] = [];
    for (const link of this.#links) {
      const delivered = link.toServer.flush();
      if (delivered && !link.upstreamClosed) answered.push(link.nextAnswer());
      link.toClient.flush();
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('the database did not answer the held requests after the heal')), timeoutMs);
    });
    try {
      await Promise.race([Promise.all(answered), timeout]);
      return answered.length;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Cuts every connection and stops listening. */
  async stop(): Promise<void> {
    for (const link of this.#links) link.destroy();
    this.#links.clear();
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #accept(client: net.Socket): void {
    const upstream = net.connect(this.target.port, this.target.host);
    const link = new Link(client, upstream, () => this.#frozen, (chunk, tail) => this.#fires(chunk, tail));
    this.#links.add(link);
    link.onGone = () => this.#links.delete(link);
  }

  /** Whether this chunk (with the tail of the previous one) starts an armed partition. */
  #fires(chunk: Buffer, tail: string): boolean {
    const trigger = this.#trigger;
    if (!trigger || this.#frozen) return false;
    if (!(tail + chunk.toString('latin1')).includes(trigger.pattern)) return false;
    this.#frozen = true;
    this.#trigger = undefined;
    trigger.fired();
    return true;
  }
}

/** One direction of a link: forwards chunks, or holds them (and the end) while frozen. */
class Direction {
  readonly #held: (Buffer | 'end')[] = [];
  #ended = false;

  constructor(private readonly to: net.Socket) {}

  forward(chunk: Buffer | 'end', frozen: boolean): void {
    if (frozen || this.#held.length > 0) this.#held.push(chunk);
    else this.#write(chunk);
  }

  /** Delivers what was held; true when it held any bytes. */
  flush(): boolean {
    const held = this.#held.splice(0);
    for (const chunk of held) this.#write(chunk);
    return held.some((chunk) => chunk !== 'end');
  }

  heldText(): string {
    return this.#held.map((chunk) => (chunk === 'end' ? '' : chunk.toString('latin1'))).join('');
  }

  get holding(): boolean {
    return this.#held.length > 0;
  }

  #write(chunk: Buffer | 'end'): void {
    if (this.to.destroyed || this.#ended) return;
    if (chunk === 'end') {
      this.#ended = true;
      this.to.end();
    } else {
      this.to.write(chunk);
    }
  }
}

class Link {
  readonly toServer: Direction;
  readonly toClient: Direction;
  upstreamClosed = false;
  onGone: () => void = () => undefined;
  #tail = '';
  #answerWaiters: (() => void)[] = [];

  constructor(
    private readonly client: net.Socket,
    private readonly upstream: net.Socket,
    frozen: () => boolean,
    fires: (chunk: Buffer, tail: string) => boolean,
  ) {
    this.toServer = new Direction(upstream);
    this.toClient = new Direction(client);
    client.on('data', (chunk: Buffer) => {
      const starts = fires(chunk, this.#tail);
      this.#tail = (this.#tail + chunk.toString('latin1')).slice(-256);
      this.toServer.forward(chunk, starts || frozen());
    });
    upstream.on('data', (chunk: Buffer) => {
      this.#answered();
      this.toClient.forward(chunk, frozen());
    });
    client.on('end', () => this.toServer.forward('end', frozen()));
    upstream.on('end', () => this.toClient.forward('end', frozen()));
    // A reset is not held: the side that reset is gone, and writing to it would fail anyway.
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
    // A side that closed (or reset) is ended on the other side, after what is held for it.
    client.on('close', () => {
      this.toServer.forward('end', frozen());
      this.#gone();
    });
    upstream.on('close', () => {
      this.upstreamClosed = true;
      this.#answered();
      this.toClient.forward('end', frozen());
      this.#gone();
    });
  }

  /** Resolves on the next bytes (or close) from the database on this connection. */
  nextAnswer(): Promise<void> {
    return new Promise((resolve) => this.#answerWaiters.push(resolve));
  }

  destroy(): void {
    this.client.destroy();
    this.upstream.destroy();
  }

  #answered(): void {
    for (const resolve of this.#answerWaiters.splice(0)) resolve();
  }

  #gone(): void {
    if (this.client.destroyed && this.upstream.destroyed && !this.toServer.holding && !this.toClient.holding) this.onGone();
  }
}
