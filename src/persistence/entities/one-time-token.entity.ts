import { defineEntity, p, type InferEntity } from '@mikro-orm/core';
import { UserSchema } from './user.entity.js';

export const ONE_TIME_TOKEN_PURPOSES = ['password_reset', 'email_verification'] as const;
export type OneTimeTokenPurpose = (typeof ONE_TIME_TOKEN_PURPOSES)[number];

/**
 * A single-use token (password reset, email verification), stored only as a SHA-256 digest, with
 * the address it was sent to. At most one unused token per user and purpose.
 */
export const OneTimeTokenSchema = defineEntity({
  name: 'OneTimeToken',
  tableName: 'one_time_tokens',
  indexes: [
    { name: 'one_time_tokens_user_id_idx', properties: ['user'] },
    { name: 'one_time_tokens_expires_at_idx', properties: ['expiresAt'] },
    { name: 'one_time_tokens_used_at_idx', properties: ['usedAt'] },
  ],
  uniques: [{ name: 'one_time_tokens_user_id_purpose_unused_key', properties: ['user', 'purpose'], where: 'used_at is null' }],
  properties: {
    id: p.uuid().primary(),
    user: p.manyToOne(UserSchema).deleteRule('cascade'),
    purpose: p.enum(ONE_TIME_TOKEN_PURPOSES),
    tokenHash: p.uint8array().unique('one_time_tokens_token_hash_key'),
    /** The address the token was issued for; null only for tokens issued before it was recorded. */
    email: p.string().length(254).nullable(),
    createdAt: p.datetime(),
    expiresAt: p.datetime(),
    usedAt: p.datetime().nullable(),
  },
});

export type OneTimeToken = InferEntity<typeof OneTimeTokenSchema>;
