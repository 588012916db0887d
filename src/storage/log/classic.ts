// The Raft log on classic-level: every save() is one atomic batch (synced
// when asked), and open() recovers hard state, snapshot metadata and entries,
// verifying each entry's checksum and that indexes run contiguously. The
// core's synchronous read view is a MemoryLogStorage kept in step with the
// disk (entries since the last compaction stay in memory). A failed write
// stops the storage for good: it may or may not have reached the disk, and
// retrying after a failed fsync is how data gets lost (fsyncgate).

import { ClassicLevel } from 'classic-level';
import createDebug from 'debug';
import { InvalidArgumentError } from '../../raft/errors.ts';
import type { ConfState, Entry, HardState, SnapshotMetadata } from '../../raft/types.ts';
import {
  decodeRun,
  decodeHardState,
  decodeLogStart,
  decodeSnapshotMetadata,
  encodeRun,
  encodeHardState,
  encodeLogStart,
  encodeSnapshotMetadata,
  ENTRY_KEY_HIGH,
  ENTRY_KEY_LOW,
  entryKey,
  HARD_STATE_KEY,
  indexOfEntryKey,
  LOG_START_KEY,
  SNAPSHOT_KEY,
} from './codec.ts';
import { DiskLogStorage } from './disk-log.ts';
import { LogCorruptError, StorageFailedError } from './errors.ts';
import { MemoryLogStorage } from './memory.ts';
import type { LogStorage, LogUpdate } from './types.ts';

const log = createDebug('raftkv:storage');

export { LogCorruptError, StorageFailedError };

type Database = ClassicLevel<Uint8Array, Uint8Array>;
/** Entries [start, end] stored as one record keyed by start. */
interface Run {
  readonly start: number;
  readonly end: number;
}

type Operation = { type: 'put'; key: Uint8Array; value: Uint8Array } | { type: 'del'; key: Uint8Array };

// A log entry lives from its save until the snapshot after it compacts the
// log (10,000 entries by default): a memtable this size holds that span at
// 256-byte entries, so few short-lived runs are flushed and recompacted.
// Entries are already packed and checksummed; snappy would only cost CPU.
const LOG_WRITE_BUFFER_BYTES = 16 * 1024 * 1024;

const EMPTY_CONF: ConfState = { voters: [], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };

export class ClassicLogStorage extends DiskLogStorage implements LogStorage {
  private constructor(
    private readonly db: Database,
    view: MemoryLogStorage,
    /** The stored runs of entries, by first index (some may start below the log's first index). */
    private runs: Run[],
  ) {
    super(view);
  }

  static async open(directory: string): Promise<ClassicLogStorage> {
    if (typeof directory !== 'string' || directory.length === 0) throw new InvalidArgumentError('directory must be a non-empty string');
    const db: Database = new ClassicLevel(directory, { keyEncoding: 'view', valueEncoding: 'view', writeBufferSize: LOG_WRITE_BUFFER_BYTES, compression: false });
    await db.open();
    try {
      const { view, runs } = await recover(db);
      return new ClassicLogStorage(db, view, runs);
    } catch (error) {
      await db.close();
      throw error;
    }
  }

  // ---- Writes: disk first, then the view; one at a time (DiskLogStorage.exclusive) ----
  //
  // Each write reads the stored runs, awaits the disk, then replaces them: a
  // run left on disk but forgotten makes the log unreadable on restart.

  save(update: LogUpdate): Promise<void> {
    return this.exclusive(() => this.saveNow(update));
  }

  private async saveNow(update: LogUpdate): Promise<void> {
    this.ensureUsable();
    this.view.validate(update);
    const operations: Operation[] = [];
    // The runs from index `kept` on are replaced by `added` once the write is durable. Only
    // the tail is touched: runs are in index order, and a save replaces the log from its first entry on.
    let kept = this.runs.length;
    const added: Run[] = [];
    if (update.snapshot !== null) {
      // The whole log is replaced.
      for (const run of this.runs) operations.push({ type: 'del', key: entryKey(run.start) });
      kept = 0;
      operations.push({ type: 'put', key: SNAPSHOT_KEY, value: encodeSnapshotMetadata(update.snapshot) });
      operations.push({ type: 'put', key: LOG_START_KEY, value: encodeLogStart({ index: update.snapshot.index, term: update.snapshot.term }) });
    }
    const entries = update.entries;
    if (entries.length > 0) {
      const first = entries[0]!.index;
      const last = entries[entries.length - 1]!.index;
      kept = this.truncateRuns(kept, first, operations, added);
      operations.push({ type: 'put', key: entryKey(first), value: encodeRun(entries) });
      added.push({ start: first, end: last });
    }
    if (update.hardState !== null) operations.push({ type: 'put', key: HARD_STATE_KEY, value: encodeHardState(update.hardState) });
    if (operations.length > 0) await this.write(operations, update.sync);
    this.view.saveSync(update);
    this.runs.length = kept;
    for (const run of added) this.runs.push(run);
  }

  /**
   * Removes every stored entry at or after `from` among the first `count`
   * runs: runs that start there or later are deleted; a run that straddles
   * it is rewritten with its entries before `from` (those still in the log)
   * and goes to `added`. Returns how many runs stay as they are.
   */
  private truncateRuns(count: number, from: number, operations: Operation[], added: Run[]): number {
    let kept = count;
    while (kept > 0 && this.runs[kept - 1]!.end >= from) kept -= 1;
    for (let position = kept; position < count; position++) {
      const run = this.runs[position]!;
      operations.push({ type: 'del', key: entryKey(run.start) });
      const low = Math.max(run.start, this.view.firstIndex());
      if (run.start < from && low < from) {
        operations.push({ type: 'put', key: entryKey(low), value: encodeRun(this.view.entries(low, from, Number.POSITIVE_INFINITY)) });
        added.push({ start: low, end: from - 1 });
      }
    }
    return kept;
  }

