/**
 * OpenTelemetry tracing, loaded only when an exporter is configured (see tracingRequested in
 * main.ts): the grpc-js and pg instrumentations, W3C `traceparent` propagation, and an OTLP/HTTP
 * (protobuf) exporter configured by the standard OTEL_* variables. It must run before grpc-js and
 * pg are imported: both are CommonJS modules imported from ESM, which only the ESM loader hook
 * (import-in-the-middle, registered here with module.register) can wrap.
 */
import { register } from 'node:module';
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { GrpcInstrumentation } from '@opentelemetry/instrumentation-grpc';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { defaultResource, envDetector, detectResources, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
  type Sampler,
  type SpanExporter,
} from '@opentelemetry/sdk-trace';
import { variables } from '../config/schema.js';
import { installTraceHooks } from './trace-hooks.js';

type Env = Readonly<Record<string, string | undefined>>;

/** A standard variable parsed with its schema; a bad value falls back to the default here and fails loadConfig later (exit 78). */
function setting<N extends 'OTEL_TRACES_EXPORTER' | 'OTEL_TRACES_SAMPLER' | 'OTEL_TRACES_SAMPLER_ARG' | 'OTEL_SERVICE_NAME' | 'OTEL_BSP_SCHEDULE_DELAY'>(
  env: Env,
  name: N,
): ReturnType<(typeof variables)[N]['schema']['parse']> | undefined {
  const spec = variables[name] as { default?: string; schema: { safeParse(raw: string): { success: boolean; data?: unknown } } };
  const given = env[name];
  for (const raw of [given, spec.default]) {
    if (raw === undefined || raw === '') continue;
    const result = spec.schema.safeParse(raw);
    if (result.success) return result.data as ReturnType<(typeof variables)[N]['schema']['parse']>;
  }
  return undefined;
}

function samplerOf(env: Env): Sampler {
  const ratio = setting(env, 'OTEL_TRACES_SAMPLER_ARG') ?? 1;
  switch (setting(env, 'OTEL_TRACES_SAMPLER')) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio);
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
    default:
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

/**
 * A statement's text with every literal replaced by `?`: quoted strings (standard, E'' escapes,
 * dollar-quoted) and numbers, but not `$1` placeholders, identifiers or quoted identifiers. With
 * bound parameters there is nothing to replace; this is the guarantee that a span never carries
 * a value (an email address, a token hash) whatever way a statement was written.
 */
export function sanitizeStatement(sql: string): string {
  return sql.replace(
    /(\$\d+)|("(?:[^"]|"")*")|(\$([A-Za-z_]\w*)?\$[\s\S]*?\$\4\$)|((?<!\w)[Ee]'(?:[^'\\]|''|\\.)*')|('(?:[^']|'')*')|((?<![\w$.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?!\w))/g,
    (_match: string, placeholder?: string, identifier?: string) => placeholder ?? identifier ?? '?',
  );
}

/** Starts tracing for this process. Call before anything imports @grpc/grpc-js or pg. */
export function startTracing(env: Env = process.env): void {
  // The ESM loader hook first: every module imported after this can be wrapped by name.
  register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);

  const exporters: SpanExporter[] = [];
  for (const name of new Set(setting(env, 'OTEL_TRACES_EXPORTER') ?? [])) {
    // The OTLP exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT, … itself.
    if (name === 'otlp') exporters.push(new OTLPTraceExporter());
    if (name === 'console') exporters.push(new ConsoleSpanExporter());
  }
  const resource = defaultResource()
    .merge(resourceFromAttributes({ 'service.name': setting(env, 'OTEL_SERVICE_NAME') ?? 'latchkey' }))
    .merge(detectResources({ detectors: [envDetector] }));
  const provider = new TracerProvider({
    resource,
    sampler: samplerOf(env),
    spanProcessors: exporters.map((exporter) => new BatchSpanProcessor({ exporter, scheduledDelayMillis: setting(env, 'OTEL_BSP_SCHEDULE_DELAY') ?? 5000 })),
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }));
  trace.setGlobalTracerProvider(provider);
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [
      // Server spans for every RPC (the caller's traceparent is their parent); client spans would
      // only come from the health checks tests make, so only the server side is traced.
      new GrpcInstrumentation({ ignoreGrpcMethods: [] }),
      // Statements inside a call only (no spans for health pings or the revocation feed's polling),
      // and never their parameter values: enhancedDatabaseReporting stays off, and the text is
      // sanitized too, in case a value was ever written into the SQL instead of bound to it.
      new PgInstrumentation({
        enhancedDatabaseReporting: false,
        requireParentSpan: true,
        ignoreConnectSpans: true,
        requestHook: (span, { query }) => span.setAttribute('db.query.text', sanitizeStatement(query.text)),
      }),
    ],
  });

  installTraceHooks({
    ids() {
      const span = trace.getSpan(context.active());
      if (!span) return undefined;
      const { traceId, spanId } = span.spanContext();
      return { trace_id: traceId, span_id: spanId };
    },
    annotateCall(code, reason) {
      const span = trace.getSpan(context.active());
      if (!span) return;
      span.setAttribute('rpc.response.status_code', code);
      if (reason !== undefined) span.setAttribute('error.type', reason);
    },
    shutdown: () => provider.shutdown(),
  });
}
