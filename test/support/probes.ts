import http from 'node:http';
import type { ClientReadableStream, ServiceError } from '@grpc/grpc-js';
import { healthClient } from './clients.js';
import { waitFor } from './wait.js';

/** One plain HTTP GET on a fresh connection (no keep-alive agent holding the server open). */
export function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: '127.0.0.1', port, path, agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    request.on('error', reject);
  });
}

export interface HealthWatch {
  /** Every status received so far, in order. */
  readonly statuses: string[];
  /** Resolves with the status code the stream ended with (0 when it ended cleanly). */
  readonly ended: Promise<{ code: number }>;
  /** Polls until `status` has been received (or the safety net passes); returns whether it was. */
  until(status: string, timeoutMs?: number): Promise<boolean>;
  /** Cancels the stream and closes the client. */
  cancel(): void;
}

/** Opens grpc.health.v1.Health/Watch for `service` on its own connection. */
export function watchHealth(port: number, service = ''): HealthWatch {
  const client = healthClient(port);
  const call = (client.Watch as (request: { service: string }) => ClientReadableStream<{ status: string }>)({ service });
  const statuses: string[] = [];
  call.on('data', (message: { status: string }) => statuses.push(message.status));
  const ended = new Promise<{ code: number }>((resolve) => {
    call.on('error', (error: ServiceError) => resolve({ code: error.code }));
    call.on('status', (status: { code: number }) => resolve({ code: status.code }));
  });
  void ended.then(() => client.close());
  return {
    statuses,
    ended,
    async until(status, timeoutMs = 10_000) {
      return waitFor(async () => statuses.includes(status), (seen) => seen, timeoutMs, 20);
    },
    cancel() {
      call.cancel();
      client.close();
    },
  };
}
