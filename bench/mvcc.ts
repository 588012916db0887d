// The MVCC store alone, on a temporary directory: put throughput through
// applyBatch (as the replicated node applies committed entries), point gets,
// 100-key ranges, historical reads, compaction of all history, reopen
// (index rebuild) time and peak memory; then the in-memory index choice,
// sorted-btree against a sorted array with binary-search insert, on the
// same keys. Usage:
//   node --import tsx bench/mvcc.ts [--keys N] [--seconds S] [--index-keys N]
//     [--index-budget-seconds S] [--skip-index] [--skip-store] [--json]
// Progress goes to stderr; the table (or JSON with --json) to stdout.

import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import * as sortedBtree from 'sorted-btree';
import { createRandom } from '../src/raft/random.ts';
import { prefixEnd } from '../src/storage/mvcc/keys.ts';
import { MvccStore } from '../src/storage/mvcc/store.ts';
import type { ApplyItem } from '../src/storage/mvcc/store.ts';
import type { RangeRequest } from '../src/storage/mvcc/types.ts';

setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

const VALUE_BYTES = 256;
const KEY_DIGITS = 8;
const RANGE_KEYS = 100;
const random = createRandom(20261124);

// ---------------------------------------------------------------- options

function numberArgument(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  if (at < 0) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`${name} needs a positive integer`);
  return value;
}

const keyCount = numberArgument('--keys', 1_000_000);
const phaseSeconds = numberArgument('--seconds', 3);
const indexKeyCount = numberArgument('--index-keys', keyCount);
const indexBudgetSeconds = numberArgument('--index-budget-seconds', 10);
const jsonOutput = process.argv.includes('--json');
const skipIndex = process.argv.includes('--skip-index');
const skipStore = process.argv.includes('--skip-store');
if (keyCount < 2 * RANGE_KEYS || keyCount >= 10 ** KEY_DIGITS) throw new Error(`--keys must be in [${2 * RANGE_KEYS}, ${10 ** KEY_DIGITS})`);

// ---------------------------------------------------------------- helpers

function keyText(number: number): string {
  return `key/${String(number).padStart(KEY_DIGITS, '0')}`;
}

function keyBytes(number: number): Uint8Array {
  return Buffer.from(keyText(number), 'latin1');
}

function valueBytes(number: number, round: number): Uint8Array {
  const value = new Uint8Array(VALUE_BYTES).fill(round & 0xff);
  new DataView(value.buffer).setUint32(0, number);
  return value;
}

function randomBelow(limit: number): number {
  return random(limit);
}

function progress(text: string): void {
  process.stderr.write(`\r  ${text}`.padEnd(78));
}

function progressDone(): void {
  process.stderr.write('\n');
}

function check(condition: boolean, message: string): void {
  if (!condition) throw new Error(`benchmark self-check failed: ${message}`);
}

const formatNumber = (value: number): string => Math.round(value).toLocaleString('en-US');
const mebibytes = (bytes: number): number => bytes / 1024 ** 2;

/** Peak resident set and heap, sampled every 50 ms and on demand. */
class MemorySampler {
  rssPeakBytes = 0;
  heapUsedPeakBytes = 0;
  private readonly timer: NodeJS.Timeout;

  constructor() {
    this.timer = setInterval(() => this.sample(), 50);
    this.timer.unref();
  }

  sample(): void {
    const usage = process.memoryUsage();
    this.rssPeakBytes = Math.max(this.rssPeakBytes, usage.rss);
    this.heapUsedPeakBytes = Math.max(this.heapUsedPeakBytes, usage.heapUsed);
  }

  stop(): void {
    clearInterval(this.timer);
    this.sample();
  }
}

interface Row {
  readonly measure: string;
  readonly value: number;
  readonly unit: string;
  readonly note?: string;
}

const rows: Row[] = [];

function record(measure: string, value: number, unit: string, note?: string): void {
  rows.push(note === undefined ? { measure, value, unit } : { measure, value, unit, note });
}

// ---------------------------------------------------------------- store phases

let raftIndex = 0;

