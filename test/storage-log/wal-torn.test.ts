// Seeded damage fuzz for WalLogStorage's recovery. One run of random saves
// (appends, a new leader's overwrites, unsynced hard-state saves, snapshots
// and compactions that delete segments, snapshot saves, reopens) over 4 KiB
// segments records, after every operation, the expected log and the size of
// every segment file. Segments are append-only and never rewritten, so the
// directory as it stood at any byte of any write can be rebuilt from the
// files' final contents. Then, many times, it rebuilds one such directory,
// damages it one way and opens it:
//   torn     the newest segment cut at a random byte of the write in flight
//            (segments that write was about to delete are still there):
//            the log as it was after the last complete write;
//   sectors  a whole 512-byte sector (or more) of the write in flight zeros:
//            the log as it was before that write;
//   flip     any byte of a complete record changed, in the newest segment
//            or an older one:
//            RAFTKV_LOG_CORRUPT, and no file touched;
//   older    an older segment cut inside a record: RAFTKV_LOG_CORRUPT (every
//            segment present is replayed, even one whose entries are all
//            compacted, and only the newest may end in a torn record);
// After every open that succeeds it appends one more save, reopens, and
// checks again: recovery left a log that can be written.
//   dropped  an older segment cut at a record boundary (its last records lost
//            whole): RAFTKV_LOG_CORRUPT, or the exact log if what was lost is
//            compacted away anyway (each STATE record names where the log
//            ended when its segment was opened).
// A flipped byte of a length field is damage too: each header carries the
// length's complement. This test found, before those were fixed: a changed
// length read as a torn write, cutting synced records away (seed 4); a
// refused open that had already cut a file (seed 17); an older segment's
// lost last records vanishing silently (seed 1) or an undone overwrite
// coming back at its old term (seed 2); a damaged record whose body ended in
// zero bytes read as a torn tail (seed 5: records now end in a nonzero byte);
// once unsynced records waited to go out with the next write, a sector lost
// from such a write, cutting one record and running on into the next, read
// as damage, so the log refused to open (seed 1: the lost sector is now the
// file's, not the record's; wal.test.ts keeps the scenario).
// Replay: SEED=<n> npm test -- storage-log/wal-torn   (CASES=<n> for more)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WalLogStorage } from '../../src/storage/log/wal.ts';
import { createRandom, type RandomSource } from '../../src/raft/random.ts';
import type { ConfState, Entry, HardState, SnapshotMetadata } from '../../src/raft/types.ts';

const seed = Number(process.env['SEED'] ?? 20261127);
const cases = Number(process.env['CASES'] ?? 200);
const replay = `SEED=${seed} npm test -- storage-log/wal-torn`;
/** Record header: length u32, its complement u32, CRC-32 u32; then the body and one trailing byte. */
const FRAME = 12;
const OVERHEAD = FRAME + 1;

