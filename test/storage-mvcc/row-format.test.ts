// Revision rows are packed by hand; rows written in the first format (a
// msgpack array) must still read back after an upgrade: current values
// (loaded into the index at open), old revisions (read from disk), a
// tombstone and a leased key.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { Packr } from 'msgpackr';
import { MvccStore } from '../../src/storage/mvcc/store.ts';

const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text));
const text = (value: Uint8Array): string => Buffer.from(value).toString();

// deepEqual tells a Buffer from a Uint8Array; compare the bytes.
function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return text(value);
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  return value;
}

/** The LevelDB database of a closed store, opened directly. */
async function openDatabase(directory: string): Promise<ClassicLevel<Uint8Array, Uint8Array>> {
  const generation = (await readFile(join(directory, 'CURRENT'), 'utf8')).trim();
  return new ClassicLevel<Uint8Array, Uint8Array>(join(directory, `db-${generation}`), { keyEncoding: 'view', valueEncoding: 'view' });
}

/** The first row format, written by the code before the packed rows. */
function legacyRow(packed: Uint8Array): Uint8Array {
  const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  assert.equal(packed[0], 1, 'rows are written in the packed format');
  const keyLength = view.getUint32(26);
  const key = packed.subarray(30, 30 + keyLength);
  const value = packed.subarray(30 + keyLength);
  return new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true }).pack([key, value, view.getFloat64(1), view.getFloat64(9), view.getFloat64(17), packed[25]]);
}

