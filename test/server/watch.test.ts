// Watch on one store: the hub fed by applied batches exactly as a member
// feeds it, with tiny buffers so every path runs — live delivery, falling
// behind to history, catching up and rejoining, compaction, a store
// replaced by a snapshot, cancel and resume. Every stream's events must be
// exactly the committed history filtered by its keys, from its start.
// SEEDS × OPS (default 6 × 1,500); SEED=n replays one seed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRandom } from '../../src/raft/random.ts';
import type { RandomSource } from '../../src/raft/random.ts';
import { MvccStore } from '../../src/storage/mvcc/store.ts';
import { indexKey, prefixEnd } from '../../src/storage/mvcc/keys.ts';
import type { Event, WriteRequest } from '../../src/storage/mvcc/types.ts';
import { WatchHub } from '../../src/server/watch.ts';
import { WatchedStore } from '../../src/server/raftkv.ts';
import type { EventSource, Watch, WatchFilter, WatchHubOptions, WatchRequest } from '../../src/server/watch.ts';

const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'latin1'));
const text = (value: Uint8Array): string => Buffer.from(value).toString('latin1');
const KEYS = ['a', 'a/1', 'a/2', 'a/2/x', 'b', 'b/1', 'c', 'd'];

/**
 * A store and a hub wired as a member wires them, beside a twin store that
 * applies every batch too: the main store can fall behind and catch up by
 * restoring the twin's snapshot, as a member does from its leader.
 */
class Bench {
  index = 0;
  readonly history: Event[] = [];
  /** Runs once, after the main store applied the next batch and before the hub hears of it. */
  duringApply: (() => void) | null = null;
  /** The member's own glue: builds events only while watchers exist. */
  private readonly fed: WatchedStore;

  private constructor(
    readonly store: MvccStore,
    private readonly twin: MvccStore,
    readonly hub: WatchHub,
    readonly directory: string,
  ) {
    const apply = store.applyBatch.bind(store);
    // A watcher can start while an apply is in flight: the hook opens one in that window.
    store.applyBatch = async (items, options) => {
      const responses = await apply(items, options);
      const hook = this.duringApply;
      this.duringApply = null;
      hook?.();
      return responses;
    };
    this.fed = new WatchedStore(store, hub);
  }

  /** With `random`, history reads alternate at random between the index path (key hint) and the row scan. */
  static async open(options: WatchHubOptions, random?: RandomSource): Promise<Bench> {
    const directory = await mkdtemp(join(tmpdir(), 'raftkv-watch-'));
    const store = await MvccStore.open(join(directory, 'kv'));
    const twin = await MvccStore.open(join(directory, 'twin'));
    const source: EventSource =
      random === undefined
        ? store
        : {
            get compactRevision() {
              return store.compactRevision;
            },
            readEvents: (from, to, rowsMax, { key, rangeEnd, ...rest }) =>
              random(2) === 0 || key === undefined
                ? store.readEvents(from, to, rowsMax, rest)
                : store.readEvents(from, to, rowsMax, { ...rest, key, ...(rangeEnd === undefined ? {} : { rangeEnd }) }),
          };
    return new Bench(store, twin, new WatchHub(source, store.currentRevision, options), directory);
  }

  /** Applies a batch to the twin and, unless `skipMain` (falling behind), to the main store and its watchers. */
  async apply(...requests: WriteRequest[]): Promise<void> {
    await this.applyTo(requests, false);
  }

  async applyBehind(...requests: WriteRequest[]): Promise<void> {
    await this.applyTo(requests, true);
  }

  private async applyTo(requests: WriteRequest[], skipMain: boolean): Promise<void> {
    const items = requests.map((request) => ({ index: ++this.index, request }));
    const reference = await this.twin.applyBatch(items);
    for (const response of reference) for (const event of response?.events ?? []) this.history.push(event);
    if (skipMain) return;
    await this.fed.applyBatch(items);
  }

  /** The main store installs the twin's snapshot, skipping whatever it fell behind on. */
  async restoreFromTwin(): Promise<void> {
    const chunks: Uint8Array[] = [];
    for await (const chunk of this.twin.snapshot()) chunks.push(chunk);
    await this.fed.restore(
      (async function* () {
        yield* chunks;
      })(),
    );
  }

