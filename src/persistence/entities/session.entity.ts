import { defineEntity, p, type InferEntity } from '@mikro-orm/core';
import { UserSchema } from './user.entity.js';

/**
 * One login on one device, and one refresh-token family. Only SHA-256 digests of refresh secrets
 * are stored: the current generation's, and the previous one's so that a retry inside the grace
 * window can be told apart from reuse.
 */
export const SessionSchema = defineEntity({
  name: 'Session',
  tableName: 'sessions',
  indexes: [
    // A user's sessions, most recently used first: listings, revoking a user's sessions, and the
    // login's session limit (read backwards, matching its order by exactly). The only index that
    // starts with user_id, so the login's plan does not depend on the statistics.
    { name: 'sessions_user_id_last_used_at_created_at_id_idx', properties: ['user', 'lastUsedAt', 'createdAt', 'id'] },
    { name: 'sessions_idle_expires_at_idx', properties: ['idleExpiresAt'] },
    { name: 'sessions_absolute_expires_at_idx', properties: ['absoluteExpiresAt'] },
    // The sweep of long-revoked sessions; partial, so it is never a plan for `revoked_at is null`.
    { name: 'sessions_revoked_at_not_null_idx', properties: ['revokedAt'], where: 'revoked_at is not null' },
  ],
  properties: {
    id: p.uuid().primary(),
    user: p.manyToOne(UserSchema).deleteRule('cascade'),
    generation: p.integer().default(0),
    refreshSecretHash: p.uint8array(),
    previousSecretHash: p.uint8array().nullable(),
    rotatedAt: p.datetime().nullable(),
    ipAddress: p.string().length(64).default(''),
    userAgent: p.string().length(512).default(''),
    deviceName: p.string().length(200).default(''),
    createdAt: p.datetime(),
    lastUsedAt: p.datetime(),
    idleExpiresAt: p.datetime(),
    absoluteExpiresAt: p.datetime(),
    revokedAt: p.datetime().nullable(),
    revokedReason: p.string().length(64).nullable(),
  },
});

export type Session = InferEntity<typeof SessionSchema>;