/** Puts the given key numbers through applyBatch, batchSize per call; returns puts per second. */
async function putKeys(store: MvccStore, numbers: readonly number[], batchSize: number, round: number, label: string, sampler: MemorySampler): Promise<number> {
  const start = performance.now();
  let lastPrint = start;
  for (let offset = 0; offset < numbers.length; offset += batchSize) {
    const items: ApplyItem[] = [];
    for (const number of numbers.slice(offset, offset + batchSize)) {
      items.push({ index: ++raftIndex, request: { type: 'put', key: keyBytes(number), value: valueBytes(number, round) } });
    }
    const responses = await store.applyBatch(items);
    check(responses.every((response) => response !== undefined && response.type === 'put'), 'every put applies');
    const now = performance.now();
    if (now - lastPrint > 500) {
      lastPrint = now;
      sampler.sample();
      progress(`${label}: ${formatNumber(offset + batchSize)} / ${formatNumber(numbers.length)} (${formatNumber(((offset + batchSize) * 1000) / (now - start))} puts/s)`);
    }
  }
  const seconds = (performance.now() - start) / 1000;
  progressDone();
  return numbers.length / seconds;
}

/** Runs `operation` back to back for phaseSeconds; returns operations and the keys they returned, per second. */
interface Rate {
  readonly operationsPerSecond: number;
  readonly keysPerSecond: number;
  /** CPU time of the whole process (all its threads) over wall time: well below 100 means it waited, for I/O or for the CPU. */
  readonly cpuPercent: number;
}

async function timed(label: string, operation: () => Promise<number>): Promise<Rate> {
  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  const end = start + phaseSeconds * 1000;
  let operations = 0;
  let keys = 0;
  while (performance.now() < end) {
    for (let i = 0; i < 100; i++) {
      keys += await operation();
      operations++;
    }
  }
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const cpuPercent = (cpu.user + cpu.system) / 10_000 / seconds;
  progress(`${label}: ${formatNumber(operations / seconds)} /s, ${cpuPercent.toFixed(0)}% CPU`);
  progressDone();
  return { operationsPerSecond: operations / seconds, keysPerSecond: keys / seconds, cpuPercent };
}

async function rangeCount(store: MvccStore, request: RangeRequest, expected: number): Promise<number> {
  const response = await store.range(request);
  check(response.kvs.length === expected, `range returned ${response.kvs.length} keys, expected ${expected}`);
  return response.kvs.length;
}

function shuffled(count: number): number[] {
  const numbers = Array.from({ length: count }, (_, position) => position);
  for (let position = count - 1; position > 0; position--) {
    const other = randomBelow(position + 1);
    [numbers[position], numbers[other]] = [numbers[other] as number, numbers[position] as number];
  }
  return numbers;
}

async function loadAndOverwrite(store: MvccStore, sampler: MemorySampler): Promise<number> {
  const inOrder = Array.from({ length: keyCount }, (_, position) => position);
  record('put, new keys, 1,000 per applyBatch', await putKeys(store, inOrder, 1000, 1, 'load', sampler), 'puts/s', `${formatNumber(keyCount)} keys in key order`);
  const loadRevision = store.currentRevision;
  check(loadRevision === keyCount, 'one revision per put');
  collectGarbage();
  const afterLoad = process.memoryUsage();
  record('heap used after load (after GC)', mebibytes(afterLoad.heapUsed), 'MiB', `${formatNumber(afterLoad.heapUsed / keyCount)} bytes per key`);
  record('array buffers after load', mebibytes(afterLoad.arrayBuffers), 'MiB', 'outside the heap: the latest values, kept in memory');
  const order = shuffled(keyCount);
  const half = Math.floor(keyCount / 2);
  record('put, overwrite, 1,000 per applyBatch', await putKeys(store, order.slice(0, half), 1000, 2, 'overwrite (1,000/batch)', sampler), 'puts/s', `${formatNumber(half)} random existing keys`);
  record('put, overwrite, 100 per applyBatch', await putKeys(store, order.slice(half), 100, 2, 'overwrite (100/batch)', sampler), 'puts/s', `${formatNumber(keyCount - half)} random existing keys`);
  return loadRevision;
}

