import { type ClientReadableStream, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import pg from 'pg';
import { comparePositions, decodeCursor, type FeedPosition, type RevocationEvent } from '../../src/domain/revocations/events.js';
import type { SessionServiceClient, WatchRevocationsResponse } from '../../src/generated/latchkey/session/v1/session_service.js';
import { PostgresRevocationFeed, pgFeedDb } from '../../src/persistence/revocation-feed.js';
import { sessionClient } from './clients.js';
import { waitFor } from './wait.js';

/** One WatchRevocations stream on a client of its own, collecting every message. */
export interface RevocationStream {
  readonly messages: WatchRevocationsResponse[];
  readonly ended: Promise<{ code: number; details?: string }>;
  /** Waits until the messages satisfy `predicate` (or the stream ends, or `timeoutMs`); returns whether they do. */
  until(predicate: (messages: WatchRevocationsResponse[]) => boolean, timeoutMs?: number): Promise<boolean>;
  /** The events received, in order. */
  events(): NonNullable<WatchRevocationsResponse['event']>[];
  close(): void;
}

export function openRevocationStream(port: number, apiKey: string, sinceCursor = ''): RevocationStream {
  const client: SessionServiceClient = sessionClient(port);
  const metadata = new Metadata();
  metadata.set('x-api-key', apiKey);
  const stream: ClientReadableStream<WatchRevocationsResponse> = client.watchRevocations({ sinceCursor }, metadata);
  const messages: WatchRevocationsResponse[] = [];
  let over = false;
  const ended = new Promise<{ code: number; details?: string }>((resolve) => {
    stream.on('error', (error: ServiceError) => resolve({ code: error.code, details: error.details }));
    stream.on('status', (s: { code: number }) => {
      if (s.code === status.OK) resolve({ code: 0 });
    });
  }).then((end) => {
    over = true;
    return end;
  });
  stream.on('data', (message: WatchRevocationsResponse) => messages.push(message));
  return {
    messages,
    ended,
    until: (predicate, timeoutMs = 15_000) => waitFor(async () => predicate(messages) || over, (done) => done, timeoutMs, 10).then(() => predicate(messages)),
    events: () => messages.filter((m) => m.event).map((m) => m.event!),
    close() {
      stream.cancel();
      client.close();
    },
  };
}

/** Positions strictly increasing (every event once, in feed order). */
export function expectStrictlyIncreasing(positions: FeedPosition[]): void {
  for (let i = 1; i < positions.length; i++) {
    if (comparePositions(positions[i - 1]!, positions[i]!) >= 0) {
      throw new Error(`positions out of order at ${i}: ${positions.map((p) => `${p.xid}.${p.id}`).join(', ')}`);
    }
  }
}

export const positionOf = (cursor: string): FeedPosition => {
  const position = decodeCursor(cursor);
  if (!position) throw new Error(`not a cursor: ${cursor}`);
  return position;
};

/**
 * The feed's ordered reader (PostgresRevocationFeed) on a connection opened for each read, so it
 * works on the embedded database too (one connection at a time) as well as on PostgreSQL.
 */
export async function readFeed(url: string, after: FeedPosition, pageSize = 2): Promise<{ events: RevocationEvent[]; last: FeedPosition }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const feed = new PostgresRevocationFeed(pgFeedDb(client));
    const events: RevocationEvent[] = [];
    let from = after;
    // Small pages: the paging is part of what is read in order.
    for (;;) {
      const page = await feed.readOrdered({ after: from, limit: pageSize });
      events.push(...page.events);
      if (page.events.length > 0) from = page.events.at(-1)!.position;
      if (page.complete) break;
    }
    return { events, last: from };
  } finally {
    await client.end();
  }
}