  async close(): Promise<void> {
    this.hub.close();
    await this.store.close();
    await this.twin.close();
    await rm(this.directory, { recursive: true, force: true });
  }
}

interface Selector {
  readonly label: string;
  readonly request: Pick<WatchRequest, 'key' | 'rangeEnd' | 'prefix'>;
  matches(key: string): boolean;
}

function selectorOf(random: RandomSource): Selector {
  const roll = random(4);
  if (roll === 0) {
    const key = KEYS[random(KEYS.length)] as string;
    return { label: `key ${key}`, request: { key: bytes(key) }, matches: (k) => k === key };
  }
  if (roll === 1) {
    const prefix = ['', 'a', 'a/', 'a/2', 'b'][random(5)] as string;
    return { label: `prefix ${JSON.stringify(prefix)}`, request: { key: bytes(prefix), prefix: true }, matches: (k) => k.startsWith(prefix) };
  }
  if (roll === 2) {
    const low = KEYS[random(KEYS.length)] as string;
    return { label: `from ${low}`, request: { key: bytes(low), rangeEnd: new Uint8Array([0]) }, matches: (k) => k >= low };
  }
  const [low, high] = [KEYS[random(KEYS.length)] as string, KEYS[random(KEYS.length)] as string].sort();
  const end = high === low ? text(prefixEnd(bytes(high as string))) : (high as string);
  return {
    label: `range [${low}, ${end})`,
    request: { key: bytes(low as string), rangeEnd: bytes(end) },
    matches: (k) => k >= (low as string) && k < end,
  };
}

const describe = (event: Event): string =>
  `${event.type} ${text(event.kv.key)}@${event.kv.modRevision}.${event.kv.version}=${text(event.kv.value)}`;

/**
 * One logical stream: a consumer that reads at its own pace, sometimes
 * stalls, and sometimes cancels and resumes from lastRevision + 1.
 */
class Stream {
  readonly received: Event[] = [];
  watch: Watch;
  lastRevision: number;
  compacted: { from: number; compactRevision: number } | null = null;
  stalledUntil = 0;
  running = true;
  cancels = 0;
  private reading: Promise<void> | null = null;

  constructor(
    private readonly bench: Bench,
    readonly id: number,
    readonly selector: Selector,
    readonly startRevision: number,
    readonly prevKv: boolean,
    readonly filters: readonly WatchFilter[],
  ) {
    this.lastRevision = startRevision - 1;
    this.watch = this.open(startRevision);
  }

  private open(from: number): Watch {
    return this.bench.hub.watch({ ...this.selector.request, startRevision: from, prevKv: this.prevKv, filters: this.filters });
  }

  /** Starts reading one response unless a read is in flight; the read finishes whenever the watch answers. */
  step(): void {
    if (!this.running || this.reading !== null) return;
    this.reading = this.readOne().finally(() => {
      this.reading = null;
    });
  }