async function reads(store: MvccStore, loadRevision: number): Promise<void> {
  const gets = await timed('point gets', () => rangeCount(store, { key: keyBytes(randomBelow(keyCount)) }, 1));
  record('point get, current revision', gets.operationsPerSecond, 'gets/s', `range({key}), one at a time, random keys; ${gets.cpuPercent.toFixed(0)}% CPU`);
  const blocks = Math.floor(keyCount / RANGE_KEYS);
  const prefixes = await timed('prefix ranges', () => {
    // A plain Uint8Array: prefixEnd() of a Buffer would write into the prefix (Buffer#slice is a view).
    const prefix = Uint8Array.from(keyBytes(randomBelow(blocks) * RANGE_KEYS).subarray(0, -2));
    return rangeCount(store, { key: prefix, rangeEnd: prefixEnd(prefix) }, RANGE_KEYS);
  });
  record('range by prefix, 100 keys each', prefixes.keysPerSecond, 'keys/s', `${formatNumber(prefixes.operationsPerSecond)} ranges/s; ${prefixes.cpuPercent.toFixed(0)}% CPU`);
  const intervals = await timed('interval ranges', () => {
    const first = randomBelow(keyCount - RANGE_KEYS);
    return rangeCount(store, { key: keyBytes(first), rangeEnd: keyBytes(first + RANGE_KEYS) }, RANGE_KEYS);
  });
  record('range [key, key+100)', intervals.keysPerSecond, 'keys/s', `${formatNumber(intervals.operationsPerSecond)} ranges/s; ${intervals.cpuPercent.toFixed(0)}% CPU`);
  const historicalGets = await timed('historical gets', () => rangeCount(store, { key: keyBytes(randomBelow(keyCount)), revision: loadRevision }, 1));
  record('point get at an old revision', historicalGets.operationsPerSecond, 'gets/s', `superseded values come from disk; ${historicalGets.cpuPercent.toFixed(0)}% CPU`);
  const historicalRanges = await timed('historical ranges', () => {
    const first = randomBelow(keyCount - RANGE_KEYS);
    return rangeCount(store, { key: keyBytes(first), rangeEnd: keyBytes(first + RANGE_KEYS), revision: loadRevision }, RANGE_KEYS);
  });
  record('range [key, key+100) at an old revision', historicalRanges.keysPerSecond, 'keys/s', `${formatNumber(historicalRanges.operationsPerSecond)} ranges/s; ${historicalRanges.cpuPercent.toFixed(0)}% CPU`);
}

/** Bytes of every file under a directory. */
async function directoryBytes(directory: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(directory, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}

async function compaction(store: MvccStore, directory: string): Promise<void> {
  const bytesBefore = await directoryBytes(directory);
  const start = performance.now();
  const [response] = await store.applyBatch([{ index: ++raftIndex, request: { type: 'compact', revision: store.currentRevision } }]);
  check(response?.type === 'compact', 'the compaction is accepted');
  const logical = performance.now() - start;
  await store.compactionSettled();
  const seconds = (performance.now() - start) / 1000;
  progress(`compaction: ${seconds.toFixed(1)} s`);
  progressDone();
  record('compact all history (apply)', logical, 'ms', 'the compact request itself: reads below it fail from here on');
  record('compact all history (background prune)', seconds, 's', `${formatNumber(keyCount)} superseded rows deleted`);
  record('files on disk before compaction', mebibytes(bytesBefore), 'MiB', `${formatNumber(2 * keyCount)} rows`);
  record('files on disk right after compaction', mebibytes(await directoryBytes(directory)), 'MiB', 'LevelDB reclaims deleted rows later, in its own compactions');
}

interface ReopenReport {
  readonly seconds: number;
  readonly settledSeconds: number;
  readonly keyCount: number;
  readonly currentRevision: number;
  readonly appliedIndex: number;
  readonly heapUsedBytes: number;
  readonly arrayBuffersBytes: number;
  readonly rssBytes: number;
  readonly rssPeakBytes: number;
}

/** Child mode: open the store as a restarted node would, in a fresh process, and report. */
async function reopenChild(directory: string, lastKey: number): Promise<void> {
  const start = performance.now();
  const store = await MvccStore.open(directory);
  const seconds = (performance.now() - start) / 1000;
  await store.compactionSettled();
  const settledSeconds = (performance.now() - start) / 1000;
  await rangeCount(store, { key: keyBytes(lastKey) }, 1);
  collectGarbage();
  const usage = process.memoryUsage();
  const status = store.status();
  const report: ReopenReport = {
    seconds,
    settledSeconds,
    keyCount: status.keyCount,
    currentRevision: status.currentRevision,
    appliedIndex: status.appliedIndex,
    heapUsedBytes: usage.heapUsed,
    arrayBuffersBytes: usage.arrayBuffers,
    rssBytes: usage.rss,
    rssPeakBytes: process.resourceUsage().maxRSS * 1024,
  };
  await store.close();
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

function runReopenChild(directory: string): Promise<ReopenReport> {
  const script = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [...process.execArgv, script, '--reopen-child', directory, '--keys', String(keyCount)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => (output += chunk));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`the reopen child exited with ${code}`));
      else resolve(JSON.parse(output) as ReopenReport);
    });
  });
}

