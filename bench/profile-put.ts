// Where the time of a durable put goes: a 3-member in-process cluster under
// N concurrent writers for a few seconds, reporting throughput, event-loop
// lag, and per-call counts and times of the log's synced save and the
// store's apply. Run under --cpu-prof for a profile:
//   node --import tsx --cpu-prof --cpu-prof-dir=/tmp/prof bench/profile-put.ts --writers 256 --seconds 5

import { createCluster } from '../src/index.ts';
import { ClassicLogStorage } from '../src/storage/log/classic.ts';
import { MvccStore } from '../src/storage/mvcc/store.ts';

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
}

const writers = option('--writers', 256);
const seconds = option('--seconds', 5);
const snapshotEntries = option('--snapshot-entries', 10_000);
const stats: Record<string, { calls: number; items: number; ms: number }> = {};

function measure(prototype: object, name: string, count: (argument: unknown) => number): void {
  const target = prototype as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const original = target[name] as (...args: unknown[]) => Promise<unknown>;
  target[name] = async function (this: unknown, ...args: unknown[]) {
    const started = performance.now();
    try {
      return await original.apply(this, args);
    } finally {
      const entry = (stats[name] ??= { calls: 0, items: 0, ms: 0 });
      entry.calls++;
      entry.items += count(args[0]);
      entry.ms += performance.now() - started;
    }
  };
}

measure(ClassicLogStorage.prototype, 'save', (update) => (update as { entries: unknown[] }).entries.length);
measure(MvccStore.prototype, 'applyBatch', (items) => (items as unknown[]).length);

const cluster = await createCluster({ size: 3, memberOptions: { requestTimeoutMs: 30_000, snapshotEntries } });
await cluster.waitForLeader();
const members = cluster.nodes();
const value = new Uint8Array(256).fill(0x61);
let issued = 0;
let done = 0;
let lagMaxMs = 0;
let last = performance.now();
const lagTimer = setInterval(() => {
  const now = performance.now();
  lagMaxMs = Math.max(lagMaxMs, now - last - 10);
  last = now;
}, 10);
const utilizationStart = performance.eventLoopUtilization();
const cpuStart = process.cpuUsage();
const end = Date.now() + seconds * 1000;
await Promise.all(
  Array.from({ length: writers }, async () => {
    while (Date.now() < end) {
      const n = issued++;
      await members[n % members.length]!.put(`bench/key/${String((n * 7919) % 100_000).padStart(6, '0')}`, value);
      done++;
    }
  }),
);
clearInterval(lagTimer);
const utilization = performance.eventLoopUtilization(utilizationStart);
const cpu = process.cpuUsage(cpuStart);
console.log(`${writers} writers: ${Math.round(done / seconds)} puts/s; event-loop lag max ${lagMaxMs.toFixed(1)} ms`);
console.log(
  `event loop busy ${(utilization.utilization * 100).toFixed(0)}%: ${((utilization.active * 1000) / done).toFixed(1)} µs of main-thread time per put; ` +
    `${((cpu.user + cpu.system) / done).toFixed(1)} µs of process CPU per put`,
);
for (const [name, entry] of Object.entries(stats)) {
  console.log(`${name}: ${entry.calls} calls, ${(entry.items / entry.calls).toFixed(1)} items/call, ${(entry.ms / entry.calls).toFixed(2)} ms/call`);
}
await cluster.close();
