import { AuditEventSchema } from './audit-event.entity.js';
import { OneTimeTokenSchema } from './one-time-token.entity.js';
import { SessionSchema } from './session.entity.js';
import { SigningKeySchema } from './signing-key.entity.js';
import { UserSchema } from './user.entity.js';

export { AuditEventSchema, OneTimeTokenSchema, SessionSchema, SigningKeySchema, UserSchema };
export const entities = [UserSchema, SessionSchema, OneTimeTokenSchema, SigningKeySchema, AuditEventSchema];
