import { readFileSync } from 'node:fs';
import { startApp, type RunningApp } from '../../src/app.js';
import { createLogger } from '../../src/observability/logger.js';
import { testConfig } from '../support/config.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { CHART, HELM, REQUIRED, check, requireSetup, yaml } from './support/tools.js';

// The chart's Grafana dashboard: shipped as a ConfigMap for the Grafana sidecar, and every query in
// it names only metrics that a running server exports on /metrics.

type Json = Record<string, any>;

const DASHBOARD_FILE = `${CHART}/dashboards/latchkey.json`;
const dashboard = JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Json;

/** Every PromQL expression of the dashboard: panel targets (rows included) and query variables. */
function queries(): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  const visit = (panels: Json[]) => {
    for (const panel of panels) {
      for (const target of panel.targets ?? []) out.push({ where: `panel "${panel.title}" ${target.refId}`, expr: target.expr });
      visit(panel.panels ?? []);
    }
  };
  visit(dashboard.panels);
  for (const variable of dashboard.templating.list) {
    if (variable.type !== 'query') continue;
    const query = typeof variable.query === 'string' ? variable.query : variable.query.query;
    // label_values(<selector>, <label>): the selector is PromQL.
    const selector = /^label_values\((.*),\s*\w+\)$/.exec(query)?.[1] ?? query;
    out.push({ where: `variable $${variable.name}`, expr: selector });
  }
  return out;
}

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'and', 'or', 'unless']);

/** The metric names a PromQL expression selects (not functions, keywords, labels or variables). */
export function metricNamesOf(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '{}')
    .replace(/\[[^\]]*\]/g, '[]')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '')
    .replace(/\$\w+/g, '');
  const names: string[] = [];
  for (const match of bare.matchAll(/(?<![\w.])[a-zA-Z_:][\w:]*/g)) {
    const after = bare.slice(match.index + match[0].length);
    if (/^\s*\(/.test(after) || KEYWORDS.has(match[0])) continue;
    names.push(match[0]);
  }
  return names;
}