  private async readOne(): Promise<void> {
    let result: IteratorResult<unknown>;
    try {
      result = await this.watch.next();
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code !== 'RAFTKV_COMPACTED') {
        this.failure = error as Error;
        this.running = false;
        return;
      }
      this.compacted = { from: this.lastRevision + 1, compactRevision: (error as { compactRevision: number }).compactRevision };
      this.running = false;
      return;
    }
    if (result.done === true) return;
    const response = result.value as { revision: number; events: Event[]; progressNotify: boolean };
    if (response.events.length > 0) {
      const first = (response.events[0] as Event).kv.modRevision;
      this.check(first > this.lastRevision, `revision ${first} after ${this.lastRevision} (split or duplicate)`);
    }
    for (const event of response.events) {
      this.check(event.kv.modRevision >= this.lastRevision, 'events out of order');
      this.received.push(event);
      this.lastRevision = Math.max(this.lastRevision, event.kv.modRevision);
    }
    this.check(response.revision >= this.lastRevision, `header revision ${response.revision} < event ${this.lastRevision}`);
    this.lastRevision = Math.max(this.lastRevision, response.revision);
  }

  failure: Error | null = null;

  private check(condition: boolean, message: string): void {
    if (!condition && this.failure === null) this.failure = new Error(`stream ${this.id}: ${message}`);
  }

  async resume(): Promise<void> {
    if (!this.running) return;
    // Cancelling ends a pending read (as done); whatever it had delivered is counted before resuming.
    this.watch.cancel();
    if (this.reading !== null) await this.reading;
    if (!this.running) return;
    assert.deepEqual(await this.watch.next(), { done: true, value: undefined }, 'a cancelled watch is done');
    this.cancels++;
    this.watch = this.open(this.lastRevision + 1);
  }

  async drainTo(revision: number): Promise<void> {
    while (this.running && this.lastRevision < revision) {
      // A stream whose remaining changes are all filtered out learns the revision from a progress notification.
      this.watch.requestProgress();
      this.step();
      await this.reading;
    }
  }

  expected(history: readonly Event[], upTo: number): Event[] {
    return history.filter(
      (event) =>
        event.kv.modRevision >= this.startRevision &&
        event.kv.modRevision <= upTo &&
        this.selector.matches(text(event.kv.key)) &&
        !(event.type === 'put' ? this.filters.includes('noPut') : this.filters.includes('noDelete')),
    );
  }
}

function randomRequest(random: RandomSource, bench: Bench, serial: { value: number }): WriteRequest {
  const key = KEYS[random(KEYS.length)] as string;
  const roll = random(100);
  if (roll < 55) return { type: 'put', key: bytes(key), value: bytes(`v${serial.value++}`) };
  if (roll < 70) return { type: 'deleteRange', key: bytes(key) };
  if (roll < 78) return { type: 'deleteRange', key: bytes('a'), rangeEnd: bytes('b') };
  if (roll < 93) {
    const other = KEYS[random(KEYS.length)] as string;
    const operations = [
      { type: 'put' as const, key: bytes(key), value: bytes(`t${serial.value++}`) },
      ...(other === key ? [] : [{ type: 'deleteRange' as const, key: bytes(other) }]),
    ];
    return {
      type: 'txn',
      compare: [{ key: bytes(key), target: 'version', result: '>', number: random(3) }],
      success: operations,
      failure: [{ type: 'put', key: bytes(other), value: bytes(`f${serial.value++}`) }],
    };
  }
  const current = bench.store.currentRevision;
  return { type: 'compact', revision: Math.max(1, current - random(40)) };
}

