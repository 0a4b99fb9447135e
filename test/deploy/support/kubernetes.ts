import * as k8s from '@kubernetes/client-node';
import { ConfigMap, Pod, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { CronJob, Job } from 'kubernetes-models/batch/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';

/**
 * Strict validation of rendered Kubernetes objects, as the API server (with
 * --validate=strict / field validation "Strict") would do it:
 *  - kubernetes-models checks types, enums, formats and required fields against the OpenAPI
 *    schema, but accepts unknown fields;
 *  - so every field is also looked up in @kubernetes/client-node's generated type maps, where an
 *    unknown (misspelt, misplaced or too-new) field is an error.
 * Custom resources the chart renders (ServiceMonitor, PrometheusRule, Istio RequestAuthentication,
 * Gateway API GRPCRoute, Istio AuthorizationPolicy and PeerAuthentication)
 * are in neither package and are checked against their known shape below.
 */

export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; [key: string]: unknown }; [key: string]: unknown };

interface Attribute {
  readonly baseName: string;
  readonly type: string;
}
type Model = { getAttributeTypeMap(): Attribute[] };
const models = k8s as unknown as Record<string, Model | undefined>;

/** A shape: a client-node type name, an object of field shapes, or a one-element array of a shape. */
type Shape = string | { readonly [field: string]: Shape } | readonly [Shape];

const builtIn: Record<string, { model: string; validate: (object: K8sObject) => void }> = {
  'v1/ConfigMap': { model: 'V1ConfigMap', validate: (o) => new ConfigMap(o as never).validate() },
  'v1/Pod': { model: 'V1Pod', validate: (o) => new Pod(o as never).validate() },
  'v1/Secret': { model: 'V1Secret', validate: (o) => new Secret(o as never).validate() },
  'v1/Service': { model: 'V1Service', validate: (o) => new Service(o as never).validate() },
  'v1/ServiceAccount': { model: 'V1ServiceAccount', validate: (o) => new ServiceAccount(o as never).validate() },
  'apps/v1/Deployment': { model: 'V1Deployment', validate: (o) => new Deployment(o as never).validate() },
  'batch/v1/Job': { model: 'V1Job', validate: (o) => new Job(o as never).validate() },
  'batch/v1/CronJob': { model: 'V1CronJob', validate: (o) => new CronJob(o as never).validate() },
  'autoscaling/v2/HorizontalPodAutoscaler': { model: 'V2HorizontalPodAutoscaler', validate: (o) => new HorizontalPodAutoscaler(o as never).validate() },
  'policy/v1/PodDisruptionBudget': { model: 'V1PodDisruptionBudget', validate: (o) => new PodDisruptionBudget(o as never).validate() },
  'networking.k8s.io/v1/NetworkPolicy': { model: 'V1NetworkPolicy', validate: (o) => new NetworkPolicy(o as never).validate() },
};