const SEGMENT_BYTES = 4096;
const SECTOR = 512;
const OPERATIONS = 150;
const conf: ConfState = { voters: [1], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
const EMPTY_CONF: ConfState = { voters: [], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };

interface Model {
  readonly written: boolean;
  readonly hard: HardState;
  readonly snapshot: SnapshotMetadata;
  /** The compacted index and its term: entries[0] is start.index + 1. */
  readonly start: { readonly index: number; readonly term: number };
  readonly entries: readonly Entry[];
}

const EMPTY: Model = {
  written: false,
  hard: { term: 0, vote: 0, commit: 0 },
  snapshot: { index: 0, term: 0, confState: EMPTY_CONF },
  start: { index: 0, term: 0 },
  entries: [],
};
const BOOTSTRAPPED: Model = {
  written: true,
  hard: { term: 1, vote: 0, commit: 1 },
  snapshot: { index: 1, term: 1, confState: conf },
  start: { index: 1, term: 1 },
  entries: [],
};

const lastOf = (m: Model): number => m.start.index + m.entries.length;
const termOf = (m: Model, index: number): number => (index === m.start.index ? m.start.term : m.entries[index - m.start.index - 1]!.term);

/** The log after one save (the same rules as LogStorage.save). */
function applySave(m: Model, snapshot: SnapshotMetadata | null, entries: readonly Entry[], hard: HardState | null): Model {
  let next: Model = { ...m, written: true, hard: hard ?? m.hard };
  if (snapshot !== null) next = { ...next, snapshot, start: { index: snapshot.index, term: snapshot.term }, entries: [] };
  if (entries.length > 0) next = { ...next, entries: [...next.entries.slice(0, entries[0]!.index - next.start.index - 1), ...entries] };
  return next;
}

/**
 * After an operation: the log its segment files hold, every segment file's
 * name and size, and the logs after each unsynced save still waiting in
 * memory to go out with the next write (oldest first; WalLogStorage.append).
 */
interface Point {
  readonly what: string;
  readonly model: Model;
  readonly waiting: readonly Model[];
  readonly files: ReadonlyMap<string, number>;
}

const sameFiles = (a: ReadonlyMap<string, number>, b: ReadonlyMap<string, number>): boolean =>
  a.size === b.size && [...a].every(([name, size]) => b.get(name) === size);

function segmentSizes(directory: string): Map<string, number> {
  const sizes = new Map<string, number>();
  for (const name of readdirSync(directory).filter((n) => n.endsWith('.wal')).sort()) sizes.set(name, readFileSync(join(directory, name)).length);
  return sizes;
}

const newest = (files: ReadonlyMap<string, number>): string => [...files.keys()].sort().at(-1)!;

function randomBytes(random: RandomSource, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = random(256);
  return bytes;
}

function makeEntries(random: RandomSource, first: number, count: number, term: number, maxBytes: number, minBytes = 0): Entry[] {
  return Array.from({ length: count }, (_, i) => ({
    index: first + i,
    term,
    type: 0 as const,
    data: randomBytes(random, minBytes + random(maxBytes - minBytes + 1)),
  }));
}

/**
 * Writes a random log, returning the point after each operation (history[0]:
 * the empty log just opened) and every segment's final contents, kept once a
 * segment can no longer grow (before any compaction could delete it).
 */
async function build(directory: string, random: RandomSource): Promise<{ history: Point[]; contents: Map<string, Buffer> }> {
  const history: Point[] = [];
  const contents = new Map<string, Buffer>();
  let model = EMPTY;
  let waiting: Model[] = [];
  const mark = (what: string): void => {
    const files = segmentSizes(directory);
    const previous = history.at(-1);
    const top = newest(files);
    for (const [name, size] of files) {
      // A segment other than the newest, or one at the size bound, is never written again.
      if (!contents.has(name) && (name !== top || size >= SEGMENT_BYTES)) contents.set(name, readFileSync(join(directory, name)));
    }
    if (previous !== undefined && sameFiles(previous.files, files)) {
      // Nothing reached the files: the save waits in memory (or the operation wrote nothing).
      waiting = [...waiting, model];
      history.push({ what, model: previous.model, waiting, files });
    } else {
      // A write takes everything waiting with it.
      waiting = [];
      history.push({ what, model, waiting, files });
    }
  };
  let storage = await WalLogStorage.open(directory, { segmentBytes: SEGMENT_BYTES });
  mark('open');
  await storage.bootstrap(conf);
  model = BOOTSTRAPPED;
  mark('bootstrap');
  let term = 1;
  let vote = 0;
  const compact = async (m: Model): Promise<Model> => {
    const index = m.start.index + 1 + random(m.snapshot.index - m.start.index);
    const segments = storage.segmentCount;
    await storage.compact(index);
    const next = { ...m, start: { index, term: termOf(m, index) }, entries: m.entries.slice(index - m.start.index) };
    model = next;
    mark(`compact ${index}${storage.segmentCount < segments ? ` (deleted ${segments - storage.segmentCount} segments)` : ''}`);
    return next;
  };
  for (let op = 0; op < OPERATIONS; op++) {
    const roll = random(100);
    const last = lastOf(model);
    const commit = model.hard.commit;
    if (roll < 45 || (roll >= 52 && roll < 60 && Math.max(commit, model.start.index) + 1 > last + 1)) {
      const entries = makeEntries(random, last + 1, 1 + random(5), term, 400);
      const hard = random(2) === 0 ? null : { term, vote, commit: commit + random(last - commit + 1) };
      await storage.save({ snapshot: null, entries, hardState: hard, sync: true });
      model = applySave(model, null, entries, hard);
      mark(`append ${last + 1}..${last + entries.length}`);
    } else if (roll < 52) {
      // One save larger than a whole segment.
      const entries = makeEntries(random, last + 1, 2 + random(3), term, 2500, 1500);
      await storage.save({ snapshot: null, entries, hardState: null, sync: true });
      model = applySave(model, null, entries, null);
      mark(`big append ${last + 1}..${last + entries.length}`);
    } else if (roll < 60) {
      // A new leader replaces the uncommitted suffix (or appends right after it).
      term += 1 + random(2);
      vote = 1 + random(3);
      const lowest = Math.max(commit, model.start.index) + 1;
      const first = lowest + random(last + 2 - lowest);
      const entries = makeEntries(random, first, 1 + random(4), term, 400);
      const hard = { term, vote, commit };
      await storage.save({ snapshot: null, entries, hardState: hard, sync: true });
      model = applySave(model, null, entries, hard);
      mark(`overwrite ${first}..${first + entries.length - 1} at term ${term}`);
    } else if (roll < 75) {
      const hard = { term, vote: random(4) === 0 ? random(4) : vote, commit: commit + random(last - commit + 1) };
      if (hard.vote !== vote) vote = hard.vote;
      await storage.save({ snapshot: null, entries: [], hardState: hard, sync: false });
      model = applySave(model, null, [], hard);
      mark(`hard state commit ${hard.commit}`);
    } else if (roll < 84 && commit > model.snapshot.index) {
      const index = model.snapshot.index + 1 + random(commit - model.snapshot.index);
      const snapshot = { index, term: termOf(model, index), confState: conf };
      await storage.createSnapshot(snapshot);
      model = { ...model, snapshot };
      mark(`createSnapshot ${index}`);
      if (random(10) < 6) model = await compact(model);
    } else if (roll < 91 && model.snapshot.index > model.start.index) {
      model = await compact(model);
    } else if (roll < 94) {
      // A follower installs a leader's snapshot: the whole log is replaced.
      term += random(2);
      const index = commit + random(last + 20 - commit + 1);
      const snapshot = { index, term, confState: conf };
      const entries = makeEntries(random, index + 1, random(3), term, 300);
      const hard = { term, vote, commit: index };
      await storage.save({ snapshot, entries, hardState: hard, sync: true });
      model = applySave(model, snapshot, entries, hard);
      mark(`snapshot save ${index}`);
    } else {
      await storage.close();
      storage = await WalLogStorage.open(directory, { segmentBytes: SEGMENT_BYTES });
      mark('reopen');
    }
  }
  await storage.close();
  for (const name of segmentSizes(directory).keys()) contents.set(name, readFileSync(join(directory, name)));
  for (const point of history) {
    for (const [name, size] of point.files) assert.ok((contents.get(name)?.length ?? -1) >= size, `${name} was kept whole`);
  }
  return { history, contents };
}

/** Offsets where the complete records of a segment start, and its length (the end of the last). */
function boundaries(bytes: Uint8Array): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const result = [0];
  let offset = 0;
  while (offset + FRAME <= bytes.length && offset + OVERHEAD + view.getUint32(offset) <= bytes.length) {
    offset += OVERHEAD + view.getUint32(offset);
    result.push(offset);
  }
  return result;
}

