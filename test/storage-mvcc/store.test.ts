// Scenarios of the MVCC store: the pitfalls etcd shipped (PITFALLS.md),
// input validation with stable codes, restarts, snapshots (including
// damaged ones and an interrupted restore), storage failure and the quota.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { MvccStore } from '../../src/storage/mvcc/store.ts';
import type { MvccOptions } from '../../src/storage/mvcc/store.ts';
import type { WriteRequest, WriteResponse } from '../../src/storage/mvcc/types.ts';
import { validateRangeRequest, validateWriteRequest } from '../../src/storage/mvcc/validate.ts';

const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text));
const text = (value: Uint8Array): string => Buffer.from(value).toString();

async function withStore(body: (store: MvccStore, directory: string, reopen: () => Promise<MvccStore>) => Promise<void>, options: MvccOptions = {}): Promise<void> {
  const directory = await mkdtemp(join(tmpdir(), 'raftkv-mvcc-'));
  let store = await MvccStore.open(directory, options);
  const reopen = async (): Promise<MvccStore> => {
    await store.close();
    store = await MvccStore.open(directory, options);
    return store;
  };
  try {
    await body(store, directory, reopen);
  } finally {
    await store.close();
    await rm(directory, { recursive: true, force: true });
  }
}

class Writer {
  index = 1;
  constructor(private readonly store: () => MvccStore) {}
  async apply(...requests: WriteRequest[]): Promise<WriteResponse[]> {
    const responses = await this.store().applyBatch(requests.map((request) => ({ index: ++this.index, request })));
    return responses as WriteResponse[];
  }
  put(key: string, value: string): WriteRequest {
    return { type: 'put', key: bytes(key), value: bytes(value) };
  }
  del(key: string): WriteRequest {
    return { type: 'deleteRange', key: bytes(key) };
  }
}

async function get(store: MvccStore, key: string, revision = 0): Promise<string | undefined> {
  const response = await store.range({ key: bytes(key), revision });
  const kv = response.kvs[0];
  return kv === undefined ? undefined : text(kv.value);
}

test('each entry is applied once: re-delivered entries after a restart are skipped (etcd #13766)', async () => {
  await withStore(async (first, _directory, reopen) => {
    let store = first;
    const writer = new Writer(() => store);
    await writer.apply(writer.put('a', '1'), writer.put('a', '2'));
    assert.equal(store.appliedIndex(), 3);
    store = await reopen();
    assert.equal(store.appliedIndex(), 3);
    assert.equal(store.currentRevision, 2);
    const replay = await store.applyBatch([
      { index: 2, request: writer.put('a', '1') },
      { index: 3, request: writer.put('a', '2') },
      { index: 4, request: writer.put('a', '3') },
    ]);
    assert.deepEqual(replay.slice(0, 2), [undefined, undefined]);
    assert.equal(store.currentRevision, 3, 'only the new entry made a revision');
    const kv = (await store.range({ key: bytes('a') })).kvs[0];
    assert.equal(kv?.version, 3);
  });
});

test('the revision never goes backwards after compaction and restart (etcd #17780)', async () => {
  await withStore(async (first, _directory, reopen) => {
    let store = first;
    const writer = new Writer(() => store);
    await writer.apply(writer.put('a', '1'), writer.del('a'), writer.put('b', '1'), writer.del('b'));
    await writer.apply({ type: 'compact', revision: 4 });
    await store.compactionSettled();
    store = await reopen();
    assert.equal(store.currentRevision, 4);
    assert.equal(store.compactRevision, 4);
    const [put] = await writer.apply(writer.put('c', '1'));
    assert.equal(put?.revision, 5);
  });
});

test('compaction at a tombstone keeps it for watchers resuming there (etcd #18089), and restart restores it (#19179)', async () => {
  await withStore(async (first, _directory, reopen) => {
    let store = first;
    const writer = new Writer(() => store);
    await writer.apply(writer.put('a', '1'), writer.put('a', '2'), writer.del('a'));
    await writer.apply({ type: 'compact', revision: 3 });
    await store.compactionSettled();
    const { events } = await store.readEvents(3, 3, 100);
    assert.deepEqual(events.map((event) => [event.type, text(event.kv.key), event.kv.modRevision]), [['delete', 'a', 3]]);
    store = await reopen();
    assert.equal(await get(store, 'a'), undefined, 'the tombstone, the only remaining revision, still hides the key');
    assert.equal((await store.readEvents(3, 3, 100)).events.length, 1);
    await assert.rejects(store.readEvents(2, 3, 100), { code: 'RAFTKV_COMPACTED' });
  });
});

test('a delete and a put of one key in one transaction survive compaction at that revision (etcd #22376)', async () => {
  await withStore(async (first, _directory, reopen) => {
    let store = first;
    const writer = new Writer(() => store);
    await writer.apply(writer.put('k', 'old'));
    const [response] = await writer.apply({ type: 'txn', compare: [], success: [writer.del('k') as never, writer.put('k', 'new') as never], failure: [] });
    assert.equal(response?.revision, 2);
    assert.deepEqual(response?.events.map((event) => event.type), ['delete', 'put']);
    await writer.apply({ type: 'compact', revision: 2 });
    await store.compactionSettled();
    store = await reopen();
    assert.equal(await get(store, 'k'), 'new');
    const kv = (await store.range({ key: bytes('k') })).kvs[0];
    assert.deepEqual([kv?.createRevision, kv?.version], [2, 1], 'the put started a new generation');
    assert.deepEqual((await store.readEvents(2, 2, 10)).events.map((event) => event.type), ['delete', 'put']);
  });
});

