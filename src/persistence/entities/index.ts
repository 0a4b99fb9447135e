import { AuditEventSchema } from './audit-event.entity.js';
import { LoginThrottleSchema } from './login-throttle.entity.js';
import { OneTimeTokenSchema } from './one-time-token.entity.js';
import { RevocationEventSchema, RevocationFeedHorizonSchema } from './revocation-event.entity.js';
import { SchedulerLeaseSchema } from './scheduler-lease.entity.js';
import { SessionSchema } from './session.entity.js';
import { RefreshSecretKeySchema, SigningKeySchema } from './signing-key.entity.js';
import { UserSchema } from './user.entity.js';

export { AuditEventSchema, LoginThrottleSchema, OneTimeTokenSchema, RevocationEventSchema, RevocationFeedHorizonSchema, SchedulerLeaseSchema, RefreshSecretKeySchema, SessionSchema, SigningKeySchema, UserSchema };
export const entities = [UserSchema, SessionSchema, OneTimeTokenSchema, SigningKeySchema, AuditEventSchema, SchedulerLeaseSchema, RevocationEventSchema, RevocationFeedHorizonSchema, RefreshSecretKeySchema, LoginThrottleSchema];
