import { status } from '@grpc/grpc-js';
import { GO_CODE_NAMES } from '../../src/observability/metrics.js';
import { readdirSync, readFileSync } from 'node:fs';
import { parseValues } from '../../scripts/chart-docs.mjs';
import { validateObject, type K8sObject } from './support/kubernetes.js';
import { CHART, HELM, REQUIRED, ROOT, check, requireSetup, run, yaml } from './support/tools.js';

// The chart rendered by a real Helm (installed into .tools/ by test/deploy/setup.sh), with its
// default values and with each example, every object validated strictly.

type Json = Record<string, any>;

// Every example values file, whatever its name: each must render and validate.
const EXAMPLES = readdirSync(`${CHART}/examples`)
  .filter((file) => file.endsWith('.yaml'))
  .map((file) => file.replace(/\.yaml$/, ''))
  .sort();
const BASE = 'required values only';
const CASES = [
  { name: BASE, args: REQUIRED },
  ...EXAMPLES.map((example) => ({ name: `examples/${example}.yaml`, args: ['--values', `${CHART}/examples/${example}.yaml`] })),
];
const CHART_VERSION = (yaml.load(readFileSync(`${CHART}/Chart.yaml`, 'utf8')) as { version: string }).version;

/** The template each rendered object came from (Helm's `# Source:` comment). */
const sources = new WeakMap<K8sObject, string>();