/** Closes the store and reopens its directory in a fresh process, as a restart would. */
async function restart(store: MvccStore, directory: string): Promise<void> {
  await store.flush();
  const expected = store.status();
  await store.close();
  progress('reopen in a fresh process');
  const report = await runReopenChild(directory);
  check(
    report.keyCount === expected.keyCount && report.currentRevision === expected.currentRevision && report.appliedIndex === expected.appliedIndex,
    'the reopened store has the same state',
  );
  progress(`reopen: ${report.seconds.toFixed(1)} s`);
  progressDone();
  record('reopen: open() with index rebuild', report.seconds, 's', `fresh process, ${formatNumber(report.keyCount)} keys`);
  record('reopen: until re-pruning settled', report.settledSeconds, 's', 'open() schedules a prune pass when compactRevision > 0');
  record('reopen: heap used after rebuild (after GC)', mebibytes(report.heapUsedBytes), 'MiB', `${formatNumber(report.heapUsedBytes / report.keyCount)} bytes per key`);
  record('reopen: array buffers after rebuild', mebibytes(report.arrayBuffersBytes), 'MiB', 'keys and latest values are views into the rows read back');
  record('reopen: peak RSS of the fresh process', mebibytes(report.rssPeakBytes), 'MiB', 'kernel maxrss');
}

async function storeBenchmark(): Promise<{ rssPeakBytes: number; heapUsedPeakBytes: number }> {
  const directory = await mkdtemp(join(tmpdir(), 'raftkv-bench-mvcc-'));
  const sampler = new MemorySampler();
  const store = await MvccStore.open(join(directory, 'store'));
  try {
    const loadRevision = await loadAndOverwrite(store, sampler);
    await reads(store, loadRevision);
    await compaction(store, join(directory, 'store'));
    sampler.stop();
    record('peak RSS while loading, reading, compacting', mebibytes(process.resourceUsage().maxRSS * 1024), 'MiB', 'kernel maxrss');
    record('peak heap used (sampled every 50 ms)', mebibytes(sampler.heapUsedPeakBytes), 'MiB');
    await restart(store, join(directory, 'store'));
  } finally {
    await store.close();
    sampler.stop();
    await rm(directory, { recursive: true, force: true });
  }
  return { rssPeakBytes: process.resourceUsage().maxRSS * 1024, heapUsedPeakBytes: sampler.heapUsedPeakBytes };
}

// ---------------------------------------------------------------- index choice

/** What both candidates offer: the operations key-index.ts needs. */
interface OrderedMap<V> {
  get(key: string): V | undefined;
  set(key: string, value: V): void;
  /** Visits entries from the first key >= start, in order, until visit returns false. */
  scan(start: string, visit: (key: string, value: V) => boolean): void;
}

type BTreeConstructor = new <K, V>(entries: undefined, compare: (left: K, right: K) => number) => {
  get(key: K): V | undefined;
  set(key: K, value: V): boolean;
  entries(lowestKey?: K): IterableIterator<[K, V]>;
};

function btreeConstructor(): BTreeConstructor {
  let candidate = (sortedBtree as unknown as { default: unknown }).default;
  if (typeof candidate !== 'function') candidate = (candidate as { default: unknown }).default;
  return candidate as BTreeConstructor;
}