function check(storage: WalLogStorage, model: Model): void {
  assert.equal(storage.isEmpty(), !model.written, 'isEmpty');
  assert.equal(storage.firstIndex(), model.start.index + 1, 'firstIndex');
  assert.equal(storage.lastIndex(), lastOf(model), 'lastIndex');
  assert.equal(storage.term(model.start.index), model.start.term, `term of the log start ${model.start.index}`);
  assert.deepEqual(storage.initialState().hardState, model.hard, 'hard state');
  assert.deepEqual(storage.snapshot(), model.snapshot, 'snapshot metadata');
  const got = storage.entries(model.start.index + 1, lastOf(model) + 1, Infinity);
  assert.equal(got.length, model.entries.length, 'entry count');
  for (let i = 0; i < got.length; i++) {
    const want = model.entries[i]!;
    assert.equal(got[i]!.index, want.index, `entry ${want.index} index`);
    assert.equal(got[i]!.term, want.term, `entry ${want.index} term`);
    assert.equal(got[i]!.type, want.type, `entry ${want.index} type`);
    assert.ok(Buffer.from(got[i]!.data).equals(Buffer.from(want.data)), `entry ${want.index} data`);
  }
}

function matches(storage: WalLogStorage, model: Model): boolean {
  try {
    check(storage, model);
    return true;
  } catch {
    return false;
  }
}

type Kind = 'torn' | 'sectors' | 'flip' | 'older' | 'dropped';

interface Case {
  readonly kind: Kind;
  readonly description: string;
  /** The directory to open: segment name to contents. */
  readonly files: Map<string, Uint8Array>;
  /**
   * The log open must return, or 'corrupt'; for 'dropped', either; for a
   * write cut short, any prefix of the records it carried (the unsynced
   * saves that waited for it, then its own).
   */
  readonly expect: Model | 'corrupt' | { either: Model } | { anyOf: readonly Model[] };
}

/** The directory after `point`, its segments as they stood then. */
function directoryAt(point: Point, contents: Map<string, Buffer>): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  for (const [name, size] of point.files) files.set(name, contents.get(name)!.subarray(0, size));
  return files;
}

