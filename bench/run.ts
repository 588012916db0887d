// `npm run bench`: the headline benchmark. A 3-node raftkv cluster with
// durable storage (every write synced on a quorum before it is
// acknowledged) in a temporary directory, driven through the public API; and
// the same load against a real 3-member etcd cluster on loopback when the
// `etcd` binary is installed (see bench/README.md). Prints a progress line per
// case and a table at the end; --json prints machine-readable results.
//
// Options: --seconds N (per case, default 5) --warmup N (default 1)
//          --warmup-target N (seconds of unmeasured mixed load before a
//          target's first case, default 10: the JIT compiles four isolates'
//          hot code, which otherwise lands in the first cases' tail)
//          --writers 1,16,256,1024 --rate 10000 (fixed-rate case)
//          --only raftkv|etcd --json --single-thread (all members on one thread)
//          --log-engine wal|classic (raftkv's Raft log; default wal)

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closedLoop, openLoop } from './load.ts';
import type { BenchTarget, LoadResult } from './load.ts';
import { startRaftkvTarget } from './targets/raftkv.ts';
import { startRaftkvThreadsTarget } from './targets/raftkv-threads.ts';
import { etcdAvailable, startEtcdTarget } from './targets/etcd.ts';

interface Row {
  readonly target: string;
  readonly workload: string;
  readonly concurrency: number;
  readonly result: LoadResult;
}

function option(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : undefined;
}

