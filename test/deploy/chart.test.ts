import { status } from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { parseValues } from '../../scripts/chart-docs.mjs';
import { validateObject, type K8sObject } from './support/kubernetes.js';
import { CHART, HELM, ROOT, check, requireSetup, run, yaml } from './support/tools.js';

// The chart rendered by a real Helm (installed into .tools/ by test/deploy/setup.sh), with its
// default values and with each example, every object validated strictly.

type Json = Record<string, any>;

const EXAMPLES = ['istio', 'cronjob', 'everything', 'ext-authz'] as const;
const CASES = [
  { name: 'default values', args: [] as string[] },
  ...EXAMPLES.map((example) => ({ name: `examples/${example}.yaml`, args: ['--values', `${CHART}/examples/${example}.yaml`] })),
];

async function render(args: readonly string[] = [], release = 'latchkey', namespace = 'auth'): Promise<K8sObject[]> {
  const out = await check(HELM, ['template', release, CHART, '--namespace', namespace, ...args]);
  return (yaml.loadAll(out) as (K8sObject | null)[]).filter((object): object is K8sObject => object !== null);
}

const find = (objects: K8sObject[], kind: string, suffix = '') =>
  objects.filter((object) => object.kind === kind && object.metadata.name.endsWith(suffix));
const one = (objects: K8sObject[], kind: string, suffix = ''): Json => {
  const found = find(objects, kind, suffix);
  expect(found.map((object) => `${object.kind}/${object.metadata.name}`)).toHaveLength(1);
  return found[0]!;
};
const podSpecs = (objects: K8sObject[]): [string, Json][] =>
  objects.flatMap((object): [string, Json][] => {
    const o = object as Json;
    if (object.kind === 'Deployment' || object.kind === 'Job') return [[`${object.kind}/${object.metadata.name}`, o.spec.template.spec]];
    if (object.kind === 'CronJob') return [[`CronJob/${object.metadata.name}`, o.spec.jobTemplate.spec.template.spec]];
    return [];
  });

const rendered = new Map<string, K8sObject[]>();

beforeAll(async () => {
  requireSetup();
  for (const { name, args } of CASES) rendered.set(name, await render(args));
});