test('rows in the first (msgpack) format still decode after an upgrade', async () => {
  const directory = await mkdtemp(join(tmpdir(), 'raftkv-rows-'));
  try {
    let store = await MvccStore.open(directory);
    let index = 1;
    const apply = (request: Parameters<MvccStore['applyBatch']>[0][number]['request']) => store.applyBatch([{ index: ++index, request }]);
    await apply({ type: 'leaseGrant', id: 7, ttlSeconds: 60 });
    await apply({ type: 'put', key: bytes('a'), value: bytes('1') });
    await apply({ type: 'put', key: bytes('a'), value: bytes('2') });
    await apply({ type: 'put', key: bytes('gone'), value: bytes('x') });
    await apply({ type: 'deleteRange', key: bytes('gone') });
    await apply({ type: 'put', key: bytes('leased'), value: bytes('L'), lease: 7 });
    const before = plain(await store.range({ key: bytes('a'), rangeEnd: bytes('z') }));
    const hashBefore = await store.hash();
    const firstPut = (await store.range({ key: bytes('a') })).kvs[0]!.createRevision;
    await store.close();

    // Rewrite every revision row in the old format, as an older raftkv left them.
    const db = await openDatabase(directory);
    let rewritten = 0;
    for await (const [key, value] of db.iterator({ gte: Uint8Array.of(0x72), lt: Uint8Array.of(0x73) })) {
      if (isMetaRow(key)) continue;
      await db.put(key, legacyRow(value));
      rewritten++;
    }
    await db.close();
    assert.equal(rewritten, 5);

    store = await MvccStore.open(directory);
    assert.deepEqual(plain(await store.range({ key: bytes('a'), rangeEnd: bytes('z') })), before);
    assert.equal(text((await store.range({ key: bytes('a'), revision: firstPut })).kvs[0]!.value), '1', 'an old revision read from its row on disk');
    assert.equal((await store.range({ key: bytes('gone') })).kvs.length, 0, 'the tombstone still hides the key');
    assert.equal((await store.range({ key: bytes('leased') })).kvs[0]!.lease, 7);
    assert.deepEqual(await store.hash(), hashBefore);
    await store.close();
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
});

/** A meta row among the revision rows: 'r', a revision, a sub of all ones. */
const isMetaRow = (key: Uint8Array): boolean => key.length === 17 && key[0] === 0x72 && key.subarray(9).every((byte) => byte === 0xff);

/** The rows of a closed store's database, by first key byte ('m', 'n', 'r', 't', 'u', 'z'), meta rows among the revision rows as 'meta'. */
async function keyBytesOf(directory: string): Promise<Map<string, number>> {
  const db = await openDatabase(directory);
  const counts = new Map<string, number>();
  for await (const key of db.keys()) {
    const kind = isMetaRow(key) ? 'meta' : String.fromCharCode(key[0]!);
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  await db.close();
  return counts;
}

/** The counts of keyBytesOf but the meta rows' (how many writes left one depends on timing). */
const withoutMeta = (counts: Map<string, number>): Record<string, number> => Object.fromEntries([...counts].filter(([kind]) => kind !== 'meta'));

/** Moves a closed store's newest meta row to 't', where the second layout kept it, drops the older ones, and adds its sync marker 'z'. */
async function toSecondLayout(directory: string): Promise<void> {
  const db = await openDatabase(directory);
  let newest: Uint8Array | undefined;
  for await (const [key, value] of db.iterator({ gte: Uint8Array.of(0x72), lt: Uint8Array.of(0x73) })) {
    if (!isMetaRow(key)) continue;
    newest = value;
    await db.del(key);
  }
  assert.ok(newest !== undefined, 'the store has a meta row');
  await db.batch([{ type: 'put', key: Uint8Array.of(0x74), value: newest }, { type: 'put', key: Uint8Array.of(0x7a), value: Uint8Array.of(1) }]);
  await db.close();
}

/** Moves a closed store in the second layout's meta row ('t') and lease rows ('u') back to where the first layout kept them ('m', 'n'). */
async function toFirstLayout(directory: string): Promise<void> {
  const db = await openDatabase(directory);
  for await (const [key, value] of db.iterator({ gte: Uint8Array.of(0x74), lt: Uint8Array.of(0x76) })) {
    const moved = new Uint8Array(key);
    moved[0] = key[0] === 0x74 ? 0x6d : 0x6e;
    await db.batch([{ type: 'put', key: moved, value }, { type: 'del', key }]);
  }
  await db.del(Uint8Array.of(0x7a));
  await db.close();
}

/** A snapshot stream as an older member sends it: the first format (meta and leases before the rows) or the second ('t' between rows and leases). */
async function olderFormatSnapshot(directory: string, layout: 'first' | 'second'): Promise<Uint8Array[]> {
  const packr = new Packr({ useRecords: false, mapsAsObjects: true });
  const db = await openDatabase(directory);
  const digest = createHash('sha256');
  const lengthPrefixed = (bytes: Uint8Array): Uint8Array => {
    const out = new Uint8Array(4 + bytes.length);
    new DataView(out.buffer).setUint32(0, bytes.length);
    out.set(bytes, 4);
    return out;
  };
  const pairs: Uint8Array[][] = [];
  const [gte, lt] = layout === 'first' ? [0x6d, 0x73] : [0x72, 0x76];
  for await (const [key, value] of db.iterator({ gte: Uint8Array.of(gte), lt: Uint8Array.of(lt) })) {
    pairs.push([key, value]);
    digest.update(lengthPrefixed(key));
    digest.update(lengthPrefixed(value));
  }
  await db.close();
  const format = layout === 'first' ? 'raftkv-mvcc-snapshot/1' : 'raftkv-mvcc-snapshot/2';
  return [packr.pack({ format }), packr.pack({ pairs }), packr.pack({ end: true, rows: pairs.length, sha256: digest.digest('hex') })];
}

/** The keys of a snapshot stream, by kind (as keyBytesOf counts them). */
async function streamKeys(store: MvccStore): Promise<Map<string, number>> {
  const packr = new Packr({ useRecords: false, mapsAsObjects: true });
  const counts = new Map<string, number>();
  for await (const chunk of store.snapshot()) {
    for (const [key] of (packr.unpack(chunk) as { pairs?: Uint8Array[][] }).pairs ?? []) {
      const kind = isMetaRow(key!) ? 'meta' : String.fromCharCode(key![0]!);
      counts.set(kind, (counts.get(kind) ?? 0) + 1);
    }
  }
  return counts;
}

for (const layout of ['first', 'second'] as const) {
  const described = layout === 'first' ? 'the first key layout (meta and leases before the rows)' : "the second key layout (the meta at 't', a sync marker 'z')";
  test(`a store in ${described} opens whole and moves its meta row among the revision rows`, async () => {
    const directory = await mkdtemp(join(tmpdir(), 'raftkv-layout-'));
    const restored = await mkdtemp(join(tmpdir(), 'raftkv-layout-restored-'));
    try {
      let store = await MvccStore.open(directory);
      let index = 1;
      const apply = (request: Parameters<MvccStore['applyBatch']>[0][number]['request']) => store.applyBatch([{ index: ++index, request }]);
      await apply({ type: 'leaseGrant', id: 7, ttlSeconds: 60 });
      await apply({ type: 'leaseGrant', id: 2 ** 40, ttlSeconds: 5 });
      await apply({ type: 'put', key: bytes('a'), value: bytes('1') });
      await apply({ type: 'put', key: bytes('leased'), value: bytes('L'), lease: 7 });
      await apply({ type: 'put', key: bytes('a'), value: bytes('2') });
      await apply({ type: 'compact', revision: 2 });
      await store.compactionSettled();
      const status = store.status();
      const leases = store.leases();
      const hash = await store.hash();
      const all = plain(await store.range({ key: bytes('a'), rangeEnd: bytes('z') }));
      // A snapshot keeps the second layout's stream: the meta once, as 't', between the rows and the leases.
      assert.deepEqual(Object.fromEntries(await streamKeys(store)), { r: 3, t: 1, u: 2 });
      await store.close();
      const current = await keyBytesOf(directory);
      assert.deepEqual(withoutMeta(current), { r: 3, u: 2 }, 'the current layout: rows with meta rows among them, leases');
      assert.ok((current.get('meta') ?? 0) >= 1);

      await toSecondLayout(directory);
      if (layout === 'first') await toFirstLayout(directory);
      assert.deepEqual(Object.fromEntries(await keyBytesOf(directory)), layout === 'first' ? { m: 1, n: 2, r: 3 } : { r: 3, t: 1, u: 2, z: 1 });
      const snapshot = await olderFormatSnapshot(directory, layout);

      store = await MvccStore.open(directory);
      assert.deepEqual(store.status(), status);
      assert.deepEqual(store.leases(), leases);
      assert.deepEqual(await store.hash(), hash);
      assert.deepEqual(plain(await store.range({ key: bytes('a'), rangeEnd: bytes('z') })), all);
      // The next write lands in the current layout and sees the moved lease.
      const leasedPut = await store.applyBatch([{ index: ++index, request: { type: 'put', key: bytes('b'), value: bytes('B'), lease: 2 ** 40 } }]);
      assert.equal(leasedPut[0]?.type, 'put');
      await store.close();
      const after = await keyBytesOf(directory);
      assert.deepEqual(withoutMeta(after), { r: 4, u: 2 }, 'nothing is left in an older layout');
      assert.ok((after.get('meta') ?? 0) >= 1);

      // A snapshot stream from a member not yet upgraded restores into the current layout.
      const target = await MvccStore.open(restored);
      await target.restore((async function* () {
        yield* snapshot;
      })());
      assert.deepEqual(target.status(), status);
      assert.deepEqual(target.leases(), leases);
      assert.deepEqual(await target.hash(), hash);
      await target.close();
      assert.deepEqual(Object.fromEntries(await keyBytesOf(restored)), { r: 3, meta: 1, u: 2 });
    } finally {
      await rm(directory, { recursive: true, force: true });
      await rm(restored, { recursive: true, force: true });
    }
  });
}

test('a snapshot stream with a meta row among its revision rows is refused, and the store keeps what it had', async () => {
  const directory = await mkdtemp(join(tmpdir(), 'raftkv-layout-'));
  try {
    const store = await MvccStore.open(directory);
    await store.applyBatch([{ index: 2, request: { type: 'put', key: bytes('a'), value: bytes('1') } }]);
    const packr = new Packr({ useRecords: false, mapsAsObjects: true });
    const metaRow = new Uint8Array(17).fill(0xff);
    metaRow[0] = 0x72;
    metaRow.fill(0, 1, 9);
    const lengthPrefixed = (bytes: Uint8Array): Uint8Array => Buffer.concat([Buffer.from(new Uint32Array([bytes.length]).buffer).reverse(), bytes]);
    const pairs = [[metaRow, bytes('x')], [Uint8Array.of(0x74), bytes('y')]];
    const digest = createHash('sha256');
    for (const [key, value] of pairs) digest.update(lengthPrefixed(key!)).update(lengthPrefixed(value!));
    const stream = [packr.pack({ format: 'raftkv-mvcc-snapshot/2' }), packr.pack({ pairs }), packr.pack({ end: true, rows: pairs.length, sha256: digest.digest('hex') })];
    await assert.rejects(
      store.restore((async function* () {
        yield* stream;
      })()),
      (error: Error & { code?: string }) => error.code === 'RAFTKV_INVALID_ARGUMENT' && /meta row among its revision rows/.test(error.message),
    );
    assert.equal(text((await store.range({ key: bytes('a') })).kvs[0]!.value), '1');
    assert.equal(store.appliedIndex(), 2);
    await store.close();
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
});
