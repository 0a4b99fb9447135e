import type { Config } from '../config/schema.js';
import type { Clock } from '../domain/clock.js';
import { rotateSigningKeys, rotationPolicy } from '../domain/keys/key-admin.js';
import type { KeyEncryptionKeys } from '../domain/keys/key-encryption.js';
import type { Logger } from '../observability/logger.js';
import type { Orm } from '../persistence/orm.js';
import type { SweepMetrics } from './metrics.js';
import type { SweepReport } from './run.js';

export const ROTATE_SIGNING_KEYS_JOB = 'rotate-signing-keys';

export interface KeyRotationDeps {
  readonly orm: Orm;
  readonly logger: Logger;
  readonly metrics?: SweepMetrics;
  readonly clock: Clock;
  readonly keyEncryptionKeys: KeyEncryptionKeys;
}

/** What a rotation run did, beyond the sweep-shaped report. */
export interface KeyRotationReport extends SweepReport {
  readonly staged?: { kid: string; activatesAt: string };
  readonly retired: readonly string[];
}

/**
 * The `rotate-signing-keys` job: one lifecycle step (signingKeys.rotate) in one transaction under
 * the signing keys' advisory lock, tried without waiting (a replica that finds it taken skips the
 * run, as the sweeps do). Never throws; one JSON log line per run, and the sweeps' metrics under
 * its job name (`rowsDeleted`: keys removed). The scheduler and `latchkey sweep` both run it.
 */
export async function runKeyRotation(config: Config, deps: KeyRotationDeps): Promise<KeyRotationReport> {
  const started = performance.now();
  let report: KeyRotationReport;
  try {
    const result = await rotateSigningKeys(deps.orm.em.fork(), deps.keyEncryptionKeys, deps.clock, rotationPolicy(config), { wait: false });
    report = {
      job: ROTATE_SIGNING_KEYS_JOB,
      outcome: result.skippedLock ? 'skipped_lock' : 'completed',
      rowsDeleted: result.removed,
      batches: result.skippedLock ? 0 : 1,
      durationMs: Math.round(performance.now() - started),
      skippedForLock: result.skippedLock,
      stoppedAtTimeLimit: false,
      retired: result.retired,
      ...(result.staged ? { staged: { kid: result.staged.kid, activatesAt: result.staged.activatesAt.toISOString() } } : {}),
    };
  } catch (error) {
    report = {
      job: ROTATE_SIGNING_KEYS_JOB,
      outcome: 'failed',
      rowsDeleted: 0,
      batches: 0,
      durationMs: Math.round(performance.now() - started),
      skippedForLock: false,
      stoppedAtTimeLimit: false,
      retired: [],
      error: error instanceof Error ? error : new Error(String(error)),
    };
  }
  const { error, ...fields } = report;
  if (error) deps.logger.error({ ...fields, err: error }, 'key rotation run failed');
  else if (report.skippedForLock) deps.logger.debug(fields, 'key rotation run skipped: another replica holds the lock');
  else deps.logger.info(fields, 'key rotation run finished');
  deps.metrics?.runFinished(ROTATE_SIGNING_KEYS_JOB, report.outcome, report.rowsDeleted, report.durationMs / 1000, new Date(deps.clock.now()));
  return report;
}