const seconds = Number(option('--seconds') ?? 5);
const warmupSeconds = Number(option('--warmup') ?? 1);
const targetWarmupSeconds = Number(option('--warmup-target') ?? 10);
for (const [name, value] of [['--seconds', seconds], ['--warmup', warmupSeconds], ['--warmup-target', targetWarmupSeconds]] as const) {
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a non-negative number`);
}
const writerCounts = (option('--writers') ?? '1,16,256,1024').split(',').map(Number);
const fixedRate = Number(option('--rate') ?? 10_000);
const only = option('--only');
const json = process.argv.includes('--json');
// One member per worker thread (as one per process in production), or all three on this thread.
const threads = !process.argv.includes('--single-thread');
const logEngine = option('--log-engine') ?? 'wal';
if (logEngine !== 'wal' && logEngine !== 'classic') throw new Error(`--log-engine must be wal or classic, got ${logEngine}`);
const keySpace = 100_000;
const value = new Uint8Array(256).fill(0x61);

function key(n: number): string {
  return `bench/key/${String(n % keySpace).padStart(6, '0')}`;
}

async function runCases(target: BenchTarget): Promise<Row[]> {
  const rows: Row[] = [];
  const run = async (workload: string, concurrency: number, operation: (worker: number, sequence: number) => Promise<void>): Promise<void> => {
    const label = `${target.name} ${workload} x${concurrency}`;
    const result = await closedLoop({ workers: concurrency, warmupSeconds, seconds, label, operation });
    rows.push({ target: target.name, workload, concurrency, result });
    if (!json) console.error(`  ${label}: ${Math.round(result.perSecond).toLocaleString('en-US')} ops/s, p99 ${result.p99Ms.toFixed(2)} ms`);
  };
  let counter = 0;
  if (targetWarmupSeconds > 0) {
    // Unmeasured: every operation the cases use, until the JIT has compiled the hot paths.
    const label = `${target.name} warm-up`;
    await closedLoop({
      workers: 256,
      warmupSeconds: 0,
      seconds: targetWarmupSeconds,
      label,
      operation: async (worker, sequence) => {
        const n = counter++ * 7919;
        if (sequence % 3 === 0) await target.get(key(n), sequence % 2 === 0);
        else if (sequence % 7 === 0) await target.compareAndSwap(`bench/warm/${worker}/${sequence}`, null, value);
        else await target.put(key(n), value);
      },
    });
    if (!json) console.error(`  ${label}: ${targetWarmupSeconds} s of puts, gets and compare-and-swaps, not measured`);
  }
  for (const writers of writerCounts) {
    await run('put', writers, async () => target.put(key(counter++ * 7919), value));
  }
  // Reads hit keys the put cases wrote.
  await run('get (linearizable)', 256, async () => target.get(key(counter++ * 7919), false));
  await run('get (serializable)', 256, async () => target.get(key(counter++ * 7919), true));
  await run('mixed 90% get / 10% put', 256, async (_worker, sequence) => {
    const n = counter++ * 7919;
    if (sequence % 10 === 0) await target.put(key(n), value);
    else await target.get(key(n), false);
  });
  const lastValue = new Map<number, Uint8Array | null>();
  await run('txn compare-and-swap', 256, async (worker, sequence) => {
    const casKey = `bench/cas/${worker}`;
    const next = new TextEncoder().encode(`${worker}:${sequence}`);
    const expected = lastValue.get(worker) ?? null;
    const swapped = await target.compareAndSwap(casKey, expected, next);
    if (!swapped) throw new Error(`compare-and-swap on ${casKey} failed: a lost update or a stale read`);
    lastValue.set(worker, next);
  });
  const label = `${target.name} put at a fixed ${fixedRate}/s`;
  const result = await openLoop({
    ratePerSecond: fixedRate,
    seconds,
    inflightMax: 4_096,
    label,
    operation: async () => target.put(key(counter++ * 7919), value),
  });
  rows.push({ target: target.name, workload: `put at fixed ${fixedRate}/s`, concurrency: 0, result });
  if (!json) console.error(`  ${label}: ${Math.round(result.perSecond).toLocaleString('en-US')} ops/s, p99 ${result.p99Ms.toFixed(2)} ms, ${result.errors} over the in-flight bound`);
  return rows;
}

function printTable(rows: readonly Row[]): void {
  const etcdRows = new Map(rows.filter((r) => r.target === 'etcd').map((r) => [`${r.workload}/${r.concurrency}`, r]));
  const header = ['target', 'workload', 'clients', 'ops/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'errors', 'vs etcd'];
  const lines = rows.map((row) => {
    const etcd = etcdRows.get(`${row.workload}/${row.concurrency}`);
    const ratio = row.target !== 'etcd' && etcd !== undefined && etcd.result.perSecond > 0 ? `${(row.result.perSecond / etcd.result.perSecond).toFixed(1)}x` : '';
    return [
      row.target,
      row.workload,
      row.concurrency === 0 ? 'open' : String(row.concurrency),
      Math.round(row.result.perSecond).toLocaleString('en-US'),
      row.result.p50Ms.toFixed(2),
      row.result.p99Ms.toFixed(2),
      row.result.p999Ms.toFixed(2),
      String(row.result.errors),
      ratio,
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const format = (cells: readonly string[]): string => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(format(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const line of lines) console.log(format(line));
}

const directory = await mkdtemp(join(tmpdir(), 'raftkv-bench-'));
const rows: Row[] = [];
try {
  if (only === undefined || only === 'raftkv') {
    if (!json) {
      console.error(`raftkv: 3 members ${threads ? 'in 3 worker threads' : 'on one thread'}, ${logEngine} log, every write synced on a quorum`);
    }
    const target = threads ? await startRaftkvThreadsTarget(join(directory, 'raftkv'), 3, logEngine) : await startRaftkvTarget(join(directory, 'raftkv'), logEngine);
    try {
      rows.push(...(await runCases(target)));
    } finally {
      await target.close();
    }
  }
  if (only === undefined || only === 'etcd') {
    if (await etcdAvailable()) {
      if (!json) console.error('etcd: 3 members on loopback, etcd3 npm client');
      const target = await startEtcdTarget(join(directory, 'etcd'));
      try {
        rows.push(...(await runCases(target)));
      } finally {
        await target.close();
      }
    } else if (!json) {
      console.error('etcd is not installed: skipping the comparison (see bench/README.md)');
    }
  }
} finally {
  await rm(directory, { recursive: true, force: true });
}
if (json) {
  console.log(JSON.stringify({ machine: { cpus: (await import('node:os')).cpus().length, node: process.version }, seconds, rows }, null, 2));
} else {
  console.log();
  printTable(rows);
}
