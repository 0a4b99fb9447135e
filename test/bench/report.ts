import type { Latency } from './stats.js';

export interface Figure {
  readonly scenario: 'validate' | 'refresh' | 'login' | 'login-cost' | 'saturation' | 'overload' | 'sweep' | 'revocation' | 'tracing' | 'memory' | 'gateway';
  readonly name: string;
  readonly inFlight?: number;
  /** Successful calls per second. */
  readonly throughput?: number;
  readonly latency?: Latency;
  /** The physical limit this figure is compared with, measured in the same run. */
  readonly limit?: { readonly name: string; readonly throughput: number; readonly latency: Latency };
  readonly ratio?: number;
  readonly sweep?: { readonly rows: number; readonly batches: number; readonly durationMs: number; readonly rowsPerSecond: number; readonly replicas?: number };
  /** Where the time went (CPU, WAL, waits), for the JSON report. */
  readonly diagnostics?: Record<string, unknown>;
  readonly peakRssBytes?: number;
  readonly notes?: string;
  /** One line for the terminal. */
  readonly display: string;
}

export interface BenchReport {
  readonly date: string;
  readonly mode: 'quick' | 'full';
  readonly command: string;
  readonly durationSeconds: number;
  readonly machine: { cores: number; cpu: string; memoryGiB: number; kernel: string; node: string; database: string; h2load: string };
  readonly settings: {
    bcryptCost: number;
    users: number;
    sessions: number;
    sweepRows: number;
    /** Sessions revoked one by one in the propagation scenario. */
    revocations?: number;
    /** Revocation events loaded into a server's view in the revocation-memory scenario. */
    revocationViewRows?: number;
    nodeEnv: string;
    nodeOptions: string;
  };
  readonly figures: Figure[];
}

interface TargetCheck {
  readonly figure: string;
  readonly target: string;
  readonly reached: string;
  /** undefined: the figure was not measured in this run. */
  readonly met: boolean | undefined;
}

const find = (r: BenchReport, scenario: Figure['scenario'], inFlight?: number, match?: string) =>
  r.figures.find((f) => f.scenario === scenario && (inFlight === undefined || f.inFlight === inFlight) && (!match || f.name.includes(match)));
const n0 = (v: number) => Math.round(v).toLocaleString('en');
const f2 = (v: number) => v.toFixed(2);

