// The Raft log as append-only segment files (a write-ahead log, as etcd's
// wal package keeps it): each save() that must be synced appends one
// checksummed record (behind any unsynced ones waiting in memory) through a
// descriptor opened with O_DSYNC, so the write returns once it is durable,
// one system call and one thread-pool round trip instead of write + fdatasync
// (where the platform has no O_DSYNC, an fdatasync follows each write).
// Every entry is written once, and no background flush or compaction
// competes with the synced writes, which is what an LSM tree under the log
// did at high load (see docs/benchmarks.md).
//
// Directory: segment files named by a 16-hex-digit sequence number,
// `0000000000000001.wal`, replayed in order. A segment starts with a STATE
// record (hard state, snapshot metadata, and where the log started and
// ended when it was opened), so the segments before it are needed only for
// their entries; once every entry in them is compacted away they go
// (renamed at once, deleted in the background in steps: reclaimDoomed).
//
// Record: length u32 | ~length u32 | crc32 u32 (of the body) | body | 0x5a,
// body[0] = kind. The length's complement tells a damaged length from a
// write cut short by a crash, which a length alone cannot; the last byte is
// never zero, so zeros up to the end of the file are a sector the disk never
// got, not a record that happens to end in zeros.
//   STATE    JSON { hardState, snapshot, start: { index, term },
//            last: { index, term }, written }
//   SAVE     flags u8 (1 snapshot, 2 hard state, 4 entries)
//            [u32 length, JSON snapshot metadata] [f64 term, vote, commit]
//            [a run of entries, codec.ts's encodeRun]
//   SNAPSHOT JSON snapshot metadata (createSnapshot)
//   COMPACT  f64 index, f64 term
// One save is one record, so it lands whole or not at all: recovery stops
// at the first record of the last segment that a crash tore (cut short by
// the end of the file, or with a sector of zeros: nothing after it was ever
// synced) and cuts the file there, once the whole log has checked out. Any
// other bad record is corruption, as is a segment that does not end where
// the next one's STATE says the log ended (unless what is missing was
// compacted away since).
//
// One process at a time: RaftKV opens its MVCC store (which holds a
// LevelDB lock on the data directory) before this log.

import { mkdir, open, readdir, readFile, rename, truncate, unlink, type FileHandle } from 'node:fs/promises';
import { constants } from 'node:fs';
import { join } from 'node:path';
import createDebug from 'debug';
import { assert, InvalidArgumentError } from '../../raft/errors.ts';
import type { ConfState, Entry, HardState, SnapshotMetadata } from '../../raft/types.ts';
import { crc32, decodeRun, encodeRun, snapshotMetadataFromJson } from './codec.ts';
import { DiskLogStorage } from './disk-log.ts';
import { LogCorruptError } from './errors.ts';
import { MemoryLogStorage } from './memory.ts';
import type { LogStorage, LogUpdate } from './types.ts';

const log = createDebug('raftkv:wal');

const KIND_STATE = 1;
const KIND_SAVE = 2;
const KIND_SNAPSHOT = 3;
const KIND_COMPACT = 4;
const SAVE_SNAPSHOT = 1;
const SAVE_HARD_STATE = 2;
const SAVE_ENTRIES = 4;
const FRAME_BYTES = 12;
const RECORD_END = 0x5a;
/** Header and trailing byte. */
const OVERHEAD_BYTES = FRAME_BYTES + 1;
const SECTOR_BYTES = 512;

/** Default size after which the next write starts a new segment. */
export const SEGMENT_BYTES_DEFAULT = 64 * 1024 * 1024;
const SEGMENT_BYTES_MIN = 4096;
/** O_DSYNC where the platform has it (Linux, macOS): a write to the active segment returns once durable. */
const WRITES_SYNC = typeof constants.O_DSYNC === 'number' && constants.O_DSYNC !== 0;
const APPEND_FLAGS = constants.O_WRONLY | constants.O_APPEND | (WRITES_SYNC ? constants.O_DSYNC : 0);
/** Unsynced records wait in memory up to this many bytes before they are written on their own. */
const UNWRITTEN_BYTES_MAX = 256 * 1024;
/** A record larger than this is not something we wrote (the largest is one Ready's entries). */
const RECORD_BYTES_MAX = 1024 * 1024 * 1024;