const safeAuthorization = { type: 'string', credentials: 'V1SecretKeySelector' };
/** monitoring.coreos.com/v1 ServiceMonitor (prometheus-operator), the fields of its CRD schema. */
const serviceMonitor: Shape = {
  apiVersion: 'string',
  kind: 'string',
  metadata: 'V1ObjectMeta',
  spec: {
    jobLabel: 'string',
    targetLabels: 'Array<string>',
    podTargetLabels: 'Array<string>',
    selector: 'V1LabelSelector',
    selectorMechanism: 'string',
    namespaceSelector: { any: 'boolean', matchNames: 'Array<string>' },
    sampleLimit: 'number',
    targetLimit: 'number',
    scrapeProtocols: 'Array<string>',
    endpoints: [
      {
        port: 'string',
        targetPort: 'IntOrString',
        path: 'string',
        scheme: 'string',
        params: '{ [key: string]: Array<string>; }',
        interval: 'string',
        scrapeTimeout: 'string',
        honorLabels: 'boolean',
        honorTimestamps: 'boolean',
        trackTimestampsStaleness: 'boolean',
        followRedirects: 'boolean',
        enableHttp2: 'boolean',
        filterRunning: 'boolean',
        proxyUrl: 'string',
        authorization: safeAuthorization,
        bearerTokenSecret: 'V1SecretKeySelector',
        relabelings: 'Array<any>',
        metricRelabelings: 'Array<any>',
        tlsConfig: 'any',
        basicAuth: 'any',
        oauth2: 'any',
      },
    ],
  },
};
/** monitoring.coreos.com/v1 PrometheusRule (prometheus-operator), the fields of its CRD schema. */
const prometheusRule: Shape = {
  apiVersion: 'string',
  kind: 'string',
  metadata: 'V1ObjectMeta',
  spec: {
    groups: [
      {
        name: 'string',
        interval: 'string',
        query_offset: 'string',
        limit: 'number',
        partial_response_strategy: 'string',
        labels: '{ [key: string]: string; }',
        rules: [
          {
            alert: 'string',
            record: 'string',
            expr: 'IntOrString',
            for: 'string',
            keep_firing_for: 'string',
            labels: '{ [key: string]: string; }',
            annotations: '{ [key: string]: string; }',
          },
        ],
      },
    ],
  },
};
/** security.istio.io/v1 RequestAuthentication, the fields of Istio's API. */
const requestAuthentication: Shape = {
  apiVersion: 'string',
  kind: 'string',
  metadata: 'V1ObjectMeta',
  spec: {
    selector: { matchLabels: '{ [key: string]: string; }' },
    targetRef: { group: 'string', kind: 'string', name: 'string', namespace: 'string' },
    targetRefs: [{ group: 'string', kind: 'string', name: 'string', namespace: 'string' }],
    jwtRules: [
      {
        issuer: 'string',
        audiences: 'Array<string>',
        jwksUri: 'string',
        jwks: 'string',
        fromHeaders: [{ name: 'string', prefix: 'string' }],
        fromParams: 'Array<string>',
        fromCookies: 'Array<string>',
        outputPayloadToHeader: 'string',
        forwardOriginalToken: 'boolean',
        outputClaimToHeaders: [{ header: 'string', claim: 'string' }],
        timeout: 'string',
      },
    ],
  },
};
/** gateway.networking.k8s.io/v1 GRPCRoute (Gateway API v1.1 and later), the fields of its CRD schema. */
const parentReference: Shape = { group: 'string', kind: 'string', namespace: 'string', name: 'string', sectionName: 'string', port: 'number' };
const headerModifier: Shape = { set: [{ name: 'string', value: 'string' }], add: [{ name: 'string', value: 'string' }], remove: 'Array<string>' };
const grpcRouteFilter: Shape = {
  type: 'string',
  requestHeaderModifier: headerModifier,
  responseHeaderModifier: headerModifier,
  requestMirror: { backendRef: { group: 'string', kind: 'string', name: 'string', namespace: 'string', port: 'number' }, percent: 'number', fraction: 'any' },
  extensionRef: { group: 'string', kind: 'string', name: 'string' },
};
const grpcRoute: Shape = {
  apiVersion: 'string',
  kind: 'string',
  metadata: 'V1ObjectMeta',
  spec: {
    parentRefs: [parentReference],
    hostnames: 'Array<string>',
    rules: [
      {
        name: 'string',
        matches: [{ method: { type: 'string', service: 'string', method: 'string' }, headers: [{ type: 'string', name: 'string', value: 'string' }] }],
        filters: [grpcRouteFilter],
        backendRefs: [{ group: 'string', kind: 'string', name: 'string', namespace: 'string', port: 'number', weight: 'number', filters: [grpcRouteFilter] }],
        sessionPersistence: 'any',
      },
    ],
  },
};
const workloadSelector: Shape = { matchLabels: '{ [key: string]: string; }' };
const policyTargetRef: Shape = { group: 'string', kind: 'string', name: 'string', namespace: 'string' };
/** security.istio.io/v1 AuthorizationPolicy, the fields of Istio's API. */
const authorizationPolicy: Shape = {
  apiVersion: 'string',
  kind: 'string',
  metadata: 'V1ObjectMeta',
  spec: {
    selector: workloadSelector,
    targetRef: policyTargetRef,
    targetRefs: [policyTargetRef],
    action: 'string',
    provider: { name: 'string' },
    rules: [
      {
        from: [
          {
            source: {
              principals: 'Array<string>',
              notPrincipals: 'Array<string>',
              requestPrincipals: 'Array<string>',
              notRequestPrincipals: 'Array<string>',
              namespaces: 'Array<string>',
              notNamespaces: 'Array<string>',
              ipBlocks: 'Array<string>',
              notIpBlocks: 'Array<string>',
              remoteIpBlocks: 'Array<string>',
              notRemoteIpBlocks: 'Array<string>',
              serviceAccounts: 'Array<string>',
              notServiceAccounts: 'Array<string>',
            },
          },
        ],
        to: [
          {
            operation: {
              hosts: 'Array<string>',
              notHosts: 'Array<string>',
              ports: 'Array<string>',
              notPorts: 'Array<string>',
              methods: 'Array<string>',
              notMethods: 'Array<string>',
              paths: 'Array<string>',
              notPaths: 'Array<string>',
            },
          },
        ],
        when: [{ key: 'string', values: 'Array<string>', notValues: 'Array<string>' }],
      },
    ],
  },
};
const MTLS_MODES = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'];
/** security.istio.io/v1 PeerAuthentication, the fields of Istio's API (portLevelMtls is checked in `required`). */
const peerAuthentication: Shape = {
  apiVersion: 'string',
  kind: 'string',
  metadata: 'V1ObjectMeta',
  spec: { selector: workloadSelector, mtls: { mode: 'string' }, portLevelMtls: 'any' },
};