export function targets(r: BenchReport): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const add = (figure: string, target: string, value: number | undefined, ok: (v: number) => boolean, show: (v: number) => string) =>
    checks.push({ figure, target, reached: value === undefined || Number.isNaN(value) ? 'not measured' : show(value), met: value === undefined || Number.isNaN(value) ? undefined : ok(value) });

  const v64 = find(r, 'validate', 64, 'ValidateToken, 64');
  add('ValidateToken throughput / empty unary throughput (64 in flight)', '≥ 0.80', v64?.ratio, (v) => v >= 0.8, f2);
  add('ValidateToken throughput at 64 in flight', '≥ 9,000 calls/s', v64?.throughput, (v) => v >= 9000, (v) => `${n0(v)} calls/s`);
  add('ext_authz Check throughput / empty unary throughput (64 in flight)', '≥ 0.75', find(r, 'gateway', 64, 'Check')?.ratio, (v) => v >= 0.75, f2);
  add('ValidateToken with check_revocation / without (64 in flight, same rounds)', '≥ 0.80', find(r, 'validate', 64, 'with check_revocation')?.ratio, (v) => v >= 0.8, f2);
  add('ValidateToken p99 while logins saturate hashing (1 in flight)', '≤ 2 ms', find(r, 'saturation', 1)?.latency?.p99, (v) => v <= 2, (v) => `${v} ms`);
  const l1 = find(r, 'login', 1);
  add('Login p50 − bare bcrypt p50 (same cost), 1 in flight', '≤ 3 ms', l1?.latency && l1.limit ? l1.latency.p50 - l1.limit.latency.p50 : undefined, (v) => v <= 3, (v) => `${f2(v)} ms`);
  add('Login throughput / bare bcrypt throughput, 8 in flight', '≥ 0.90', find(r, 'login', 8)?.ratio, (v) => v >= 0.9, f2);
  add('RefreshToken p50 at 1 in flight (PostgreSQL)', '≤ 1.5 ms', find(r, 'refresh', 1)?.latency?.p50, (v) => v <= 1.5, (v) => `${v} ms`);
  add('RefreshToken throughput at 32 in flight', '≥ 1,000 calls/s', find(r, 'refresh', 32)?.throughput, (v) => v >= 1000, (v) => `${n0(v)} calls/s`);
  const during = r.figures.find((f) => f.scenario === 'sweep' && f.sweep && (f.sweep.replicas ?? 1) === 1);
  const during2 = r.figures.find((f) => f.scenario === 'sweep' && f.sweep && f.sweep.replicas === 2);
  add('Login p99 during the sweep / Login p99 without', '≤ 1.2', during?.ratio, (v) => v <= 1.2, f2);
  add('Login p99 during the sweep / without, two servers sharing the database', '≤ 1.2', during2?.ratio, (v) => v <= 1.2, f2);
  add(`Sweep rate (${n0(r.settings.sweepRows)} expired sessions)`, '≥ 50,000 rows/s', during?.sweep?.rowsPerSecond, (v) => v >= 50_000, (v) => `${n0(v)} rows/s`);
  add('Server peak RSS', '≤ 200 MB', find(r, 'memory')?.peakRssBytes, (v) => v <= 200e6, (v) => `${(v / 1e6).toFixed(0)} MB`);
  const underLoginFlood = find(r, 'overload', 1, 'floods wrong-password logins');
  add('Login p50 for one source while another floods logins (100 in flight) / bare bcrypt p50', '≤ 3×', underLoginFlood?.ratio, (v) => v <= 3, (v) => `${f2(v)}×`);
  const underRefreshFlood = find(r, 'overload', undefined, 'during a RefreshToken flood');
  const withoutFlood = find(r, 'overload', undefined, 'no flood');
  checks.push({
    figure: 'ValidateToken p99 during a 10,000-in-flight RefreshToken flood (16 in flight)',
    target: 'report only',
    reached: underRefreshFlood?.latency ? `${underRefreshFlood.latency.p99} ms (${withoutFlood?.latency?.p99 ?? '?'} ms without)` : 'not measured',
    met: undefined,
  });
  const propagation = find(r, 'revocation', undefined, 'Revocation propagation');
  add('Revocation propagation p50, Logout on one replica → refused on another', '≤ 100 ms', propagation?.latency?.p50, (v) => v <= 100, (v) => `${v} ms`);
  add('Revocation propagation p99, Logout on one replica → refused on another', '≤ 1 s', propagation?.latency?.p99, (v) => v <= 1000, (v) => `${v} ms`);
  const viewMemory = find(r, 'revocation', undefined, 'revocations in the view');
  const perEntry = viewMemory?.diagnostics?.bytesPerEntry as number | undefined;
  checks.push({
    figure: `Server RSS with ${n0(r.settings.revocationViewRows ?? 0)} revocations in the view`,
    target: 'report only',
    reached: !viewMemory ? 'not measured' : viewMemory.peakRssBytes ? `${(viewMemory.peakRssBytes / 1e6).toFixed(0)} MB (${perEntry === undefined ? '?' : n0(perEntry)} bytes/entry)` : 'server died',
    met: undefined,
  });
  add('Server peak RSS during the overload floods', '≤ 400 MB', find(r, 'overload', undefined, 'peak RSS')?.peakRssBytes, (v) => v <= 400e6, (v) => `${(v / 1e6).toFixed(0)} MB`);
  return checks;
}

const mark = (met: boolean | undefined) => (met === undefined ? '—' : met ? 'met' : '**missed**');

export function renderTable(r: BenchReport): string {
  const lines = [`Latchkey bench (${r.mode}), ${r.machine.cores} cores ${r.machine.cpu}, Node ${r.machine.node}, ${r.machine.database}`, ''];
  for (const f of r.figures) lines.push(`  ${f.name}\n      ${f.display}`);
  lines.push('', 'Targets:');
  const width = Math.max(...targets(r).map((t) => t.figure.length));
  for (const t of targets(r)) lines.push(`  ${t.figure.padEnd(width)}  ${t.target.padEnd(16)} ${t.reached.padEnd(16)} ${t.met === undefined ? '-' : t.met ? 'met' : 'MISSED'}`);
  return lines.join('\n');
}