/** Metric names a Prometheus scrape of this exposition yields: histograms as _bucket, _sum and _count. */
function scrapedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const [, name, type] of exposition.matchAll(/^# TYPE (\S+) (\w+)$/gm)) {
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${name}${suffix}`);
    else if (type === 'summary') for (const suffix of ['', '_sum', '_count']) names.add(`${name}${suffix}`);
    else names.add(name!);
  }
  return names;
}

describe('metricNamesOf', () => {
  it('finds the selected metrics and nothing else', () => {
    expect(
      metricNamesOf(
        'histogram_quantile(0.99, sum by (le, grpc_method) (rate(grpc_server_handling_seconds_bucket{job="$job", grpc_code!="OK"}[$__rate_interval]))) or time() - max without (pod) (a_b{x="y"}) - c',
      ),
    ).toEqual(['grpc_server_handling_seconds_bucket', 'a_b', 'c']);
  });
});

describe('the dashboard', () => {
  let database: TestDatabase;
  let app: RunningApp;
  let exported: Set<string>;

  beforeAll(async () => {
    database = await createTestDatabase();
    // The scheduler on, so its sweep metrics are registered as they are in production.
    app = await startApp(testConfig(database.url, { SCHEDULER_ENABLED: 'true' }), createLogger('silent'));
    exported = scrapedNames(await (await fetch(`http://127.0.0.1:${app.httpPort}/metrics`)).text());
  });
  afterAll(async () => {
    await app?.stop();
    await database?.drop();
  });

  it('queries only metrics that a running server exports on /metrics', () => {
    expect(exported.size).toBeGreaterThan(20);
    const all = queries();
    expect(all.length).toBeGreaterThan(25);
    const missing = all.flatMap(({ where, expr }) => metricNamesOf(expr).filter((name) => !exported.has(name)).map((name) => `${where}: ${name}`));
    expect(missing).toEqual([]);
    // The check can fail: the old, unconventional RPC metric names are no longer exported.
    expect(exported.has('latchkey_grpc_server_handled_total')).toBe(false);
    expect(exported.has('grpc_server_handled_total')).toBe(true);
  });

  it("scopes every selector to the release's series as the ServiceMonitor labels them", () => {
    for (const { where, expr } of queries()) {
      if (where.startsWith('variable')) continue;
      const selectors = [...expr.matchAll(/\b([a-zA-Z_:][\w:]*)\{([^}]*)\}/g)];
      expect({ where, selectors: selectors.length > 0 }).toEqual({ where, selectors: true });
      for (const [, , matchers] of selectors) expect({ where, matchers }).toEqual({ where, matchers: expect.stringMatching(/^namespace="\$namespace", job="\$job"(,|$)/) });
    }
  });

  it('covers calls, errors by reason, latency, hash queue, database, sweeps, reuse detections and lockouts', () => {
    const exprs = queries().map((q) => q.expr);
    const uses = (pattern: RegExp) => exprs.some((expr) => pattern.test(expr));
    expect(uses(/grpc_server_handled_total/)).toBe(true);
    expect(uses(/latchkey_grpc_server_errors_total/)).toBe(true);
    expect(uses(/grpc_server_handling_seconds_bucket/)).toBe(true);
    expect(uses(/latchkey_password_hashes_queued/)).toBe(true);
    expect(uses(/latchkey_database_up/)).toBe(true);
    expect(uses(/latchkey_database_pool_in_use/)).toBe(true);
    expect(uses(/latchkey_sweep_runs_total/)).toBe(true);
    expect(uses(/latchkey_refresh_token_reuse_detected_total/)).toBe(true);
    expect(uses(/latchkey_login_failures_total\{[^}]*reason="ACCOUNT_LOCKED"/)).toBe(true);
    // A unique id, so the sidecar updates one dashboard rather than adding copies.
    expect(dashboard.uid).toBe('latchkey');
  });
});

describe('the dashboard ConfigMap', () => {
  beforeAll(() => requireSetup());

  async function render(args: string[]): Promise<Json[]> {
    const out = await check(HELM, ['template', 'latchkey', CHART, '--namespace', 'auth', ...REQUIRED, ...args]);
    return (yaml.loadAll(out) as (Json | null)[]).filter((o): o is Json => o !== null);
  }

  it('is off by default', async () => {
    expect((await render([])).filter((o) => o.kind === 'ConfigMap' && o.metadata.name.endsWith('-dashboard'))).toEqual([]);
  });

  it("carries the sidecar's label and the dashboard file as it is", async () => {
    const objects = await render(['--set', 'grafanaDashboard.enabled=true']);
    const map = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'latchkey-dashboard')!;
    expect(map.metadata.namespace).toBe('auth');
    expect(map.metadata.labels).toMatchObject({ grafana_dashboard: '1', 'app.kubernetes.io/instance': 'latchkey' });
    expect(Object.keys(map.data)).toEqual(['latchkey.json']);
    expect(JSON.parse(map.data['latchkey.json'])).toEqual(dashboard);
  });

  it("takes the label, namespace, labels and annotations from values (for the sidecar's settings)", async () => {
    const objects = await render([
      '--set',
      'grafanaDashboard.enabled=true',
      '--set',
      'grafanaDashboard.label=dashboards.example.com/grafana',
      '--set',
      'grafanaDashboard.labelValue=latchkey',
      '--set',
      'grafanaDashboard.namespace=monitoring',
      '--set',
      'grafanaDashboard.annotations.grafana_folder=Identity',
    ]);
    const map = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'latchkey-dashboard')!;
    expect(map.metadata.namespace).toBe('monitoring');
    expect(map.metadata.labels['dashboards.example.com/grafana']).toBe('latchkey');
    expect(map.metadata.labels.grafana_dashboard).toBeUndefined();
    expect(map.metadata.annotations).toEqual({ grafana_folder: 'Identity' });
  });
});