const compareStrings = (left: string, right: string): number => (left < right ? -1 : left > right ? 1 : 0);

/** sorted-btree, used exactly as key-index.ts uses it. */
function sortedBtreeMap<V>(): OrderedMap<V> {
  const tree = new (btreeConstructor())<string, V>(undefined, compareStrings);
  return {
    get: (key) => tree.get(key),
    set: (key, value) => void tree.set(key, value),
    scan: (start, visit) => {
      for (const [key, value] of tree.entries(start)) if (!visit(key, value)) return;
    },
  };
}

/** The simple alternative: a Map for lookups and a sorted key array (binary search + splice) for order. */
function sortedArrayMap<V>(): OrderedMap<V> {
  const map = new Map<string, V>();
  const keys: string[] = [];
  const lowerBound = (key: string): number => {
    let low = 0;
    let high = keys.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((keys[middle] as string) < key) low = middle + 1;
      else high = middle;
    }
    return low;
  };
  return {
    get: (key) => map.get(key),
    set: (key, value) => {
      if (!map.has(key)) {
        const last = keys[keys.length - 1];
        if (last === undefined || last < key) keys.push(key);
        else keys.splice(lowerBound(key), 0, key);
      }
      map.set(key, value);
    },
    scan: (start, visit) => {
      for (let position = lowerBound(start); position < keys.length; position++) {
        const key = keys[position] as string;
        if (!visit(key, map.get(key) as V)) return;
      }
    },
  };
}

interface History {
  readonly revisions: number[];
}

interface IndexResult {
  readonly name: string;
  readonly ascendingInsertsPerSecond: number;
  readonly randomInserts: number;
  readonly randomInsertsPerSecond: number;
  readonly randomInsertsFinished: boolean;
  readonly heapBytes: number;
  readonly scanKeysPerSecond: number;
  readonly getsPerSecond: number;
}

/** Inserts keys in the given order, stopping after budgetSeconds; returns how many and how fast. */
function insertAll(map: OrderedMap<History>, keys: readonly string[], budgetSeconds: number): { inserted: number; perSecond: number } {
  const start = performance.now();
  const deadline = start + budgetSeconds * 1000;
  let inserted = 0;
  for (const key of keys) {
    map.set(key, { revisions: [inserted] });
    inserted++;
    if ((inserted & 0x3fff) === 0 && performance.now() > deadline) break;
  }
  return { inserted, perSecond: inserted / ((performance.now() - start) / 1000) };
}

function measureIndex(name: string, create: () => OrderedMap<History>, ascending: readonly string[], randomOrder: readonly string[]): IndexResult {
  collectGarbage();
  const heapBefore = process.memoryUsage().heapUsed;
  const map = create();
  const ascendingInsert = insertAll(map, ascending, Number.POSITIVE_INFINITY);
  collectGarbage();
  const heapBytes = process.memoryUsage().heapUsed - heapBefore;
  progress(`${name}: ascending inserts ${formatNumber(ascendingInsert.perSecond)}/s`);
  progressDone();
  let scannedKeys = 0;
  const scanStart = performance.now();
  for (let scan = 0; scan < 100_000; scan++) {
    let visited = 0;
    map.scan(ascending[randomBelow(ascending.length)] as string, () => ++visited < RANGE_KEYS);
    scannedKeys += visited;
  }
  const scanKeysPerSecond = scannedKeys / ((performance.now() - scanStart) / 1000);
  const getStart = performance.now();
  let found = 0;
  for (let get = 0; get < 1_000_000; get++) if (map.get(ascending[randomBelow(ascending.length)] as string) !== undefined) found++;
  check(found === 1_000_000, `${name} finds every key`);
  const getsPerSecond = 1_000_000 / ((performance.now() - getStart) / 1000);
  progress(`${name}: random-order inserts (budget ${indexBudgetSeconds} s)`);
  const randomInsert = insertAll(create(), randomOrder, indexBudgetSeconds);
  progressDone();
  return {
    name,
    ascendingInsertsPerSecond: ascendingInsert.perSecond,
    randomInserts: randomInsert.inserted,
    randomInsertsPerSecond: randomInsert.perSecond,
    randomInsertsFinished: randomInsert.inserted === randomOrder.length,
    heapBytes,
    scanKeysPerSecond,
    getsPerSecond,
  };
}

