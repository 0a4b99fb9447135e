import { defineEntity, p, type InferEntity } from '@mikro-orm/core';

/**
 * One entry of the revocation feed (see Migration20261201130000RevocationFeed): written by
 * triggers, read by the replicas' followers and WatchRevocations in (xid, id) order below the
 * commit-visibility watermark, swept once older than the access-token lifetime plus skew.
 */
export const RevocationEventSchema = defineEntity({
  name: 'RevocationEvent',
  tableName: 'revocation_events',
  properties: {
    id: p.bigint().primary().autoincrement(),
    xid: p.string().columnType('xid8').defaultRaw('pg_current_xact_id()'),
    kind: p.string().length(16),
    sessionId: p.uuid().nullable(),
    userId: p.uuid(),
    reason: p.string().length(32),
    /** For a `user` event: the user's roles after the change; tokens carrying any other role are stale. */
    roles: p.array().nullable(),
    occurredAt: p.datetime(),
  },
  indexes: [
    { name: 'revocation_events_xid_id_idx', properties: ['xid', 'id'] },
    { name: 'revocation_events_occurred_at_idx', properties: ['occurredAt'] },
  ],
});

export type RevocationEvent = InferEntity<typeof RevocationEventSchema>;

/** The greatest feed position the sweep has deleted (one row, kept by a trigger): cursors below it are expired. */
export const RevocationFeedHorizonSchema = defineEntity({
  name: 'RevocationFeedHorizon',
  tableName: 'revocation_feed_horizon',
  properties: {
    id: p.integer().primary().autoincrement(false).default(1),
    xid: p.string().columnType('xid8'),
    eventId: p.bigint(),
  },
  checks: [{ name: 'revocation_feed_horizon_single_row', expression: 'id = 1' }],
});
