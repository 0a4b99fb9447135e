import { defineEntity, p, type InferEntity } from '@mikro-orm/core';

/** An account. `email` is stored normalised (trimmed, lower-cased) so the unique index is the check. */
export const UserSchema = defineEntity({
  name: 'User',
  tableName: 'users',
  properties: {
    id: p.uuid().primary(),
    email: p.string().length(254).unique('users_email_key'),
    passwordHash: p.text(),
    displayName: p.string().length(200).default(''),
    roles: p.array().default([]),
    emailVerifiedAt: p.datetime().nullable(),
    disabledAt: p.datetime().nullable(),
    passwordChangedAt: p.datetime(),
    lastLoginAt: p.datetime().nullable(),
    createdAt: p.datetime(),
    updatedAt: p.datetime(),
  },
});

export type User = InferEntity<typeof UserSchema>;