function makeCase(kind: Kind, random: RandomSource, history: Point[], contents: Map<string, Buffer>): Case | null {
  const k = random(history.length);
  const point = history[k]!;
  const before: Point = k === 0 ? { what: 'nothing', model: EMPTY, waiting: [], files: new Map() } : history[k - 1]!;
  const prefixes = { anyOf: [before.model, ...before.waiting] };
  const top = newest(point.files);
  const hi = point.files.get(top)!;
  const full = contents.get(top)!;
  switch (kind) {
    case 'torn': {
      // A crash during operation k: the newest segment holds part of its write; what that
      // operation would delete after writing is still there.
      const lo = before.files.get(top) ?? 0;
      const pick = random(10);
      const cut = pick < 3 ? hi : pick < 4 ? lo : pick < 5 ? Math.min(hi, lo + random(9)) : lo + random(hi - lo + 1);
      const files = directoryAt(before, contents);
      if (cut === hi) {
        // Written whole: the segments it deletes may be gone, oldest first.
        const doomed = [...before.files.keys()].filter((name) => !point.files.has(name)).sort();
        for (const name of doomed.slice(0, random(doomed.length + 1))) files.delete(name);
      }
      if (cut > 0 || before.files.has(top) || random(2) === 0) files.set(top, full.subarray(0, cut));
      return {
        kind,
        description: `${point.what} (operation ${k}) torn: ${top} cut at byte ${cut} of [${lo}, ${hi}]`,
        files,
        expect: cut === hi ? point.model : prefixes,
      };
    }
    case 'sectors': {
      // The write of operation k reached the file size but a sector of it did not reach the disk.
      const recordStart = before.files.get(top) ?? boundaries(full)[1]!;
      const firstSector = Math.ceil(recordStart / SECTOR) * SECTOR;
      const sectors = Math.floor((hi - firstSector) / SECTOR);
      if (k === 0 || recordStart >= hi || sectors < 1) return null;
      const from = firstSector + SECTOR * random(sectors);
      const to = random(2) === 0 ? hi : from + SECTOR * (1 + random(Math.floor((hi - from) / SECTOR)));
      const bytes = Uint8Array.from(full.subarray(0, hi));
      if (bytes.subarray(from, to).every((b) => b === 0)) return null; // nothing would change
      bytes.fill(0, from, to);
      const files = directoryAt(before, contents);
      files.set(top, bytes);
      return { kind, description: `${point.what} (operation ${k}): ${top} bytes [${from}, ${to}) zeroed, its record starts at ${recordStart}`, files, expect: prefixes };
    }
    case 'flip': {
      const files = directoryAt(point, contents);
      const names = [...files.keys()];
      const inNewest = names.length === 1 || random(10) < 7;
      const name = inNewest ? top : names[random(names.length - 1)]!;
      const bytes = Uint8Array.from(files.get(name)!);
      const starts = boundaries(bytes);
      const record = random(starts.length - 1);
      const at = starts[record]! + random(starts[record + 1]! - starts[record]!);
      bytes[at]! ^= 1 + random(255);
      files.set(name, bytes);
      return { kind, description: `${point.what} (operation ${k}): byte ${at} of ${name} (${inNewest ? 'newest' : 'older'}, record ${record}) flipped`, files, expect: 'corrupt' };
    }
    case 'older':
    case 'dropped': {
      const files = directoryAt(point, contents);
      const names = [...files.keys()];
      if (names.length < 2) return null;
      const name = names[random(names.length - 1)]!;
      const bytes = files.get(name)!;
      const starts = boundaries(bytes);
      let cut: number;
      if (kind === 'older') {
        const record = random(starts.length - 1);
        const start = starts[record]!;
        cut = random(10) === 0 ? 0 : start + 1 + random(starts[record + 1]! - start - 1);
      } else {
        cut = starts[random(starts.length - 1)]!; // drops at least the last record
      }
      files.set(name, bytes.subarray(0, cut));
      return {
        kind,
        description: `${point.what} (operation ${k}): older segment ${name} cut at byte ${cut} of ${bytes.length}${kind === 'dropped' ? ' (a record boundary)' : ''}`,
        files,
        expect: kind === 'older' ? 'corrupt' : { either: point.model },
      };
    }
  }
}

function writeDirectory(directory: string, files: Map<string, Uint8Array>): void {
  mkdirSync(directory, { recursive: true });
  for (const [name, bytes] of files) writeFileSync(join(directory, name), bytes);
}

