/**
 * What a bench scenario measures besides latency, to say where the time went: CPU by process
 * (from /proc), PostgreSQL's WAL, checkpoint and buffer counters, and sampled wait events and lock
 * waits of the benchmark database's backends.
 */
import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

function procTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime, stime (fields 14, 15; 0-based 11, 12 after the command): the process's threads included.
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

function postgresPids(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === 'postgres') pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** CPU seconds so far, by role; `nice` is time of niced threads machine-wide (bcrypt's pool threads run at nice 10). */
export interface CpuSnapshot {
  readonly at: number;
  readonly busy: number;
  readonly nice: number;
  readonly iowait: number;
  /** CPU seconds of each PostgreSQL process (one that exited before the second snapshot is missed). */
  readonly postgres: Record<number, number>;
  readonly processes: Record<string, number>;
}

export function cpuSnapshot(processes: Record<string, number>): CpuSnapshot {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , iowait, irq, softirq, steal] = cpu as [number, number, number, number, number, number, number, number];
  return {
    at: Date.now(),
    busy: (user + nice + system + irq + softirq + steal) / TICKS_PER_SECOND,
    nice: nice / TICKS_PER_SECOND,
    iowait: iowait / TICKS_PER_SECOND,
    postgres: Object.fromEntries(postgresPids().map((pid) => [pid, procTicks(pid) / TICKS_PER_SECOND])),
    processes: Object.fromEntries(Object.entries(processes).map(([name, pid]) => [name, procTicks(pid) / TICKS_PER_SECOND])),
  };
}

/** Cores used on average between two snapshots, by role (postgres counts only backends alive at both ends). */
export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot): Record<string, number> {
  const seconds = (b.at - a.at) / 1000;
  const rate = (x: number, y: number) => Math.round(((y - x) / seconds) * 100) / 100;
  const out: Record<string, number> = { machine: rate(a.busy, b.busy), niced: rate(a.nice, b.nice), iowait: rate(a.iowait, b.iowait), postgres: 0 };
  let postgres = 0;
  // A backend that started in between (a pool's new connection) spent all its CPU time in between.
  for (const [pid, seconds] of Object.entries(b.postgres)) postgres += seconds - (a.postgres[Number(pid)] ?? 0);
  out.postgres = rate(0, postgres);
  for (const name of Object.keys(b.processes)) out[name] = rate(a.processes[name] ?? 0, b.processes[name]!);
  return out;
}

export interface DbSnapshot {
  readonly at: number;
  readonly counters: Record<string, number>;
}

export async function dbSnapshot(client: pg.Client, dbName: string): Promise<DbSnapshot> {
  const wal = (await client.query('select wal_records, wal_fpi, wal_bytes::bigint as wal_bytes, wal_write, wal_sync from pg_stat_wal')).rows[0];
  const bgw = (await client.query('select checkpoints_timed, checkpoints_req, buffers_checkpoint, buffers_clean, buffers_backend from pg_stat_bgwriter')).rows[0];
  const db = (
    await client.query('select xact_commit, blks_read, blks_hit, tup_deleted, temp_bytes from pg_stat_database where datname = $1', [dbName])
  ).rows[0];
  const counters: Record<string, number> = {};
  for (const [k, v] of Object.entries({ ...wal, ...bgw, ...db })) counters[k] = Number(v);
  return { at: Date.now(), counters };
}

export function dbBetween(a: DbSnapshot, b: DbSnapshot): Record<string, number> {
  const seconds = (b.at - a.at) / 1000;
  const out: Record<string, number> = { seconds: Math.round(seconds * 10) / 10 };
  for (const k of Object.keys(b.counters)) out[k] = b.counters[k]! - (a.counters[k] ?? 0);
  out.wal_mb_per_s = Math.round(((out.wal_bytes ?? 0) / 1e6 / seconds) * 100) / 100;
  return out;
}

interface WaitSample {
  readonly at: number;
  /** "<who> <wait event type>:<wait event>" for each active backend; "cpu" when it was not waiting. */
  readonly backends: string[];
  readonly lockWaits: number;
}

const who = (query: string, backendType: string) =>
  backendType === 'autovacuum worker'
    ? 'autovacuum'
    : backendType !== 'client backend'
      ? backendType
      : /pg_try_advisory_xact_lock/.test(query)
        ? 'sweep'
        : /insert into sessions|from users where|update users set/i.test(query)
          ? 'login'
          : 'other';

/** Samples pg_stat_activity and pg_locks of `dbName` every `everyMs` until stopped. */
export function sampleWaits(url: string, dbName: string, everyMs = 200): { stop(): Promise<WaitSample[]> } {
  const samples: WaitSample[] = [];
  const client = new pg.Client({ connectionString: url, application_name: 'bench-probe' });
  let stopped = false;
  const loop = (async () => {
    await client.connect();
    while (!stopped) {
      const active = await client.query(
        `select coalesce(wait_event_type || ':' || wait_event, 'cpu') as wait, backend_type, coalesce(query, '') as query
           from pg_stat_activity
          where (datname = $1 or backend_type in ('checkpointer', 'walwriter', 'background writer'))
            and pid <> pg_backend_pid() and (state = 'active' or backend_type <> 'client backend')
            and coalesce(wait_event, '') not in ('CheckpointerMain', 'WalWriterMain', 'BgWriterHibernate', 'BgWriterMain', 'AutoVacuumMain')`,
        [dbName],
      );
      const locks = await client.query(`select count(*)::int as n from pg_locks where not granted`);
      samples.push({ at: Date.now(), backends: active.rows.map((r) => `${who(r.query, r.backend_type)} ${r.wait}`), lockWaits: locks.rows[0].n });
      await new Promise((r) => setTimeout(r, everyMs));
    }
    await client.end();
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return samples;
    },
  };
}

/** Of the samples in [from, to): how often each "<who> <wait>" was seen (as a share of samples), and lock waits. */
export function waitsBetween(samples: WaitSample[], from: number, to: number): { samples: number; lockWaitSamples: number; seen: Record<string, number> } {
  const inside = samples.filter((s) => s.at >= from && s.at < to);
  const counts: Record<string, number> = {};
  for (const s of inside) for (const b of s.backends) counts[b] = (counts[b] ?? 0) + 1;
  const seen = Object.fromEntries(
    Object.entries(counts)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => [k, Math.round((n / Math.max(1, inside.length)) * 100) / 100]),
  );
  return { samples: inside.length, lockWaitSamples: inside.filter((s) => s.lockWaits > 0).length, seen };
}