const SEGMENT_NAME = /^([0-9a-f]{16})\.wal$/;
/**
 * A compacted segment is renamed with this suffix (recovery no longer reads
 * it), then shortened and deleted in the background (reclaim()).
 */
const DOOMED_SUFFIX = '.deleting';
const DOOMED_NAME = /^[0-9a-f]{16}\.wal\.deleting$/;
/**
 * A doomed segment shrinks by at most this much per truncate. Deleting a
 * 64 MiB file at once makes the device discard all its blocks in one go,
 * and every synced write behind that waited ~50 ms for it (measured here);
 * 4 MiB steps kept them under 5 ms. After each step the deletion pauses as
 * long as the step took (at least RECLAIM_PAUSE_MIN_MS): the members of a
 * cluster compact at about the same index, and their deletions back to back
 * kept the device discarding for a quarter of a second.
 */
const RECLAIM_STEP_BYTES = 4 * 1024 * 1024;
const RECLAIM_PAUSE_MIN_MS = 5;
const segmentName = (sequence: number): string => `${sequence.toString(16).padStart(16, '0')}.wal`;

const EMPTY_CONF: ConfState = { voters: [], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };

export interface WalOptions {
  /** A segment that has reached this many bytes is closed and the next write starts a new one. Default 64 MiB. */
  readonly segmentBytes?: number;
}

interface Segment {
  readonly sequence: number;
  readonly path: string;
  /** The highest entry index any record in it wrote (0 if none): it may go once the log is compacted past this. */
  maxIndex: number;
}

export class WalLogStorage extends DiskLogStorage implements LogStorage {
  private constructor(
    private readonly directory: string,
    private readonly segmentBytes: number,
    view: MemoryLogStorage,
    /** Oldest first; the last is the one being written. */
    private readonly segments: Segment[],
    private handle: FileHandle,
    private activeBytes: number,
  ) {
    super(view);
  }

  /** Records that need no sync, waiting for the next write (append()); bounded by UNWRITTEN_BYTES_MAX. */
  private unwritten: Uint8Array[] = [];
  private unwrittenBytes = 0;

  static async open(directory: string, options: WalOptions = {}): Promise<WalLogStorage> {
    if (typeof directory !== 'string' || directory.length === 0) throw new InvalidArgumentError('directory must be a non-empty string');
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object');
    const segmentBytes = options.segmentBytes ?? SEGMENT_BYTES_DEFAULT;
    if (!Number.isSafeInteger(segmentBytes) || segmentBytes < SEGMENT_BYTES_MIN) {
      throw new InvalidArgumentError(`segmentBytes must be an integer of at least ${SEGMENT_BYTES_MIN}, got ${String(segmentBytes)}`);
    }
    await mkdir(directory, { recursive: true });
    await reclaimDoomed(directory, () => false); // left by a run that stopped before it finished
    const { view, segments } = await recover(directory);
    // New writes go to a new segment: the old tail stays exactly as recovery read it.
    const sequence = segments.length === 0 ? 1 : segments[segments.length - 1]!.sequence + 1;
    const { handle, bytes } = await createSegment(directory, sequence, view);
    segments.push({ sequence, path: join(directory, segmentName(sequence)), maxIndex: 0 });
    return new WalLogStorage(directory, segmentBytes, view, segments, handle, bytes);
  }

  /** How many segment files the log spans now (the last is being written). */
  get segmentCount(): number {
    return this.segments.length;
  }

  // ---- Writes: disk first, then the view; one at a time (DiskLogStorage.exclusive) ----

  save(update: LogUpdate): Promise<void> {
    return this.exclusive(() => this.saveNow(update));
  }

  private async saveNow(update: LogUpdate): Promise<void> {
    this.ensureUsable();
    this.view.validate(update);
    const { snapshot, entries, hardState } = update;
    if (snapshot === null && entries.length === 0 && hardState === null) return;
    await this.append(encodeSave(update), update.sync);
    if (entries.length > 0) this.active.maxIndex = Math.max(this.active.maxIndex, entries[entries.length - 1]!.index);
    this.view.saveSync(update);
  }

