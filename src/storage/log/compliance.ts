// The LogStorage conformance suite (as abstract-level's): any implementation
// runs it with one call, `logStorageSuite({ test, factory, reopen })`, passing
// node:test's `test`. `reopen` (for persistent implementations) closes a
// storage and opens it again from the same place, so recovery is checked too.

import assert from 'node:assert/strict';
import type { ConfState, Entry } from '../../raft/types.ts';
import type { LogStorage } from './types.ts';

type TestFunction = (name: string, fn: () => Promise<void>) => unknown;

export interface LogStorageSuiteOptions {
  readonly test: TestFunction;
  /** A fresh, empty storage. */
  readonly factory: () => Promise<LogStorage>;
  /** Close and reopen the same storage (omit for memory-only implementations). */
  readonly reopen?: (storage: LogStorage) => Promise<LogStorage>;
  /** A label for the test names. */
  readonly name?: string;
}

const conf: ConfState = { voters: [1, 2, 3], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };

function entry(index: number, term: number, text = `e${index}t${term}`): Entry {
  return { index, term, type: 0, data: new TextEncoder().encode(text) };
}

function range(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(entry(i, term));
  return out;
}

async function withStorage(factory: () => Promise<LogStorage>, body: (s: LogStorage) => Promise<LogStorage | void>): Promise<void> {
  const storage = await factory();
  let current = storage;
  try {
    const result = await body(storage);
    if (result !== undefined) current = result;
  } finally {
    await current.close();
  }
}