describe.each(CASES)('the chart rendered with $name', ({ name, args }) => {
  const objects = () => rendered.get(name)!;

  it('passes helm lint --strict', async () => {
    await check(HELM, ['lint', '--strict', CHART, ...args]);
  });

  it('renders only objects that validate strictly against their schema (unknown fields rejected)', () => {
    expect(objects().length).toBeGreaterThan(4);
    expect(objects().flatMap(validateObject)).toEqual([]);
  });

  it('puts the standard labels, from one helper, on every object and every pod', () => {
    const labelSets = [
      ...objects().map((object) => [`${object.kind}/${object.metadata.name}`, object.metadata.labels] as const),
      ...objects()
        .filter((object) => ['Deployment', 'Job'].includes(object.kind))
        .map((object) => [`${object.kind} pods`, (object as Json).spec.template.metadata.labels] as const),
    ];
    for (const [, labels] of labelSets) {
      expect(labels).toMatchObject({
        'app.kubernetes.io/name': 'latchkey',
        'app.kubernetes.io/instance': 'latchkey',
        'app.kubernetes.io/managed-by': 'Helm',
        'helm.sh/chart': 'latchkey-0.1.0',
      });
      expect(Object.keys(labels as object)).toEqual(expect.arrayContaining(['app.kubernetes.io/version', 'app.kubernetes.io/component']));
    }
  });

  it('checks health with gRPC probes on the gRPC port (grpc.health.v1)', () => {
    const deployment = one(objects(), 'Deployment');
    const [container] = deployment.spec.template.spec.containers;
    const grpcPort = container.ports.find((port: Json) => port.name === 'grpc').containerPort;
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
      expect(Object.keys(container[probe]).filter((key) => ['grpc', 'httpGet', 'tcpSocket', 'exec'].includes(key))).toEqual(['grpc']);
      expect(container[probe].grpc.port).toBe(grpcPort);
    }
    // Readiness follows the database; liveness only the process (the server's `liveness` health name).
    expect(container.startupProbe.grpc.service).toBe(container.readinessProbe.grpc.service);
    expect(container.livenessProbe.grpc.service).toBe('liveness');
  });

  it('runs every pod non-root with a read-only root filesystem, nothing to escalate, resources set', () => {
    const specs = podSpecs(objects());
    expect(specs.length).toBeGreaterThanOrEqual(2); // the server and the migration hook at least
    for (const [, spec] of specs) {
      expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
      expect(spec.securityContext.runAsUser).toBeGreaterThan(0);
      expect(spec.automountServiceAccountToken).toBe(false);
      for (const container of spec.containers) {
        expect(container.securityContext).toMatchObject({
          runAsNonRoot: true,
          readOnlyRootFilesystem: true,
          allowPrivilegeEscalation: false,
          privileged: false,
          capabilities: { drop: ['ALL'] },
        });
        expect(container.resources.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
        expect(container.resources.limits).toMatchObject({ memory: expect.any(String) });
        // The only writable path is an emptyDir at /tmp.
        expect(container.volumeMounts).toEqual([{ name: 'tmp', mountPath: '/tmp' }]);
        expect(spec.volumes).toEqual([{ name: 'tmp', emptyDir: { sizeLimit: expect.any(String) } }]);
      }
    }
  });

  it('spreads the server pods across zones and nodes', () => {
    const spec = one(objects(), 'Deployment').spec.template.spec;
    expect(spec.topologySpreadConstraints.map((c: Json) => c.topologyKey)).toEqual(['topology.kubernetes.io/zone', 'kubernetes.io/hostname']);
    for (const constraint of spec.topologySpreadConstraints) {
      expect(constraint.labelSelector.matchLabels).toEqual(one(objects(), 'Deployment').spec.selector.matchLabels);
    }
  });

  it('runs `migrate` as a pre-install/pre-upgrade hook Job, with the secrets it needs available before install', () => {
    const job = one(objects(), 'Job', '-migrate');
    expect(job.metadata.annotations['helm.sh/hook'].split(',').sort()).toEqual(['pre-install', 'pre-upgrade']);
    const [container] = job.spec.template.spec.containers;
    expect(container.args).toEqual(['node', 'dist/main.js', 'migrate']);
    expect(job.spec.template.spec.restartPolicy).toBe('Never');
    // Hooks run before the release's own ConfigMap and Secret exist on a first install.
    expect(container.envFrom).toHaveLength(1);
    const secretName = container.envFrom[0].secretRef.name;
    const secret = find(objects(), 'Secret').find((object) => object.metadata.name === secretName);
    if (secret) {
      expect((secret as Json).metadata.annotations['helm.sh/hook']).toBe('pre-install,pre-upgrade');
      expect(Number((secret as Json).metadata.annotations['helm.sh/hook-weight'])).toBeLessThan(Number(job.metadata.annotations['helm.sh/hook-weight']));
    }
    const configMap = one(objects(), 'ConfigMap');
    expect(Object.fromEntries(container.env.map((e: Json) => [e.name, e.value]))).toEqual(configMap.data);
    // The Service never routes to migration (or sweep) pods.
    const selector = one(objects(), 'Service').spec.selector;
    expect(job.spec.template.metadata.labels['app.kubernetes.io/component']).not.toBe(selector['app.kubernetes.io/component']);
  });

  it('exposes the ports as `grpc` (appProtocol grpc) and `http`, and points the pods at the ConfigMap and Secret', () => {
    const service = one(objects(), 'Service');
    expect(service.spec.ports.map((port: Json) => [port.name, port.appProtocol, port.targetPort])).toEqual([
      ['grpc', 'grpc', 'grpc'],
      ['http', 'http', 'http'],
    ]);
    const deployment = one(objects(), 'Deployment');
    expect(service.spec.selector).toEqual(deployment.spec.selector.matchLabels);
    const [container] = deployment.spec.template.spec.containers;
    expect(container.envFrom[0].configMapRef.name).toBe(one(objects(), 'ConfigMap').metadata.name);
    expect(container.envFrom[1].secretRef.name).toBeTruthy();
    expect(one(objects(), 'ConfigMap').data).toMatchObject({ NODE_ENV: 'production', GRPC_PORT: String(container.ports[0].containerPort) });
  });
});

