#!/usr/bin/env node
/**
 * The `latchkey` executable. Tracing has to start before grpc-js and pg are imported, so the CLI
 * (cli.ts, which imports the whole app) is loaded only after it; with no trace exporter configured
 * the OpenTelemetry SDK is never loaded at all.
 */
import { tracingRequested } from './observability/trace-hooks.js';

if (tracingRequested(process.env)) {
  const { startTracing } = await import('./observability/tracing.js');
  startTracing(process.env);
}
await import('./cli.js');
