import { defineEntity, p, type InferEntity } from '@mikro-orm/core';

/**
 * An append-only record of a security-relevant event. No foreign keys: the trail must outlive
 * the user and session it mentions. `details` never holds a password or a token.
 */
export const AuditEventSchema = defineEntity({
  name: 'AuditEvent',
  tableName: 'audit_events',
  indexes: [
    { name: 'audit_events_occurred_at_idx', properties: ['occurredAt'] },
    { name: 'audit_events_user_id_occurred_at_idx', properties: ['userId', 'occurredAt'] },
  ],
  properties: {
    id: p.bigint('number').primary().autoincrement(),
    occurredAt: p.datetime(),
    eventType: p.string().length(64),
    userId: p.uuid().nullable(),
    sessionId: p.uuid().nullable(),
    ipAddress: p.string().length(64).nullable(),
    userAgent: p.string().length(512).nullable(),
    details: p.json<Record<string, unknown>>().default('{}'),
  },
});

export type AuditEvent = InferEntity<typeof AuditEventSchema>;