const custom: Record<string, { shape: Shape; required: (object: K8sObject) => string[] }> = {
  'security.istio.io/v1/AuthorizationPolicy': {
    shape: authorizationPolicy,
    // Istio's validation: a known action; CUSTOM needs a provider, and only CUSTOM may name one.
    required: (o) => {
      const spec = (o.spec ?? {}) as { action?: string; provider?: { name?: string } };
      const action = spec.action ?? 'ALLOW';
      return [
        !['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'].includes(action) && `spec.action: unknown action ${action}`,
        action === 'CUSTOM' && !spec.provider?.name && 'spec.provider.name is required for action CUSTOM',
        action !== 'CUSTOM' && spec.provider !== undefined && 'spec.provider is only allowed with action CUSTOM',
      ].filter((x): x is string => typeof x === 'string');
    },
  },
  'security.istio.io/v1/PeerAuthentication': {
    shape: peerAuthentication,
    // Istio's validation: port-level settings need a workload selector; ports are numbers 1-65535.
    required: (o) => {
      const spec = (o.spec ?? {}) as { selector?: unknown; mtls?: { mode?: string }; portLevelMtls?: Record<string, { mode?: string }> };
      const ports = Object.entries(spec.portLevelMtls ?? {});
      return [
        spec.mtls?.mode !== undefined && !MTLS_MODES.includes(spec.mtls.mode) && `spec.mtls.mode: unknown mode ${spec.mtls.mode}`,
        ports.length > 0 && !spec.selector && 'spec.portLevelMtls needs spec.selector',
        ...ports.flatMap(([port, setting]) => [
          !(/^\d+$/.test(port) && Number(port) >= 1 && Number(port) <= 65535) && `spec.portLevelMtls: ${port} is not a port number`,
          !MTLS_MODES.includes(setting?.mode ?? '') && `spec.portLevelMtls.${port}.mode: unknown mode ${setting?.mode}`,
        ]),
      ].filter((x): x is string => typeof x === 'string');
    },
  },
  'monitoring.coreos.com/v1/ServiceMonitor': {
    shape: serviceMonitor,
    required: (o) => {
      const spec = o.spec as { selector?: unknown; endpoints?: { port?: string }[] } | undefined;
      return [!spec?.selector && 'spec.selector is required', !(spec?.endpoints?.length) && 'spec.endpoints must not be empty'].filter(
        (x): x is string => typeof x === 'string',
      );
    },
  },
  'monitoring.coreos.com/v1/PrometheusRule': {
    shape: prometheusRule,
    // The CRD requires a group name (unique in the object) and each rule's expr; Prometheus, when
    // the operator loads the rules, exactly one of alert and record.
    required: (o) => {
      const groups = (o.spec as { groups?: { name?: string; rules?: { alert?: string; record?: string; expr?: unknown }[] }[] } | undefined)?.groups ?? [];
      const names = groups.map((group) => group.name);
      return [
        ...groups.filter((group) => !group.name).map(() => 'spec.groups[].name is required'),
        ...names.filter((name, index) => name && names.indexOf(name) !== index).map((name) => `spec.groups: duplicate name ${name}`),
        ...groups.flatMap((group) =>
          (group.rules ?? []).flatMap((rule) => [
            ...(rule.expr === undefined || rule.expr === '' ? [`spec.groups[${group.name}].rules[]: expr is required`] : []),
            ...(!rule.alert === !rule.record ? [`spec.groups[${group.name}].rules[]: exactly one of alert and record`] : []),
          ]),
        ),
      ];
    },
  },
  'gateway.networking.k8s.io/v1/GRPCRoute': {
    shape: grpcRoute,
    // The CRD requires a name on every parent and backend reference, and a port on a Service backend.
    required: (o) => {
      const spec = o.spec as { parentRefs?: { name?: string }[]; rules?: { backendRefs?: { name?: string; kind?: string; port?: number }[] }[] } | undefined;
      return [
        ...(spec?.parentRefs ?? []).filter((ref) => !ref.name).map(() => 'spec.parentRefs[].name is required'),
        ...(spec?.rules ?? []).flatMap((rule) => rule.backendRefs ?? []).flatMap((ref) => [
          ...(!ref.name ? ['spec.rules[].backendRefs[].name is required'] : []),
          ...((ref.kind ?? 'Service') === 'Service' && ref.port === undefined ? ['spec.rules[].backendRefs[]: port is required for a Service'] : []),
        ]),
      ];
    },
  },
  'security.istio.io/v1/RequestAuthentication': {
    shape: requestAuthentication,
    required: (o) => {
      const rules = (o.spec as { jwtRules?: { issuer?: string }[] } | undefined)?.jwtRules ?? [];
      return rules.filter((rule) => !rule.issuer).map(() => 'spec.jwtRules[].issuer is required');
    },
  },
};

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

