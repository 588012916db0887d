// Watch fan-out on a 3-member in-process cluster (classic-level, temporary
// directory): N watchers on one follower all follow the prefix that 64
// concurrent writers put to, for a fixed time after a warm-up. Reports
// durable puts/s, events delivered/s (summed over watchers), how many
// watchers fell back to history, and whether every watcher got every event
// (each watcher counts what it receives; at the end all of them drain to the
// final revision). Usage:
//   node --import tsx bench/watch.ts [--watchers 1,100,10000] [--seconds S] [--json]

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCluster } from '../src/index.ts';
import type { RaftKV, Watch } from '../src/index.ts';

function argument(name: string, fallback: string): string {
  const at = process.argv.indexOf(name);
  return at < 0 ? fallback : (process.argv[at + 1] ?? fallback);
}

const watcherCounts = argument('--watchers', '1,100,10000').split(',').map(Number);
const seconds = Number(argument('--seconds', '5'));
const json = process.argv.includes('--json');
const WRITERS = 64;
const VALUE = Buffer.alloc(256, 'v');

interface Result {
  readonly watchers: number;
  readonly putsPerSecond: number;
  readonly eventsPerSecond: number;
  readonly deliveredAll: boolean;
  readonly drainSeconds: number;
  readonly fellBehind: number;
}

async function consume(watch: Watch, counter: { events: number; revision: number }): Promise<void> {
  try {
    for await (const response of watch) {
      counter.events += response.events.length;
      counter.revision = response.revision;
    }
  } catch (error) {
    if ((error as { code?: string }).code !== 'RAFTKV_STOPPED') throw error;
  }
}

async function run(watcherCount: number): Promise<Result> {
  const dataDir = await mkdtemp(join(tmpdir(), 'raftkv-bench-watch-'));
  const cluster = await createCluster({ dataDir, memberOptions: { tickMs: 50 } });
  try {
    await cluster.waitForLeader();
    const leader = cluster.leader() as RaftKV;
    const follower = cluster.nodes().find((node) => node !== leader) as RaftKV;
    let sequence = 0;
    let stop = false;
    let puts = 0;
    const writer = async (): Promise<void> => {
      while (!stop) {
        await leader.put(`w/${sequence++ % 100_000}`, VALUE);
        puts++;
      }
    };
    // Warm-up without watchers, then open them at the current revision.
    const warm = Array.from({ length: WRITERS }, writer);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    stop = true;
    await Promise.all(warm);
    stop = false;
    const start = (await follower.status()).revision + 1;
    const counters = Array.from({ length: watcherCount }, () => ({ events: 0, revision: 0 }));
    const watches = counters.map(() => follower.watch({ prefix: 'w/', startRevision: start }));
    const consumers = watches.map((watch, index) => consume(watch, counters[index] as { events: number; revision: number }));
    puts = 0;
    const began = performance.now();
    const writers = Array.from({ length: WRITERS }, writer);
    let fellBehind = 0;
    const progress = setInterval(() => {
      const delivered = counters.reduce((sum, counter) => sum + counter.events, 0);
      const elapsed = (performance.now() - began) / 1000;
      process.stderr.write(`\r${watcherCount} watchers: ${Math.round(puts / elapsed)} puts/s, ${Math.round(delivered / elapsed)} events/s   `);
    }, 500);
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    stop = true;
    await Promise.all(writers);
    const elapsed = (performance.now() - began) / 1000;
    const delivered = counters.reduce((sum, counter) => sum + counter.events, 0);
    const written = puts;
    // Drain: every watcher must reach the final revision with every event.
    const final = (await leader.status()).revision;
    const drainBegan = performance.now();
    while (counters.some((counter) => counter.revision < final)) {
      fellBehind = Math.max(fellBehind, counters.filter((counter) => counter.revision < final).length);
      for (const watch of watches) watch.requestProgress();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const drainSeconds = (performance.now() - drainBegan) / 1000;
    clearInterval(progress);
    process.stderr.write('\n');
    const expected = final - start + 1;
    const deliveredAll = counters.every((counter) => counter.events === expected);
    if (!deliveredAll) process.stderr.write(`expected ${expected}, got ${Math.min(...counters.map((c) => c.events))}..${Math.max(...counters.map((c) => c.events))}\n`);
    for (const watch of watches) watch.cancel();
    await Promise.all(consumers);
    return {
      watchers: watcherCount,
      putsPerSecond: Math.round(written / elapsed),
      eventsPerSecond: Math.round(delivered / elapsed),
      deliveredAll,
      drainSeconds: Math.round(drainSeconds * 100) / 100,
      fellBehind,
    };
  } finally {
    await cluster.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

const results: Result[] = [];
for (const count of watcherCounts) results.push(await run(count));
if (json) console.log(JSON.stringify(results, null, 2));
else {
  console.log(`watch fan-out: ${WRITERS} writers, 256-byte values, every watcher on the written prefix, ${seconds} s per row`);
  console.log('| watchers | durable puts/s | events delivered/s | behind at the end | drain after writes stop | every event delivered |');
  console.log('| ---: | ---: | ---: | ---: | ---: | :---: |');
  for (const row of results) {
    console.log(
      `| ${row.watchers.toLocaleString('en-US')} | ${row.putsPerSecond.toLocaleString('en-US')} | ${row.eventsPerSecond.toLocaleString('en-US')} | ${row.fellBehind.toLocaleString('en-US')} | ${row.drainSeconds} s | ${row.deliveredAll ? 'yes' : 'NO'} |`,
    );
  }
}