  async bootstrap(confState: ConfState): Promise<void> {
    this.ensureUsable();
    if (!this.view.isEmpty()) throw new InvalidArgumentError('cannot bootstrap a log that is not empty');
    await this.save({ snapshot: { index: 1, term: 1, confState }, entries: [], hardState: { term: 1, vote: 0, commit: 1 }, sync: true });
  }

  createSnapshot(metadata: SnapshotMetadata): Promise<void> {
    return this.exclusive(async () => {
      this.ensureUsable();
      this.view.validateSnapshot(metadata);
      await this.append(encodeBody(KIND_SNAPSHOT, encodeJson(metadata)), true);
      this.view.createSnapshotSync(metadata);
    });
  }

  compact(compactIndex: number): Promise<void> {
    return this.exclusive(() => this.compactNow(compactIndex));
  }

  private async compactNow(compactIndex: number): Promise<void> {
    this.ensureUsable();
    if (!this.view.validateCompact(compactIndex)) return;
    let doomed = 0;
    while (doomed < this.segments.length - 1 && this.segments[doomed]!.maxIndex <= compactIndex) doomed += 1;
    const body = new Uint8Array(17);
    body[0] = KIND_COMPACT;
    const data = new DataView(body.buffer);
    data.setFloat64(1, compactIndex);
    data.setFloat64(9, this.view.term(compactIndex));
    // Synced only if segments go: recovery then needs it to know their entries are not missing.
    // Otherwise, if it is lost, the old entries simply reappear on restart.
    await this.append(encodeBody(KIND_COMPACT, body.subarray(1)), doomed > 0);
    this.view.compactSync(compactIndex);
    if (doomed === 0) return;
    // Oldest first, so a crash part way leaves a run of segments that still replays. Renamed, not deleted: the
    // deletion runs beside later writes (reclaim), and a file renamed is out of recovery's sight.
    for (const segment of this.segments.slice(0, doomed)) {
      await this.guard(() => rename(segment.path, `${segment.path}${DOOMED_SUFFIX}`));
      this.segments.shift();
    }
    await this.guard(() => syncDirectory(this.directory));
    log('compacted through %d: %d segment(s) to delete', compactIndex, doomed);
    this.reclaim();
  }

  private reclaiming: Promise<void> = Promise.resolve();
  private reclaimStopped = false;

  /** Deletes the doomed segments in the background, one at a time, each shortened in steps first. */
  private reclaim(): void {
    this.reclaiming = this.reclaiming
      .then(() => reclaimDoomed(this.directory, () => this.reclaimStopped))
      // Garbage left behind costs only disk space until the next open deletes it; it is no reason to stop.
      .catch((error: unknown) => log('deleting compacted segments failed: %O', error));
  }

  /** Resolves when the background deletion of compacted segments has caught up (for tests). */
  reclaimSettled(): Promise<void> {
    return this.reclaiming;
  }

  async close(): Promise<void> {
    if (!(await this.closeWrites())) return;
    this.reclaimStopped = true; // what is left is deleted at the next open
    await this.reclaiming;
    // Records still in memory need no sync, but a clean close keeps them (a restart then knows the commit index).
    if (this.usable) await this.writeOut(null).catch(() => undefined);
    await this.handle.close().catch(() => undefined);
  }

  private get active(): Segment {
    return this.segments[this.segments.length - 1]!;
  }

  /**
   * Appends one framed record to the active segment (after rolling over to a
   * new one if it is full). A record that need not be synced (a new commit
   * index, a compaction that deletes nothing) waits in memory and goes out
   * with the next write, as etcd's wal buffers it: a crash may lose it
   * either way, and a Ready that only moved the commit index then costs no
   * system call.
   */
  private async append(frame: Uint8Array, sync: boolean): Promise<void> {
    // Not once the segment is full: what waits is written to the segment it was saved in, never after a
    // rollover's STATE record (which already describes it).
    if (!sync && this.activeBytes < this.segmentBytes && this.unwrittenBytes + frame.length <= UNWRITTEN_BYTES_MAX) {
      this.unwritten.push(frame);
      this.unwrittenBytes += frame.length;
      return;
    }
    await this.guard(async () => {
      if (this.activeBytes >= this.segmentBytes) await this.rollOver();
      await this.writeOut(frame);
      if (sync && !WRITES_SYNC) await this.handle.datasync();
    });
  }

