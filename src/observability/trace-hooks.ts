/**
 * What the rest of the server knows about tracing, without importing OpenTelemetry: tracing.ts
 * fills these in when tracing is on (before the app's modules load); when it is off they stay
 * undefined, so the log mixin and the call wrapper cost one check and nothing else.
 */
export interface TraceHooks {
  /** `{ trace_id, span_id }` of the active span, for log lines; undefined outside a span. */
  readonly ids: () => { trace_id: string; span_id: string } | undefined;
  /** Adds the call's outcome to the active RPC span (before grpc-js ends it with the status). */
  readonly annotateCall: (code: string, reason: string | undefined) => void;
  /** Exports what is buffered and stops (called once on exit). */
  readonly shutdown: () => Promise<void>;
}

let installed: TraceHooks | undefined;

export function installTraceHooks(hooks: TraceHooks): void {
  installed = hooks;
}

export function traceHooks(): TraceHooks | undefined {
  return installed;
}

/** Whether a trace exporter is configured (OTEL_TRACES_EXPORTER other than `none`, and OTEL_SDK_DISABLED not `true`). */
export function tracingRequested(env: Readonly<Record<string, string | undefined>>): boolean {
  if ((env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true') return false;
  return (env.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((name) => name.trim())
    .some((name) => name !== '' && name !== 'none');
}