describe('scheduler modes', () => {
  it('inProcess (the default): no CronJob, and the in-process scheduler left on', () => {
    const objects = rendered.get('default values')!;
    expect(find(objects, 'CronJob')).toEqual([]);
    expect(one(objects, 'ConfigMap').data.SCHEDULER_ENABLED).toBeUndefined();
  });

  it('cronJob: a CronJob runs `sweep` and the server pods get SCHEDULER_ENABLED=false', () => {
    const objects = rendered.get('examples/cronjob.yaml')!;
    const configMap = one(objects, 'ConfigMap');
    expect(configMap.data.SCHEDULER_ENABLED).toBe('false');
    const deployment = one(objects, 'Deployment');
    expect(deployment.spec.template.spec.containers[0].envFrom[0].configMapRef.name).toBe(configMap.metadata.name);
    const cronJob = one(objects, 'CronJob', '-sweep');
    expect(cronJob.spec).toMatchObject({ schedule: '*/15 * * * *', timeZone: 'Etc/UTC', concurrencyPolicy: 'Forbid' });
    const [container] = cronJob.spec.jobTemplate.spec.template.spec.containers;
    expect(container.args).toEqual(['node', 'dist/main.js', 'sweep']);
    expect(container.envFrom.map((source: Json) => source.configMapRef?.name ?? source.secretRef?.name)).toEqual([
      configMap.metadata.name,
      'latchkey-env',
    ]);
  });
});