  /** Writes the records waiting in memory, then `frame` (if any), at the end of the active segment. */
  private async writeOut(frame: Uint8Array | null): Promise<void> {
    let bytes: Uint8Array;
    if (this.unwritten.length === 0) {
      if (frame === null) return;
      bytes = frame;
    } else {
      if (frame !== null) this.unwritten.push(frame);
      bytes = this.unwritten.length === 1 ? this.unwritten[0]! : Buffer.concat(this.unwritten);
    }
    this.unwritten = [];
    this.unwrittenBytes = 0;
    let written = 0;
    while (written < bytes.length) {
      const { bytesWritten } = await this.handle.write(bytes, written, bytes.length - written, null);
      if (bytesWritten <= 0) throw new Error('the segment write made no progress');
      written += bytesWritten;
    }
    this.activeBytes += bytes.length;
  }

  private async rollOver(): Promise<void> {
    // Records wait only while the segment has room (append()), and every write takes them along.
    assert(this.unwritten.length === 0, 'no unsynced record waits when a full segment rolls over');
    // The new segment's STATE record describes every write so far: they must be durable first.
    if (!WRITES_SYNC) await this.handle.datasync();
    await this.handle.close();
    const sequence = this.active.sequence + 1;
    const { handle, bytes } = await createSegment(this.directory, sequence, this.view);
    this.handle = handle;
    this.activeBytes = bytes;
    this.segments.push({ sequence, path: join(this.directory, segmentName(sequence)), maxIndex: 0 });
  }

  /** Runs a disk operation; any failure stops the storage for good (never retry a failed sync). */
  private async guard(operation: () => Promise<void>): Promise<void> {
    try {
      await operation();
    } catch (error) {
      log('log write failed: %O', error);
      throw this.failed(error);
    }
  }

}

// ---- Encoding ----

function frameOf(bodyLength: number): { frame: Uint8Array; view: DataView } {
  const frame = new Uint8Array(OVERHEAD_BYTES + bodyLength);
  return { frame, view: new DataView(frame.buffer) };
}

function seal(frame: Uint8Array, view: DataView): Uint8Array {
  const length = frame.length - OVERHEAD_BYTES;
  view.setUint32(0, length);
  view.setUint32(4, ~length >>> 0);
  view.setUint32(8, crc32(frame, FRAME_BYTES, FRAME_BYTES + length));
  frame[FRAME_BYTES + length] = RECORD_END;
  return frame;
}

function encodeBody(kind: number, payload: Uint8Array): Uint8Array {
  const { frame, view } = frameOf(1 + payload.length);
  frame[FRAME_BYTES] = kind;
  frame.set(payload, FRAME_BYTES + 1);
  return seal(frame, view);
}

function encodeSave(update: LogUpdate): Uint8Array {
  const snapshot = update.snapshot === null ? null : encodeJson(update.snapshot);
  const run = update.entries.length === 0 ? null : encodeRun(update.entries);
  const length = 2 + (snapshot === null ? 0 : 4 + snapshot.length) + (update.hardState === null ? 0 : 24) + (run === null ? 0 : run.length);
  const { frame, view } = frameOf(length);
  let offset = FRAME_BYTES;
  frame[offset++] = KIND_SAVE;
  frame[offset++] = (snapshot === null ? 0 : SAVE_SNAPSHOT) | (update.hardState === null ? 0 : SAVE_HARD_STATE) | (run === null ? 0 : SAVE_ENTRIES);
  if (snapshot !== null) {
    view.setUint32(offset, snapshot.length);
    frame.set(snapshot, offset + 4);
    offset += 4 + snapshot.length;
  }
  if (update.hardState !== null) {
    view.setFloat64(offset, update.hardState.term);
    view.setFloat64(offset + 8, update.hardState.vote);
    view.setFloat64(offset + 16, update.hardState.commit);
    offset += 24;
  }
  if (run !== null) frame.set(run, offset);
  return seal(frame, view);
}