test('deleting nothing and read-only transactions create no revision', async () => {
  await withStore(async (store) => {
    const writer = new Writer(() => store);
    await writer.apply(writer.put('a', '1'));
    const [deleted, readOnly, failedCompare] = await writer.apply(
      writer.del('missing'),
      { type: 'txn', compare: [], success: [{ type: 'range', key: bytes('a') }], failure: [] },
      { type: 'txn', compare: [{ key: bytes('a'), target: 'value', result: '=', value: bytes('x') }], success: [writer.put('a', '2') as never], failure: [] },
    );
    assert.equal(store.currentRevision, 1);
    assert.deepEqual([deleted?.revision, readOnly?.revision, failedCompare?.revision], [1, 1, 1]);
    assert.equal(deleted?.type === 'deleteRange' ? deleted.deleted : -1, 0);
    assert.equal(failedCompare?.type === 'txn' ? failedCompare.succeeded : true, false);
  });
});

test('a failing request changes nothing, even inside a transaction that already wrote', async () => {
  await withStore(async (store) => {
    const writer = new Writer(() => store);
    await writer.apply(writer.put('a', '1'));
    const [response] = await writer.apply({
      type: 'txn',
      compare: [],
      success: [writer.put('b', '1') as never, { type: 'put', key: bytes('missing'), value: new Uint8Array(0), ignoreValue: true }],
      failure: [],
    });
    assert.equal(response?.type, 'error');
    assert.equal(response?.type === 'error' ? response.code : '', 'RAFTKV_KEY_NOT_FOUND');
    assert.equal(await get(store, 'b'), undefined);
    assert.equal(store.currentRevision, 1);
  });
});

test('historical reads, compacted and future revisions', async () => {
  await withStore(async (store) => {
    const writer = new Writer(() => store);
    await writer.apply(writer.put('a', '1'), writer.put('a', '2'), writer.put('a', '3'));
    assert.equal(await get(store, 'a', 1), '1');
    assert.equal(await get(store, 'a', 2), '2');
    await assert.rejects(store.range({ key: bytes('a'), revision: 4 }), { code: 'RAFTKV_FUTURE_REVISION' });
    const [compact] = await writer.apply({ type: 'compact', revision: 2 });
    assert.equal(compact?.type, 'compact');
    await assert.rejects(store.range({ key: bytes('a'), revision: 1 }), { code: 'RAFTKV_COMPACTED', compactRevision: 2 });
    assert.equal(await get(store, 'a', 2), '2');
    await store.compactionSettled();
    assert.equal(await get(store, 'a', 2), '2', 'the revision at the compaction point stays readable');
    const [again] = await writer.apply({ type: 'compact', revision: 2 });
    assert.deepEqual(again?.type === 'error' ? [again.code, again.compactRevision] : [], ['RAFTKV_COMPACTED', 2]);
  });
});

test('a read in flight keeps the rows it needs while compaction deletes them', async () => {
  await withStore(async (store) => {
    const writer = new Writer(() => store);
    for (let i = 0; i < 50; i++) await writer.apply(writer.put(`k${i % 5}`, `v${i}`));
    const reading = store.range({ key: bytes('k'), rangeEnd: bytes('l'), revision: 10 });
    await writer.apply({ type: 'compact', revision: 50 });
    const response = await reading;
    assert.deepEqual(response.kvs.map((kv) => text(kv.value)), ['v5', 'v6', 'v7', 'v8', 'v9']);
    await store.compactionSettled();
    await assert.rejects(store.range({ key: bytes('k0'), revision: 10 }), { code: 'RAFTKV_COMPACTED' });
  });
});

test('reads in flight keep their rows while compaction deletes them, also in slots freed by earlier reads', async () => {
  await withStore(async (store) => {
    const writer = new Writer(() => store);
    for (let i = 0; i < 50; i++) await writer.apply(writer.put(`k${i % 5}`, `v${i}`));
    const read = (revision: number) => store.range({ key: bytes('k'), rangeEnd: bytes('l'), revision });
    const expected = (revision: number) => [0, 1, 2, 3, 4].map((k) => `v${Math.floor((revision - 1 - k) / 5) * 5 + k}`);
    // Hold the fetches of the first reads until the compaction has had every chance to delete their rows.
    const db = (store as unknown as { db: { getMany: (...args: unknown[]) => Promise<unknown> } }).db;
    const getMany = db.getMany.bind(db);
    let open = (): void => {};
    const gate = new Promise<void>((resolve) => (open = resolve));
    db.getMany = async (...args: unknown[]) => {
      await gate;
      return getMany(...args);
    };
    const first = [10, 11, 12, 13, 14, 15].map((revision) => ({ revision, reading: read(revision) }));
    await new Promise((resolve) => setTimeout(resolve, 20));
    open();
    for (const { revision, reading } of first.slice(0, 3)) assert.deepEqual((await reading).kvs.map((kv) => text(kv.value)), expected(revision));
    // These take the slots the settled reads freed.
    let release = (): void => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    db.getMany = async (...args: unknown[]) => {
      await held;
      return getMany(...args);
    };
    const second = [16, 17, 18].map((revision) => ({ revision, reading: read(revision) }));
    await writer.apply({ type: 'compact', revision: 50 });
    await new Promise((resolve) => setTimeout(resolve, 50)); // the compaction runs meanwhile, unless it waits for these reads
    release();
    for (const { revision, reading } of [...first.slice(3), ...second]) {
      assert.deepEqual((await reading).kvs.map((kv) => text(kv.value)), expected(revision), `read at ${revision}`);
    }
    await store.compactionSettled();
    await assert.rejects(read(18), { code: 'RAFTKV_COMPACTED' });
  });
});