function readDirectory(directory: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  for (const name of readdirSync(directory).sort()) files.set(name, readFileSync(join(directory, name)));
  return files;
}

/** Opens the damaged directory and checks the outcome; returns what happened. */
async function runCase(directory: string, c: Case, random: RandomSource): Promise<'recovered' | 'corrupt'> {
  writeDirectory(directory, c.files);
  const untouched = readDirectory(directory);
  let storage: WalLogStorage;
  try {
    storage = await WalLogStorage.open(directory, { segmentBytes: SEGMENT_BYTES });
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code !== 'RAFTKV_LOG_CORRUPT') throw error;
    assert.ok(c.expect === 'corrupt' || 'either' in c.expect, `refused with RAFTKV_LOG_CORRUPT (${(error as Error).message}), expected it to recover`);
    assert.deepEqual(readDirectory(directory), untouched, 'a refused open changes no file');
    return 'corrupt';
  }
  let model: Model;
  try {
    assert.notEqual(c.expect, 'corrupt', 'expected RAFTKV_LOG_CORRUPT, but the log opened');
    if (c.expect !== 'corrupt' && 'anyOf' in c.expect) {
      const opened = storage;
      const found = c.expect.anyOf.find((candidate) => matches(opened, candidate));
      // None matched: fail with the differences from the log as it was before the write.
      model = found ?? c.expect.anyOf[0]!;
    } else {
      model = c.expect === 'corrupt' ? EMPTY : 'either' in c.expect ? c.expect.either : c.expect;
    }
    check(storage, model);
    // Recovery left a log that takes writes and recovers them.
    if (!model.written) {
      await storage.bootstrap(conf);
      model = BOOTSTRAPPED;
    } else {
      const last = lastOf(model);
      const term = Math.max(model.hard.term, termOf(model, last));
      const entries = makeEntries(random, last + 1, 1 + random(3), term, 200);
      const hard = { term, vote: model.hard.vote, commit: model.hard.commit };
      await storage.save({ snapshot: null, entries, hardState: hard, sync: false });
      model = applySave(model, null, entries, hard);
    }
    check(storage, model);
  } finally {
    await storage.close();
  }
  storage = await WalLogStorage.open(directory, { segmentBytes: SEGMENT_BYTES });
  try {
    check(storage, model);
  } finally {
    await storage.close();
  }
  return 'recovered';
}

test(`WalLogStorage recovers torn writes and refuses damage (seed ${seed}, ${cases} cases)`, async () => {
  const root = mkdtempSync(join(tmpdir(), 'raftkv-wal-torn-'));
  try {
    const random = createRandom(seed);
    const { history, contents } = await build(join(root, 'log'), random).catch((error: unknown) => {
      throw new Error(`writing the log failed: ${error instanceof Error ? error.message : String(error)}\nseed ${seed}; replay: ${replay}`, { cause: error });
    });
    const segmentsSeen = contents.size;
    assert.ok(segmentsSeen >= 10, `the log spanned ${segmentsSeen} segments`);
    assert.ok(history.some((point) => point.what.includes('deleted')), 'a compaction deleted segments');
    const kinds: Kind[] = ['torn', 'torn', 'torn', 'torn', 'sectors', 'sectors', 'flip', 'flip', 'older', 'dropped'];
    const tally = new Map<string, number>();
    for (let i = 0; i < cases; i++) {
      let c: Case | null = null;
      while (c === null) c = makeCase(kinds[i % kinds.length]!, random, history, contents);
      const directory = join(root, `case-${i}`);
      try {
        const outcome = await runCase(directory, c, random);
        const key = `${c.kind} ${outcome}`;
        tally.set(key, (tally.get(key) ?? 0) + 1);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        assert.fail(`case ${i}: ${c.description}: ${message}\nseed ${seed}; replay: ${replay}`);
      } finally {
        rmSync(directory, { recursive: true, force: true });
      }
    }
    // Every kind of damage ran, and the torn cases recovered.
    for (const kind of ['torn recovered', 'sectors recovered', 'flip corrupt', 'older corrupt']) {
      assert.ok((tally.get(kind) ?? 0) > 0, `no case "${kind}" ran (seed ${seed}; replay: ${replay})`);
    }
    if (process.env['WAL_TORN_VERBOSE'] === '1') {
      const operations = new Map<string, number>();
      for (const point of history) {
        const what = point.what.includes('deleted') ? 'compact-deleting' : point.what.split(' ')[0]!;
        operations.set(what, (operations.get(what) ?? 0) + 1);
      }
      console.log(`seed ${seed}: ${segmentsSeen} segments`, Object.fromEntries(operations), Object.fromEntries(tally));
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
