// The Raft log as the core sees it: what the host has persisted (read through
// RaftLogReader) followed by an unstable tail of entries (and possibly a
// snapshot) that the core has accepted but the host has not yet confirmed
// durable. Also the commit and applied indexes.
//
// Index arithmetic: storage holds [storage.firstIndex(), unstableOffset); the
// unstable tail holds [unstableOffset, lastIndex()]. Invariants:
// applied <= committed <= lastIndex(); firstIndex() - 1 <= applied.

import { assert, LogCompactedError, LogUnavailableError } from './errors.ts';
import type { RaftLogReader } from './storage.ts';
import type { Entry, SnapshotMetadata } from './types.ts';

export class RaftLog {
  readonly storage: RaftLogReader;
  /** Accepted, not yet durable. entries[i] has index unstableOffset + i. */
  unstableEntries: Entry[] = [];
  unstableOffset: number;
  unstableSnapshot: SnapshotMetadata | null = null;
  /** Entries with index <= this were handed to the host in a Ready (persisting). */
  handedThrough: number;
  snapshotHanded = false;
  committed: number;
  /** Last index handed to the host as committed. */
  applied: number;

  constructor(storage: RaftLogReader, committed: number, applied: number) {
    this.storage = storage;
    const last = storage.lastIndex();
    this.unstableOffset = last + 1;
    this.handedThrough = last;
    const first = storage.firstIndex();
    // A snapshot holds only committed state, and the host may have taken it before the Ready that
    // records the commit index became durable (entries are applied while that write is in flight).
    this.committed = Math.max(committed, first - 1, storage.snapshot().index);
    this.applied = Math.min(Math.max(applied, first - 1), this.committed);
    assert(this.committed <= last, () => `committed ${this.committed} beyond last index ${last}`);
  }

  firstIndex(): number {
    if (this.unstableSnapshot !== null) return this.unstableSnapshot.index + 1;
    return this.storage.firstIndex();
  }

  lastIndex(): number {
    if (this.unstableEntries.length > 0) return this.unstableOffset + this.unstableEntries.length - 1;
    if (this.unstableSnapshot !== null) return this.unstableSnapshot.index;
    return this.storage.lastIndex();
  }

  /** Term at index; throws LogCompactedError / LogUnavailableError out of range. */
  term(index: number): number {
    const offset = this.unstableOffset;
    if (index >= offset && index < offset + this.unstableEntries.length) return this.unstableEntries[index - offset]!.term;
    const snapshot = this.unstableSnapshot;
    if (snapshot !== null) {
      if (index === snapshot.index) return snapshot.term;
      if (index < snapshot.index) throw new LogCompactedError(index, snapshot.index + 1);
    }
    const last = this.lastIndex();
    if (index > last) throw new LogUnavailableError(index, last);
    const dummy = this.firstIndex() - 1;
    if (index < dummy) throw new LogCompactedError(index, dummy + 1);
    return this.storage.term(index);
  }

  /** Term at index, or 0 when it is not available (compacted or beyond the end). */
  termOrZero(index: number): number {
    // Checked up front rather than caught: a follower asks this of every new
    // entry it receives, and building an error per entry was a visible cost.
    const offset = this.unstableOffset;
    if (index >= offset && index < offset + this.unstableEntries.length) return this.unstableEntries[index - offset]!.term;
    const snapshot = this.unstableSnapshot;
    if (snapshot !== null && index <= snapshot.index) return index === snapshot.index ? snapshot.term : 0;
    if (index > this.lastIndex() || index < this.firstIndex() - 1) return 0;
    return this.storage.term(index);
  }

  lastTerm(): number {
    return this.term(this.lastIndex());
  }

  matchTerm(index: number, term: number): boolean {
    return this.termOrZero(index) === term;
  }

  /** Raft §5.4.1: is a log ending at (lastIndex, lastTerm) at least as up to date as ours? */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /** Appends after the last entry or truncates a conflicting suffix first. Returns the new last index. */
  append(entries: readonly Entry[]): number {
    if (entries.length === 0) return this.lastIndex();
    const first = entries[0]!.index;
    assert(first > this.committed, () => `cannot overwrite committed entry ${first} (committed ${this.committed})`);
    const offset = this.unstableOffset;
    if (first === offset + this.unstableEntries.length) {
      for (const entry of entries) this.unstableEntries.push(entry);
    } else if (first <= offset) {
      // Replaces everything from `first` on, including persisted entries.
      this.unstableOffset = first;
      this.unstableEntries = entries.slice();
    } else {
      this.unstableEntries.length = first - offset;
      for (const entry of entries) this.unstableEntries.push(entry);
    }
    if (first <= this.handedThrough) this.handedThrough = first - 1;
    return this.lastIndex();
  }