test('applyBatch with events: false answers the same without events; a bad option is refused before anything applies', async () => {
  await withStore(async (store) => {
    const put = (key: string, value: string, prevKv = false): WriteRequest => ({ type: 'put', key: bytes(key), value: bytes(value), ...(prevKv ? { prevKv: true } : {}) });
    await store.applyBatch([{ index: 1, request: put('a', '1') }]);
    const quiet = await store.applyBatch(
      [
        { index: 2, request: put('a', '2', true) },
        { index: 3, request: { type: 'deleteRange', key: bytes('a'), prevKv: true } },
      ],
      { events: false },
    );
    assert.deepEqual(quiet.map((response) => response?.events.length), [0, 0], 'no events');
    const [replaced, deleted] = quiet;
    assert.equal(replaced?.type === 'put' ? text(replaced.prevKv!.value) : 'not a put', '1', 'a prevKv put still answers the value it replaced');
    assert.deepEqual(deleted?.type === 'deleteRange' ? [deleted.deleted, deleted.prevKvs.map((kv) => text(kv.value))] : [], [1, ['2']]);
    const loud = await store.applyBatch([{ index: 4, request: put('a', '4') }]);
    assert.deepEqual(loud[0]?.events.map((event) => `${event.type} ${text(event.kv.value)}@${event.kv.modRevision}`), ['put 4@4'], 'events by default');
    await assert.rejects(store.applyBatch([{ index: 5, request: put('b', '5') }], { events: 'no' as never }), { code: 'RAFTKV_INVALID_ARGUMENT' });
    assert.equal(store.appliedIndex(), 4, 'the refused batch applied nothing');
    assert.equal(store.currentRevision, 4);
  });
});

test('invalid requests get typed errors with stable codes', () => {
  const cases: [() => unknown, string][] = [
    [() => validateWriteRequest({ type: 'put', key: new Uint8Array(0), value: bytes('v') }), 'RAFTKV_EMPTY_KEY'],
    [() => validateRangeRequest({ key: new Uint8Array(0) }), 'RAFTKV_EMPTY_KEY'],
    [() => validateRangeRequest({ key: bytes('b'), rangeEnd: bytes('a') }), 'RAFTKV_INVALID_ARGUMENT'],
    [() => validateRangeRequest({ key: bytes('b'), revision: -1 }), 'RAFTKV_INVALID_ARGUMENT'],
    [() => validateWriteRequest({ type: 'put', key: bytes('k'), value: new Uint8Array(2 * 1024 * 1024) }), 'RAFTKV_REQUEST_TOO_LARGE'],
    [() => validateWriteRequest({ type: 'put', key: bytes('k'), value: bytes('v'), ignoreValue: true }), 'RAFTKV_INVALID_ARGUMENT'],
    [() => validateWriteRequest({ type: 'put', key: 'k' as never, value: bytes('v') }), 'RAFTKV_INVALID_ARGUMENT'],
    [
      () =>
        validateWriteRequest({
          type: 'txn',
          compare: [],
          success: [
            { type: 'put', key: bytes('k'), value: bytes('1') },
            { type: 'put', key: bytes('k'), value: bytes('2') },
          ],
          failure: [],
        }),
      'RAFTKV_DUPLICATE_KEY',
    ],
    [
      () =>
        validateWriteRequest({
          type: 'txn',
          compare: [],
          success: Array.from({ length: 129 }, (_, i) => ({ type: 'put' as const, key: bytes(`k${i}`), value: bytes('v') })),
          failure: [],
        }),
      'RAFTKV_TOO_MANY_OPS',
    ],
    [() => validateWriteRequest({ type: 'compact', revision: 0 }), 'RAFTKV_INVALID_ARGUMENT'],
  ];
  for (const [run, code] of cases) assert.throws(run, { code }, `expected ${code}`);
  // then and else exclude each other: the same key in both is fine.
  validateWriteRequest({
    type: 'txn',
    compare: [],
    success: [{ type: 'txn', compare: [], success: [{ type: 'put', key: bytes('k'), value: bytes('1') }], failure: [{ type: 'put', key: bytes('k'), value: bytes('2') }] }],
    failure: [],
  });
});

test('a snapshot restores into another store with the same hash; a damaged one is refused and changes nothing', async () => {
  await withStore(async (source) => {
    const writer = new Writer(() => source);
    for (let i = 0; i < 300; i++) await writer.apply(writer.put(`key/${i % 40}`, `value ${i}`), writer.del(`key/${(i * 7) % 40}`));
    await writer.apply({ type: 'compact', revision: 200 });
    const chunks: Uint8Array[] = [];
    for await (const chunk of source.snapshot()) chunks.push(chunk);
    assert.ok(chunks.length >= 3, 'header, rows and trailer');
    await withStore(
      async (target) => {
        const targetWriter = new Writer(() => target);
        await targetWriter.apply(targetWriter.put('unrelated', 'x'));
        const damaged = chunks.map((chunk) => Uint8Array.from(chunk));
        const middle = damaged[1] as Uint8Array;
        middle[middle.length - 3] = (middle[middle.length - 3] as number) ^ 0xff;
        await assert.rejects(target.restore(toStream(damaged)), { code: 'RAFTKV_INVALID_ARGUMENT' });
        await assert.rejects(target.restore(toStream(chunks.slice(0, -1))), { code: 'RAFTKV_INVALID_ARGUMENT' });
        assert.equal(await get(target, 'unrelated'), 'x', 'a refused snapshot leaves the store as it was');
        await target.restore(toStream(chunks));
        assert.equal(await get(target, 'unrelated'), undefined);
        assert.equal(target.appliedIndex(), source.appliedIndex());
        assert.equal(target.currentRevision, source.currentRevision);
        await source.compactionSettled();
        assert.equal((await target.hash()).hash, (await source.hash()).hash);
      },
      { snapshotChunkBytes: 4096 },
    );
  }, { snapshotChunkBytes: 4096 });
});

