// The Raft log storage as the host sees it: the core's synchronous read view
// (RaftLogReader) plus the asynchronous writes the host makes for each Ready.
// Implementations: MemoryLogStorage (memory.ts), WalLogStorage (wal.ts,
// segment files) and ClassicLogStorage (classic.ts, on classic-level). All
// three pass the suite in compliance.ts.

import type { RaftLogReader } from '../../raft/storage.ts';
import type { ConfState, Entry, HardState, SnapshotMetadata } from '../../raft/types.ts';

/** One Ready's worth of durable state, written as one atomic batch. */
export interface LogUpdate {
  /** If present, replaces the whole log: every stored entry is discarded first. */
  readonly snapshot: SnapshotMetadata | null;
  /** Appended after the snapshot (if any); entries at index >= entries[0].index are replaced. */
  readonly entries: readonly Entry[];
  readonly hardState: HardState | null;
  /** fsync before resolving. Whatever precedes an acknowledgement needs it. */
  readonly sync: boolean;
}

export interface LogStorage extends RaftLogReader {
  /**
   * Writes one update as a single atomic batch and updates the read view.
   * Resolves once the write is durable (if `sync`). A rejection means the
   * write may or may not be on disk: the node must stop, never retry.
   * Calls are serialised by the caller (at most one in flight).
   */
  save(update: LogUpdate): Promise<void>;
  /**
   * First start of a brand-new cluster member: records the initial membership
   * as a snapshot at index 1, term 1 (hard state term 1, commit 1), so a node
   * that joins later learns it by snapshot. Throws if the log is not empty.
   */
  bootstrap(confState: ConfState): Promise<void>;
  /**
   * Records a snapshot the host took of its state machine at metadata.index
   * (<= the applied index). snapshot() returns it from now on.
   */
  createSnapshot(metadata: SnapshotMetadata): Promise<void>;
  /**
   * Discards entries with index <= compactIndex; term(compactIndex) stays
   * readable. compactIndex must be <= the latest snapshot's index.
   */
  compact(compactIndex: number): Promise<void>;
  /** Whether nothing was ever written (a bootstrap is due). */
  isEmpty(): boolean;
  close(): Promise<void>;
}
