import { loadConfig } from '../../src/config/load.js';
import { configProblems } from '../support/config.js';
import { createLogger } from '../../src/observability/logger.js';
import type { Orm } from '../../src/persistence/orm.js';
import { createSweepScheduler } from '../../src/scheduler/index.js';

describe('scheduled work configuration', () => {
  it('has the documented defaults', () => {
    expect(loadConfig({})).toMatchObject({
      SCHEDULER_ENABLED: true,
      SESSION_SWEEP_CRON: '*/30 * * * *',
      TOKEN_SWEEP_CRON: '15 * * * *',
      AUDIT_SWEEP_CRON: '45 3 * * *',
      SWEEP_BATCH_SIZE: 1000,
      SWEEP_DUTY_CYCLE: 50,
      SWEEP_MAX_DURATION: 60_000,
      REVOKED_SESSION_RETENTION: 7 * 86_400_000,
      AUDIT_RETENTION: 90 * 86_400_000,
    });
  });

  it.each([
    [{}, true],
    [{ NODE_ENV: 'production', DATABASE_URL: 'postgres://db/x', KEY_ENCRYPTION_KEY: Buffer.alloc(32).toString('base64'), PUBLIC_URL: 'https://x' }, true],
    [{ NODE_ENV: 'test' }, false],
    [{ NODE_ENV: 'test', SCHEDULER_ENABLED: '' }, false],
    [{ NODE_ENV: 'test', SCHEDULER_ENABLED: 'true' }, true],
    [{ NODE_ENV: 'development', SCHEDULER_ENABLED: 'false' }, false],
  ])('SCHEDULER_ENABLED in %j is %s', (env, enabled) => {
    expect(loadConfig(env).SCHEDULER_ENABLED).toBe(enabled);
  });

  it.each(['*/5 * * * *', '0 */2 * * * *', '@hourly', ' 15 3 * * 1-5 '])('accepts the cron expression %j', (expression) => {
    expect(loadConfig({ SESSION_SWEEP_CRON: expression }).SESSION_SWEEP_CRON).toBe(expression.trim());
  });

  it.each([
    ['61 * * * *', 'must be a cron expression such as `*/30 * * * *` (5 fields, or 6 with seconds first)'],
    ['every 30 minutes', 'must be a cron expression such as `*/30 * * * *` (5 fields, or 6 with seconds first)'],
    ['* * * * * * 2030', 'must be a cron expression such as `*/30 * * * *` (5 fields, or 6 with seconds first)'],
    ['2030-01-01T00:00:00', 'must be a cron expression that matches a future time (not a date)'],
    ['0 0 30 2 *', 'must be a cron expression that matches a future time (not a date)'],
  ])('refuses %j, naming the variable and never echoing the value', (expression, message) => {
    const problems = configProblems({ TOKEN_SWEEP_CRON: expression });
    expect(problems).toEqual([{ name: 'TOKEN_SWEEP_CRON', message }]);
    expect(JSON.stringify(problems)).not.toContain(expression);
  });

  it('lists every bad schedule and bound at once', () => {
    const problems = configProblems({
      SESSION_SWEEP_CRON: '*/61 * * * *',
      TOKEN_SWEEP_CRON: 'hourly',
      AUDIT_SWEEP_CRON: '0 3 * *',
      SWEEP_BATCH_SIZE: '0',
      SWEEP_DUTY_CYCLE: '0',
      SWEEP_MAX_DURATION: '500ms',
      REVOKED_SESSION_RETENTION: 'forever',
      AUDIT_RETENTION: '1h',
      SCHEDULER_ENABLED: 'yes',
    });
    expect(problems.map((p) => p.name).sort()).toEqual(
      [
        'AUDIT_RETENTION',
        'AUDIT_SWEEP_CRON',
        'REVOKED_SESSION_RETENTION',
        'SCHEDULER_ENABLED',
        'SESSION_SWEEP_CRON',
        'SWEEP_BATCH_SIZE',
        'SWEEP_DUTY_CYCLE',
        'SWEEP_MAX_DURATION',
        'TOKEN_SWEEP_CRON',
      ].sort(),
    );
  });
});

describe('createSweepScheduler', () => {
  // Nothing here starts the scheduler, so the database is never touched.
  const orm = {} as Orm;
  const logger = createLogger('silent');

  it('schedules no job when NODE_ENV=test, unless SCHEDULER_ENABLED=true', () => {
    expect(createSweepScheduler(loadConfig({ NODE_ENV: 'test' }), { orm, logger }).jobs).toEqual([]);
    expect(createSweepScheduler(loadConfig({ NODE_ENV: 'test', SCHEDULER_ENABLED: 'true' }), { orm, logger }).jobs).toEqual([
      'sweep-sessions',
      'sweep-one-time-tokens',
      'sweep-audit-events',
      'sweep-revocation-events',
      'sweep-login-throttles',
    ]);
  });

  it('schedules every sweep by default, and none when disabled', () => {
    expect(createSweepScheduler(loadConfig({}), { orm, logger }).jobs).toHaveLength(5);
    expect(createSweepScheduler(loadConfig({ SCHEDULER_ENABLED: 'false' }), { orm, logger }).jobs).toEqual([]);
  });
});