/** A text bar chart: one bar per percentile and level, on a shared scale, in a code block so it renders everywhere. */
function latencyChart(r: BenchReport): string {
  const rows = r.figures.filter((f) => f.scenario === 'validate' && f.limit && f.latency);
  if (rows.length === 0) return '';
  const max = Math.max(...rows.flatMap((f) => [f.latency!.p99, f.limit!.latency.p99]));
  const bar = (v: number) => '█'.repeat(Math.max(1, Math.round((v / max) * 50)));
  const out = ['```text', 'Latency (ms) against calls in flight, ValidateToken and the empty unary RPC on the same server', ''];
  for (const f of rows) {
    out.push(`${String(f.inFlight).padStart(4)} in flight`);
    out.push(`  ValidateToken p50 ${bar(f.latency!.p50)} ${f.latency!.p50}`);
    out.push(`  ValidateToken p99 ${bar(f.latency!.p99)} ${f.latency!.p99}`);
    out.push(`  empty unary   p50 ${bar(f.limit!.latency.p50)} ${f.limit!.latency.p50}`);
    out.push(`  empty unary   p99 ${bar(f.limit!.latency.p99)} ${f.limit!.latency.p99}`);
  }
  out.push('```');
  return out.join('\n');
}

const lat = (l: Latency | undefined) => (l ? `${l.p50} / ${l.p95} / ${l.p99}` : '—');

export function renderMarkdown(r: BenchReport): string {
  const m = r.machine;
  const rows = r.figures
    .filter((f) => f.scenario !== 'memory')
    .map((f) => {
      const throughput = f.throughput === undefined ? '—' : f.throughput >= 100 ? n0(f.throughput) : f2(f.throughput);
      const limit = f.limit ? `${f.limit.name}: ${f.limit.throughput >= 100 ? n0(f.limit.throughput) : f2(f.limit.throughput)}/s, ${lat(f.limit.latency)} ms` : (f.notes ?? '');
      return `| ${f.name} | ${throughput} | ${lat(f.latency)} | ${f.ratio === undefined ? '—' : f2(f.ratio)} | ${limit} |`;
    });
  return `# Benchmarks

What \`npm run bench\` measured on ${r.date.slice(0, 10)}. A full run rewrites this file; \`npm run bench -- --quick\`
(CI runs it) checks only that the harness still works and writes nothing here. How the harness works,
and what to do when a target is missed: [docs/benchmarks.md](docs/benchmarks.md).

## Machine and command

- ${m.cores} cores, ${m.cpu}, ${m.memoryGiB} GiB, Linux ${m.kernel}
- Node.js ${m.node}; ${m.database}; ${m.h2load}
- Server: \`node dist/main.js serve\` with the image's NODE_OPTIONS (\`${r.settings.nodeOptions}\`), NODE_ENV=${r.settings.nodeEnv}, default settings (bcrypt cost ${r.settings.bcryptCost}, LOG_LEVEL=info: a JSON log line per call, except successful ValidateToken calls, which log at debug; written to a file); load from separate processes on the same machine
- Data: ${r.settings.users} users, ${r.settings.sessions} sessions, ${n0(r.settings.sweepRows)} expired sessions for the sweep${r.settings.revocations === undefined ? '' : `, ${n0(r.settings.revocations)} sessions revoked one by one for propagation`}${r.settings.revocationViewRows === undefined ? '' : `, ${n0(r.settings.revocationViewRows)} revocation events for the view's memory`}
- Command: \`${r.command}\` (${r.durationSeconds} s)

## Targets

| figure | target | reached | |
|---|---|---|---|
${targets(r)
  .map((t) => `| ${t.figure} | ${t.target} | ${t.reached} | ${mark(t.met)} |`)
  .join('\n')}

## Figures

Throughput is successful calls per second; latency is p50 / p95 / p99 in milliseconds, measured by a
Node client over raw HTTP/2 at that many calls in flight, after a warm-up. ValidateToken and empty
unary throughput are h2load's (4 connections, the calls in flight spread over them), the median of
alternating rounds of each; the other throughputs are the Node client's.

| figure | calls/s | latency p50 / p95 / p99 (ms) | ratio | physical limit, same run |
|---|---|---|---|---|
${rows.join('\n')}

Server peak RSS (VmHWM) over the run: ${(((find(r, 'memory')?.peakRssBytes ?? 0) / 1e6)).toFixed(0)} MB (${find(r, 'memory')?.notes ?? ''}).

${latencyChart(r)}
`;
}