interface ReplayState {
  hardState: HardState;
  snapshot: SnapshotMetadata;
  start: { index: number; term: number };
  written: boolean;
}

interface StateRecord extends ReplayState {
  /** The log's last entry when the segment was opened (the start if it had none). */
  readonly last: { index: number; term: number };
}

function encodeState(state: StateRecord): Uint8Array {
  const json = JSON.stringify({ hardState: state.hardState, snapshot: state.snapshot, start: state.start, last: state.last, written: state.written });
  return encodeBody(KIND_STATE, new TextEncoder().encode(json));
}

async function createSegment(directory: string, sequence: number, view: MemoryLogStorage): Promise<{ handle: FileHandle; bytes: number }> {
  const path = join(directory, segmentName(sequence));
  const { hardState } = view.initialState();
  const frame = encodeState({
    hardState,
    snapshot: view.snapshot(),
    start: { index: view.firstIndex() - 1, term: view.term(view.firstIndex() - 1) },
    last: { index: view.lastIndex(), term: view.term(view.lastIndex()) },
    written: !view.isEmpty(),
  });
  const handle = await open(path, 'wx');
  try {
    await handle.write(frame, 0, frame.length, null);
    await handle.datasync();
    await syncDirectory(directory);
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw error;
  }
  await handle.close();
  // Reopened for appending, every write durable when it returns: each lands at the end, whatever the file position.
  return { handle: await open(path, APPEND_FLAGS), bytes: frame.length };
}

/**
 * Deletes the doomed segments of a directory, each shortened RECLAIM_STEP_BYTES
 * at a time from its end first; stops between steps once `stopped()`.
 */
async function reclaimDoomed(directory: string, stopped: () => boolean): Promise<void> {
  const names = (await readdir(directory)).filter((name) => DOOMED_NAME.test(name)).sort();
  for (const name of names) {
    const path = join(directory, name);
    const handle = await open(path, 'r+');
    try {
      let size = (await handle.stat()).size;
      while (size > 0) {
        if (stopped()) return;
        size = Math.max(0, size - RECLAIM_STEP_BYTES);
        const startedMs = Date.now();
        await handle.truncate(size);
        const pauseMs = Math.max(RECLAIM_PAUSE_MIN_MS, Date.now() - startedMs);
        await new Promise((resolve) => setTimeout(resolve, pauseMs));
      }
    } finally {
      await handle.close();
    }
    if (stopped()) return;
    await unlink(path);
  }
}

/** fsync of a directory or file by path: makes a file's creation, removal or truncation durable. */
async function syncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

const syncDirectory = syncPath;

const encodeJson = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value));

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as unknown;
  } catch {
    return null;
  }
}

// ---- Recovery ----

const isIndex = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * Replays every segment in order into a view of the log and checks it:
 * throws LogCorruptError naming the first bad index (or 0 for metadata).
 */
