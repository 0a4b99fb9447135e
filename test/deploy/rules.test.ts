import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CHART, HELM, REQUIRED, check, requireSetup, run, yaml } from './support/tools.js';

// The chart's PrometheusRule checked and unit-tested by Prometheus's own promtool (Debian's
// prometheus package, installed by test/deploy/setup.sh): every alert parses, and each one fires
// on the series that should fire it and stays quiet on the ones that should not.

type Json = Record<string, any>;

const RELEASE = 'latchkey';
const NAMESPACE = 'auth';
/** The labels the ServiceMonitor's scrape puts on every series of the release (job: the Service's name). */
const TARGET = { namespace: NAMESPACE, job: 'latchkey' };
const POD = { ...TARGET, pod: 'latchkey-7d9f-abcde', instance: '10.0.0.7:8080' };

let dir: string;
let rules: Json[];

function series(name: string, labels: Record<string, string>): string {
  return `${name}{${Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',')}}`;
}

/** The annotations as Prometheus expands them for an alert with these labels (the chart uses only `$labels.x`). */
function annotationsFor(alert: string, labels: Record<string, string>): Record<string, string> {
  const rule = rules.find((r) => r.alert === alert)!;
  const out: Record<string, string> = {};
  for (const [key, template] of Object.entries(rule.annotations as Record<string, string>)) {
    out[key] = template.replace(/\{\{ \$labels\.(\w+) \}\}/g, (_, name: string) => labels[name] ?? '');
  }
  return out;
}

/** An expected alert: its labels (the expression's result plus the rule's) and its expanded annotations. */
function firing(alert: string, labels: Record<string, string>): Json {
  const severity = rules.find((r) => r.alert === alert)!.labels.severity as string;
  const all = { ...labels, severity };
  return { exp_labels: all, exp_annotations: annotationsFor(alert, all) };
}

