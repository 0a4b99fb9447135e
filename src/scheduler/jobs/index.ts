import { revocationRelevanceMs, type Config } from '../../config/schema.js';
import type { SweepJob } from '../sweep.js';
import { sweepAuditEvents } from './sweep-audit-events.js';
import { sweepOneTimeTokens } from './sweep-one-time-tokens.js';
import { sweepRevocationEvents } from './sweep-revocation-events.js';
import { sweepSessions } from './sweep-sessions.js';
import { sweepLoginThrottles } from './sweep-login-throttles.js';

export { sweepAuditEvents, sweepLoginThrottles, sweepOneTimeTokens, sweepRevocationEvents, sweepSessions };

export interface ScheduledSweep {
  readonly job: SweepJob;
  /** Cron expression, already validated by loadConfig. */
  readonly schedule: string;
}

/** Every sweep with its schedule, in the order `latchkey sweep` runs them. */
export function sweepJobs(config: Config): ScheduledSweep[] {
  return [
    { job: sweepSessions({ revokedRetentionMs: config.REVOKED_SESSION_RETENTION }), schedule: config.SESSION_SWEEP_CRON },
    { job: sweepOneTimeTokens(), schedule: config.TOKEN_SWEEP_CRON },
    { job: sweepAuditEvents({ retentionMs: config.AUDIT_RETENTION }), schedule: config.AUDIT_SWEEP_CRON },
    { job: sweepRevocationEvents({ relevanceMs: revocationRelevanceMs(config) }), schedule: config.REVOCATION_SWEEP_CRON },
    { job: sweepLoginThrottles(), schedule: config.LOGIN_THROTTLE_SWEEP_CRON },
  ];
}
