// The read-only view of the persisted Raft log that the core consults
// (etcd-io/raft's Storage). It is synchronous: implementations keep what the
// core may ask for (the entries since the last compaction) in memory and write
// through to disk. The host writes to the log; the core only reads it.

import type { ConfState, Entry, HardState, SnapshotMetadata } from './types.ts';

export interface InitialState {
  readonly hardState: HardState;
  readonly confState: ConfState;
}

export interface RaftLogReader {
  /** Hard state and membership as of the last persisted write. */
  initialState(): InitialState;
  /**
   * Entries in [lo, hi), at least one if lo < hi, then as many more as fit in
   * maxBytes (sum of entry data lengths). Throws LogCompactedError if
   * lo < firstIndex(), LogUnavailableError if hi > lastIndex() + 1.
   */
  entries(lo: number, hi: number, maxBytes: number): readonly Entry[];
  /**
   * Term of the entry at `index`, for firstIndex() - 1 <= index <= lastIndex()
   * (firstIndex() - 1 is the snapshot's index and term). Throws
   * LogCompactedError below that range, LogUnavailableError above it.
   */
  term(index: number): number;
  /** Index of the first entry still stored (snapshot index + 1). */
  firstIndex(): number;
  /** Index of the last entry stored (the snapshot index if there is none). */
  lastIndex(): number;
  /** The latest snapshot's metadata (index 0, term 0 when there is none). */
  snapshot(): SnapshotMetadata;
}