describe('optional resources', () => {
  it('are all off with the default values', () => {
    const kinds = rendered.get('default values')!.map((object) => object.kind).sort();
    expect(kinds).toEqual(['ConfigMap', 'Deployment', 'Job', 'Secret', 'Secret', 'Service', 'ServiceAccount']);
  });

  it('each render when switched on (examples/everything.yaml), and the HPA then owns the replica count', () => {
    const objects = rendered.get('examples/everything.yaml')!;
    for (const kind of ['HorizontalPodAutoscaler', 'PodDisruptionBudget', 'NetworkPolicy', 'ServiceMonitor', 'PrometheusRule', 'RequestAuthentication', 'PeerAuthentication', 'AuthorizationPolicy', 'CronJob']) {
      expect(find(objects, kind)).toHaveLength(1);
    }
    expect(one(objects, 'Deployment').spec.replicas).toBeUndefined();
    expect(one(objects, 'HorizontalPodAutoscaler').spec.scaleTargetRef.name).toBe(one(objects, 'Deployment').metadata.name);
  });

  it('NetworkPolicy: only the named callers reach the gRPC port', () => {
    const policy = one(rendered.get('examples/istio.yaml')!, 'NetworkPolicy');
    expect(policy.spec.podSelector.matchLabels).toEqual(one(rendered.get('examples/istio.yaml')!, 'Deployment').spec.selector.matchLabels);
    expect(policy.spec.policyTypes).toEqual(['Ingress']);
    const grpcRule = policy.spec.ingress.find((rule: Json) => rule.ports[0].port === 'grpc');
    expect(grpcRule.from).toHaveLength(2);
    expect(policy.spec.ingress.every((rule: Json) => rule.from.length > 0)).toBe(true);
  });

  it('Istio RequestAuthentication checks tokens of the configured issuer against the service JWKS', () => {
    const objects = rendered.get('examples/istio.yaml')!;
    const service = one(objects, 'Service');
    const httpPort = service.spec.ports.find((port: Json) => port.name === 'http').port;
    const requestAuthentication = one(objects, 'RequestAuthentication');
    expect(requestAuthentication.spec.jwtRules).toEqual([
      {
        issuer: 'https://auth.example.com',
        audiences: ['latchkey'],
        jwksUri: `http://${service.metadata.name}.auth.svc.cluster.local:${httpPort}/.well-known/jwks.json`,
        forwardOriginalToken: true,
      },
    ]);
    expect(requestAuthentication.spec.selector.matchLabels).toEqual({ 'latchkey.example.com/verify-tokens': 'true' });
  });

  it('Istio ext_authz: a CUSTOM AuthorizationPolicy naming the provider, for the workloads and paths of the values (examples/ext-authz.yaml)', () => {
    const policy = one(rendered.get('examples/ext-authz.yaml')!, 'AuthorizationPolicy');
    expect(policy.metadata).toMatchObject({ name: 'latchkey-ext-authz', namespace: 'shop' });
    expect(policy.spec).toEqual({
      selector: { matchLabels: { app: 'orders' } },
      action: 'CUSTOM',
      provider: { name: 'latchkey-ext-authz' },
      rules: [{ to: [{ operation: { paths: ['/api/*'], notPaths: ['/api/healthz'] } }] }],
    });
  });

  it('Istio ext_authz: without paths the policy checks every request, in the release namespace', async () => {
    const objects = await render(['--set', 'extAuthz.authorizationPolicy.enabled=true', '--set', 'extAuthz.providerName=auth-check']);
    expect(objects.flatMap(validateObject)).toEqual([]);
    const policy = one(objects, 'AuthorizationPolicy');
    expect(policy.metadata.namespace).toBe('auth');
    expect(policy.spec).toEqual({ action: 'CUSTOM', provider: { name: 'auth-check' }, rules: [{}] });
  });

  it('Istio RequestAuthentication comes with a port-level PERMISSIVE PeerAuthentication on the HTTP container port only (istio/istio#40553)', async () => {
    for (const name of ['examples/istio.yaml', 'examples/ext-authz.yaml', 'examples/everything.yaml']) {
      const objects = rendered.get(name)!;
      const deployment = one(objects, 'Deployment');
      const httpPort = deployment.spec.template.spec.containers[0].ports.find((port: Json) => port.name === 'http').containerPort;
      const peer = one(objects, 'PeerAuthentication');
      expect({ name, namespace: peer.metadata.namespace, spec: peer.spec }).toEqual({
        name,
        namespace: 'auth',
        spec: { selector: { matchLabels: deployment.spec.selector.matchLabels }, portLevelMtls: { [String(httpPort)]: { mode: 'PERMISSIVE' } } },
      });
    }
    const off = await render(['--values', `${CHART}/examples/istio.yaml`, '--set', 'istio.requestAuthentication.permissiveHttpPort=false']);
    expect(find(off, 'PeerAuthentication')).toEqual([]);
    expect(find(off, 'RequestAuthentication')).toHaveLength(1);
  });

  it('NOTES.txt prints the mesh config extensionProviders entry with the Service FQDN and gRPC port', async () => {
    const out = await check(HELM, ['install', 'latchkey', CHART, '--dry-run=client', '--namespace', 'auth', '--values', `${CHART}/examples/ext-authz.yaml`, '--set', 'service.grpcPort=9443']);
    const notes = out.slice(out.indexOf('NOTES:'));
    const block = /^( +)extensionProviders:\n((?:\1 .*\n)+)/m.exec(notes);
    expect(block).not.toBeNull();
    expect(yaml.load(`extensionProviders:\n${block![2]!.split('\n').map((line) => line.slice(block![1]!.length)).join('\n')}`)).toEqual({
      extensionProviders: [
        {
          name: 'latchkey-ext-authz',
          envoyExtAuthzGrpc: { service: 'latchkey.auth.svc.cluster.local', port: 9443, timeout: '250ms', failOpen: false, statusOnError: '503' },
        },
      ],
    });
    expect(notes).toContain('http://latchkey.auth.svc.cluster.local:8080/forward-auth');
  });

  it('values.schema.json refuses a misspelt extAuthz value and a malformed status', async () => {
    // Each on top of a complete example, so that only the schema can be what refuses it.
    await check(HELM, ['template', 'latchkey', CHART, '--namespace', 'auth', '--values', `${CHART}/examples/ext-authz.yaml`]);
    for (const [args, named] of [
      [['--set', 'extAuthz.authorizationPolicy.path={/api}'], 'path'],
      [['--set', 'extAuthz.statusOnError=unavailable'], 'statusOnError'],
      [['--set', 'istio.requestAuthentication.permissiveHttpPorts=false'], 'permissiveHttpPorts'],
    ] as const) {
      const result = await run(HELM, ['template', 'latchkey', CHART, '--namespace', 'auth', '--values', `${CHART}/examples/ext-authz.yaml`, ...args]);
      expect({ args, code: result.code, schema: /schema/.test(result.stderr) && result.stderr.includes(named) }).toEqual({ args, code: 1, schema: true });
    }
  });

  it('ServiceMonitor scrapes /metrics on the http port of the server Service', () => {
    const objects = rendered.get('examples/everything.yaml')!;
    const monitor = one(objects, 'ServiceMonitor');
    expect(monitor.spec.selector.matchLabels).toEqual(one(objects, 'Service').spec.selector);
    expect(monitor.spec.endpoints).toEqual([expect.objectContaining({ port: 'http', path: '/metrics' })]);
  });

  // The metrics the service exports (prom-client `name:`s), so an alert never waits on a metric that does not exist.
  const exportedMetrics = ['src/observability/metrics.ts', 'src/scheduler/metrics.ts'].flatMap((file) =>
    [...readFileSync(`${ROOT}${file}`, 'utf8').matchAll(/name: '(latchkey_\w+)'/g)].map((match) => match[1]!),
  );

  it('PrometheusRule alerts on exported metrics, matching only the series of this release that the ServiceMonitor scrapes', async () => {
    // Another release and namespace than the other cases, so the scoping cannot match by accident.
    const objects = await render(['--set', 'prometheusRule.enabled=true', '--set', 'serviceMonitor.enabled=true'], 'sso', 'identity');
    const rule = one(objects, 'PrometheusRule');
    const service = one(objects, 'Service');
    expect(rule.metadata).toMatchObject({ name: 'sso-latchkey', namespace: 'identity' });
    expect(rule.metadata.labels).toEqual(one(objects, 'ServiceMonitor').metadata.labels);
    expect(rule.spec.groups).toHaveLength(1);
    const rules: Json[] = rule.spec.groups[0].rules;
    expect(rules.map((r) => [r.alert, r.for, r.labels])).toEqual([
      ['LatchkeyRefreshTokenReuse', '0s', { severity: 'warning' }],
      ['LatchkeyDatabaseUnreachable', '2m', { severity: 'critical' }],
      ['LatchkeySweepFailing', '0s', { severity: 'warning' }],
      ['LatchkeyPasswordHashingSaturated', '10m', { severity: 'warning' }],
      ['LatchkeyShedding', '10m', { severity: 'warning' }],
      ['LatchkeyRevocationViewStale', '5m', { severity: 'warning' }],
      ['LatchkeyInternalErrors', '0s', { severity: 'warning' }],
    ]);
    for (const r of rules) {
      expect(r.annotations).toEqual({ summary: expect.any(String), description: expect.any(String) });
      // Prometheus Operator labels scraped series with the namespace and `job`, the Service's name.
      const selectors = [...(r.expr as string).matchAll(/\b(latchkey_\w+)(\{[^}]*\})?/g)];
      expect(selectors.length).toBeGreaterThan(0);
      for (const [, metric, matchers] of selectors) {
        expect(exportedMetrics).toContain(metric);
        expect({ metric, matchers }).toEqual({ metric, matchers: expect.stringMatching(new RegExp(`^\\{namespace="identity", job="${service.metadata.name}"[,}]`)) });
      }
      // `code` is the gRPC status name, as src/grpc/call.ts records it.
      for (const [, code] of (r.expr as string).matchAll(/code="(\w+)"/g)) expect(Object.keys(status)).toContain(code);
    }
    const byName = (name: string) => rules.find((r) => r.alert === name)!;
    expect(byName('LatchkeyRefreshTokenReuse').expr).toContain('increase(latchkey_refresh_token_reuse_detected_total{');
    expect(byName('LatchkeyDatabaseUnreachable').expr).toMatch(/^latchkey_database_up\{[^}]*\} == 0$/);
    expect(byName('LatchkeySweepFailing').expr).toContain('outcome="failed"');
    expect(byName('LatchkeySweepFailing').expr).toContain('time() - latchkey_sweep_last_success_timestamp_seconds{');
    // The sweep metrics' own `job` label (the sweep) clashes with the target's: Prometheus keeps it as exported_job.
    expect(byName('LatchkeySweepFailing').annotations.summary).toContain('$labels.exported_job');
    expect(byName('LatchkeyPasswordHashingSaturated').expr).toContain('code="RESOURCE_EXHAUSTED"');
    expect(byName('LatchkeyInternalErrors').expr).toContain('code="INTERNAL"');
    expect(byName('LatchkeyShedding').expr).toContain('rate(latchkey_admission_refused_total{');
    expect(byName('LatchkeyRevocationViewStale').expr).toContain('latchkey_revocation_view_lag_seconds{');
    expect(byName('LatchkeyRevocationViewStale').expr).toContain('> 30');
  });

  it('PrometheusRule: no sweep alert in cronJob mode, labels and severities from values, additionalRules appended as given', () => {
    const objects = rendered.get('examples/everything.yaml')!;
    const rule = one(objects, 'PrometheusRule');
    expect(rule.metadata.labels).toMatchObject({ release: 'prometheus' });
    const rules: Json[] = rule.spec.groups[0].rules;
    // `latchkey sweep` in the CronJob exports no metrics: a failed run is a failed Job.
    expect(rules.map((r) => r.alert)).toEqual([
      'LatchkeyRefreshTokenReuse',
      'LatchkeyDatabaseUnreachable',
      'LatchkeyPasswordHashingSaturated',
      'LatchkeyShedding',
      'LatchkeyRevocationViewStale',
      'LatchkeyInternalErrors',
      'LatchkeySlowLogins',
    ]);
    for (const r of rules) expect(r.labels.team).toBe('identity');
    expect(rules.find((r) => r.alert === 'LatchkeyDatabaseUnreachable')!.labels).toEqual({ severity: 'page', team: 'identity' });
    const values = yaml.load(readFileSync(`${CHART}/examples/everything.yaml`, 'utf8')) as Json;
    expect(rules.at(-1)).toEqual(values.prometheusRule.additionalRules[0]);
  });
});