async function* toStream(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const chunk of chunks) yield chunk;
}

test('a restore interrupted before its switch leaves the old store; the half-written copy is removed on open', async () => {
  await withStore(async (store, directory, reopen) => {
    const writer = new Writer(() => store);
    await writer.apply(writer.put('a', '1'));
    // What a crash in the middle of restore() leaves: a second database beside the live one.
    await mkdir(join(directory, 'db-2'));
    const reopened = await reopen();
    assert.equal(await get(reopened, 'a'), '1');
    assert.deepEqual((await readdir(directory)).filter((name) => name.startsWith('db-')), ['db-1']);
  });
});

test('a failed write stops the store for good (never retried)', async () => {
  await withStore(async (store) => {
    const writer = new Writer(() => store);
    await writer.apply(writer.put('a', '1'));
    const internals = store as unknown as { db: { batch: (...args: unknown[]) => Promise<void> } };
    const realBatch = internals.db.batch.bind(internals.db);
    let calls = 0;
    const failure = async (): Promise<void> => {
      calls++;
      throw new Error('EIO: simulated fsync failure');
    };
    // Whichever batch form the store uses (array or chained), its write fails.
    internals.db.batch = ((...args: unknown[]) =>
      args.length > 0 ? failure() : { put: () => undefined, del: () => undefined, write: failure, close: async () => undefined }) as never;
    // The apply answers before its rows are written (the Raft log holds the entry); the failure stops what follows.
    await writer.apply(writer.put('a', '2'));
    await assert.rejects(store.flush(), { code: 'RAFTKV_STORAGE_FAILED' });
    internals.db.batch = realBatch;
    await assert.rejects(writer.apply(writer.put('a', '3')), { code: 'RAFTKV_STORAGE_FAILED' });
    await assert.rejects(store.range({ key: bytes('a') }), { code: 'RAFTKV_STORAGE_FAILED' });
    assert.equal(calls, 1, 'the failed write was not retried');
  });
});

/** Holds the store's LevelDB batch writes (those with puts only, if asked) until released; counts each write's operations. */
function holdWrites(store: MvccStore, holdDeleteOnlyWrites = true): { release: () => void; writes: number[]; restore: () => void } {
  const internals = store as unknown as { db: { batch: () => { put: (...args: unknown[]) => unknown; del: (...args: unknown[]) => unknown; write: (options: unknown) => Promise<void> } } };
  const realBatch = internals.db.batch;
  let release = (): void => {};
  const gate = new Promise<void>((resolve) => (release = resolve));
  const writes: number[] = [];
  internals.db.batch = function (this: unknown) {
    const batch = realBatch.call(this);
    let operations = 0;
    let puts = 0;
    return {
      put: (...args: unknown[]) => (operations++, puts++, batch.put(...args)),
      del: (...args: unknown[]) => (operations++, batch.del(...args)),
      write: async (options: unknown) => {
        writes.push(operations);
        if (puts > 0 || holdDeleteOnlyWrites) await gate;
        return batch.write(options);
      },
    };
  } as never;
  return { release, writes, restore: () => (internals.db.batch = realBatch) };
}

/** Runs `body` with the store's writes held (see holdWrites), then lets them through and unhooks the store. */
async function withWritesHeld(store: MvccStore, body: (held: ReturnType<typeof holdWrites>) => Promise<void>, holdDeleteOnlyWrites = true): Promise<void> {
  const held = holdWrites(store, holdDeleteOnlyWrites);
  try {
    await body(held);
  } finally {
    held.release();
    held.restore();
  }
}

