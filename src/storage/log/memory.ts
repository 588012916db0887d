// The Raft log kept in memory only: for tests, the deterministic simulator
// and benchmarks of the core. Writes apply synchronously (saveSync) and the
// async LogStorage methods resolve at once. clone() copies what was "on disk"
// at that moment, which is how the simulator models a crash.

import { assert, InvalidArgumentError, LogCompactedError, LogUnavailableError, NodeStoppedError } from '../../raft/errors.ts';
import type { InitialState } from '../../raft/storage.ts';
import type { ConfState, Entry, HardState, SnapshotMetadata } from '../../raft/types.ts';
import type { LogStorage, LogUpdate } from './types.ts';

const EMPTY_CONF: ConfState = { voters: [], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };

export class MemoryLogStorage implements LogStorage {
  private hardState: HardState = { term: 0, vote: 0, commit: 0 };
  private latestSnapshot: SnapshotMetadata = { index: 0, term: 0, confState: EMPTY_CONF };
  /** entries[i] has index compactedIndex + 1 + i; compactedIndex/compactedTerm is the dummy before them. */
  private entriesList: Entry[] = [];
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
      const entry = this.entriesList[index - this.compactedIndex - 1]!;
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
    return this.entriesList[index - this.compactedIndex - 1]!.term;
  }

  firstIndex(): number {
    return this.compactedIndex + 1;
  }

  lastIndex(): number {
    return this.compactedIndex + this.entriesList.length;
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
      this.entriesList = [];
    }
    if (entries.length > 0) {
      const keep = entries[0]!.index - this.compactedIndex - 1;
      this.entriesList.length = keep;
      for (const entry of entries) this.entriesList.push(entry);
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
    this.entriesList = this.entriesList.slice(compactIndex - this.compactedIndex);
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
    view.entriesList = state.entries;
    view.written = state.written;
    return view;
  }

  /** An independent copy of everything written so far. */
  clone(): MemoryLogStorage {
    const copy = new MemoryLogStorage();
    copy.hardState = this.hardState;
    copy.latestSnapshot = this.latestSnapshot;
    copy.entriesList = this.entriesList.slice();
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