  /**
   * A follower's handling of an append: if our log has (index, logTerm),
   * append what conflicts or is new and commit up to min(commit, last new).
   * Returns the last index now known to match the leader, or -1 on mismatch.
   */
  maybeAppend(index: number, logTerm: number, commit: number, entries: readonly Entry[]): number {
    if (!this.matchTerm(index, logTerm)) return -1;
    const lastNew = index + entries.length;
    const conflict = this.findConflict(entries);
    if (conflict !== 0) {
      assert(conflict > this.committed, () => `conflict at ${conflict} with committed entry (committed ${this.committed})`);
      this.append(entries.slice(conflict - (index + 1)));
    }
    this.commitTo(Math.min(commit, lastNew));
    return lastNew;
  }

  /** Index of the first entry that is new or conflicts with ours; 0 if all already match. */
  private findConflict(entries: readonly Entry[]): number {
    for (const entry of entries) {
      if (!this.matchTerm(entry.index, entry.term)) return entry.index;
    }
    return 0;
  }

  /**
   * The largest index <= `index` whose term is <= `term` (used to skip a
   * whole term of mismatching entries at once on rejection).
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    let at = Math.min(index, this.lastIndex());
    for (; at > 0; at--) {
      let ourTerm: number;
      try {
        ourTerm = this.term(at);
      } catch {
        break;
      }
      if (ourTerm <= term) return { index: at, term: ourTerm };
    }
    return { index: at, term: 0 };
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    assert(index <= this.lastIndex(), () => `commit ${index} beyond last index ${this.lastIndex()}`);
    this.committed = index;
  }

  /** Commits maxIndex if it is from `term` (Raft §5.4.2: only current-term entries by counting). */
  maybeCommit(maxIndex: number, term: number): boolean {
    if (maxIndex > this.committed && this.termOrZero(maxIndex) === term) {
      this.commitTo(maxIndex);
      return true;
    }
    return false;
  }

  /** Entries [lo, hi), at least one, then up to maxBytes of data. */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo >= hi) return [];
    const first = this.firstIndex();
    if (lo < first) throw new LogCompactedError(lo, first);
    const last = this.lastIndex();
    assert(hi <= last + 1, () => `slice [${lo}, ${hi}) beyond last index ${last}`);
    const result: Entry[] = [];
    let bytes = 0;
    const offset = this.unstableOffset;
    if (lo < offset) {
      const stored = this.storage.entries(lo, Math.min(hi, offset), maxBytes);
      for (const entry of stored) {
        result.push(entry);
        bytes += entry.data.length;
      }
      if (result.length < Math.min(hi, offset) - lo) return result; // size limit reached
    }
    for (let index = Math.max(lo, offset); index < hi; index++) {
      const entry = this.unstableEntries[index - offset]!;
      if (result.length > 0 && bytes + entry.data.length > maxBytes) break;
      result.push(entry);
      bytes += entry.data.length;
    }
    return result;
  }

  hasEntriesToPersist(): boolean {
    return this.lastIndex() > this.handedThrough && this.unstableEntries.length > 0;
  }

  entriesToPersist(): Entry[] {
    const from = Math.max(this.handedThrough + 1, this.unstableOffset);
    return this.unstableEntries.slice(from - this.unstableOffset);
  }

  /** Committed entries not yet handed to the host, bounded by maxBytes. */
  committedToApply(maxBytes: number): Entry[] {
    const lo = Math.max(this.applied + 1, this.firstIndex());
    if (lo > this.committed) return [];
    return this.slice(lo, this.committed + 1, maxBytes);
  }

  hasCommittedToApply(): boolean {
    return this.committed > Math.max(this.applied, this.firstIndex() - 1);
  }

  /** The host made entries through (index, term) durable; drop them from the unstable tail (ABA-safe). */
  stableTo(index: number, term: number): void {
    if (index < this.unstableOffset) return;
    if (!this.matchTerm(index, term)) return; // replaced while the write was in flight
    const count = index - this.unstableOffset + 1;
    if (count > this.unstableEntries.length) return;
    this.unstableEntries = this.unstableEntries.slice(count);
    this.unstableOffset = index + 1;
  }

  stableSnapshotTo(index: number): void {
    if (this.unstableSnapshot !== null && this.unstableSnapshot.index === index) {
      this.unstableSnapshot = null;
      this.snapshotHanded = false;
    }
  }

  /** Replaces the log with a snapshot (a follower installing one). */
  restore(snapshot: SnapshotMetadata): void {
    this.committed = snapshot.index;
    this.unstableOffset = snapshot.index + 1;
    this.unstableEntries = [];
    this.unstableSnapshot = snapshot;
    this.snapshotHanded = false;
    this.handedThrough = snapshot.index;
  }

  /** The latest snapshot the leader can send. */
  snapshot(): SnapshotMetadata {
    return this.unstableSnapshot ?? this.storage.snapshot();
  }
}