const settledWithin = async (promise: Promise<unknown>): Promise<boolean> => {
  let settled = false;
  promise.then(() => (settled = true), () => (settled = true));
  for (let turn = 0; turn < 20; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
  return settled;
};

test('an apply answers before its rows land; reads, watch catch-up, hash, snapshots, flush and close wait for them, in order', async () => {
  await withStore(async (first, _directory, reopen) => {
    let store = first;
    const writer = new Writer(() => store);
    await writer.apply(writer.put('a', '1'));
    await store.flush();
    await withWritesHeld(store, async (held) => {
      // Three applies while the first write is held: the second and third go as one write behind it.
      await writer.apply(writer.put('a', '2'));
      await writer.apply(writer.put('a', '3'));
      await writer.apply(writer.put('b', '1'));
      assert.equal(await get(store, 'a'), '3', 'a read at the current revision comes from memory');
      assert.deepEqual(held.writes, [2], 'one write in flight (a row and the meta), the rest queued');
      const historical = get(store, 'a', 2);
      const byKey = store.readEvents(2, 4, 100, { key: bytes('a') });
      const byRevision = store.readEvents(2, 4, 100);
      const hashed = store.hash();
      const snapshot = store.snapshot();
      const snapshotStart = snapshot.next();
      const flushed = store.flush();
      assert.equal(await settledWithin(historical), false, 'a read of a superseded revision waits for its row');
      assert.equal(await settledWithin(byKey), false, "a watcher's catch-up by key waits for the superseded rows");
      assert.equal(await settledWithin(byRevision), false, "a watcher's catch-up by revision waits for the rows");
      assert.equal(await settledWithin(hashed), false, 'hash waits for the rows');
      assert.equal(await settledWithin(snapshotStart), false, 'a snapshot starts reading only once the rows landed');
      assert.equal(await settledWithin(flushed), false, 'flush waits for the queued rows');
      held.release();
      assert.equal(await historical, '2');
      assert.deepEqual((await byKey).events.map((event) => text(event.kv.value)), ['2', '3']);
      assert.deepEqual((await byRevision).events.map((event) => text(event.kv.value)), ['2', '3', '1']);
      assert.equal((await hashed).hash, (await store.hash()).hash);
      await snapshotStart;
      await snapshot.return(undefined);
      await flushed;
      assert.deepEqual(held.writes.slice(0, 2), [2, 3], 'the queued applies went as one write: two rows and one meta row');
    });
    // Close drains the queue, a write in flight and one queued behind it: the reopened store holds every apply.
    const closing = holdWrites(store);
    await writer.apply(writer.put('c', '1'));
    await writer.apply(writer.put('d', '1'));
    const closed = store.close();
    assert.equal(await settledWithin(closed), false, 'close waits for the queued rows');
    closing.release();
    await closed;
    store = await reopen();
    assert.equal(store.appliedIndex(), 7);
    assert.equal(await get(store, 'a', 1), '1');
    assert.equal(await get(store, 'a', 2), '2');
    assert.equal(await get(store, 'b'), '1');
    assert.equal(await get(store, 'c'), '1');
    assert.equal(await get(store, 'd'), '1');
  }, { rowsGatherMs: 0 }); // each write starts as soon as the one before it landed
});

/** Resolves true once the promise settles, false if it has not within the time. */
const settlesWithinMs = (promise: Promise<unknown>, ms: number): Promise<boolean> =>
  new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    const done = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    promise.then(done, done);
  });

async function until(condition: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return true;
}

test('applied rows gather into one write until rowsGatherMs pass, rowsGatherBytes are queued, or someone needs them', async () => {
  // A gathering wait far longer than the test: only a reader, the byte bound or close may end it.
  await withStore(
    async (first, _directory, reopen) => {
      let store = first;
      const writer = new Writer(() => store);
      let held = holdWrites(store);
      held.release(); // count the writes, do not hold them
      await writer.apply(writer.put('a', '1'));
      await writer.apply(writer.put('a', '2'));
      await writer.apply(writer.put('b', '1'));
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(held.writes, [], 'the rows are still gathering');
      assert.equal(await get(store, 'a'), '2', 'a read at the current revision needs no row');
      assert.deepEqual(held.writes, []);
      const historical = get(store, 'a', 1);
      assert.equal(await settlesWithinMs(historical, 10_000), true, 'a read that needs a row ends the wait');
      assert.equal(await historical, '1');
      assert.deepEqual(held.writes, [4], 'three applies went as one write: three rows and one meta row');
      held.restore();
      // The byte bound: rows of 10 bytes wait; a 300-byte value takes the queue past 200 bytes and starts its write.
      held = holdWrites(store);
      held.release();
      await writer.apply(writer.put('c', 'x'));
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(held.writes, [], 'under rowsGatherBytes the rows wait');
      await writer.apply(writer.put('d', 'y'.repeat(300)));
      assert.equal(await until(() => held.writes.length === 1, 10_000), true, 'past rowsGatherBytes the write starts');
      assert.deepEqual(held.writes, [3]);
      held.restore();
      // Close ends the wait too: the reopened store holds the last apply.
      await writer.apply(writer.put('e', '1'));
      assert.equal(await settlesWithinMs(store.close(), 10_000), true, 'close does not wait out the gathering');
      store = await reopen();
      assert.equal(await get(store, 'e'), '1');
      assert.equal(store.appliedIndex(), writer.index);
    },
    { rowsGatherMs: 60_000, rowsGatherBytes: 200 },
  );
});

test('gathered rows are written once rowsGatherMs have passed, with nobody waiting', async () => {
  await withStore(
    async (store) => {
      const writer = new Writer(() => store);
      await store.flush();
      const held = holdWrites(store);
      held.release();
      await writer.apply(writer.put('a', '1'));
      await writer.apply(writer.put('b', '1'));
      assert.deepEqual(held.writes, [], 'the rows wait for the gathering to end');
      assert.equal(await until(() => held.writes.length === 1, 10_000), true, 'then go by themselves');
      assert.deepEqual(held.writes, [3], 'both applies in one write: two rows and one meta row');
      held.restore();
    },
    { rowsGatherMs: 100 },
  );
});