beforeAll(async () => {
  requireSetup();
  const promtool = await run('promtool', ['--version']);
  if (promtool.code !== 0) throw new Error('promtool is missing: run test/deploy/setup.sh (npm run test:deploy does)');
  const out = await check(HELM, ['template', RELEASE, CHART, '--namespace', NAMESPACE, ...REQUIRED, '--set', 'prometheusRule.enabled=true', '--set', 'serviceMonitor.enabled=true']);
  const rule = (yaml.loadAll(out) as Json[]).find((o) => o?.kind === 'PrometheusRule')!;
  rules = rule.spec.groups.flatMap((g: Json) => g.rules);
  dir = mkdtempSync(path.join(tmpdir(), 'latchkey-rules-'));
  // What the Prometheus Operator hands Prometheus: the spec's groups, as a rule file.
  writeFileSync(path.join(dir, 'rules.yaml'), yaml.dump({ groups: rule.spec.groups }));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it('promtool check rules accepts every rule of the rendered PrometheusRule', async () => {
  const result = await run('promtool', ['check', 'rules', path.join(dir, 'rules.yaml')]);
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
  expect(result.stdout).toContain(`SUCCESS: ${rules.length} rules found`);
});

it('promtool check rules rejects a broken rule (the check can fail)', async () => {
  const broken = path.join(dir, 'broken.yaml');
  writeFileSync(broken, yaml.dump({ groups: [{ name: 'broken', rules: [{ alert: 'Broken', expr: 'sum by (job (rate(x[5m]))' }] }] }));
  const result = await run('promtool', ['check', 'rules', broken]);
  expect(result.code).not.toBe(0);
});

describe('promtool test rules', () => {
  const minutes = (n: number) => `${n}m`;

  /** One promtool test group per alert: series, then evaluations where it must fire and where it must not. */
  function cases(): Json[] {
    const login = { grpc_service: 'latchkey.auth.v1.AuthService', grpc_method: 'Login' };
    const sweep = 'sweep-sessions';
    return [
      {
        name: 'LatchkeyRefreshTokenReuse fires on a reuse detection, only while it is recent',
        interval: '1m',
        input_series: [{ series: series('latchkey_refresh_token_reuse_detected_total', POD), values: '0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 1' }],
        alert_rule_test: [
          { eval_time: minutes(3), alertname: 'LatchkeyRefreshTokenReuse', exp_alerts: [] },
          { eval_time: minutes(5), alertname: 'LatchkeyRefreshTokenReuse', exp_alerts: [firing('LatchkeyRefreshTokenReuse', TARGET)] },
          { eval_time: minutes(15), alertname: 'LatchkeyRefreshTokenReuse', exp_alerts: [] },
        ],
      },
      {
        name: 'LatchkeyDatabaseUnreachable fires after the database has been down for its `for`',
        interval: '1m',
        input_series: [
          { series: series('latchkey_database_up', POD), values: '1 1 0 0 0 0 0 0' },
          // Another release's pod, down all along: not this release's alert.
          { series: series('latchkey_database_up', { ...POD, job: 'other' }), values: '0 0 0 0 0 0 0 0' },
        ],
        alert_rule_test: [
          { eval_time: minutes(1), alertname: 'LatchkeyDatabaseUnreachable', exp_alerts: [] },
          { eval_time: minutes(3), alertname: 'LatchkeyDatabaseUnreachable', exp_alerts: [] },
          { eval_time: minutes(5), alertname: 'LatchkeyDatabaseUnreachable', exp_alerts: [firing('LatchkeyDatabaseUnreachable', POD)] },
        ],
      },
      {
        name: 'LatchkeySweepFailing fires on a failed run',
        interval: '1m',
        input_series: [
          { series: series('latchkey_sweep_runs_total', { ...POD, sweep, outcome: 'failed' }), values: '0 0 0 1 1 1' },
          { series: series('latchkey_sweep_last_success_timestamp_seconds', { ...POD, sweep }), values: '0+60x5' },
        ],
        alert_rule_test: [
          { eval_time: minutes(2), alertname: 'LatchkeySweepFailing', exp_alerts: [] },
          { eval_time: minutes(4), alertname: 'LatchkeySweepFailing', exp_alerts: [firing('LatchkeySweepFailing', { ...TARGET, pod: POD.pod, sweep })] },
        ],
      },
      {
        name: 'LatchkeySweepFailing fires when a sweep has not succeeded for maxHoursSinceSuccess',
        interval: '10m',
        input_series: [
          { series: series('latchkey_sweep_runs_total', { ...POD, sweep, outcome: 'completed' }), values: '1+1x200' },
          // Succeeded at t=0 and never again (a sweep that hangs).
          { series: series('latchkey_sweep_last_success_timestamp_seconds', { ...POD, sweep }), values: '0+0x200' },
        ],
        alert_rule_test: [
          { eval_time: '25h', alertname: 'LatchkeySweepFailing', exp_alerts: [] },
          { eval_time: '27h', alertname: 'LatchkeySweepFailing', exp_alerts: [firing('LatchkeySweepFailing', { ...TARGET, pod: POD.pod, sweep })] },
        ],
      },
      {
        name: 'LatchkeyPasswordHashingSaturated fires on a queue that stays, or on hashes refused a place in it (not on rate-limit refusals)',
        interval: '1m',
        input_series: [
          { series: series('latchkey_password_hashes_queued', POD), values: '0x5 3x15' },
          { series: series('latchkey_password_hashes_refused_total', POD), values: '0x20' },
          { series: series('grpc_server_handled_total', { ...POD, grpc_type: 'unary', ...login, grpc_code: 'OK' }), values: '0+100x20' },
          { series: series('latchkey_password_hashes_queued', { ...POD, pod: 'p2' }), values: '0x20' },
          { series: series('latchkey_password_hashes_refused_total', { ...POD, pod: 'p2' }), values: '0x5 1+5x15' },
          // A pod whose per-client buckets refuse one client (RATE_LIMITED) has no hashing trouble.
          { series: series('latchkey_password_hashes_queued', { ...POD, pod: 'p3' }), values: '0x20' },
          { series: series('latchkey_password_hashes_refused_total', { ...POD, pod: 'p3' }), values: '0x20' },
          { series: series('grpc_server_handled_total', { ...POD, pod: 'p3', grpc_type: 'unary', ...login, grpc_code: 'ResourceExhausted' }), values: '0x5 1+50x15' },
        ],
        alert_rule_test: [
          { eval_time: minutes(5), alertname: 'LatchkeyPasswordHashingSaturated', exp_alerts: [] },
          { eval_time: minutes(12), alertname: 'LatchkeyPasswordHashingSaturated', exp_alerts: [] },
          {
            eval_time: minutes(18),
            alertname: 'LatchkeyPasswordHashingSaturated',
            exp_alerts: [firing('LatchkeyPasswordHashingSaturated', { ...TARGET, pod: POD.pod }), firing('LatchkeyPasswordHashingSaturated', { ...TARGET, pod: 'p2' })],
          },
        ],
      },
      {
        name: 'LatchkeyShedding fires when admission keeps refusing',
        interval: '1m',
        input_series: [
          { series: series('latchkey_admission_refused_total', POD), values: '0x5 10+10x15' },
          { series: series('latchkey_admission_refused_total', { ...POD, pod: 'calm' }), values: '7x20' },
        ],
        alert_rule_test: [
          { eval_time: minutes(5), alertname: 'LatchkeyShedding', exp_alerts: [] },
          { eval_time: minutes(18), alertname: 'LatchkeyShedding', exp_alerts: [firing('LatchkeyShedding', { ...TARGET, pod: POD.pod })] },
        ],
      },
      {
        name: 'LatchkeyRevocationViewStale fires on a view that lags, or never read the feed',
        interval: '1m',
        input_series: [
          { series: series('latchkey_revocation_view_lag_seconds', POD), values: '1x3 40x10' },
          { series: series('latchkey_revocation_view_lag_seconds', { ...POD, pod: 'never' }), values: '-1x13' },
          { series: series('latchkey_revocation_view_lag_seconds', { ...POD, pod: 'fine' }), values: '2x13' },
        ],
        alert_rule_test: [
          { eval_time: minutes(2), alertname: 'LatchkeyRevocationViewStale', exp_alerts: [] },
          {
            eval_time: minutes(10),
            alertname: 'LatchkeyRevocationViewStale',
            exp_alerts: [firing('LatchkeyRevocationViewStale', { ...TARGET, pod: POD.pod }), firing('LatchkeyRevocationViewStale', { ...TARGET, pod: 'never' })],
          },
        ],
      },
      {
        name: 'LatchkeyInternalErrors fires on INTERNAL answers, by method',
        interval: '1m',
        input_series: [
          { series: series('grpc_server_handled_total', { ...POD, grpc_type: 'unary', ...login, grpc_code: 'Internal' }), values: '0 0 0 1 1 1 1 1 1 1 1 1' },
          { series: series('grpc_server_handled_total', { ...POD, grpc_type: 'unary', ...login, grpc_code: 'Unauthenticated' }), values: '0+5x11' },
        ],
        alert_rule_test: [
          { eval_time: minutes(2), alertname: 'LatchkeyInternalErrors', exp_alerts: [] },
          { eval_time: minutes(4), alertname: 'LatchkeyInternalErrors', exp_alerts: [firing('LatchkeyInternalErrors', { ...TARGET, ...login })] },
        ],
      },
    ];
  }

  it('has a firing and a quiet case for every alert of the chart', () => {
    const tested = cases().flatMap((c) => c.alert_rule_test as Json[]);
    for (const alert of rules.map((r) => r.alert as string)) {
      expect({ alert, fires: tested.some((t) => t.alertname === alert && t.exp_alerts.length > 0) }).toEqual({ alert, fires: true });
      expect({ alert, quiet: tested.some((t) => t.alertname === alert && t.exp_alerts.length === 0) }).toEqual({ alert, quiet: true });
    }
  });

  it('pass', async () => {
    const file = path.join(dir, 'rules.test.yaml');
    writeFileSync(file, yaml.dump({ rule_files: ['rules.yaml'], evaluation_interval: '1m', tests: cases() }, { lineWidth: -1 }));
    const result = await run('promtool', ['test', 'rules', file]);
    expect({ code: result.code, out: result.stdout + result.stderr }).toEqual({ code: 0, out: expect.stringContaining('SUCCESS') });
  });

  it('fail when an alert expected to fire does not (the unit tests can fail)', async () => {
    const file = path.join(dir, 'wrong.test.yaml');
    const wrong = {
      name: 'a database that is up does not page',
      interval: '1m',
      input_series: [{ series: series('latchkey_database_up', POD), values: '1x10' }],
      alert_rule_test: [{ eval_time: minutes(5), alertname: 'LatchkeyDatabaseUnreachable', exp_alerts: [firing('LatchkeyDatabaseUnreachable', POD)] }],
    };
    writeFileSync(file, yaml.dump({ rule_files: ['rules.yaml'], evaluation_interval: '1m', tests: [wrong] }, { lineWidth: -1 }));
    const result = await run('promtool', ['test', 'rules', file]);
    expect(result.code).not.toBe(0);
    expect(result.stdout + result.stderr).toContain('LatchkeyDatabaseUnreachable');
  });
});
