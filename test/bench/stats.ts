import * as hdr from 'hdr-histogram-js';
import type { WorkerResult } from './worker.js';

export interface Latency {
  readonly samples: number;
  /** Milliseconds. */
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly max: number;
}

const ms = (us: number) => Math.round(us) / 1000;

export function latencyOf(result: WorkerResult): Latency {
  const h = hdr.decodeFromCompressedBase64(result.histogram);
  const latency = {
    samples: h.totalCount,
    p50: ms(h.getValueAtPercentile(50)),
    p95: ms(h.getValueAtPercentile(95)),
    p99: ms(h.getValueAtPercentile(99)),
    max: ms(h.maxValue),
  };
  h.destroy();
  return latency;
}

/** Percentiles of raw [start, latency ms] samples inside [from, to) (by start time). */
export function latencyBetween(samples: Array<[number, number]>, from: number, to: number): Latency {
  const values = samples.filter(([start]) => start >= from && start < to).map(([, v]) => v).sort((a, b) => a - b);
  // Nearest-rank percentiles, as HdrHistogram reports them.
  const at = (p: number) => (values.length === 0 ? NaN : values[Math.min(values.length - 1, Math.ceil((p / 100) * values.length) - 1)]!);
  const round = (v: number) => Math.round(v * 1000) / 1000;
  return { samples: values.length, p50: round(at(50)), p95: round(at(95)), p99: round(at(99)), max: round(values.at(-1) ?? NaN) };
}

export function perSecond(result: WorkerResult): number {
  return result.elapsedMs > 0 ? (result.ok / result.elapsedMs) * 1000 : 0;
}


/** Several runs of the same measurement as one: counts and time added, histograms merged. */
export function merged(results: WorkerResult[]): WorkerResult {
  const total = hdr.decodeFromCompressedBase64(results[0]!.histogram);
  for (const r of results.slice(1)) {
    const h = hdr.decodeFromCompressedBase64(r.histogram);
    total.add(h);
    h.destroy();
  }
  const failures: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v;
  const histogram = hdr.encodeIntoCompressedBase64(total);
  total.destroy();
  return {
    calls: results.reduce((n, r) => n + r.calls, 0),
    ok: results.reduce((n, r) => n + r.ok, 0),
    failures,
    elapsedMs: results.reduce((n, r) => n + r.elapsedMs, 0),
    histogram,
  };
}