describe('values', () => {
  it('values.schema.json rejects unknown keys, bad enums and secrets in the plain ConfigMap', async () => {
    for (const bad of [
      'unknownKey=1',
      'scheduler.mode=hourly',
      'env.DATABASE_URL=postgres://x@y/z',
      'publicUrl=http://insecure.example.com',
      'prometheusRule.alerts.databaseUnreachable.for=soon',
      'prometheusRule.alerts.internalErrors.runbook=x',
      'prometheusRule.additionalRules[0].alert=NoExpression',
    ]) {
      const result = await run(HELM, ['template', 'latchkey', CHART, '--set', bad]);
      expect({ bad, code: result.code }).toEqual({ bad, code: 1 });
      expect(result.stderr).toMatch(/schema/);
    }
  });

  it('are read by the README generator exactly as Helm reads them', async () => {
    const helmView = JSON.parse(await check(HELM, ['show', 'values', CHART, '--jsonpath', '{@}']));
    expect(parseValues(readFileSync(`${CHART}/values.yaml`, 'utf8'))).toEqual(helmView);
  });
});

describe('the strict validator itself', () => {
  it('rejects an unknown field that kubernetes-models alone would accept', () => {
    const deployment = structuredClone(rendered.get('default values')!.find((object) => object.kind === 'Deployment')!) as Json;
    deployment.spec.template.spec.containers[0].livenessProbe.grpc.servce = 'typo';
    deployment.spec.template.spec.securityContext.readOnlyRootFileSystem = true;
    expect(validateObject(deployment as K8sObject)).toEqual([
      expect.stringContaining('.spec.template.spec.securityContext.readOnlyRootFileSystem: unknown field'),
      expect.stringContaining('.spec.template.spec.containers[0].livenessProbe.grpc.servce: unknown field'),
    ]);
  });

  it('reports what kubernetes-models finds: types, enums, required fields', () => {
    const deployment = structuredClone(rendered.get('default values')!.find((object) => object.kind === 'Deployment')!) as Json;
    deployment.spec.replicas = 'two';
    delete deployment.spec.selector;
    const errors = validateObject(deployment as K8sObject);
    expect(errors.some((error) => /schema: .*replicas must be integer/.test(error))).toBe(true);
    expect(errors.some((error) => /selector/.test(error))).toBe(true);
  });

  it('rejects wrong types and unknown fields in the custom resources too', () => {
    const ra = structuredClone(rendered.get('examples/istio.yaml')!.find((object) => object.kind === 'RequestAuthentication')!) as Json;
    ra.spec.jwtRules[0].jwksUrl = ra.spec.jwtRules[0].jwksUri;
    ra.spec.jwtRules[0].forwardOriginalToken = 'yes';
    expect(validateObject(ra as K8sObject)).toEqual([
      expect.stringContaining('forwardOriginalToken: expected a boolean'),
      expect.stringContaining('jwksUrl: unknown field'),
    ]);
  });

  it('knows the Istio AuthorizationPolicy and PeerAuthentication rules: CUSTOM needs a provider, port-level mTLS needs a selector', () => {
    const objects = rendered.get('examples/ext-authz.yaml')!;
    const policy = structuredClone(objects.find((object) => object.kind === 'AuthorizationPolicy')!) as Json;
    delete policy.spec.provider;
    policy.spec.rules[0].to[0].operation.path = ['/x'];
    expect(validateObject(policy as K8sObject)).toEqual([
      expect.stringContaining('operation.path: unknown field'),
      expect.stringContaining('spec.provider.name is required for action CUSTOM'),
    ]);
    const peer = structuredClone(objects.find((object) => object.kind === 'PeerAuthentication')!) as Json;
    delete peer.spec.selector;
    peer.spec.portLevelMtls.http = { mode: 'LENIENT' };
    expect(validateObject(peer as K8sObject)).toEqual([
      expect.stringContaining('spec.portLevelMtls needs spec.selector'),
      expect.stringContaining('spec.portLevelMtls: http is not a port number'),
      expect.stringContaining('spec.portLevelMtls.http.mode: unknown mode LENIENT'),
    ]);
  });

  it('knows the PrometheusRule fields: snake_case keep_firing_for, string labels, an expr and one of alert or record', () => {
    const rule = structuredClone(rendered.get('examples/everything.yaml')!.find((object) => object.kind === 'PrometheusRule')!) as Json;
    const [first, second] = rule.spec.groups[0].rules;
    first.labels.priority = 1;
    first.keepFiringFor = '5m';
    delete second.expr;
    second.record = 'latchkey:database_up:min';
    expect(validateObject(rule as K8sObject)).toEqual([
      expect.stringContaining('.rules[0].labels.priority: expected a string'),
      expect.stringContaining('.rules[0].keepFiringFor: unknown field'),
      expect.stringContaining('expr is required'),
      expect.stringContaining('exactly one of alert and record'),
    ]);
  });
});