export function logStorageSuite(options: LogStorageSuiteOptions): void {
  const { test, factory, reopen } = options;
  const label = options.name ?? 'log storage';
  const again = async (s: LogStorage): Promise<LogStorage> => (reopen === undefined ? s : reopen(s));

  test(`${label}: a new storage is empty`, () =>
    withStorage(factory, async (s) => {
      assert.equal(s.isEmpty(), true);
      assert.equal(s.firstIndex(), 1);
      assert.equal(s.lastIndex(), 0);
      assert.deepEqual(s.initialState().hardState, { term: 0, vote: 0, commit: 0 });
      assert.equal(s.snapshot().index, 0);
    }));

  test(`${label}: bootstrap records the membership as a snapshot at index 1 and refuses a second time`, () =>
    withStorage(factory, async (s) => {
      await s.bootstrap(conf);
      const r = await again(s);
      assert.equal(r.isEmpty(), false);
      assert.deepEqual(r.initialState().confState, conf);
      assert.deepEqual(r.initialState().hardState, { term: 1, vote: 0, commit: 1 });
      assert.equal(r.snapshot().index, 1);
      assert.equal(r.term(1), 1);
      assert.equal(r.firstIndex(), 2);
      assert.equal(r.lastIndex(), 1);
      await assert.rejects(r.bootstrap(conf), { code: 'RAFTKV_INVALID_ARGUMENT' });
      return r;
    }));

  test(`${label}: appended entries read back by range, with maxBytes and at least one entry`, () =>
    withStorage(factory, async (s) => {
      await s.bootstrap(conf);
      await s.save({ snapshot: null, entries: range(2, 11, 2), hardState: { term: 2, vote: 1, commit: 5 }, sync: true });
      const r = await again(s);
      assert.equal(r.lastIndex(), 11);
      assert.deepEqual(r.entries(2, 12, Infinity).map((e) => e.index), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      assert.deepEqual(r.entries(4, 6, Infinity).map((e) => e.index), [4, 5]);
      assert.equal(r.entries(4, 12, 0).length, 1, 'at least one entry even over maxBytes');
      assert.equal(r.entries(4, 12, 10).length, 2, 'then as many as fit');
      assert.equal(new TextDecoder().decode(r.entries(7, 8, Infinity)[0]!.data), 'e7t2');
      assert.deepEqual(r.initialState().hardState, { term: 2, vote: 1, commit: 5 });
      assert.throws(() => r.entries(1, 3, Infinity), { code: 'RAFTKV_LOG_COMPACTED' });
      assert.throws(() => r.entries(10, 13, Infinity), { code: 'RAFTKV_LOG_UNAVAILABLE' });
      assert.throws(() => r.term(12), { code: 'RAFTKV_LOG_UNAVAILABLE' });
      assert.throws(() => r.term(0), { code: 'RAFTKV_LOG_COMPACTED' });
      return r;
    }));

  test(`${label}: a conflicting suffix is replaced, shorter or longer`, () =>
    withStorage(factory, async (s) => {
      await s.bootstrap(conf);
      await s.save({ snapshot: null, entries: range(2, 10, 2), hardState: null, sync: true });
      await s.save({ snapshot: null, entries: range(5, 6, 3), hardState: null, sync: true });
      let r = await again(s);
      assert.equal(r.lastIndex(), 6);
      assert.deepEqual([r.term(4), r.term(5), r.term(6)], [2, 3, 3]);
      await r.save({ snapshot: null, entries: range(6, 12, 4), hardState: null, sync: true });
      r = await again(r);
      assert.equal(r.lastIndex(), 12);
      assert.deepEqual([r.term(5), r.term(6), r.term(12)], [3, 4, 4]);
      return r;
    }));

  test(`${label}: entries read back whole after the caller reuses the buffers it saved`, () =>
    withStorage(factory, async (s) => {
      await s.bootstrap(conf);
      // Data views into one shared buffer, as entries decoded from one received frame are.
      const frame = new TextEncoder().encode('aaaabbbbcc');
      const views = [frame.subarray(0, 4), frame.subarray(4, 8), frame.subarray(8, 10), frame.subarray(10, 10)];
      await s.save({ snapshot: null, entries: views.map((data, i) => ({ index: 2 + i, term: 2, type: 0, data })), hardState: null, sync: true });
      frame.fill(0x7a);
      await s.save({ snapshot: null, entries: range(6, 7, 2), hardState: null, sync: true });
      await s.save({ snapshot: null, entries: range(7, 8, 3), hardState: null, sync: true });
      const r = await again(s);
      const read = r.entries(2, 9, Infinity);
      assert.deepEqual(read.map((e) => new TextDecoder().decode(e.data)), ['aaaa', 'bbbb', 'cc', '', 'e6t2', 'e7t3', 'e8t3']);
      assert.deepEqual(read.map((e) => [e.index, e.term, e.type]), [[2, 2, 0], [3, 2, 0], [4, 2, 0], [5, 2, 0], [6, 2, 0], [7, 3, 0], [8, 3, 0]]);
      return r;
    }));

  test(`${label}: invalid appends are refused and change nothing`, () =>
    withStorage(factory, async (s) => {
      await s.bootstrap(conf);
      await s.save({ snapshot: null, entries: range(2, 4, 2), hardState: null, sync: true });
      await assert.rejects(s.save({ snapshot: null, entries: range(7, 8, 2), hardState: null, sync: true }), { code: 'RAFTKV_INVALID_ARGUMENT' });
      await assert.rejects(s.save({ snapshot: null, entries: [entry(5, 2), entry(7, 2)], hardState: null, sync: true }), { code: 'RAFTKV_INVALID_ARGUMENT' });
      await assert.rejects(s.save({ snapshot: null, entries: range(1, 2, 2), hardState: { term: 9, vote: 9, commit: 0 }, sync: true }), { code: 'RAFTKV_INVALID_ARGUMENT' });
      const r = await again(s);
      assert.equal(r.lastIndex(), 4);
      assert.equal(r.initialState().hardState.term, 1, 'a refused update wrote nothing');
      return r;
    }));

  test(`${label}: a snapshot replaces the whole log; entries may follow it in the same write`, () =>
    withStorage(factory, async (s) => {
      await s.bootstrap(conf);
      await s.save({ snapshot: null, entries: range(2, 8, 2), hardState: null, sync: true });
      const snapshot = { index: 20, term: 5, confState: { ...conf, voters: [1, 2, 3, 4] } };
      await s.save({ snapshot, entries: range(21, 22, 5), hardState: { term: 5, vote: 0, commit: 20 }, sync: true });
      const r = await again(s);
      assert.deepEqual(r.snapshot(), snapshot);
      assert.deepEqual(r.initialState().confState.voters, [1, 2, 3, 4]);
      assert.equal(r.firstIndex(), 21);
      assert.equal(r.lastIndex(), 22);
      assert.equal(r.term(20), 5);
      assert.throws(() => r.term(8), { code: 'RAFTKV_LOG_COMPACTED' });
      return r;
    }));

  test(`${label}: createSnapshot then compact keeps the boundary term readable`, () =>
    withStorage(factory, async (s) => {
      await s.bootstrap(conf);
      await s.save({ snapshot: null, entries: range(2, 30, 3), hardState: { term: 3, vote: 1, commit: 30 }, sync: true });
      await assert.rejects(s.compact(10), { code: 'RAFTKV_INVALID_ARGUMENT' }, 'no snapshot covers 10 yet');
      await s.createSnapshot({ index: 25, term: 3, confState: conf });
      await s.compact(20);
      let r = await again(s);
      assert.equal(r.snapshot().index, 25);
      assert.equal(r.firstIndex(), 21);
      assert.equal(r.term(20), 3);
      assert.throws(() => r.term(19), { code: 'RAFTKV_LOG_COMPACTED' });
      assert.throws(() => r.entries(20, 22, Infinity), { code: 'RAFTKV_LOG_COMPACTED' });
      assert.equal(r.entries(21, 31, Infinity).length, 10);
      await assert.rejects(r.createSnapshot({ index: 24, term: 3, confState: conf }), { code: 'RAFTKV_INVALID_ARGUMENT' });
      await assert.rejects(r.createSnapshot({ index: 26, term: 9, confState: conf }), { code: 'RAFTKV_INVALID_ARGUMENT' });
      await r.compact(25);
      r = await again(r);
      assert.equal(r.firstIndex(), 26);
      await r.save({ snapshot: null, entries: range(31, 31, 4), hardState: null, sync: true });
      assert.equal(r.lastIndex(), 31);
      return r;
    }));

  test(`${label}: after close every call fails with a typed error`, async () => {
    const s = await factory();
    await s.bootstrap(conf);
    await s.close();
    assert.throws(() => s.initialState(), (error: unknown) => typeof (error as { code?: unknown }).code === 'string');
    await assert.rejects(s.save({ snapshot: null, entries: range(2, 2, 1), hardState: null, sync: true }), (error: unknown) => typeof (error as { code?: unknown }).code === 'string');
  });
}