async function recover(directory: string): Promise<{ view: MemoryLogStorage; segments: Segment[] }> {
  const names = (await readdir(directory)).filter((name) => SEGMENT_NAME.test(name)).sort();
  const segments: Segment[] = [];
  const state: ReplayState = {
    hardState: { term: 0, vote: 0, commit: 0 },
    snapshot: { index: 0, term: 0, confState: EMPTY_CONF },
    start: { index: 0, term: 0 },
    written: false,
  };
  // The entries replayed so far: a suffix of the log as it was written, from index `listFirst`.
  // Entries below it may be in segments already deleted; the final log start must cover them.
  let list: Entry[] = [];
  let listFirst = 1;
  const dropThrough = (index: number): void => {
    if (index < listFirst) return;
    list = list.slice(Math.min(list.length, index + 1 - listFirst));
    listFirst = index + 1;
  };

  let tornTail: { path: string; offset: number; bytes: number; empty: boolean } | null = null;
  for (let position = 0; position < names.length; position++) {
    const name = names[position]!;
    const path = join(directory, name);
    const isLast = position === names.length - 1;
    const bytes = await readFile(path);
    const segment: Segment = { sequence: Number.parseInt(SEGMENT_NAME.exec(name)![1]!, 16), path, maxIndex: 0 };
    const data = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let offset = 0;
    let records = 0;
    while (offset < bytes.length) {
      const body = readRecord(bytes, data, offset);
      if (body === null) break;
      const kind = body[0];
      if (records === 0 && kind !== KIND_STATE) throw new LogCorruptError(0, `segment ${name} does not start with its state record`);
      if (kind === KIND_STATE) {
        const decoded = decodeState(body.subarray(1));
        if (decoded === null) throw new LogCorruptError(0, `the state record of segment ${name} does not decode`);
        // The segments before must end where the log ended when this one was opened. If they do not (no
        // segment before; entries only in deleted segments; records lost at the end of an older segment, cut
        // at a record boundary), the log is known only from after `last`: the final check then requires
        // everything through `last` to be compacted away, and refuses the log otherwise.
        const replayedLast = list.length > 0 ? list[list.length - 1]! : null;
        if (replayedLast === null || replayedLast.index !== decoded.last.index || replayedLast.term !== decoded.last.term) {
          if (replayedLast !== null) log('segment %s: the segments before end at %d, not at %d as it records', name, replayedLast.index, decoded.last.index);
          list = [];
          listFirst = Math.max(listFirst, decoded.last.index + 1);
        }
        state.hardState = decoded.hardState;
        state.snapshot = decoded.snapshot;
        state.start = decoded.start;
        state.written = state.written || decoded.written;
        dropThrough(decoded.start.index);
      } else if (kind === KIND_SAVE) {
        const save = decodeSave(body);
        if (save === null) throw new LogCorruptError(Math.max(listFirst, 0), `a save record in segment ${name} at byte ${offset} does not decode`);
        state.written = true;
        if (save.snapshot !== null) {
          state.snapshot = save.snapshot;
          state.start = { index: save.snapshot.index, term: save.snapshot.term };
          list = [];
          listFirst = save.snapshot.index + 1;
        }
        if (save.entries.length > 0) {
          const first = save.entries[0]!.index;
          for (let i = 0; i < save.entries.length; i++) {
            const entry = save.entries[i];
            if (entry === null || entry === undefined) throw new LogCorruptError(first + i, `checksum mismatch or malformed entry in segment ${name}`);
            if (entry.index !== first + i) throw new LogCorruptError(first + i, `entry stored as ${first + i} says it is ${entry.index}`);
          }
          const next = listFirst + list.length;
          if (first > next || first < listFirst) {
            // Either the entries before it were in a deleted segment, or it rewrites the log from below what we hold.
            list = [];
            listFirst = first;
          } else {
            list.length = first - listFirst;
          }
          for (const entry of save.entries as Entry[]) list.push(entry);
          segment.maxIndex = Math.max(segment.maxIndex, first + save.entries.length - 1);
        }
        if (save.hardState !== null) state.hardState = save.hardState;
      } else if (kind === KIND_SNAPSHOT) {
        const metadata = snapshotMetadataFromJson(parseJson(body.subarray(1)));
        if (metadata === null) throw new LogCorruptError(0, `a snapshot record in segment ${name} does not decode`);
        state.snapshot = metadata;
      } else if (kind === KIND_COMPACT && body.length === 17) {
        const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
        const index = view.getFloat64(1);
        const term = view.getFloat64(9);
        if (!isIndex(index) || !isIndex(term)) throw new LogCorruptError(0, `a compaction record in segment ${name} does not decode`);
        if (index > state.start.index) {
          state.start = { index, term };
          dropThrough(index);
        }
      } else {
        throw new LogCorruptError(0, `segment ${name} holds a record of unknown kind ${String(kind)} at byte ${offset}`);
      }
      records += 1;
      offset += OVERHEAD_BYTES + body.length;
    }
    if (offset < bytes.length) {
      const at = listFirst + list.length;
      if (!isLast) throw new LogCorruptError(at, `segment ${name} is damaged at byte ${offset} and is not the last segment`);
      if (!isTorn(bytes, data, offset)) {
        throw new LogCorruptError(at, `segment ${name} holds a bad record at byte ${offset} that a crash cannot leave (damage, not a torn write)`);
      }
      // A write torn by a crash: it was never synced, so it was never acknowledged. Cut once the whole log checks out.
      tornTail = { path, offset, bytes: bytes.length, empty: records === 0 };
    } else if (records === 0) {
      if (!isLast) throw new LogCorruptError(0, `segment ${name} is empty and is not the last segment`);
      tornTail = { path, offset: 0, bytes: 0, empty: true };
    }
    if (records > 0) segments.push(segment);
  }

  dropThrough(state.start.index);
  const { hardState, snapshot, start } = state;
  if (listFirst > start.index + 1) {
    throw new LogCorruptError(start.index + 1, `entry ${start.index + 1} is missing (the oldest stored entry is ${listFirst})`);
  }
  let previousTerm = start.term;
  for (const entry of list) {
    if (entry.term < previousTerm) throw new LogCorruptError(entry.index, `term ${entry.term} is below the previous term ${previousTerm}`);
    previousTerm = entry.term;
  }
  const lastIndex = start.index + list.length;
  if (hardState.commit > lastIndex) throw new LogCorruptError(lastIndex + 1, `committed index ${hardState.commit} is beyond the last entry ${lastIndex}`);
  if (snapshot.index > lastIndex || snapshot.index < start.index) {
    throw new LogCorruptError(snapshot.index, `snapshot ${snapshot.index} is outside the stored log [${start.index}, ${lastIndex}]`);
  }
  // The log checks out: only now change files (a refused open leaves the directory as it found it).
  if (tornTail !== null) {
    if (tornTail.empty) {
      // Its state record never made it to disk: the segment holds nothing.
      log('segment %s: removing it, its state record is torn', tornTail.path);
      await unlink(tornTail.path);
      await syncDirectory(directory);
    } else {
      log('segment %s: cutting a torn tail of %d bytes at byte %d', tornTail.path, tornTail.bytes - tornTail.offset, tornTail.offset);
      await truncate(tornTail.path, tornTail.offset);
    }
  }
  // The newest segment may end in writes that were never synced (sync: false saves, then a restart):
  // sync it before a new segment follows it, or a power loss could leave an older segment torn.
  if (segments.length > 0) await syncPath(segments[segments.length - 1]!.path);
  const view = MemoryLogStorage.fromRecovered({
    hardState,
    snapshot,
    compactedIndex: start.index,
    compactedTerm: start.term,
    entries: list,
    written: state.written,
  });
  return { view, segments };
}