async function runSeed(seed: number, operations: number): Promise<void> {
  const random = createRandom(seed);
  // A small recent window: catch-ups come from memory, from the index and from the row scan.
  const bench = await Bench.open({ watchBufferEvents: 6, watchCatchUpRows: 5, watchResponseEvents: 4, watchBufferBytes: 16 * 1024, watchRecentBytes: 2048 }, random);
  const streams: Stream[] = [];
  const serial = { value: 0 };
  let maxBuffered = 0;
  try {
    for (let step = 0; step < operations; step++) {
      const roll = random(100);
      if (roll < 40) {
        const count = 1 + random(4);
        const requests: WriteRequest[] = [];
        for (let index = 0; index < count; index++) requests.push(randomRequest(random, bench, serial));
        if (random(8) === 0 && streams.filter((stream) => stream.running).length < 24) {
          // A watcher from the next revision that starts while the batch is applied: it must see the batch.
          const next = bench.store.currentRevision + 1;
          bench.duringApply = () => streams.push(new Stream(bench, streams.length, selectorOf(random), next, random(2) === 0, []));
        }
        await bench.apply(...requests);
      } else if (roll < 44 && streams.filter((stream) => stream.running).length < 24) {
        const current = bench.store.currentRevision;
        const compact = bench.store.compactRevision;
        const start = random(4) === 0 ? current + 1 + random(3) : Math.max(1, compact + random(current - compact + 2));
        const filters: WatchFilter[] = random(6) === 0 ? ['noPut'] : random(6) === 0 ? ['noDelete'] : [];
        streams.push(new Stream(bench, streams.length, selectorOf(random), start, random(2) === 0, filters));
      } else if (roll < 47) {
        const running = streams.filter((stream) => stream.running);
        if (running.length > 0) await (running[random(running.length)] as Stream).resume();
      } else if (roll < 48) {
        // Fall behind by a few batches (their events never dispatched live), then catch up by snapshot.
        for (let batch = random(4); batch > 0; batch--) await bench.applyBehind(randomRequest(random, bench, serial));
        await bench.restoreFromTwin();
      } else {
        // Consumers read at their own pace; some stall for a while.
        for (const stream of streams) {
          if (stream.stalledUntil > step) continue;
          if (random(30) === 0) stream.stalledUntil = step + random(200);
          else if (random(3) > 0) stream.step();
        }
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      maxBuffered = Math.max(maxBuffered, bench.hub.bufferedByteCount);
      assert.ok(bench.hub.bufferedByteCount <= 16 * 1024, `buffered ${bench.hub.bufferedByteCount} bytes over the hub's limit`);
    }
    const final = bench.store.currentRevision;
    for (const stream of streams) await stream.drainTo(final);
    for (const stream of streams) if (stream.failure !== null) throw new Error(`${stream.failure.message}\n  replay: SEED=${seed} npm test -- server/watch`);
    // Revisions are dense: every revision in history has at least one event.
    const revisions = new Set(bench.history.map((event) => event.kv.modRevision));
    assert.equal(revisions.size, final, 'every revision has events');
    const compactRevision = bench.store.compactRevision;
    for (const stream of streams) {
      const upTo = stream.compacted === null ? final : stream.compacted.from - 1;
      if (stream.compacted !== null) {
        assert.ok(stream.compacted.from < stream.compacted.compactRevision, `stream ${stream.id} was refused revision ${stream.compacted.from} above the compaction`);
      }
      const expected = stream.expected(bench.history, upTo);
      const context = `seed ${seed}, stream ${stream.id} (${stream.selector.label}, from ${stream.startRevision}, filters ${stream.filters.join(',') || 'none'}, ${stream.cancels} resumes)\n  replay: SEED=${seed} npm test -- server/watch`;
      assert.deepEqual(stream.received.map(describe), expected.map(describe), context);
      stream.received.forEach((event, position) => {
        const want = expected[position] as Event;
        if (!stream.prevKv) assert.equal(event.prevKv, undefined, `${context}: prevKv not asked for`);
        else if (event.prevKv === undefined) {
          // History no longer holds a previous version compacted away at the event's revision.
          assert.ok(want.prevKv === undefined || event.kv.modRevision <= compactRevision, `${context}: prevKv missing for ${describe(event)}`);
        } else assert.equal(describe({ type: 'put', kv: event.prevKv }), describe({ type: 'put', kv: want.prevKv as Event['kv'] }), context);
      });
      stream.watch.cancel();
    }
    assert.equal(bench.hub.watcherCount, 0, 'cancelled watchers are released');
    assert.equal(bench.hub.bufferedByteCount, 0, 'released watchers give their buffers back');
  } finally {
    await bench.close();
  }
}

const seeds = process.env['SEED'] === undefined ? [1, 2, 3, 4, 5, 6] : [Number(process.env['SEED'])];
const operations = Number(process.env['OPS'] ?? 1_500);
for (const seed of seeds) {
  test(`watch streams equal the committed history through stalls, compaction, restores and resumes (seed ${seed}, ${operations} steps)`, async () => {
    await runSeed(seed, operations);
  });
}

test('10,000 watchers on one store: bounded buffers, a stalled consumer, and no lost event', async () => {
  const bench = await Bench.open({ watchBufferBytes: 4 * 1024 * 1024, watchBufferEvents: 64 });
  try {
    const watchers: Watch[] = [];
    for (let index = 0; index < 10_000; index++) {
      watchers.push(bench.hub.watch(index % 2 === 0 ? { key: bytes(`k${index % 1000}`) } : { key: bytes(`k${index % 100}`), prefix: true }));
    }
    // Nobody reads while 2,000 writes land: buffers stay bounded.
    for (let round = 0; round < 200; round++) {
      const requests: WriteRequest[] = [];
      for (let index = 0; index < 10; index++) {
        requests.push({ type: 'put', key: bytes(`k${(round * 10 + index) % 1000}`), value: bytes(`value-${round}-${index}`) });
      }
      await bench.apply(...requests);
      assert.ok(bench.hub.bufferedByteCount <= 4 * 1024 * 1024);
    }
    assert.ok(bench.hub.unsyncedCount > 0, 'stalled watchers fell back to history');
    // Now every consumer reads to the end; each saw exactly its keys' history.
    const final = bench.store.currentRevision;
    const described = bench.history.map((event) => ({ key: text(event.kv.key), line: describe(event) }));
    const expected = new Map<string, string[]>();
    for (const [index, watch] of watchers.entries()) {
      const label = index % 2 === 0 ? `key k${index % 1000}` : `prefix k${index % 100}`;
      let want = expected.get(label);
      if (want === undefined) {
        const matches =
          index % 2 === 0 ? (key: string) => key === `k${index % 1000}` : (key: string) => key.startsWith(`k${index % 100}`);
        want = described.filter((event) => matches(event.key)).map((event) => event.line);
        expected.set(label, want);
      }
      const got: string[] = [];
      let revision = 0;
      while (revision < final) {
        watch.requestProgress();
        const result = await watch.next();
        assert.equal(result.done, false);
        for (const event of result.value.events) got.push(describe(event));
        revision = result.value.revision;
      }
      assert.deepEqual(got, want, `watcher ${index}`);
      watch.cancel();
    }
    assert.equal(bench.hub.bufferedByteCount, 0);
  } finally {
    await bench.close();
  }
});

test('a watch from a compacted revision fails with RAFTKV_COMPACTED and the compact revision', async () => {
  const bench = await Bench.open({});
  try {
    for (let index = 0; index < 5; index++) await bench.apply({ type: 'put', key: bytes('k'), value: bytes(`v${index}`) });
    await bench.apply({ type: 'compact', revision: 4 });
    const watch = bench.hub.watch({ key: bytes('k'), startRevision: 3 });
    await assert.rejects(watch.next(), (error: { code: string; compactRevision: number }) => error.code === 'RAFTKV_COMPACTED' && error.compactRevision === 4);
    // Exactly at the compact revision is still readable (etcd #18089).
    const atCompaction = bench.hub.watch({ key: bytes('k'), startRevision: 4 });
    const first = await atCompaction.next();
    assert.deepEqual(first.value?.events.map(describe), ['put k@4.4=v3', 'put k@5.5=v4']);
    atCompaction.cancel();
  } finally {
    await bench.close();
  }
});

test('progress: on request and periodically, the revision every delivered event is at or below', async () => {
  const bench = await Bench.open({ watchProgressNotifyMs: 20 });
  try {
    await bench.apply({ type: 'put', key: bytes('other'), value: bytes('1') });
    const watch = bench.hub.watch({ key: bytes('idle') });
    watch.requestProgress();
    const requested = await watch.next();
    assert.deepEqual(requested.value, { revision: 1, events: [], progressNotify: true });
    await bench.apply({ type: 'put', key: bytes('other'), value: bytes('2') });
    const periodic = bench.hub.watch({ key: bytes('idle'), progressNotify: true });
    // The hub's timer never keeps a process alive on its own (a member's tick timer does).
    const keepAlive = setTimeout(() => undefined, 10_000);
    const notified = await periodic.next();
    clearTimeout(keepAlive);
    assert.deepEqual(notified.value, { revision: 2, events: [], progressNotify: true });
    // A watcher still catching up answers a progress request only once it has delivered everything.
    const behind = bench.hub.watch({ key: bytes('other'), startRevision: 1 });
    behind.requestProgress();
    assert.deepEqual((await behind.next()).value?.events.map(describe), ['put other@1.1=1', 'put other@2.2=2']);
    assert.deepEqual((await behind.next()).value, { revision: 2, events: [], progressNotify: true });
    // A watch that starts in the future hears progress no lower than just before its start (etcd #20221).
    const future = bench.hub.watch({ key: bytes('other'), startRevision: 10 });
    future.requestProgress();
    assert.deepEqual((await future.next()).value, { revision: 9, events: [], progressNotify: true });
    for (const each of [watch, periodic, behind, future]) each.cancel();
  } finally {
    await bench.close();
  }
});

test('cancel, AbortSignal and leaving a for-await loop end a watch; closing the member fails it after its buffer', async () => {
  const bench = await Bench.open({});
  try {
    const controller = new AbortController();
    const aborted = bench.hub.watch({ key: bytes('k'), signal: controller.signal });
    const pending = aborted.next();
    controller.abort();
    assert.deepEqual(await pending, { done: true, value: undefined });
    const preAborted = bench.hub.watch({ key: bytes('k'), signal: AbortSignal.abort() });
    assert.deepEqual(await preAborted.next(), { done: true, value: undefined });

    const looped = bench.hub.watch({ key: bytes('k') });
    await bench.apply({ type: 'put', key: bytes('k'), value: bytes('1') });
    for await (const response of looped) {
      assert.equal(response.events.length, 1);
      break;
    }
    assert.equal(looped.isCancelled, true);
    assert.equal(bench.hub.watcherCount, 0);

    assert.throws(() => bench.hub.watch({ key: bytes('k'), startRevision: -1 }), { code: 'RAFTKV_INVALID_ARGUMENT' });
    assert.throws(() => bench.hub.watch({ key: bytes('k'), filters: ['noPuts' as WatchFilter] }), { code: 'RAFTKV_INVALID_ARGUMENT' });

    const open = bench.hub.watch({ key: bytes('k') });
    await bench.apply({ type: 'put', key: bytes('k'), value: bytes('2') });
    bench.hub.close();
    assert.deepEqual((await open.next()).value?.events.map(describe), ['put k@2.2=2']);
    await assert.rejects(open.next(), { code: 'RAFTKV_STOPPED' });
    assert.throws(() => bench.hub.watch({ key: bytes('k') }), { code: 'RAFTKV_STOPPED' });
  } finally {
    await bench.close();
  }
});

test('watchersMax bounds the watchers of a member', async () => {
  const bench = await Bench.open({ watchersMax: 2 });
  try {
    const first = bench.hub.watch({ key: bytes('a') });
    bench.hub.watch({ key: bytes('b') });
    assert.throws(() => bench.hub.watch({ key: bytes('c') }), { code: 'RAFTKV_TOO_MANY_WATCHERS' });
    first.cancel();
    bench.hub.watch({ key: bytes('c') }).cancel();
  } finally {
    await bench.close();
  }
});

test('the key index form used by the hub matches raw bytes beyond ASCII', () => {
  assert.equal(indexKey(new Uint8Array([0xc3, 0xff])), '\u00c3\u00ff');
});

test('history for a range with more keys than keysMax comes from the row scan, and says so', async () => {
  const bench = await Bench.open({});
  try {
    for (const key of ['p/a', 'p/b', 'p/c', 'q']) await bench.apply({ type: 'put', key: bytes(key), value: bytes(key) });
    const bounds = { key: bytes('p/'), rangeEnd: prefixEnd(bytes('p/')) };
    const narrow = await bench.store.readEvents(1, 4, 100, { ...bounds, keysMax: 3 });
    const wide = await bench.store.readEvents(1, 4, 100, { ...bounds, keysMax: 2 });
    assert.equal(narrow.wideRange, undefined);
    assert.deepEqual(narrow.events.map(describe), ['put p/a@1.1=p/a', 'put p/b@2.1=p/b', 'put p/c@3.1=p/c']);
    assert.equal(wide.wideRange, true);
    // The scan returns every key's events; the watcher filters them.
    assert.deepEqual(wide.events.map(describe), ['put p/a@1.1=p/a', 'put p/b@2.1=p/b', 'put p/c@3.1=p/c', 'put q@4.1=q']);
  } finally {
    await bench.close();
  }
});