function walk(value: unknown, shape: Shape, path: string, errors: string[]): void {
  if (value === null || value === undefined) return;
  if (Array.isArray(shape)) {
    if (!Array.isArray(value)) errors.push(`${path}: expected a list`);
    else value.forEach((item, index) => walk(item, shape[0], `${path}[${index}]`, errors));
    return;
  }
  if (typeof shape === 'object') {
    if (!isPlainObject(value)) {
      errors.push(`${path}: expected an object`);
      return;
    }
    for (const [key, item] of Object.entries(value)) {
      const fieldShape = (shape as Record<string, Shape>)[key];
      if (fieldShape === undefined) errors.push(`${path}.${key}: unknown field`);
      else walk(item, fieldShape, `${path}.${key}`, errors);
    }
    return;
  }
  const type = shape as string;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) return walk(value, [array[1]!], path, errors);
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (!isPlainObject(value)) errors.push(`${path}: expected a map`);
    else for (const [key, item] of Object.entries(value)) walk(item, map[1]!, `${path}.${key}`, errors);
    return;
  }
  switch (type) {
    case 'any':
    case 'object':
      return;
    case 'string':
    case 'Date':
      if (typeof value !== 'string') errors.push(`${path}: expected a string, got ${JSON.stringify(value)}`);
      return;
    case 'number':
      if (typeof value !== 'number') errors.push(`${path}: expected a number, got ${JSON.stringify(value)}`);
      return;
    case 'boolean':
      if (typeof value !== 'boolean') errors.push(`${path}: expected a boolean, got ${JSON.stringify(value)}`);
      return;
    case 'IntOrString':
      if (typeof value !== 'string' && typeof value !== 'number') errors.push(`${path}: expected an int or a string`);
      return;
  }
  const model = models[type];
  if (!model || typeof model.getAttributeTypeMap !== 'function') {
    errors.push(`${path}: no type map for ${type}`);
    return;
  }
  const fields: Record<string, Shape> = {};
  for (const attribute of model.getAttributeTypeMap()) fields[attribute.baseName] = attribute.type;
  walk(value, fields, path, errors);
}

/** Every problem with one object; empty when it is valid. */
export function validateObject(object: K8sObject): string[] {
  const key = `${object.apiVersion}/${object.kind}`;
  const name = `${object.kind}/${object.metadata?.name}`;
  const known = builtIn[key];
  const errors: string[] = [];
  if (known) {
    try {
      known.validate(object);
    } catch (error) {
      errors.push(`schema: ${(error as Error).message}`);
    }
    walk(object, known.model, '', errors);
  } else if (custom[key]) {
    walk(object, custom[key].shape, '', errors);
    errors.push(...custom[key].required(object));
  } else {
    errors.push(`no schema for ${key}`);
  }
  return errors.map((error) => `${name}: ${error}`);
}