/** The record's length if its header is whole and consistent (length and complement agree), else null. */
function headerLength(bytes: Uint8Array, data: DataView, offset: number): number | null {
  if (offset + FRAME_BYTES > bytes.length) return null;
  const length = data.getUint32(offset);
  if (length === 0 || length > RECORD_BYTES_MAX || data.getUint32(offset + 4) !== (~length >>> 0)) return null;
  return length;
}

/**
 * Whether the bad record at offset is what a crash leaves of a write that was
 * never synced: its header cut short by the end of the file; a whole header
 * whose record runs past the end of the file; or zeros where the disk never
 * got a sector of it (a whole 512-byte sector of the file zeroed from a
 * boundary inside the record, which may run on into the records written with
 * it in the same write, or zeros from a sector boundary to the end of the
 * file). Anything else, a complete record failing its checksum or a header
 * whose length and complement disagree, is damage, and refusing to start is
 * safer than cutting away what may be acknowledged writes (etcd's wal
 * decides so too).
 */
function isTorn(bytes: Uint8Array, data: DataView, offset: number): boolean {
  if (offset + FRAME_BYTES > bytes.length) return true;
  const length = headerLength(bytes, data, offset);
  if (length !== null && offset + OVERHEAD_BYTES + length > bytes.length) return true;
  const end = length === null ? bytes.length : offset + OVERHEAD_BYTES + length;
  for (let sector = Math.floor(offset / SECTOR_BYTES) * SECTOR_BYTES; sector < end; sector += SECTOR_BYTES) {
    const from = Math.max(sector, offset);
    // The lost sector is the file's, not the record's: one write may carry several records (append()).
    const to = Math.min(sector + SECTOR_BYTES, bytes.length);
    let zeros = true;
    for (let i = from; i < to && zeros; i++) zeros = bytes[i] === 0;
    if (zeros && (to - from === SECTOR_BYTES || to === bytes.length)) return true;
  }
  return false;
}

