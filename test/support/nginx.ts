import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closedPort, tryConnect } from './children.js';
import { waitFor } from './wait.js';

/** The nginx binary on PATH (or in /usr/sbin), or undefined. */
export function nginxBinary(): string | undefined {
  for (const candidate of ['nginx', '/usr/sbin/nginx']) {
    if (spawnSync(candidate, ['-v'], { stdio: 'ignore' }).status === 0) return candidate;
  }
  return undefined;
}

/** What the upstream behind the gateway received: one entry per request that reached it. */
export interface Received {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
}

/** A tiny upstream that records the headers of every request it gets and answers 200 `upstream`. */
export class EchoUpstream {
  readonly received: Received[] = [];
  /** `record: false` for load (the bench): nothing is kept. */
  constructor(private readonly record = true) {}
  readonly #server: Server = createServer((request, response) => {
    request.resume();
    if (this.record) this.received.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers });
    response.writeHead(200, { 'content-type': 'text/plain' });
    response.end('upstream');
  });

  async start(): Promise<number> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    return (this.#server.address() as AddressInfo).port;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }
}

/**
 * The nginx configuration the README shows, on loopback: `auth_request` to Latchkey's
 * forward-auth endpoint, the identity headers copied from its answer onto the upstream request
 * (which also replaces or, when empty, drops any the client sent under those names), and a
 * location that asks for the `admin` role.
 */
export function nginxConfig(dir: string, ports: { listen: number; latchkey: number; upstream: number }, options: { unprotected?: boolean } = {}): string {
  const authLocation = (name: string, requiredRoles: string) => `
    location = ${name} {
      internal;
      proxy_pass http://latchkey/forward-auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      # Set by the gateway, never taken from the client (an empty value drops the client's one).
      proxy_set_header X-Latchkey-Required-Roles "${requiredRoles}";
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }`;
  const protectedLocation = (path: string, auth: string) => `
    location ${path} {
      auth_request ${auth};
      auth_request_set $latchkey_user_id $upstream_http_x_latchkey_user_id;
      auth_request_set $latchkey_session_id $upstream_http_x_latchkey_session_id;
      auth_request_set $latchkey_email $upstream_http_x_latchkey_email;
      auth_request_set $latchkey_roles $upstream_http_x_latchkey_roles;
      # Only what Latchkey answered reaches the upstream: these replace the client's headers of
      # the same names, and an empty value (no roles) removes the client's header altogether.
      proxy_set_header X-Latchkey-User-Id $latchkey_user_id;
      proxy_set_header X-Latchkey-Session-Id $latchkey_session_id;
      proxy_set_header X-Latchkey-Email $latchkey_email;
      proxy_set_header X-Latchkey-Roles $latchkey_roles;
      proxy_set_header X-Latchkey-Required-Roles "";
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://app;
    }`;
  return `
worker_processes 1;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream latchkey { server 127.0.0.1:${ports.latchkey}; keepalive 32; }
  upstream app { server 127.0.0.1:${ports.upstream}; keepalive 32; }
  server {
    listen 127.0.0.1:${ports.listen};
    ${authLocation('/_latchkey_auth', '')}
    ${authLocation('/_latchkey_auth_admin', 'admin')}
    ${protectedLocation('/', '/_latchkey_auth')}
    ${protectedLocation('/admin/', '/_latchkey_auth_admin')}
    ${options.unprotected ? '# The bench\'s baseline: the same proxying without the check.\n    location /open/ { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://app; }' : ''}
  }
}
`;
}

/** nginx as a child process (`daemon off`) with a generated configuration in a directory of its own. */
export class Nginx {
  #child: ChildProcess | undefined;
  #stderr = '';
  readonly dir = mkdtempSync(join(tmpdir(), 'latchkey-nginx-'));
  port = 0;

  constructor(private readonly binary: string) {
    // Worker processes may run as another user when the tests run as root.
    chmodSync(this.dir, 0o755);
  }

  async start(ports: { latchkey: number; upstream: number }, options: { unprotected?: boolean; workers?: number } = {}): Promise<number> {
    this.port = await closedPort();
    const conf = join(this.dir, 'nginx.conf');
    writeFileSync(conf, nginxConfig(this.dir, { listen: this.port, ...ports }, options).replace('worker_processes 1;', `worker_processes ${options.workers ?? 1};`));
    const child = spawn(this.binary, ['-p', this.dir, '-e', join(this.dir, 'error.log'), '-c', conf, '-g', `daemon off; pid ${join(this.dir, 'nginx.pid')};`], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.#child = child;
    child.stderr!.on('data', (chunk: Buffer) => (this.#stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    const up = await Promise.race([waitFor(() => tryConnect(this.port), (r) => r === 'connected', 10_000), exited.then(() => 'exited')]);
    if (up !== 'connected') throw new Error(`nginx did not start (${up}): ${this.#stderr}${this.errorLog()}`);
    return this.port;
  }

  errorLog(): string {
    try {
      return readFileSync(join(this.dir, 'error.log'), 'utf8');
    } catch {
      return '';
    }
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (child && child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
