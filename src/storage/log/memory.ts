// The Raft log kept in memory only: for tests, the deterministic simulator
// and benchmarks of the core. Writes apply synchronously (saveSync) and the
// async LogStorage methods resolve at once. clone() copies what was "on disk"
// at that moment, which is how the simulator models a crash.

import { assert, InvalidArgumentError, LogCompactedError, LogUnavailableError, NodeStoppedError } from '../../raft/errors.ts';
import type { InitialState } from '../../raft/storage.ts';
import { EntryType } from '../../raft/types.ts';
import type { ConfState, Entry, HardState, SnapshotMetadata } from '../../raft/types.ts';
import type { LogStorage, LogUpdate } from './types.ts';

const EMPTY_CONF: ConfState = { voters: [], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
const NO_BYTES = new Uint8Array(0);

export class MemoryLogStorage implements LogStorage {
  private hardState: HardState = { term: 0, vote: 0, commit: 0 };
  private latestSnapshot: SnapshotMetadata = { index: 0, term: 0, confState: EMPTY_CONF };
  /** Position i holds index compactedIndex + 1 + i (compactedIndex/compactedTerm is the dummy before them). */
  private columns = new EntryColumns();
  private compactedIndex = 0;
  private compactedTerm = 0;
  private written = false;
  private closed = false;

  initialState(): InitialState {
    this.ensureOpen();
    return { hardState: this.hardState, confState: this.latestSnapshot.confState };
  }

  entries(lo: number, hi: number, maxBytes: number): readonly Entry[] {
    this.ensureOpen();
    if (lo < this.firstIndex()) throw new LogCompactedError(lo, this.firstIndex());
    if (hi > this.lastIndex() + 1) throw new LogUnavailableError(hi - 1, this.lastIndex());
    const result: Entry[] = [];
    let bytes = 0;
    for (let index = lo; index < hi; index++) {
      const entry = this.columns.entry(index - this.compactedIndex - 1, index);
      if (result.length > 0 && bytes + entry.data.length > maxBytes) break;
      result.push(entry);
      bytes += entry.data.length;
    }
    return result;
  }

  term(index: number): number {
    this.ensureOpen();
    if (index < this.compactedIndex) throw new LogCompactedError(index, this.firstIndex());
    if (index > this.lastIndex()) throw new LogUnavailableError(index, this.lastIndex());
    if (index === this.compactedIndex) return this.compactedTerm;
    return this.columns.term(index - this.compactedIndex - 1);
  }

  firstIndex(): number {
    return this.compactedIndex + 1;
  }

  lastIndex(): number {
    return this.compactedIndex + this.columns.length;
  }

  snapshot(): SnapshotMetadata {
    return this.latestSnapshot;
  }

  isEmpty(): boolean {
    return !this.written;
  }

  save(update: LogUpdate): Promise<void> {
    try {
      this.saveSync(update);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** save() without the promise: the deterministic simulator's write. */
  saveSync(update: LogUpdate): void {
    this.validate(update);
    this.applyValidated(update);
  }

  /** Throws InvalidArgumentError if `update` cannot be applied; changes nothing. */
  validate(update: LogUpdate): void {
    this.ensureOpen();
    const snapshot = update.snapshot;
    if (snapshot !== null) {
      if (snapshot.index < this.compactedIndex) throw new InvalidArgumentError(`snapshot ${snapshot.index} is older than the log's start`);
    }
    const entries = update.entries;
    const base = snapshot !== null ? snapshot.index : this.lastIndex();
    if (entries.length > 0) {
      const first = entries[0]!.index;
      for (let i = 1; i < entries.length; i++) {
        if (entries[i]!.index !== first + i) throw new InvalidArgumentError('entries are not contiguous');
      }
      const floor = snapshot !== null ? snapshot.index : this.compactedIndex;
      if (first <= floor) throw new InvalidArgumentError(`entry ${first} is at or below the log's start ${floor}`);
      if (first > base + 1) throw new InvalidArgumentError(`entry ${first} leaves a gap after ${base}`);
    }
  }

  private applyValidated(update: LogUpdate): void {
    const { snapshot, entries } = update;
    if (snapshot !== null) {
      this.latestSnapshot = snapshot;
      this.compactedIndex = snapshot.index;
      this.compactedTerm = snapshot.term;
      this.columns.truncate(0);
    }
    if (entries.length > 0) {
      this.columns.truncate(entries[0]!.index - this.compactedIndex - 1);
      this.columns.appendCopies(entries);
    }
    if (update.hardState !== null) this.hardState = update.hardState;
    this.written = true;
  }

  bootstrap(confState: ConfState): Promise<void> {
    this.ensureOpen();
    if (this.written) return Promise.reject(new InvalidArgumentError('cannot bootstrap a log that is not empty'));
    this.saveSync({ snapshot: { index: 1, term: 1, confState }, entries: [], hardState: { term: 1, vote: 0, commit: 1 }, sync: true });
    return Promise.resolve();
  }

  createSnapshot(metadata: SnapshotMetadata): Promise<void> {
    try {
      this.createSnapshotSync(metadata);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  createSnapshotSync(metadata: SnapshotMetadata): void {
    this.validateSnapshot(metadata);
    this.latestSnapshot = metadata;
  }

  validateSnapshot(metadata: SnapshotMetadata): void {
    this.ensureOpen();
    if (!Number.isSafeInteger(metadata.index) || metadata.index <= this.latestSnapshot.index) {
      throw new InvalidArgumentError(`snapshot ${metadata.index} is not newer than ${this.latestSnapshot.index}`);
    }
    if (metadata.index > this.lastIndex()) throw new LogUnavailableError(metadata.index, this.lastIndex());
    if (this.term(metadata.index) !== metadata.term) throw new InvalidArgumentError(`snapshot term ${metadata.term} does not match entry ${metadata.index}`);
  }

  compact(compactIndex: number): Promise<void> {
    try {
      this.compactSync(compactIndex);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  compactSync(compactIndex: number): void {
    if (!this.validateCompact(compactIndex)) return;
    const term = this.term(compactIndex);
    this.columns.dropFirst(compactIndex - this.compactedIndex);
    this.compactedIndex = compactIndex;
    this.compactedTerm = term;
    assert(this.firstIndex() === compactIndex + 1, 'compaction left the wrong first index');
  }

  /** Whether compacting through compactIndex would do anything; throws if it is not allowed. */
  validateCompact(compactIndex: number): boolean {
    this.ensureOpen();
    if (!Number.isSafeInteger(compactIndex)) throw new InvalidArgumentError(`compact index must be an integer, got ${compactIndex}`);
    if (compactIndex <= this.compactedIndex) return false;
    if (compactIndex > this.latestSnapshot.index) {
      throw new InvalidArgumentError(`cannot compact through ${compactIndex}: the latest snapshot is at ${this.latestSnapshot.index}`);
    }
    return true;
  }

  /** Rebuilds a view from recovered state (ClassicLogStorage.open). */
  static fromRecovered(state: {
    hardState: HardState;
    snapshot: SnapshotMetadata;
    compactedIndex: number;
    compactedTerm: number;
    entries: Entry[];
    written: boolean;
  }): MemoryLogStorage {
    const view = new MemoryLogStorage();
    view.hardState = state.hardState;
    view.latestSnapshot = state.snapshot;
    view.compactedIndex = state.compactedIndex;
    view.compactedTerm = state.compactedTerm;
    view.columns.appendCopies(state.entries);
    view.written = state.written;
    return view;
  }

  /** An independent copy of everything written so far. */
  clone(): MemoryLogStorage {
    const copy = new MemoryLogStorage();
    copy.hardState = this.hardState;
    copy.latestSnapshot = this.latestSnapshot;
    copy.columns = this.columns.clone();
    copy.compactedIndex = this.compactedIndex;
    copy.compactedTerm = this.compactedTerm;
    copy.written = this.written;
    return copy;
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  private ensureOpen(): void {
    if (this.closed) throw new NodeStoppedError('the log storage is closed');
  }
}

interface Columns {
  terms: Float64Array<ArrayBuffer>;
  types: Uint8Array<ArrayBuffer>;
  offsets: Float64Array<ArrayBuffer>;
  lengths: Float64Array<ArrayBuffer>;
  buffers: (Uint8Array | undefined)[];
}

/** Slots in a new log's columns; they double when full and halve when under a quarter is in use. */
const INITIAL_SLOTS = 1024;

/**
 * A log's entries column by column, in a ring of typed arrays: position i
 * is slot (head + i) modulo the capacity, its data `lengths` bytes at
 * `offsets` in `buffers` (each save's data copied into one buffer of its
 * own, which no one writes afterwards). Entry objects are built when read.
 * A log that kept the Entry objects it was handed, and their data views into
 * received frames, kept two objects per entry alive until compaction 10,000
 * or more entries later: each was promoted out of the young generation and
 * later collected by a major GC. Growing arrays of numbers cost that too
 * (each push past the end reallocates), hence the ring.
 */
class EntryColumns {
  private terms = new Float64Array(INITIAL_SLOTS);
  private types = new Uint8Array(INITIAL_SLOTS);
  private offsets = new Float64Array(INITIAL_SLOTS);
  private lengths = new Float64Array(INITIAL_SLOTS);
  private buffers: (Uint8Array | undefined)[] = new Array<undefined>(INITIAL_SLOTS).fill(undefined);
  private head = 0;
  private count = 0;

  get length(): number {
    return this.count;
  }

  term(position: number): number {
    return this.terms[this.slot(position)]!;
  }

  entry(position: number, index: number): Entry {
    const slot = this.slot(position);
    const offset = this.offsets[slot]!;
    return { term: this.terms[slot]!, index, type: this.types[slot] as EntryType, data: this.buffers[slot]!.subarray(offset, offset + this.lengths[slot]!) };
  }

  /** Appends the entries, their data copied into one new buffer. */
  appendCopies(entries: readonly Entry[]): void {
    let bytes = 0;
    for (const entry of entries) bytes += entry.data.length;
    const buffer = bytes === 0 ? NO_BYTES : new Uint8Array(bytes);
    let offset = 0;
    for (const entry of entries) {
      if (this.count === this.terms.length) this.resize(this.terms.length * 2);
      const slot = (this.head + this.count) & (this.terms.length - 1);
      assert(entry.type === EntryType.Normal || entry.type === EntryType.ConfChange, () => `entry ${entry.index} has unknown type ${entry.type}`);
      buffer.set(entry.data, offset);
      this.terms[slot] = entry.term;
      this.types[slot] = entry.type;
      this.buffers[slot] = buffer;
      this.offsets[slot] = offset;
      this.lengths[slot] = entry.data.length;
      offset += entry.data.length;
      this.count += 1;
    }
    assert(offset === bytes, 'copied a different number of bytes than the entries hold');
  }

  /** Keeps the first `count` positions. */
  truncate(count: number): void {
    assert(count >= 0 && count <= this.count, () => `cannot keep ${count} of ${this.count} entries`);
    for (let position = count; position < this.count; position++) this.buffers[this.slot(position)] = undefined;
    this.count = count;
  }

  /** Forgets the first `count` positions. */
  dropFirst(count: number): void {
    assert(count >= 0 && count <= this.count, () => `cannot drop ${count} of ${this.count} entries`);
    for (let position = 0; position < count; position++) this.buffers[this.slot(position)] = undefined;
    this.head = (this.head + count) & (this.terms.length - 1);
    this.count -= count;
    if (this.terms.length > INITIAL_SLOTS && this.count < this.terms.length / 4) this.resize(this.terms.length / 2);
  }

  clone(): EntryColumns {
    const copy = new EntryColumns();
    copy.adopt(this.laidOut(this.terms.length)); // the buffers are never written after their save: shared
    copy.count = this.count;
    return copy;
  }

  private slot(position: number): number {
    assert(position >= 0 && position < this.count, () => `position ${position} outside the ${this.count} entries held`);
    return (this.head + position) & (this.terms.length - 1);
  }

  /** Moves the entries to columns of `capacity` slots (a power of two, at least count), from slot 0. */
  private resize(capacity: number): void {
    this.adopt(this.laidOut(capacity));
  }

  /** The entries copied into new columns of `capacity` slots, from slot 0. */
  private laidOut(capacity: number): Columns {
    assert(capacity >= this.count && (capacity & (capacity - 1)) === 0, () => `cannot hold ${this.count} entries in ${capacity} slots`);
    const columns: Columns = {
      terms: new Float64Array(capacity),
      types: new Uint8Array(capacity),
      offsets: new Float64Array(capacity),
      lengths: new Float64Array(capacity),
      buffers: new Array<Uint8Array | undefined>(capacity).fill(undefined),
    };
    for (let position = 0; position < this.count; position++) {
      const from = this.slot(position);
      columns.terms[position] = this.terms[from]!;
      columns.types[position] = this.types[from]!;
      columns.offsets[position] = this.offsets[from]!;
      columns.lengths[position] = this.lengths[from]!;
      columns.buffers[position] = this.buffers[from];
    }
    return columns;
  }

  private adopt(columns: Columns): void {
    this.terms = columns.terms;
    this.types = columns.types;
    this.offsets = columns.offsets;
    this.lengths = columns.lengths;
    this.buffers = columns.buffers;
    this.head = 0;
  }
}