async function render(args: readonly string[] = [], release = 'latchkey', namespace = 'auth'): Promise<K8sObject[]> {
  const out = await check(HELM, ['template', release, CHART, '--namespace', namespace, ...args]);
  return out.split(/^---$/m).flatMap((document) => {
    const object = (document.trim() ? yaml.load(document) : null) as K8sObject | null;
    if (!object) return [];
    sources.set(object, /^# Source: (\S+)$/m.exec(document)?.[1] ?? '');
    return [object];
  });
}

/** Objects from the `extraObjects` value: the user's, not the chart's. */
const isExtra = (object: K8sObject) => sources.get(object) === 'latchkey/templates/extra-objects.yaml';
const find = (objects: K8sObject[], kind: string, suffix = '') =>
  objects.filter((object) => object.kind === kind && object.metadata.name.endsWith(suffix) && !isExtra(object));
const one = (objects: K8sObject[], kind: string, suffix = ''): Json => {
  const found = find(objects, kind, suffix);
  expect(found.map((object) => `${object.kind}/${object.metadata.name}`)).toHaveLength(1);
  return found[0]!;
};
/** The server's settings ConfigMap (the dashboard's, when enabled, is another). */
const settingsMap = (objects: K8sObject[]): Json => one(objects.filter((object) => !object.metadata.name.endsWith('-dashboard')), 'ConfigMap');
const podSpecs = (objects: K8sObject[]): [string, Json][] =>
  objects.flatMap((object): [string, Json][] => {
    const o = object as Json;
    if (object.kind === 'Deployment' || object.kind === 'Job') return [[`${object.kind}/${object.metadata.name}`, o.spec.template.spec]];
    if (object.kind === 'CronJob') return [[`CronJob/${object.metadata.name}`, o.spec.jobTemplate.spec.template.spec]];
    if (object.kind === 'Pod') return [[`Pod/${object.metadata.name}`, o.spec]];
    return [];
  });

const rendered = new Map<string, K8sObject[]>();

/** The values a case gives (its values file; --set ones only as far as the tests need them). */
function valuesOf(args: readonly string[]): Json {
  const file = args[args.indexOf('--values') + 1];
  return args.includes('--values') && file ? (yaml.load(readFileSync(file, 'utf8')) as Json) : { secret: { env: { DATABASE_URL: 'x', KEY_ENCRYPTION_KEY: 'x' } } };
}

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
      ...objects()
        .filter((object) => !isExtra(object))
        .map((object) => [`${object.kind}/${object.metadata.name}`, object.metadata.labels] as const),
      ...objects()
        .filter((object) => ['Deployment', 'Job'].includes(object.kind))
        .map((object) => [`${object.kind} pods`, (object as Json).spec.template.metadata.labels] as const),
    ];
    for (const [, labels] of labelSets) {
      expect(labels).toMatchObject({
        'app.kubernetes.io/name': 'latchkey',
        'app.kubernetes.io/instance': 'latchkey',
        'app.kubernetes.io/managed-by': 'Helm',
        'helm.sh/chart': `latchkey-${CHART_VERSION}`,
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
    const values = valuesOf(args);
    // As `tpl` renders them for the release `latchkey`.
    const rendered = (value: unknown) => JSON.parse(JSON.stringify(value ?? []).replaceAll('{{ .Release.Name }}', 'latchkey')) as Json[];
    const extraMounts = rendered(values.extraVolumeMounts);
    const extraVolumes = rendered(values.extraVolumes);
    for (const [name, spec] of specs) {
      expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
      expect(spec.securityContext.runAsUser).toBeGreaterThan(0);
      expect(spec.automountServiceAccountToken).toBe(false);
      // Sidecars and init containers (the Deployment's, from values) bring their own settings.
      const own = (values.sidecars ?? []).map((c: Json) => c.name);
      for (const container of [...spec.containers.filter((c: Json) => !own.includes(c.name)), ...(spec.initContainers ?? [])]) {
        expect({ name, container: container.name, securityContext: container.securityContext }).toMatchObject({
          securityContext: { runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, privileged: false, capabilities: { drop: ['ALL'] } },
        });
        expect(container.resources.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
        expect(container.resources.limits).toMatchObject({ memory: expect.any(String) });
      }
      for (const container of spec.containers.filter((c: Json) => !own.includes(c.name))) {
        expect(container.securityContext).toMatchObject({
          runAsNonRoot: true,
          readOnlyRootFilesystem: true,
          allowPrivilegeEscalation: false,
          privileged: false,
          capabilities: { drop: ['ALL'] },
        });
        expect(container.resources.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
        expect(container.resources.limits).toMatchObject({ memory: expect.any(String) });
        // The only writable path is an emptyDir at /tmp; extraVolumeMounts (never on the test pods) follow it.
        const testPod = name.startsWith('Pod/');
        expect(container.volumeMounts).toEqual([{ name: 'tmp', mountPath: '/tmp' }, ...(testPod ? [] : extraMounts)]);
        expect(spec.volumes).toEqual([{ name: 'tmp', emptyDir: { sizeLimit: expect.any(String) } }, ...(testPod ? [] : extraVolumes)]);
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
    // Hooks run before the release's own ConfigMap and Secret exist on a first install: the
    // chart-made Secret is copied into a hook Secret made first; existing Secrets are read directly.
    const values = valuesOf(args);
    const secretSources = (container.envFrom ?? []).filter((source: Json) => source.secretRef).map((source: Json) => source.secretRef.name);
    const extraSecretSources = (values.extraEnvFrom ?? []).filter((source: Json) => source.secretRef).map((source: Json) => source.secretRef.name);
    expect(secretSources.slice(0, secretSources.length - extraSecretSources.length)).toEqual(values.secret?.env ? [`${job.metadata.name}`] : []);
    for (const secretName of secretSources.slice(0, 1)) {
      const secret = one(objects(), 'Secret', '-migrate') as Json;
      expect(secret.metadata.name).toBe(secretName);
      expect(secret.metadata.annotations['helm.sh/hook']).toBe('pre-install,pre-upgrade');
      expect(Number(secret.metadata.annotations['helm.sh/hook-weight'])).toBeLessThan(Number(job.metadata.annotations['helm.sh/hook-weight']));
    }
    const configMap = settingsMap(objects());
    const inline = container.env.filter((e: Json) => e.value !== undefined && !(values.extraEnv ?? []).some((x: Json) => x.name === e.name));
    expect(Object.fromEntries(inline.map((e: Json) => [e.name, e.value]))).toEqual(configMap.data);
    // The same secret references and extra variables as the server container.
    const server = one(objects(), 'Deployment').spec.template.spec.containers[0];
    expect(container.env.slice(inline.length)).toEqual(server.env ?? []);
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
    expect(container.envFrom[0].configMapRef.name).toBe(settingsMap(objects()).metadata.name);
    // DATABASE_URL and KEY_ENCRYPTION_KEY reach the server: from the chart-made Secret or by secretKeyRef.
    const chartSecret = find(objects(), 'Secret').find((secret) => !secret.metadata.name.endsWith('-migrate')) as Json | undefined;
    const fromChartSecret = chartSecret ? Object.keys(chartSecret.data) : [];
    if (chartSecret) expect(container.envFrom[1].secretRef.name).toBe(chartSecret.metadata.name);
    const byRef = (container.env ?? []).filter((e: Json) => e.valueFrom?.secretKeyRef).map((e: Json) => e.name);
    for (const required of ['DATABASE_URL', 'KEY_ENCRYPTION_KEY']) expect([...fromChartSecret, ...byRef]).toContain(required);
    expect(settingsMap(objects()).data).toMatchObject({ NODE_ENV: 'production', GRPC_PORT: String(container.ports[0].containerPort) });
  });
});

describe('scheduler modes', () => {
  it('inProcess (the default): no CronJob, and the in-process scheduler left on', () => {
    const objects = rendered.get(BASE)!;
    expect(find(objects, 'CronJob')).toEqual([]);
    expect(settingsMap(objects).data.SCHEDULER_ENABLED).toBeUndefined();
  });

  it('cronJob: a CronJob runs `sweep` and the server pods get SCHEDULER_ENABLED=false', () => {
    const objects = rendered.get('examples/cronjob.yaml')!;
    const configMap = settingsMap(objects);
    expect(configMap.data.SCHEDULER_ENABLED).toBe('false');
    const deployment = one(objects, 'Deployment');
    expect(deployment.spec.template.spec.containers[0].envFrom[0].configMapRef.name).toBe(configMap.metadata.name);
    const cronJob = one(objects, 'CronJob', '-sweep');
    expect(cronJob.spec).toMatchObject({ schedule: '*/15 * * * *', timeZone: 'Etc/UTC', concurrencyPolicy: 'Forbid' });
    const [container] = cronJob.spec.jobTemplate.spec.template.spec.containers;
    expect(container.args).toEqual(['node', 'dist/main.js', 'sweep']);
    expect(container.envFrom.map((source: Json) => source.configMapRef?.name ?? source.secretRef?.name)).toEqual([configMap.metadata.name]);
    // The secret variables by reference from the existing Secret, as in the server pods.
    expect(container.env).toEqual(deployment.spec.template.spec.containers[0].env);
    expect(container.env.map((e: Json) => [e.name, e.valueFrom.secretKeyRef.name])).toEqual([
      ['DATABASE_URL', 'latchkey-env'],
      ['KEY_ENCRYPTION_KEY', 'latchkey-env'],
      ['SERVICE_API_KEYS', 'latchkey-env'],
      ['KEY_ENCRYPTION_KEYS', 'latchkey-env'],
    ]);
  });
});

describe('optional resources', () => {
  it('are all off with the default values (the `helm test` pods are on)', () => {
    const kinds = rendered.get(BASE)!.map((object) => object.kind).sort();
    expect(kinds).toEqual(['ConfigMap', 'Deployment', 'Job', 'Pod', 'Pod', 'Secret', 'Secret', 'Service', 'ServiceAccount']);
  });

  it('each render when switched on (examples/everything.yaml), and the HPA then owns the replica count', () => {
    const objects = rendered.get('examples/everything.yaml')!;
    for (const kind of ['HorizontalPodAutoscaler', 'PodDisruptionBudget', 'NetworkPolicy', 'ServiceMonitor', 'PrometheusRule', 'RequestAuthentication', 'PeerAuthentication', 'AuthorizationPolicy', 'CronJob', 'GRPCRoute']) {
      expect(find(objects, kind)).toHaveLength(1);
    }
    expect(find(objects, 'ConfigMap', '-dashboard')).toHaveLength(1);
    expect(one(objects, 'Deployment').spec.replicas).toBeUndefined();
    expect(one(objects, 'HorizontalPodAutoscaler').spec.scaleTargetRef.name).toBe(one(objects, 'Deployment').metadata.name);
  });

  it('NetworkPolicy: only the named callers reach the gRPC port', () => {
    const policy = one(rendered.get('examples/istio.yaml')!, 'NetworkPolicy');
    expect(policy.spec.podSelector.matchLabels).toEqual(one(rendered.get('examples/istio.yaml')!, 'Deployment').spec.selector.matchLabels);
    expect(policy.spec.policyTypes).toEqual(['Ingress']);
    const grpcRule = policy.spec.ingress.find((rule: Json) => rule.ports[0].port === 'grpc');
    expect(grpcRule.from).toHaveLength(2);
    // The `helm test` pods reach both ports.
    const testRule = policy.spec.ingress.at(-1);
    expect(testRule.from).toEqual([{ podSelector: { matchLabels: expect.objectContaining({ 'app.kubernetes.io/component': 'test' }) } }]);
    expect(testRule.ports.map((port: Json) => port.port)).toEqual(['grpc', 'http']);
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
    const objects = await render([...REQUIRED, '--set', 'extAuthz.authorizationPolicy.enabled=true', '--set', 'extAuthz.providerName=auth-check']);
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
    [...readFileSync(`${ROOT}${file}`, 'utf8').matchAll(/name: '((?:latchkey|grpc)_\w+)'/g)].map((match) => match[1]!),
  );

  it('PrometheusRule alerts on exported metrics, matching only the series of this release that the ServiceMonitor scrapes', async () => {
    // Another release and namespace than the other cases, so the scoping cannot match by accident.
    const objects = await render([...REQUIRED, '--set', 'prometheusRule.enabled=true', '--set', 'serviceMonitor.enabled=true'], 'sso', 'identity');
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
      const selectors = [...(r.expr as string).matchAll(/\b(latchkey_\w+|grpc_server_\w+)(\{[^}]*\})?/g)];
      expect(selectors.length).toBeGreaterThan(0);
      for (const [, metric, matchers] of selectors) {
        expect(exportedMetrics).toContain(metric);
        expect({ metric, matchers }).toEqual({ metric, matchers: expect.stringMatching(new RegExp(`^\\{namespace="identity", job="${service.metadata.name}"[,}]`)) });
      }
      // `grpc_code` is the gRPC status name as Go spells it (go-grpc-prometheus), as metrics.ts records it.
      for (const [, code] of (r.expr as string).matchAll(/grpc_code="(\w+)"/g)) expect(Object.values(GO_CODE_NAMES)).toContain(code);
      expect(r.expr).not.toMatch(/exported_job|[^_]code="/);
    }
    const byName = (name: string) => rules.find((r) => r.alert === name)!;
    expect(byName('LatchkeyRefreshTokenReuse').expr).toContain('increase(latchkey_refresh_token_reuse_detected_total{');
    expect(byName('LatchkeyDatabaseUnreachable').expr).toMatch(/^latchkey_database_up\{[^}]*\} == 0$/);
    expect(byName('LatchkeySweepFailing').expr).toContain('outcome="failed"');
    expect(byName('LatchkeySweepFailing').expr).toContain('time() - latchkey_sweep_last_success_timestamp_seconds{');
    // The sweep's name is the `sweep` label, clear of the target's `job`.
    expect(byName('LatchkeySweepFailing').expr).toContain('max by (namespace, job, pod, sweep)');
    expect(byName('LatchkeySweepFailing').annotations.summary).toContain('$labels.sweep');
    // Hashes refused a place in the queue, not every RESOURCE_EXHAUSTED (the RATE_LIMIT_* buckets refuse one client).
    expect(byName('LatchkeyPasswordHashingSaturated').expr).toContain('rate(latchkey_password_hashes_refused_total{');
    expect(byName('LatchkeyPasswordHashingSaturated').expr).not.toContain('ResourceExhausted');
    expect(byName('LatchkeyInternalErrors').expr).toContain('grpc_code="Internal"');
    expect(byName('LatchkeyInternalErrors').expr).toContain('sum by (namespace, job, grpc_service, grpc_method)');
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
    const deployment = structuredClone(rendered.get(BASE)!.find((object) => object.kind === 'Deployment')!) as Json;
    deployment.spec.template.spec.containers[0].livenessProbe.grpc.servce = 'typo';
    deployment.spec.template.spec.securityContext.readOnlyRootFileSystem = true;
    expect(validateObject(deployment as K8sObject)).toEqual([
      expect.stringContaining('.spec.template.spec.securityContext.readOnlyRootFileSystem: unknown field'),
      expect.stringContaining('.spec.template.spec.containers[0].livenessProbe.grpc.servce: unknown field'),
    ]);
  });

  it('reports what kubernetes-models finds: types, enums, required fields', () => {
    const deployment = structuredClone(rendered.get(BASE)!.find((object) => object.kind === 'Deployment')!) as Json;
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

describe('required values', () => {
  const NAMES = {
    publicUrl: 'publicUrl',
    databaseUrl: 'secret.env.DATABASE_URL',
    keyEncryptionKey: 'secret.env.KEY_ENCRYPTION_KEY',
  };
  const without = (dropped: string) => REQUIRED.filter((arg, index) => !arg.startsWith(dropped) && !(arg === '--set' && REQUIRED[index + 1]!.startsWith(dropped)));

  async function failure(args: readonly string[]): Promise<string> {
    const result = await run(HELM, ['template', 'latchkey', CHART, ...args]);
    expect({ code: result.code, stdout: result.stdout }).toEqual({ code: 1, stdout: '' });
    return result.stderr;
  }
  const listed = (stderr: string) => [...stderr.matchAll(/^ {2}- (\S+)/gm)].map((match) => match[1]);

  it('the default values render nothing: the error names every missing value', async () => {
    const stderr = await failure([]);
    expect(stderr).toContain('latchkey: required values are missing:');
    expect(listed(stderr)).toEqual([NAMES.publicUrl, NAMES.databaseUrl, NAMES.keyEncryptionKey]);
    // (`helm lint` only logs a template's `fail`, by design, so that charts with required values lint.)
  });

  it.each([
    ['publicUrl', NAMES.publicUrl],
    ['secret.env.DATABASE_URL', NAMES.databaseUrl],
    ['secret.env.KEY_ENCRYPTION_KEY', NAMES.keyEncryptionKey],
  ])('without %s the error names it, and only it', async (dropped, name) => {
    const stderr = await failure(without(dropped));
    expect(listed(stderr)).toEqual([name]);
  });

  it('an existing Secret stands in for the secret values, not for publicUrl', async () => {
    await render(['--set', 'publicUrl=https://auth.example.com', '--set', 'secret.existingSecret.name=latchkey-env']);
    expect(listed(await failure(['--set', 'secret.existingSecret.name=latchkey-env']))).toEqual([NAMES.publicUrl]);
    // A Secret for DATABASE_URL alone still leaves the key-encryption key missing.
    expect(listed(await failure(['--set', 'publicUrl=https://auth.example.com', '--set', 'secret.databaseUrlSecret.name=db-app']))).toEqual([NAMES.keyEncryptionKey]);
  });

  it('a GRPCRoute without a Gateway to attach to is refused', async () => {
    const result = await run(HELM, ['template', 'latchkey', CHART, ...REQUIRED, '--set', 'grpcRoute.enabled=true']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('grpcRoute.parentRefs is required when grpcRoute.enabled is true');
  });
});

describe('existing Secrets', () => {
  const secretEnv = (container: Json) =>
    Object.fromEntries((container.env ?? []).filter((e: Json) => e.valueFrom?.secretKeyRef).map((e: Json) => [e.name, e.valueFrom.secretKeyRef]));

  it('map each variable to its key: CloudNativePG `<cluster>-app` (uri) for DATABASE_URL, another Secret for the rest (examples/cloudnative-pg.yaml)', async () => {
    const objects = await render(['--values', `${CHART}/examples/cloudnative-pg.yaml`, '--set', 'scheduler.mode=cronJob']);
    const expected = {
      DATABASE_URL: { name: 'latchkey-db-app', key: 'uri' },
      KEY_ENCRYPTION_KEY: { name: 'latchkey-keys', key: 'kek' },
      SERVICE_API_KEYS: { name: 'latchkey-keys', key: 'api-keys', optional: true },
      KEY_ENCRYPTION_KEYS: { name: 'latchkey-keys', key: 'KEY_ENCRYPTION_KEYS', optional: true },
    };
    const containers = [
      one(objects, 'Deployment').spec.template.spec.containers[0],
      one(objects, 'Job', '-migrate').spec.template.spec.containers[0],
      one(objects, 'CronJob', '-sweep').spec.jobTemplate.spec.template.spec.containers[0],
    ];
    for (const container of containers) {
      expect(secretEnv(container)).toEqual(expected);
      // No chart-made Secret to read, so none is referenced.
      expect((container.envFrom ?? []).filter((source: Json) => source.secretRef)).toEqual([]);
    }
    expect(find(objects, 'Secret')).toEqual([]);
    // The pods roll on changes to the ConfigMap only: the chart cannot see into those Secrets.
    expect(Object.keys(one(objects, 'Deployment').spec.template.metadata.annotations)).toEqual(['checksum/config']);
  });

  it('default to keys named as the variables (examples/istio.yaml)', () => {
    const container = one(rendered.get('examples/istio.yaml')!, 'Deployment').spec.template.spec.containers[0];
    expect(secretEnv(container)).toEqual({
      DATABASE_URL: { name: 'latchkey-env', key: 'DATABASE_URL' },
      KEY_ENCRYPTION_KEY: { name: 'latchkey-env', key: 'KEY_ENCRYPTION_KEY' },
      SERVICE_API_KEYS: { name: 'latchkey-env', key: 'SERVICE_API_KEYS', optional: true },
      // Optional: only present while a key-encryption key is being replaced.
      KEY_ENCRYPTION_KEYS: { name: 'latchkey-env', key: 'KEY_ENCRYPTION_KEYS', optional: true },
    });
  });

  it('can stand beside a chart-made Secret: secretKeyRef for DATABASE_URL, the rest from secret.env', async () => {
    const objects = await render([
      '--set',
      'publicUrl=https://auth.example.com',
      '--set',
      'secret.databaseUrlSecret.name=pg-app',
      '--set',
      'secret.env.KEY_ENCRYPTION_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=',
    ]);
    const container = one(objects, 'Deployment').spec.template.spec.containers[0];
    expect(secretEnv(container)).toEqual({ DATABASE_URL: { name: 'pg-app', key: 'uri' } });
    const secret = one(objects, 'Secret', 'latchkey') as Json;
    expect(Object.keys(secret.data)).toEqual(['KEY_ENCRYPTION_KEY']);
    expect(container.envFrom[1].secretRef.name).toBe(secret.metadata.name);
  });
});

describe('extension points (examples/everything.yaml)', () => {
  const objects = () => rendered.get('examples/everything.yaml')!;
  const values = () => valuesOf(['--values', `${CHART}/examples/everything.yaml`]);

  it('extraEnv (with valueFrom, tpl-rendered) and extraEnvFrom reach the server, migration and sweep containers', () => {
    const containers: [string, Json][] = [
      ['server', one(objects(), 'Deployment').spec.template.spec.containers[0]],
      ['migration', one(objects(), 'Job', '-migrate').spec.template.spec.containers[0]],
      ['sweep', one(objects(), 'CronJob', '-sweep').spec.jobTemplate.spec.template.spec.containers[0]],
    ];
    for (const [, container] of containers) {
      const extra = container.env.slice(-values().extraEnv.length);
      expect(extra.map((e: Json) => e.name)).toEqual(['POD_NAME', 'NODE_EXTRA_CA_CERTS', 'OTEL_RESOURCE_ATTRIBUTES', 'SMTP_PASSWORD']);
      expect(extra[0].valueFrom).toEqual({ fieldRef: { fieldPath: 'metadata.name' } });
      expect(extra[2].value).toBe('k8s.pod.name=$(POD_NAME),k8s.namespace.name=auth');
      expect(extra[3].valueFrom).toEqual({ secretKeyRef: { name: 'smtp-credentials', key: 'password' } });
      expect(container.envFrom.at(-1)).toEqual({ secretRef: { name: 'latchkey-otel', optional: true } });
    }
  });

  it('extraVolumes (tpl-rendered) and extraVolumeMounts in the server, migration and sweep pods; init containers and sidecars in the server pods only', () => {
    const specs = podSpecs(objects()).filter(([name]) => !name.startsWith('Pod/'));
    expect(specs.map(([name]) => name.split('/')[0]).sort()).toEqual(['CronJob', 'Deployment', 'Job']);
    for (const [name, spec] of specs) {
      expect(spec.volumes.at(-1)).toEqual({ name: 'company-ca', configMap: { name: 'latchkey-company-ca' } });
      expect(spec.containers[0].volumeMounts.at(-1)).toEqual({ name: 'company-ca', mountPath: '/etc/ssl/company', readOnly: true });
      if (name.startsWith('Deployment/')) {
        expect(spec.initContainers.map((c: Json) => c.name)).toEqual(['wait-for-database']);
        expect(spec.containers.map((c: Json) => c.name)).toEqual(['latchkey', 'log-shipper']);
        expect(spec.containers[1]).toEqual(values().sidecars[0]);
      } else {
        expect(spec.initContainers).toBeUndefined();
        expect(spec.containers).toHaveLength(1);
      }
    }
    // The test pods need none of it.
    for (const [, spec] of podSpecs(objects()).filter(([name]) => name.startsWith('Pod/'))) expect(spec.volumes).toHaveLength(1);
  });

  it('extraObjects are rendered with tpl, as maps or as strings', () => {
    const extras = objects().filter(isExtra) as Json[];
    expect(extras.map((object) => `${object.kind}/${object.metadata.name}`).sort()).toEqual(['ConfigMap/latchkey-company-ca', 'ServiceAccount/latchkey-extra']);
    const configMap = extras.find((object) => object.kind === 'ConfigMap')!;
    expect(configMap.metadata.namespace).toBe('auth');
    expect(configMap.data['ca.crt']).toContain('BEGIN CERTIFICATE');
    expect(extras.find((object) => object.kind === 'ServiceAccount')!.metadata.namespace).toBe('auth');
  });

  it('none of them render by default', () => {
    const spec = one(rendered.get(BASE)!, 'Deployment').spec.template.spec;
    expect(spec.initContainers).toBeUndefined();
    expect(spec.containers.map((c: Json) => c.name)).toEqual(['latchkey']);
    expect(spec.containers[0].env).toBeUndefined();
    expect(spec.containers[0].envFrom).toHaveLength(2);
  });
});

describe('Gateway API GRPCRoute', () => {
  it('routes the matched calls from the given Gateway to the Service gRPC port', () => {
    const objects = rendered.get('examples/everything.yaml')!;
    const route = one(objects, 'GRPCRoute');
    const service = one(objects, 'Service');
    const grpcPort = service.spec.ports.find((port: Json) => port.name === 'grpc').port;
    expect(route.apiVersion).toBe('gateway.networking.k8s.io/v1');
    expect(route.metadata).toMatchObject({ name: service.metadata.name, namespace: 'auth', labels: { 'example.com/exposed': 'true' } });
    expect(route.spec).toEqual({
      parentRefs: [{ name: 'public', namespace: 'gateways', sectionName: 'grpc' }],
      hostnames: ['auth.example.com'],
      rules: [{ backendRefs: [{ name: service.metadata.name, port: grpcPort }], matches: [{ method: { service: 'latchkey.auth.v1.AuthService' } }] }],
    });
  });

  it('is off by default', () => {
    expect(find(rendered.get(BASE)!, 'GRPCRoute')).toEqual([]);
  });

  it('is validated strictly (an unknown field in a match is rejected)', () => {
    const route = structuredClone(one(rendered.get('examples/everything.yaml')!, 'GRPCRoute')) as Json;
    route.spec.rules[0].matches[0].method.path = '/x';
    delete route.spec.rules[0].backendRefs[0].port;
    expect(validateObject(route as K8sObject)).toEqual([
      expect.stringContaining('.spec.rules[0].matches[0].method.path: unknown field'),
      expect.stringContaining('port is required for a Service'),
    ]);
  });
});

describe('helm test pods', () => {
  it.each(CASES.map(({ name }) => name))('check gRPC health and the JWKS through the Service with the Latchkey image itself (%s)', (name) => {
    const objects = rendered.get(name)!;
    const service = one(objects, 'Service');
    const deployment = one(objects, 'Deployment');
    const port = (portName: string) => service.spec.ports.find((p: Json) => p.name === portName).port;
    const host = `${service.metadata.name}.auth.svc`;
    const pods = find(objects, 'Pod') as Json[];
    expect(pods.map((pod) => pod.metadata.name)).toEqual([`${service.metadata.name}-test-grpc-health`, `${service.metadata.name}-test-jwks`]);
    const values = valuesOf(CASES.find((c) => c.name === name)!.args);
    for (const pod of pods) {
      expect(pod.metadata.annotations).toMatchObject({ 'helm.sh/hook': 'test', 'helm.sh/hook-delete-policy': 'before-hook-creation,hook-succeeded' });
      expect(pod.metadata.annotations).toMatchObject(values.tests?.podAnnotations ?? {});
      expect(pod.metadata.labels['app.kubernetes.io/component']).toBe('test');
      expect(pod.spec.restartPolicy).toBe('Never');
      const [container] = pod.spec.containers;
      // The server's own image: nothing else to pull.
      expect(container.image).toBe(deployment.spec.template.spec.containers[0].image);
      expect(container.args.slice(0, 3)).toEqual(['node', 'dist/main.js', 'healthcheck']);
      expect(container.args.slice(-2)).toEqual(['--timeout', String((values.tests?.timeoutSeconds ?? 10) * 1000)]);
    }
    const probes = values.probes?.service ?? '';
    expect(pods[0]!.spec.containers[0].args.slice(3, -2)).toEqual(['--grpc', `${host}:${port('grpc')}`, '--service', probes]);
    expect(pods[1]!.spec.containers[0].args.slice(3, -2)).toEqual(['--no-grpc', '--jwks', `http://${host}:${port('http')}/.well-known/jwks.json`]);
    // The Service never routes to them.
    expect(pods[0]!.metadata.labels['app.kubernetes.io/component']).not.toBe(service.spec.selector['app.kubernetes.io/component']);
  });

  it('are left out with tests.enabled=false', async () => {
    expect(find(await render([...REQUIRED, '--set', 'tests.enabled=false']), 'Pod')).toEqual([]);
  });
});

describe('release', () => {
  it('the chart version has its entry in the chart CHANGELOG.md', () => {
    const changelog = readFileSync(`${CHART}/CHANGELOG.md`, 'utf8');
    expect(changelog).toMatch(new RegExp(`^## ${CHART_VERSION.replace(/\./g, '\\.')}\\b`, 'm'));
    // The newest entry first.
    expect(/^## (\S+)/m.exec(changelog)?.[1]).toBe(CHART_VERSION);
  });
});