test('the store refuses a rowsGatherMs that is negative, fractional or over a minute, and leaves its database closed', async () => {
  const directory = await mkdtemp(join(tmpdir(), 'raftkv-mvcc-'));
  try {
    for (const rowsGatherMs of [-1, 0.5, 60_001, Number.NaN]) {
      await assert.rejects(
        MvccStore.open(directory, { rowsGatherMs }),
        (error: Error & { code?: string }) => error.code === 'RAFTKV_INVALID_ARGUMENT',
        `rowsGatherMs ${rowsGatherMs}`,
      );
    }
    // LevelDB locks its directory while open: a refused open that left it open would make this one fail.
    const store = await MvccStore.open(directory);
    await store.close();
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
});

test('applies wait for their rows once more than pendingRowBytesMax are queued', async () => {
  await withStore(
    async (store) => {
      const writer = new Writer(() => store);
      await withWritesHeld(store, async (held) => {
        const small = writer.apply(writer.put('a', 'x'));
        assert.equal(await settledWithin(small), true, 'an apply within the bound answers at once');
        const big = writer.apply(writer.put('b', 'y'.repeat(200)));
        assert.equal(await settledWithin(big), false, 'an apply past the bound waits');
        held.release();
        await big;
      });
      assert.equal(await get(store, 'b'), 'y'.repeat(200));
    },
    { pendingRowBytesMax: 100 },
  );
});

test('a restore waits for the queued rows, which never land in the restored database', async () => {
  await withStore(async (source) => {
    const writer = new Writer(() => source);
    for (let i = 0; i < 50; i++) await writer.apply(writer.put(`key/${i % 10}`, `value ${i}`));
    const chunks: Uint8Array[] = [];
    for await (const chunk of source.snapshot()) chunks.push(chunk);
    await withStore(async (first, _directory, reopen) => {
      let target = first;
      const targetWriter = new Writer(() => target);
      await targetWriter.apply(targetWriter.put('old', '1'));
      await withWritesHeld(target, async (held) => {
        await targetWriter.apply(targetWriter.put('in-flight', '1')); // its write is held
        await targetWriter.apply(targetWriter.put('queued', '1')); // queued behind it
        const restored = target.restore(toStream(chunks));
        await new Promise((resolve) => setTimeout(resolve, 100));
        assert.equal(await settledWithin(restored), false, 'restore waits for the queued rows');
        held.release();
        await restored;
      });
      for (const key of ['old', 'in-flight', 'queued']) assert.equal(await get(target, key), undefined, `${key} is not in the restored store`);
      assert.equal(target.appliedIndex(), source.appliedIndex());
      assert.equal((await target.hash()).hash, (await source.hash()).hash);
      await target.close();
      target = await reopen();
      assert.equal(await get(target, 'queued'), undefined, 'nor in what was written to disk');
      assert.equal(target.appliedIndex(), source.appliedIndex());
      assert.equal(target.currentRevision, source.currentRevision);
    });
  });
});

test('compaction deletes a row only after it landed', async () => {
  await withStore(async (first, _directory, reopen) => {
    let store = first;
    const writer = new Writer(() => store);
    await withWritesHeld(store, async (held) => {
      // The superseded revisions and the compaction that makes them unreachable, before any row lands.
      await writer.apply(writer.put('a', '1'), writer.put('a', '2'), writer.put('a', '3'), { type: 'compact', revision: 3 });
      const pruned = store.compactionSettled();
      assert.equal(await settledWithin(pruned), false, 'compaction waits for the rows it deletes');
      held.release();
      await pruned;
    }, false);
    store = await reopen();
    const internals = store as unknown as { db: { keys: (options: object) => AsyncIterable<Uint8Array> } };
    let rows = 0;
    for await (const key of internals.db.keys({})) if (key[0] === 0x72 && key[9] !== 0xff) rows++; // not meta rows
    assert.equal(rows, 1, 'the rows of revisions 1 and 2 were deleted and stayed deleted; 3 remains');
  });
});

/** Records the keys each LevelDB batch write of the store puts and deletes (the store's database is private). */
function recordWrites(store: MvccStore): { writes: { puts: Uint8Array[]; dels: Uint8Array[] }[]; restore: () => void } {
  const internals = store as unknown as { db: { batch: () => { put: (key: Uint8Array, value: Uint8Array) => unknown; del: (key: Uint8Array) => unknown; write: (options: unknown) => Promise<void> } } };
  const realBatch = internals.db.batch;
  const writes: { puts: Uint8Array[]; dels: Uint8Array[] }[] = [];
  internals.db.batch = function (this: unknown) {
    const batch = realBatch.call(this);
    const write = { puts: [] as Uint8Array[], dels: [] as Uint8Array[] };
    return {
      put: (key: Uint8Array, value: Uint8Array) => (write.puts.push(new Uint8Array(key)), batch.put(key, value)),
      del: (key: Uint8Array) => (write.dels.push(new Uint8Array(key)), batch.del(key)),
      write: (options: unknown) => (writes.push(write), batch.write(options)),
    };
  } as never;
  return { writes, restore: () => (internals.db.batch = realBatch) };
}

const isMetaRow = (key: Uint8Array): boolean => key.length === 17 && key[0] === 0x72 && key.subarray(9).every((byte) => byte === 0xff);

async function metaRowsOnDisk(store: MvccStore): Promise<number> {
  const internals = store as unknown as { db: { keys: (options: object) => AsyncIterable<Uint8Array> } };
  let count = 0;
  for await (const key of internals.db.keys({})) if (isMetaRow(key)) count++;
  return count;
}

test('each write of applied rows puts only keys above every key written before it; the compaction deletes superseded meta rows', async () => {
  // LevelDB moves a flushed table down the levels without rewriting it only if no other table overlaps it: a store
  // that rewrote a fixed meta key in every write made every table overlap every other, and every compaction merged them.
  await withStore(
    async (first, _directory, reopen) => {
      let store = first;
      const writer = new Writer(() => store);
      const recorded = recordWrites(store);
      for (let round = 0; round < 12; round++) {
        await writer.apply(writer.put(`k${round % 4}`, `v${round}`), writer.put(`j${round % 3}`, `w${round}`));
        if (round % 4 === 3) await store.flush(); // a synced meta row of its own, through the queue
        else await store.range({ key: bytes('k0'), revision: 1 }); // lets the write land: one write per apply
      }
      await writer.apply({ type: 'txn', compare: [], success: [], failure: [] }); // advances the applied index only
      await store.flush();
      recorded.restore();
      assert.ok(recorded.writes.length >= 12, `one write per apply at least (${recorded.writes.length})`);
      let highest: Buffer | undefined;
      for (const [position, write] of recorded.writes.entries()) {
        assert.equal(write.dels.length, 0);
        assert.ok(write.puts.length >= 1 && isMetaRow(write.puts[write.puts.length - 1]!), `write ${position} ends with its meta row`);
        for (const key of write.puts) {
          const current = Buffer.from(key);
          // A meta row written again at the same revision (no new revision since) is the one key that may repeat.
          if (highest !== undefined) assert.ok(Buffer.compare(current, highest) > 0 || (isMetaRow(key) && current.equals(highest)), `write ${position} puts a key below an earlier write's`);
        }
        for (const key of write.puts) if (highest === undefined || Buffer.compare(Buffer.from(key), highest) > 0) highest = Buffer.from(key);
      }

      store = await reopen();
      assert.ok((await metaRowsOnDisk(store)) > 1, 'superseded meta rows stay until a compaction');
      const revision = store.currentRevision;
      await writer.apply({ type: 'compact', revision });
      await store.compactionSettled();
      assert.equal(await metaRowsOnDisk(store), 1, 'the compaction deleted every superseded meta row below its revision');
      const hash = (await store.hash()).hash;
      store = await reopen();
      assert.equal(store.appliedIndex(), writer.index);
      assert.equal(store.currentRevision, revision);
      assert.equal((await store.hash()).hash, hash);
      assert.equal(await get(store, 'k3'), 'v11');
    },
    { rowsGatherMs: 0 },
  );
});

test('the quota refuses growth but still allows deletes and overwrites that shrink', async () => {
  await withStore(
    async (store) => {
      const writer = new Writer(() => store);
      const [first] = await writer.apply(writer.put('a', 'x'.repeat(60)));
      assert.equal(first?.type, 'put');
      const [second] = await writer.apply(writer.put('b', 'y'.repeat(60)));
      assert.equal(second?.type === 'error' ? second.code : '', 'RAFTKV_NO_SPACE');
      const [shrink] = await writer.apply(writer.put('a', 'short'));
      assert.equal(shrink?.type, 'put');
      await writer.apply(writer.del('a'));
      const [after] = await writer.apply(writer.put('b', 'y'.repeat(60)));
      assert.equal(after?.type, 'put');
      assert.equal(store.status().liveBytes, 61);
    },
    { quotaBytes: 100 },
  );
});

test('prefixEnd never changes the caller\'s bytes, even for a Buffer', async () => {
  const { prefixEnd } = await import('../../src/storage/mvcc/keys.ts');
  const prefix = Buffer.from('abc');
  assert.equal(Buffer.from(prefixEnd(prefix)).toString(), 'abd');
  assert.equal(prefix.toString(), 'abc');
  assert.deepEqual([...prefixEnd(Uint8Array.of(0x61, 0xff))], [0x62]);
  assert.deepEqual([...prefixEnd(Uint8Array.of(0xff, 0xff))], [0]);
});

/**
 * Reports the inode of every file fdatasynced through a FileHandle until the
 * returned function restores the original (files are told apart by inode: a
 * FileHandle does not know its path).
 */
async function onDatasync(directory: string, synced: (inode: number) => void): Promise<() => void> {
  const probe = await open(join(directory, 'probe'), 'w');
  type Handle = { stat: () => Promise<{ ino: number }> };
  const handlePrototype = Object.getPrototypeOf(probe) as { datasync: (this: Handle) => Promise<void> };
  await probe.close();
  const { datasync } = handlePrototype;
  handlePrototype.datasync = async function () {
    await datasync.call(this);
    synced((await this.stat()).ino);
  };
  return () => {
    handlePrototype.datasync = datasync;
  };
}

/** Flushes the store; returns the inodes of the files it datasynced meanwhile. */
async function flushNotingSyncs(store: MvccStore, directory: string): Promise<Set<number>> {
  const synced = new Set<number>();
  const restore = await onDatasync(directory, (inode) => synced.add(inode));
  try {
    await store.flush();
  } finally {
    restore();
  }
  return synced;
}

/** The paths of a store's LevelDB logs, oldest first (the last is the one being written). */
async function databaseLogs(directory: string): Promise<string[]> {
  const database = (await readdir(directory)).find((name) => name.startsWith('db-'))!;
  return (await readdir(join(directory, database)))
    .filter((name) => name.endsWith('.log'))
    .sort((a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10))
    .map((name) => join(directory, database, name));
}

test('flush waits while an older LevelDB log is there, and once its wait is over syncs one that stays', async () => {
  await withStore(async (store, directory) => {
    const writer = new Writer(() => store);
    await writer.apply(writer.put('a', '1'));
    const current = (await databaseLogs(directory)).at(-1)!;
    // Planted: an older log LevelDB has not deleted yet (its number sorts before the current log's).
    const older = join(dirname(current), '000000.log');
    await writeFile(older, 'an older log');
    let settled = false;
    const waiting = store.flush().finally(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(settled, false, 'flush is still waiting for the older log to go');
    await rm(older);
    await waiting; // and returns once it is gone
    // One that stays: after FLUSH_LOG_WAIT_MS (5 s) flush syncs it itself and returns.
    await writeFile(older, 'an older log');
    const synced = await flushNotingSyncs(store, directory);
    assert.ok(synced.has(statSync(older).ino), 'the older log still there after the wait was synced');
  });
});

test('flush returns only once every LevelDB log but the current one is written out or synced (LevelDB closes a full log unsynced)', async () => {
  await withStore(async (store, directory) => {
    const writer = new Writer(() => store);
    // LevelDB's memtable is 4 MiB: after 6 MiB of rows, flush's own write rolls the log, and the older one is
    // then still there while its memtable is being written out to a table.
    const value = 'v'.repeat(4_000);
    await writer.apply(...Array.from({ length: 750 }, (_, i) => writer.put(`key/a/${i}`, value)));
    await writer.apply(...Array.from({ length: 750 }, (_, i) => writer.put(`key/b/${i}`, value)));
    const synced = await flushNotingSyncs(store, directory);
    const logs = await databaseLogs(directory);
    assert.ok(logs.length > 0, 'LevelDB has a log');
    // The newest log is the current one, which the synced write covered; any older one must be gone or synced.
    for (const log of logs.slice(0, -1)) assert.ok(synced.has(statSync(log).ino), `flush returned while ${log} was neither written out nor synced`);
  });
});

test('flush syncs LevelDB\'s current log through its own descriptor before the synced write (which holds LevelDB\'s writer queue)', async () => {
  await withStore(async (store, directory) => {
    const writer = new Writer(() => store);
    await writer.apply(...Array.from({ length: 200 }, (_, i) => writer.put(`key/${i}`, 'v'.repeat(1_000))));
    const order: string[] = [];
    const restore = await onDatasync(directory, (inode) => order.push(`datasync ${inode}`));
    type Batch = { write: (options?: { sync?: boolean }) => Promise<void> };
    const internals = store as unknown as { db: { batch: () => Batch } };
    const batch = internals.db.batch;
    internals.db.batch = function (this: unknown) {
      const chained = batch.call(this);
      const write = chained.write;
      chained.write = function (this: unknown, options?: { sync?: boolean }) {
        order.push(options?.sync === true ? 'synced write' : 'write');
        return write.call(this, options);
      };
      return chained;
    };
    try {
      await store.flush();
    } finally {
      restore();
      internals.db.batch = batch;
    }
    const logs = await databaseLogs(directory);
    const current = statSync(logs[logs.length - 1]!).ino;
    const synced = order.indexOf(`datasync ${current}`);
    assert.ok(synced >= 0, `flush never synced the current log itself: ${order.join(', ')}`);
    assert.ok(synced < order.indexOf('synced write'), `the current log was synced after the synced write: ${order.join(', ')}`);
  });
});

test('the index prunes at most rowsMax revisions a step, finishing a key with more in the next steps, oldest first', async () => {
  const { KeyIndex } = await import('../../src/storage/mvcc/key-index.ts');
  const mainsOf = (history: { length: number; at(position: number): { main: number } } | undefined): number[] | undefined =>
    history === undefined ? undefined : Array.from({ length: history.length }, (_, position) => history.at(position).main);
  const build = (): InstanceType<typeof KeyIndex> => {
    const index = new KeyIndex();
    let main = 0;
    const record = (tombstone = false) => ({ main: ++main, sub: 0, createRevision: 1, version: 1, lease: 0, tombstone, value: tombstone ? new Uint8Array(0) : Uint8Array.of(1) });
    for (let i = 0; i < 10; i++) index.append('a', Uint8Array.of(0x61), record());
    for (let i = 0; i < 3; i++) index.append('b', Uint8Array.of(0x62), record());
    index.append('c', Uint8Array.of(0x63), record());
    index.append('c', Uint8Array.of(0x63), record(true));
    index.append('b', Uint8Array.of(0x62), record());
    return index;
  };
  // At 16: a keeps its last (10), b only the revision at 16 (which shadows 13), and c, deleted at 15, goes whole.
  const compactRevision = 16;
  const whole = build().prune(compactRevision, '', 100).dropped;
  const stepped = build();
  const dropped: { main: number; sub: number }[] = [];
  let fromKey: string | undefined = '';
  let steps = 0;
  while (fromKey !== undefined) {
    const step = stepped.prune(compactRevision, fromKey, 100, 3);
    assert.ok(step.dropped.length <= 3, `step ${steps} dropped ${step.dropped.length} revisions`);
    dropped.push(...step.dropped);
    fromKey = step.nextKey;
    assert.ok(++steps < 20, 'pruning finishes');
  }
  assert.deepEqual(dropped, whole, 'the same revisions, in the same order, as in one step');
  assert.equal(whole.length, 9 + 3 + 2);
  assert.deepEqual(mainsOf(stepped.history('a')), [10]);
  assert.deepEqual(mainsOf(stepped.history('b')), [16]);
  assert.equal(stepped.history('c'), undefined, 'a key whose history was all unreachable is gone');
});
