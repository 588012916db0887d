// WalLogStorage beyond the conformance suite: segments roll over and go once
// compacted, recovery cuts a write torn by a crash but refuses damage, and a
// crash part way through deleting segments still recovers; a failed sync
// stops it for good.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WalLogStorage } from '../../src/storage/log/wal.ts';
import type { Entry } from '../../src/raft/types.ts';

const root = mkdtempSync(join(tmpdir(), 'raftkv-wal-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
const fresh = (): string => join(root, `wal-${++counter}`);
const conf = { voters: [1], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };

function entries(from: number, count: number, term: number, bytes = 100): Entry[] {
  return Array.from({ length: count }, (_, i) => ({ index: from + i, term, type: 0 as const, data: new Uint8Array(bytes).fill((from + i) & 0xff) }));
}

const segmentFiles = (directory: string): string[] => readdirSync(directory).filter((name) => name.endsWith('.wal')).sort();

/** Bootstraps and writes entries 2..(1 + saves * perSave) at term 2, one save each. */
async function writeLog(directory: string, saves: number, perSave: number, segmentBytes?: number): Promise<WalLogStorage> {
  const storage = await WalLogStorage.open(directory, segmentBytes === undefined ? {} : { segmentBytes });
  await storage.bootstrap(conf);
  for (let save = 0; save < saves; save++) {
    const first = 2 + save * perSave;
    await storage.save({ snapshot: null, entries: entries(first, perSave, 2), hardState: { term: 2, vote: 1, commit: first + perSave - 1 }, sync: true });
  }
  return storage;
}

function assertEntries(storage: WalLogStorage, from: number, to: number, term: number): void {
  const got = storage.entries(from, to + 1, Infinity);
  assert.equal(got.length, to - from + 1);
  for (const entry of got) {
    assert.equal(entry.term, term, `entry ${entry.index} term`);
    assert.equal(entry.data[0], entry.index & 0xff, `entry ${entry.index} data`);
  }
}

test('segments roll over at the size bound and go once compaction passes all their entries', async () => {
  const directory = fresh();
  let storage = await writeLog(directory, 40, 10, 8 * 1024); // ~1.4 KiB a save: about 6 saves a segment
  const before = segmentFiles(directory).length;
  assert.ok(before >= 6, `40 saves of 1.4 KiB span ${before} segments of 8 KiB`);
  assert.equal(storage.segmentCount, before);
  await storage.createSnapshot({ index: 300, term: 2, confState: conf });
  await storage.compact(300);
  const after = segmentFiles(directory).length;
  assert.ok(after < before - 3, `compacting through 300 of 401 left ${after} of ${before} segments`);
  assert.equal(storage.segmentCount, after);
  storage.entries(301, 402, Infinity); // still readable in memory
  await storage.close();
  storage = await WalLogStorage.open(directory, { segmentBytes: 8 * 1024 });
  try {
    assert.equal(storage.firstIndex(), 301);
    assert.equal(storage.lastIndex(), 401);
    assert.equal(storage.snapshot().index, 300);
    assert.deepEqual(storage.initialState().hardState, { term: 2, vote: 1, commit: 401 });
    assertEntries(storage, 301, 401, 2);
  } finally {
    await storage.close();
  }
});

test('entries overwritten across a segment boundary come back as last written', async () => {
  const directory = fresh();
  let storage = await writeLog(directory, 20, 10, 4096);
  // A new leader at term 3 replaces 150.. (written two segments ago).
  await storage.save({ snapshot: null, entries: entries(150, 5, 3), hardState: { term: 3, vote: 2, commit: 120 }, sync: true });
  await storage.close();
  storage = await WalLogStorage.open(directory, { segmentBytes: 4096 });
  try {
    assert.equal(storage.lastIndex(), 154);
    assertEntries(storage, 2, 149, 2);
    assertEntries(storage, 150, 154, 3);
    assert.deepEqual(storage.initialState().hardState, { term: 3, vote: 2, commit: 120 });
  } finally {
    await storage.close();
  }
});

test('a record cut short by a crash is dropped and the file cut there; later writes recover', async () => {
  const directory = fresh();
  let storage = await writeLog(directory, 5, 10);
  await storage.close();
  const files = segmentFiles(directory);
  const last = join(directory, files[files.length - 1]!);
  const good = statSync(last).size;
  // Part of a further save record: a whole header (length 1,024 and its complement, a checksum) and
  // the first bytes of a body the crash kept from the disk.
  appendFileSync(last, Buffer.from([0, 0, 4, 0, 0xff, 0xff, 0xfb, 0xff, 1, 2, 3, 4, 2, 6, 7, 7, 7]));
  storage = await WalLogStorage.open(directory);
  try {
    assert.equal(statSync(last).size, good, 'the torn tail is cut off');
    assert.equal(storage.lastIndex(), 51);
    assertEntries(storage, 2, 51, 2);
    await storage.save({ snapshot: null, entries: entries(52, 3, 2), hardState: null, sync: true });
  } finally {
    await storage.close();
  }
  storage = await WalLogStorage.open(directory);
  try {
    assert.equal(storage.lastIndex(), 54);
    assertEntries(storage, 2, 54, 2);
  } finally {
    await storage.close();
  }
});

test('a record whose last sector never reached the disk (zeros) is a torn write too', async () => {
  const directory = fresh();
  let storage = await writeLog(directory, 3, 10);
  await storage.save({ snapshot: null, entries: entries(32, 10, 2, 400), hardState: null, sync: true }); // a record of > 4 KiB
  await storage.close();
  const files = segmentFiles(directory);
  const last = join(directory, files[files.length - 1]!);
  const bytes = readFileSync(last);
  // Zero the last 1,024 bytes: at least one whole 512-byte sector inside the last record.
  bytes.fill(0, bytes.length - 1024);
  writeFileSync(last, bytes);
  storage = await WalLogStorage.open(directory);
  try {
    assert.equal(storage.lastIndex(), 31, 'the torn save is gone, the ones before it stay');
    assertEntries(storage, 2, 31, 2);
  } finally {
    await storage.close();
  }
});

test('a complete record that fails its checksum refuses to open, naming where the log breaks', async () => {
  const directory = fresh();
  const storage = await writeLog(directory, 5, 10);
  await storage.close();
  const files = segmentFiles(directory);
  const last = join(directory, files[files.length - 1]!);
  const bytes = readFileSync(last);
  bytes[bytes.length - 500]! ^= 0x01; // inside the last save (entries 42..51)
  writeFileSync(last, bytes);
  await assert.rejects(WalLogStorage.open(directory), (error: unknown) => {
    const e = error as { code?: string; index?: number };
    return e.code === 'RAFTKV_LOG_CORRUPT' && e.index === 42;
  });
});

test('damage in a segment that is not the last refuses to open', async () => {
  const directory = fresh();
  const storage = await writeLog(directory, 20, 10, 4096);
  await storage.close();
  const files = segmentFiles(directory);
  assert.ok(files.length >= 3);
  truncateSync(join(directory, files[1]!), statSync(join(directory, files[1]!)).size - 10);
  await assert.rejects(WalLogStorage.open(directory), { code: 'RAFTKV_LOG_CORRUPT' });
});

test('a segment whose state record never reached the disk is removed', async () => {
  const directory = fresh();
  let storage = await writeLog(directory, 3, 10);
  await storage.close();
  const files = segmentFiles(directory);
  const next = join(directory, `${(Number.parseInt(files[files.length - 1]!, 16) + 1).toString(16).padStart(16, '0')}.wal`);
  writeFileSync(next, Buffer.from([0, 0, 0, 9, 1, 2])); // a crash while creating the next segment
  storage = await WalLogStorage.open(directory);
  try {
    assert.equal(storage.lastIndex(), 31);
    // Its number is free again: the segment this open started took it, with a whole state record.
    assert.ok(statSync(next).size > 6, 'the torn segment was removed and replaced');
    await storage.save({ snapshot: null, entries: entries(32, 2, 2), hardState: null, sync: true });
  } finally {
    await storage.close();
  }
  storage = await WalLogStorage.open(directory);
  try {
    assert.equal(storage.lastIndex(), 33);
  } finally {
    await storage.close();
  }
});

test('compacted segments are deleted beside later writes, shortened at most 4 MiB at a time; open deletes any left over', async () => {
  const directory = fresh();
  // Two segments of about 9 MiB (30 saves of 300 KiB each): a third is being written when the compaction comes.
  const storage = await WalLogStorage.open(directory, { segmentBytes: 9 * 1024 * 1024 });
  await storage.bootstrap(conf);
  for (let save = 0; save < 70; save++) {
    await storage.save({ snapshot: null, entries: entries(2 + save * 3, 3, 2, 100 * 1024), hardState: { term: 2, vote: 1, commit: 4 + save * 3 }, sync: true });
  }
  const before = segmentFiles(directory);
  assert.ok(before.length >= 3, `${before.length} segments`);
  const probe = await open(join(directory, 'probe'), 'w');
  type Handle = { stat: () => Promise<{ size: number }> };
  const handlePrototype = Object.getPrototypeOf(probe) as { truncate: (this: Handle, length?: number) => Promise<void> };
  await probe.close();
  const { truncate } = handlePrototype;
  const steps: [number, number][] = []; // [size before, size after]
  handlePrototype.truncate = async function (length?: number) {
    const size = (await this.stat()).size;
    await truncate.call(this, length);
    steps.push([size, length ?? 0]);
  };
  try {
    await storage.createSnapshot({ index: 200, term: 2, confState: conf });
    await storage.compact(200);
    // Out of recovery's sight at once, deleted later.
    const doomed = before.filter((name) => !segmentFiles(directory).includes(name));
    assert.ok(doomed.length >= 2, `compaction through 200 dooms ${doomed.length} segments`);
    await storage.reclaimSettled();
  } finally {
    handlePrototype.truncate = truncate;
  }
  assert.deepEqual(readdirSync(directory).filter((name) => name.endsWith('.deleting')), [], 'every doomed segment is gone');
  assert.ok(steps.length >= 6, `${steps.length} steps for two 9 MiB segments`);
  for (const [from, to] of steps) assert.ok(from - to > 0 && from - to <= 4 * 1024 * 1024, `a step from ${from} to ${to} bytes`);
  assert.equal(steps.filter(([, to]) => to === 0).length, before.length - segmentFiles(directory).length, 'each doomed segment shrinks to nothing');
  assertEntries(storage, 201, 211, 2);
  await storage.close();

  // A doomed segment left by a stop part way: never replayed (its bytes are not a segment's), deleted at open.
  writeFileSync(join(directory, '0000000000000001.wal.deleting'), 'not a segment');
  const reopened = await WalLogStorage.open(directory, { segmentBytes: 9 * 1024 * 1024 });
  try {
    assert.deepEqual(readdirSync(directory).filter((name) => name.endsWith('.deleting')), []);
    assert.equal(reopened.firstIndex(), 201);
    assertEntries(reopened, 201, 211, 2);
  } finally {
    await reopened.close();
  }
});

test('a crash part way through deleting compacted segments still recovers the same log', async () => {
  const directory = fresh();
  let storage = await writeLog(directory, 40, 10, 8 * 1024);
  const kept = segmentFiles(directory); // the files before compaction, copied back as if their deletion was lost
  const saved = join(root, `saved-${counter}`);
  rmSync(saved, { recursive: true, force: true });
  mkdirSync(saved);
  for (const name of kept) copyFileSync(join(directory, name), join(saved, name));
  await storage.createSnapshot({ index: 300, term: 2, confState: conf });
  await storage.compact(300);
  await storage.close();
  const remaining = segmentFiles(directory);
  const deleted = kept.filter((name) => !remaining.includes(name));
  assert.ok(deleted.length >= 2);
  // Only the newest of the deleted segments reappears (the older ones' deletion reached the disk).
  copyFileSync(join(saved, deleted[deleted.length - 1]!), join(directory, deleted[deleted.length - 1]!));
  storage = await WalLogStorage.open(directory, { segmentBytes: 8 * 1024 });
  try {
    assert.equal(storage.firstIndex(), 301);
    assert.equal(storage.lastIndex(), 401);
    assertEntries(storage, 301, 401, 2);
  } finally {
    await storage.close();
  }
  // And the oldest alone reappearing (out of order) too.
  copyFileSync(join(saved, deleted[0]!), join(directory, deleted[0]!));
  unlinkSync(join(directory, deleted[deleted.length - 1]!));
  storage = await WalLogStorage.open(directory, { segmentBytes: 8 * 1024 });
  try {
    assert.equal(storage.firstIndex(), 301);
    assertEntries(storage, 301, 401, 2);
  } finally {
    await storage.close();
  }
});

test('a missing segment in the middle of the live log is detected', async () => {
  const directory = fresh();
  const storage = await writeLog(directory, 20, 10, 4096);
  await storage.close();
  const files = segmentFiles(directory);
  unlinkSync(join(directory, files[2]!));
  await assert.rejects(WalLogStorage.open(directory), { code: 'RAFTKV_LOG_CORRUPT' });
});

test('open validates its arguments with typed errors', async () => {
  await assert.rejects(WalLogStorage.open(''), { code: 'RAFTKV_INVALID_ARGUMENT' });
  await assert.rejects(WalLogStorage.open(fresh(), { segmentBytes: 10 }), { code: 'RAFTKV_INVALID_ARGUMENT' });
  await assert.rejects(WalLogStorage.open(fresh(), { segmentBytes: 1.5e4 + 0.5 }), { code: 'RAFTKV_INVALID_ARGUMENT' });
});

test('a failed synced write stops the log for good: never retried, every later call fails the same way', async () => {
  const directory = fresh();
  const storage = await writeLog(directory, 2, 5);
  const probe = await open(join(directory, 'probe'), 'w');
  const handlePrototype = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<unknown> };
  await probe.close();
  unlinkSync(join(directory, 'probe'));
  // The segment's descriptor is O_DSYNC: the write is where a sync fails (fsyncgate: EIO, and the pages may be gone).
  const write = handlePrototype.write;
  let calls = 0;
  handlePrototype.write = async function () {
    calls += 1;
    throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
  };
  try {
    await assert.rejects(storage.save({ snapshot: null, entries: entries(12, 2, 2), hardState: null, sync: true }), (error: unknown) => {
      const e = error as { code?: string; cause?: { code?: string } };
      return e.code === 'RAFTKV_STORAGE_FAILED' && e.cause?.code === 'EIO';
    });
  } finally {
    handlePrototype.write = write;
  }
  assert.equal(calls, 1, 'the failed sync was not retried');
  assert.equal(storage.lastIndex(), 11, 'the read view did not take the failed save');
  // The disk works again, but the storage stays stopped: the failed write may or may not be on disk.
  await assert.rejects(storage.save({ snapshot: null, entries: entries(12, 1, 2), hardState: null, sync: true }), { code: 'RAFTKV_STORAGE_FAILED' });
  await assert.rejects(storage.compact(5), { code: 'RAFTKV_STORAGE_FAILED' });
  assert.throws(() => storage.entries(2, 5, Infinity), { code: 'RAFTKV_STORAGE_FAILED' });
  await storage.close();
});

test('an unsynced save waits in memory and goes out, in order, with the next write or a clean close', async () => {
  const directory = fresh();
  let storage = await writeLog(directory, 1, 5);
  const newest = (): string => join(directory, segmentFiles(directory).at(-1)!);
  const size = statSync(newest()).size;
  await storage.save({ snapshot: null, entries: [], hardState: { term: 2, vote: 1, commit: 4 }, sync: false });
  await storage.save({ snapshot: null, entries: [], hardState: { term: 2, vote: 1, commit: 5 }, sync: false });
  assert.equal(statSync(newest()).size, size, 'a commit index alone costs no write');
  assert.equal(storage.initialState().hardState.commit, 5, 'but it is visible at once');
  await storage.save({ snapshot: null, entries: entries(7, 2, 2), hardState: null, sync: true });
  assert.ok(statSync(newest()).size > size, 'the synced save wrote');
  await storage.save({ snapshot: null, entries: [], hardState: { term: 2, vote: 1, commit: 7 }, sync: false });
  // A crash now (the file as it stands) loses only the last unsynced save.
  const crashed = fresh();
  mkdirSync(crashed);
  for (const name of segmentFiles(directory)) copyFileSync(join(directory, name), join(crashed, name));
  await storage.close();
  const afterCrash = await WalLogStorage.open(crashed);
  try {
    assert.equal(afterCrash.initialState().hardState.commit, 5, 'the waiting saves went out before the synced one');
    assertEntries(afterCrash, 2, 8, 2);
  } finally {
    await afterCrash.close();
  }
  storage = await WalLogStorage.open(directory);
  try {
    assert.equal(storage.initialState().hardState.commit, 7, 'a clean close wrote what waited');
    assertEntries(storage, 2, 8, 2);
  } finally {
    await storage.close();
  }
});

test('a sector lost from a write that carried several records is a torn write, not damage (wal-torn seed 1)', async () => {
  const directory = fresh();
  const storage = await writeLog(directory, 1, 5); // entries 2..6, commit 6
  const newest = join(directory, segmentFiles(directory).at(-1)!);
  const before = statSync(newest).size;
  // Thirty commit-index records wait in memory, then go out with the synced save of entry 7: one write.
  for (let commit = 1; commit <= 30; commit++) {
    await storage.save({ snapshot: null, entries: [], hardState: { term: 2, vote: 1, commit: Math.min(commit, 6) }, sync: false });
  }
  await storage.save({ snapshot: null, entries: entries(7, 1, 2), hardState: null, sync: true });
  await storage.close();
  const bytes = readFileSync(newest);
  // The crash lost the first whole sector that starts inside that write: it cuts records in the middle.
  const sector = Math.ceil((before + 1) / 512) * 512;
  assert.ok(sector + 512 < bytes.length, `the write spans [${before}, ${bytes.length}): a sector lies inside it`);
  bytes.fill(0, sector, sector + 512);
  writeFileSync(newest, bytes);
  const recovered = await WalLogStorage.open(directory);
  try {
    assert.equal(recovered.lastIndex(), 6, 'the write was cut where the sector was lost: entry 7 is gone, 2..6 stay');
    assertEntries(recovered, 2, 6, 2);
    assert.ok(recovered.initialState().hardState.commit <= 6);
  } finally {
    await recovered.close();
  }
});
