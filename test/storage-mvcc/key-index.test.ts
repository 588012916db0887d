// A key's history keeps every revision packed in one array of numbers and
// only the latest's value, copied into a value arena: each revision comes
// back exactly as appended (sub-revisions and tombstones included), only the
// latest with its value, an older value is let go once superseded, appends
// out of order are refused, and dropping revisions keeps the rest intact.
// The arena keeps every live value intact while it moves values out of
// chunks that are mostly superseded, and holds at most about twice the live
// bytes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyHistory, KeyIndex, ValueArena } from '../../src/storage/mvcc/key-index.ts';
import { createRandom } from '../../src/raft/random.ts';
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
  assert.deepEqual(history.latest.value, Uint8Array.of(1, 2, 3));
  first.fill(9);
  assert.deepEqual(history.latest.value, Uint8Array.of(1, 2, 3), 'the history keeps a copy, not the caller\'s buffer');
  const second = Uint8Array.of(4);
  history.push(put(2, 0, 1, 2, 0, second));
  assert.equal(history.at(0).value, undefined);
  assert.deepEqual(history.latest.value, Uint8Array.of(4));
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

const ARENA_SEEDS = process.env['ARENA_SEED'] === undefined ? [1, 2, 3] : [Number(process.env['ARENA_SEED'])];

test('value arena: every key reads its latest value through overwrites, moves, large and empty values; bytes stay bounded (seeded)', () => {
  for (const seed of ARENA_SEEDS) {
    const replay = `seed ${seed} (replay: ARENA_SEED=${seed} npm test -- storage-mvcc/key-index)`;
    const random = createRandom(seed);
    const arena = new ValueArena();
    const histories: KeyHistory[] = [];
    const model: Uint8Array[] = [];
    const handedOut: [Uint8Array, Uint8Array][] = []; // views a reader holds, with what they showed
    const chunks = new Set<object>();
    let revision = 1;
    for (let step = 0; step < 40_000; step++) {
      const key = random(2_000);
      const size = random(50) === 0 ? 70_000 + random(10_000) : random(8) === 0 ? 0 : 1 + random(300);
      const frame = new Uint8Array(size + 16).fill(step % 251); // a view into a larger buffer, as a proposal's value is
      const value = frame.subarray(8, 8 + size);
      for (let i = 0; i < size; i += 97) value[i] = random(256);
      const record = put(revision++, 0, 1, 1, 0, value);
      if (histories[key] === undefined) histories[key] = new KeyHistory(Uint8Array.of(key), record, arena);
      else histories[key]!.push(record);
      model[key] = value.slice();
      frame.fill(0);
      chunks.add(histories[key]!.valueChunk!);
      if (step % 1_000 === 999) {
        let live = 0;
        histories.forEach((history, at) => {
          assert.deepEqual(history.latest.value, model[at], `${replay}: key ${at} at step ${step}`);
          live += model[at]!.length;
        });
        // Chunks some history still refers to: at most twice the live bytes, plus the chunk being filled and
        // the large values' own chunks (counted in live).
        const referenced = new Set(histories.map((history) => history.valueChunk));
        let held = 0;
        for (const chunk of referenced) if (chunk !== undefined) held += chunk.bytes.length;
        assert.ok(held <= 2 * live + 2 * 256 * 1024, `${replay}: ${held} bytes held for ${live} live at step ${step}`);
        const present = histories.filter((history) => history !== undefined);
        const sample = present[random(present.length)]!;
        const view = sample.latest.value!;
        handedOut.push([view, view.slice()]);
      }
    }
    for (const [view, shown] of handedOut) assert.deepEqual(view, shown, `${replay}: a view a reader holds never changes`);
    const moved = [...chunks].filter((chunk) => (chunk as { moved: boolean }).moved).length;
    assert.ok(moved > 0, `${replay}: the run moved values out of some chunk (${chunks.size} chunks)`);
  }
});

test('value arena: a history emptied by compaction lets its value go; an index copies a key that is a view into a larger buffer', () => {
  const arena = new ValueArena();
  const history = new KeyHistory(Uint8Array.of(0x6b), put(1, 0, 1, 1, 0, Uint8Array.of(5, 6)), arena);
  const chunk = history.valueChunk as unknown as { live: number };
  assert.equal(chunk.live, 2);
  history.dropOldest(1, []);
  assert.equal(history.valueChunk, undefined);
  assert.equal(chunk.live, 0);
  const index = new KeyIndex();
  const frame = Uint8Array.of(1, 0x6b, 0x65, 0x79, 2);
  index.append('key', frame.subarray(1, 4), put(1, 0, 1, 1, 0, Uint8Array.of(7)));
  frame.fill(0);
  assert.deepEqual(index.history('key')!.key, Uint8Array.of(0x6b, 0x65, 0x79));
  assert.equal(index.history('key')!.key.buffer.byteLength, 3, 'a copy of its own, not the frame');
});
