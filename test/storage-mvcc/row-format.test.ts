// Revision rows are packed by hand; rows written in the first format (a
// msgpack array) must still read back after an upgrade: current values
// (loaded into the index at open), old revisions (read from disk), a
// tombstone and a leased key.

import { test } from 'node:test';
import assert from 'node:assert/strict';
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
    const generation = (await readFile(join(directory, 'CURRENT'), 'utf8')).trim();
    const db = new ClassicLevel<Uint8Array, Uint8Array>(join(directory, `db-${generation}`), { keyEncoding: 'view', valueEncoding: 'view' });
    let rewritten = 0;
    for await (const [key, value] of db.iterator({ gte: Uint8Array.of(0x72), lt: Uint8Array.of(0x73) })) {
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