  async bootstrap(confState: ConfState): Promise<void> {
    this.ensureUsable();
    if (!this.view.isEmpty()) throw new InvalidArgumentError('cannot bootstrap a log that is not empty');
    await this.save({ snapshot: { index: 1, term: 1, confState }, entries: [], hardState: { term: 1, vote: 0, commit: 1 }, sync: true });
  }

  createSnapshot(metadata: SnapshotMetadata): Promise<void> {
    return this.exclusive(() => this.createSnapshotNow(metadata));
  }

  private async createSnapshotNow(metadata: SnapshotMetadata): Promise<void> {
    this.ensureUsable();
    this.view.validateSnapshot(metadata);
    await this.write([{ type: 'put', key: SNAPSHOT_KEY, value: encodeSnapshotMetadata(metadata) }], true);
    this.view.createSnapshotSync(metadata);
  }

  compact(compactIndex: number): Promise<void> {
    return this.exclusive(() => this.compactNow(compactIndex));
  }

  private async compactNow(compactIndex: number): Promise<void> {
    this.ensureUsable();
    if (!this.view.validateCompact(compactIndex)) return;
    const operations: Operation[] = [];
    const kept: Run[] = [];
    // Whole runs at or below the compaction go; a straddling run stays (recovery skips its old entries).
    for (const run of this.runs) {
      if (run.end <= compactIndex) operations.push({ type: 'del', key: entryKey(run.start) });
      else kept.push(run);
    }
    operations.push({ type: 'put', key: LOG_START_KEY, value: encodeLogStart({ index: compactIndex, term: this.view.term(compactIndex) }) });
    // Not synced: if lost, the old entries simply reappear on restart.
    await this.write(operations, false);
    this.view.compactSync(compactIndex);
    this.runs = kept;
  }

  async close(): Promise<void> {
    if (!(await this.closeWrites())) return;
    await this.db.close();
  }

  private async write(operations: Operation[], sync: boolean): Promise<void> {
    try {
      // A chained batch: abstract-level's array batch copies and re-validates every operation object.
      const batch = this.db.batch();
      for (const operation of operations) {
        if (operation.type === 'put') batch.put(operation.key, operation.value);
        else batch.del(operation.key);
      }
      await batch.write({ sync });
    } catch (error) {
      log('log write failed: %O', error);
      throw this.failed(error);
    }
  }

}

/** Reads everything back and checks it; throws LogCorruptError naming the first bad index. */
async function recover(db: Database): Promise<{ view: MemoryLogStorage; runs: Run[] }> {
  const [hardRecord, snapshotRecord, startRecord] = await db.getMany([HARD_STATE_KEY, SNAPSHOT_KEY, LOG_START_KEY]);
  const written = hardRecord !== undefined || snapshotRecord !== undefined;
  const hardState: HardState | null = hardRecord === undefined ? { term: 0, vote: 0, commit: 0 } : decodeHardState(hardRecord);
  if (hardState === null) throw new LogCorruptError(0, 'the hard state record does not decode');
  const snapshot = snapshotRecord === undefined ? { index: 0, term: 0, confState: EMPTY_CONF } : decodeSnapshotMetadata(snapshotRecord);
  if (snapshot === null) throw new LogCorruptError(0, 'the snapshot record does not decode');
  const start = startRecord === undefined ? { index: snapshot.index, term: snapshot.term } : decodeLogStart(startRecord);
  if (start === null) throw new LogCorruptError(0, 'the log start record does not decode');

  const entries: Entry[] = [];
  const runs: Run[] = [];
  let expected = start.index + 1;
  let previousTerm = start.term;
  for await (const [key, value] of db.iterator({ gte: ENTRY_KEY_LOW, lt: ENTRY_KEY_HIGH })) {
    const runStart = indexOfEntryKey(key);
    const run = decodeRun(value);
    if (run === null || run.length === 0) throw new LogCorruptError(Math.max(runStart, expected), `the run of entries stored at ${runStart} is malformed`);
    runs.push({ start: runStart, end: runStart + run.length - 1 });
    for (let position = 0; position < run.length; position++) {
      const index = runStart + position;
      const entry = run[position];
      if (index <= start.index) continue; // left behind by a compaction that was not synced: harmless
      if (index !== expected) throw new LogCorruptError(expected, `entry ${expected} is missing (next stored entry is ${index})`);
      if (entry === null || entry === undefined) throw new LogCorruptError(index, 'checksum mismatch or malformed entry');
      if (entry.index !== index) throw new LogCorruptError(index, `entry stored as ${index} says it is ${entry.index}`);
      if (entry.term < previousTerm) throw new LogCorruptError(index, `term ${entry.term} is below the previous term ${previousTerm}`);
      entries.push(entry);
      previousTerm = entry.term;
      expected += 1;
    }
  }
  const lastIndex = start.index + entries.length;
  if (hardState.commit > lastIndex) throw new LogCorruptError(lastIndex + 1, `committed index ${hardState.commit} is beyond the last entry ${lastIndex}`);
  if (snapshot.index > lastIndex || snapshot.index < start.index) {
    throw new LogCorruptError(snapshot.index, `snapshot ${snapshot.index} is outside the stored log [${start.index}, ${lastIndex}]`);
  }
  const view = MemoryLogStorage.fromRecovered({ hardState, snapshot, compactedIndex: start.index, compactedTerm: start.term, entries, written });
  return { view, runs };
}
