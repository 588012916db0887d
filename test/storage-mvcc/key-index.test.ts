// A key's history keeps every revision packed in one array of numbers and
// only the latest's value beside it: each revision comes back exactly as
// appended (sub-revisions and tombstones included), only the latest with its
// value, an older value is let go once superseded, appends out of order are
// refused, and dropping revisions keeps the rest intact.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyHistory, KeyIndex } from '../../src/storage/mvcc/key-index.ts';
import type { RevisionRecord } from '../../src/storage/mvcc/key-index.ts';

const put = (main: number, sub: number, createRevision: number, version: number, lease: number, value: Uint8Array): RevisionRecord => ({
  main,
  sub,
  createRevision,
  version,
  lease,
  tombstone: false,
  value,
});
const tombstone = (main: number, sub: number): RevisionRecord => ({ main, sub, createRevision: 0, version: 0, lease: 0, tombstone: true, value: new Uint8Array(0) });

test('every revision comes back as appended, only the latest with its value', () => {
  const records = [
    put(3, 0, 3, 1, 0, Uint8Array.of(1)),
    put(5, 2, 3, 2, 2 ** 52, Uint8Array.of(2)),
    tombstone(6, 1),
    put(9, 0, 9, 1, 7, Uint8Array.of(3, 3)),
    tombstone(9, 4),
  ];
  const history = new KeyHistory(Uint8Array.of(0x6b), records[0]!);
  for (const record of records.slice(1)) history.push(record);
  assert.equal(history.length, records.length);
  records.forEach((record, position) => {
    const latest = position === records.length - 1;
    assert.deepEqual(history.at(position), { ...record, value: latest ? record.value : undefined }, `revision ${position}`);
    assert.equal(history.mainAt(position), record.main);
  });
  assert.deepEqual(history.latest, records[records.length - 1]);
  assert.equal(history.latestLiveLease, 0, 'a deleted key holds no lease');
  history.push(put(10, 0, 10, 1, 7, Uint8Array.of(4)));
  assert.equal(history.latestLiveLease, 7);
  history.push({ ...tombstone(11, 0), lease: 9 });
  assert.equal(history.latestLiveLease, 0, 'whatever lease a tombstone carries');
});

test('a superseded revision lets its value go; the new latest carries its own', () => {
  const first = Uint8Array.of(1, 2, 3);
  const history = new KeyHistory(Uint8Array.of(0x6b), put(1, 0, 1, 1, 0, first));
  assert.equal(history.latest.value, first);
  const second = Uint8Array.of(4);
  history.push(put(2, 0, 1, 2, 0, second));
  assert.equal(history.at(0).value, undefined);
  assert.equal(history.latest.value, second);
  assert.equal(history.latest.version, 2);
});

test('appends must be newer than the latest revision', () => {
  const history = new KeyHistory(Uint8Array.of(0x6b), put(4, 2, 4, 1, 0, Uint8Array.of(1)));
  assert.throws(() => history.push(put(4, 2, 4, 2, 0, Uint8Array.of(2))), /increasing order/);
  assert.throws(() => history.push(put(4, 1, 4, 2, 0, Uint8Array.of(2))), /increasing order/);
  assert.throws(() => history.push(tombstone(3, 9)), /increasing order/);
  assert.equal(history.length, 1);
  history.push(tombstone(4, 3));
  assert.equal(history.latest.tombstone, true);
  assert.equal(history.latest.sub, 3);
});

test('dropping the oldest revisions reports them and keeps the rest; dropping all empties the history', () => {
  const history = new KeyHistory(Uint8Array.of(0x6b), put(1, 0, 1, 1, 0, Uint8Array.of(1)));
  history.push(tombstone(2, 1));
  history.push(put(3, 0, 3, 1, 0, Uint8Array.of(3)));
  const dropped: { main: number; sub: number }[] = [];
  history.dropOldest(2, dropped);
  assert.deepEqual(dropped, [
    { main: 1, sub: 0 },
    { main: 2, sub: 1 },
  ]);
  assert.equal(history.length, 1);
  assert.deepEqual(history.latest, put(3, 0, 3, 1, 0, Uint8Array.of(3)));
  history.dropOldest(1, dropped);
  assert.equal(history.length, 0);
  assert.deepEqual(dropped.at(-1), { main: 3, sub: 0 });
  assert.throws(() => history.latest, /empty history/);
  assert.throws(() => history.dropOldest(1, dropped), /cannot drop/);
});

test('the index copies a new key that is a view into a larger buffer, so it does not keep that buffer alive', () => {
  const index = new KeyIndex();
  const frame = Uint8Array.of(1, 0x6b, 0x65, 0x79, 2);
  index.append('key', frame.subarray(1, 4), put(1, 0, 1, 1, 0, Uint8Array.of(7)));
  frame.fill(0);
  assert.deepEqual(index.history('key')!.key, Uint8Array.of(0x6b, 0x65, 0x79));
  assert.equal(index.history('key')!.key.buffer.byteLength, 3, 'a copy of its own, not the frame');
  const own = Uint8Array.of(0x6a);
  index.append('j', own, put(2, 0, 2, 1, 0, Uint8Array.of(8)));
  assert.equal(index.history('j')!.key, own, 'a key with a buffer of its own is kept as is');
});