function indexBenchmark(): IndexResult[] {
  const ascending = Array.from({ length: indexKeyCount }, (_, position) => keyText(position));
  const randomOrder = shuffled(indexKeyCount).map(keyText);
  // Warm both up (JIT) on a small copy of the workload, so neither pays for it in the measurement.
  const warmUp = Math.min(indexKeyCount, 50_000);
  for (const create of [sortedBtreeMap, sortedArrayMap]) {
    const map = create<History>();
    insertAll(map, ascending.slice(0, warmUp), Number.POSITIVE_INFINITY);
    insertAll(create<History>(), randomOrder.slice(0, warmUp), Number.POSITIVE_INFINITY);
    for (let scan = 0; scan < 10_000; scan++) map.scan(ascending[randomBelow(warmUp)] as string, (key) => map.get(key) === undefined);
  }
  return [
    measureIndex('sorted-btree', sortedBtreeMap, ascending, randomOrder),
    measureIndex('sorted array + Map', sortedArrayMap, ascending, randomOrder),
  ];
}

// ---------------------------------------------------------------- report

function printTable(index: IndexResult[]): void {
  if (rows.length > 0) printStoreTable();
  if (index.length === 0) return;
  console.log(`\nIndex candidates, ${formatNumber(indexKeyCount)} keys (string keys, a small history object per key)`);
  console.log('candidate            | ascending inserts/s | random-order inserts/s      | heap MiB | scan keys/s (100-key scans) | gets/s');
  for (const result of index) {
    const randomText = result.randomInsertsFinished
      ? formatNumber(result.randomInsertsPerSecond)
      : `${formatNumber(result.randomInsertsPerSecond)} (stopped at ${formatNumber(result.randomInserts)})`;
    console.log(
      `${result.name.padEnd(20)} | ${formatNumber(result.ascendingInsertsPerSecond).padStart(19)} | ${randomText.padStart(27)} | ${mebibytes(result.heapBytes).toFixed(0).padStart(8)} | ${formatNumber(result.scanKeysPerSecond).padStart(27)} | ${formatNumber(result.getsPerSecond)}`,
    );
  }
}

function printStoreTable(): void {
  console.log(`\nMVCC store, ${formatNumber(keyCount)} keys, ${VALUE_BYTES}-byte values, ${phaseSeconds} s per read row (${process.version})`);
  const widths = [44, 12, 8];
  console.log(`${'measure'.padEnd(widths[0] as number)} | ${'value'.padStart(widths[1] as number)} | ${'unit'.padEnd(widths[2] as number)} | note`);
  for (const row of rows) {
    const value = row.value >= 100 ? formatNumber(row.value) : row.value.toFixed(1);
    console.log(`${row.measure.padEnd(widths[0] as number)} | ${value.padStart(widths[1] as number)} | ${row.unit.padEnd(widths[2] as number)} | ${row.note ?? ''}`);
  }
}

async function main(): Promise<void> {
  const loadAverageAtStart = loadavg()[0] as number;
  const started = performance.now();
  const memory = skipStore ? null : await storeBenchmark();
  collectGarbage();
  const index = skipIndex ? [] : indexBenchmark();
  const totalSeconds = (performance.now() - started) / 1000;
  // Other processes on the machine change every number here: say how busy it was.
  const loadAverageAtEnd = loadavg()[0] as number;
  if (jsonOutput) {
    const report = { benchmark: 'mvcc', node: process.version, keys: keyCount, valueBytes: VALUE_BYTES, phaseSeconds, rows, memory, indexKeys: indexKeyCount, index, totalSeconds, loadAverageAtStart, loadAverageAtEnd };
    console.log(JSON.stringify(report, null, 2));
  } else {
    printTable(index);
    console.log(`\n(total ${totalSeconds.toFixed(0)} s; 1-minute load average ${loadAverageAtStart.toFixed(1)} at start, ${loadAverageAtEnd.toFixed(1)} at end)`);
  }
}

const reopenAt = process.argv.indexOf('--reopen-child');
if (reopenAt >= 0) await reopenChild(process.argv[reopenAt + 1] as string, keyCount - 1);
else await main();