/** The body of the record at offset, or null if it is incomplete, its header is inconsistent, or it fails its checksum. */
function readRecord(bytes: Uint8Array, data: DataView, offset: number): Uint8Array | null {
  const length = headerLength(bytes, data, offset);
  if (length === null || offset + OVERHEAD_BYTES + length > bytes.length) return null;
  if (bytes[offset + FRAME_BYTES + length] !== RECORD_END) return null;
  if (data.getUint32(offset + 8) !== crc32(bytes, offset + FRAME_BYTES, offset + FRAME_BYTES + length)) return null;
  return bytes.subarray(offset + FRAME_BYTES, offset + FRAME_BYTES + length);
}

function decodeState(payload: Uint8Array): StateRecord | null {
  const value = parseJson(payload) as { hardState?: Partial<HardState>; snapshot?: unknown; start?: { index?: unknown; term?: unknown }; last?: { index?: unknown; term?: unknown }; written?: unknown } | null;
  if (typeof value !== 'object' || value === null) return null;
  const hard = value.hardState;
  if (hard === undefined || !isIndex(hard.term) || !isIndex(hard.vote) || !isIndex(hard.commit)) return null;
  const snapshot = snapshotMetadataFromJson(value.snapshot);
  if (snapshot === null) return null;
  const { start, last } = value;
  if (start === undefined || !isIndex(start.index) || !isIndex(start.term) || typeof value.written !== 'boolean') return null;
  if (last === undefined || !isIndex(last.index) || !isIndex(last.term) || last.index < start.index) return null;
  return {
    hardState: { term: hard.term, vote: hard.vote, commit: hard.commit },
    snapshot,
    start: { index: start.index, term: start.term },
    last: { index: last.index, term: last.term },
    written: value.written,
  };
}

function decodeSave(body: Uint8Array): { snapshot: SnapshotMetadata | null; hardState: HardState | null; entries: (Entry | null)[] } | null {
  if (body.length < 2) return null;
  const flags = body[1]!;
  if ((flags & ~(SAVE_SNAPSHOT | SAVE_HARD_STATE | SAVE_ENTRIES)) !== 0) return null;
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  let offset = 2;
  let snapshot: SnapshotMetadata | null = null;
  let hardState: HardState | null = null;
  let entries: (Entry | null)[] = [];
  if (flags & SAVE_SNAPSHOT) {
    if (offset + 4 > body.length) return null;
    const length = view.getUint32(offset);
    if (offset + 4 + length > body.length) return null;
    snapshot = snapshotMetadataFromJson(parseJson(body.subarray(offset + 4, offset + 4 + length)));
    if (snapshot === null) return null;
    offset += 4 + length;
  }
  if (flags & SAVE_HARD_STATE) {
    if (offset + 24 > body.length) return null;
    const term = view.getFloat64(offset);
    const vote = view.getFloat64(offset + 8);
    const commit = view.getFloat64(offset + 16);
    if (!isIndex(term) || !isIndex(vote) || !isIndex(commit)) return null;
    hardState = { term, vote, commit };
    offset += 24;
  }
  if (flags & SAVE_ENTRIES) {
    const run = decodeRun(body.subarray(offset));
    if (run === null || run.length === 0) return null;
    entries = run;
    offset = body.length;
  }
  return offset === body.length ? { snapshot, hardState, entries } : null;
}
