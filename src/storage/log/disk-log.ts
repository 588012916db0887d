// What the two durable log engines (ClassicLogStorage, WalLogStorage) share:
// the core's synchronous read view served from a MemoryLogStorage kept in
// step with the disk, writes queued one at a time (each reads the engine's
// state, awaits the disk, then updates it: two overlapping writes, the ready
// loop's save and the apply worker's compaction, would lose one's update),
// and a failed write that stops the storage for good (it may or may not have
// reached the disk; retrying after a failed fsync is how data gets lost).

import type { InitialState } from '../../raft/storage.ts';
import type { Entry, SnapshotMetadata } from '../../raft/types.ts';
import { StorageFailedError } from './errors.ts';
import type { MemoryLogStorage } from './memory.ts';

export abstract class DiskLogStorage {
  private failure: Error | null = null;
  protected closed = false;
  private writing: Promise<unknown> = Promise.resolve();

  protected constructor(protected readonly view: MemoryLogStorage) {}

  // ---- RaftLogReader: served from memory ----

  initialState(): InitialState {
    this.ensureUsable();
    return this.view.initialState();
  }

  entries(lo: number, hi: number, maxBytes: number): readonly Entry[] {
    this.ensureUsable();
    return this.view.entries(lo, hi, maxBytes);
  }

  term(index: number): number {
    this.ensureUsable();
    return this.view.term(index);
  }

  firstIndex(): number {
    return this.view.firstIndex();
  }

  lastIndex(): number {
    return this.view.lastIndex();
  }

  snapshot(): SnapshotMetadata {
    return this.view.snapshot();
  }

  isEmpty(): boolean {
    return this.view.isEmpty();
  }

  // ---- Writes: disk first, then the view; one at a time ----

  protected exclusive<T>(operation: () => Promise<T>): Promise<T> {
    const run = this.writing.then(operation, operation);
    this.writing = run.catch(() => undefined);
    return run;
  }

  /** Marks the storage closed and waits for the write in flight; false if it was closed already. */
  protected async closeWrites(): Promise<boolean> {
    if (this.closed) return false;
    this.closed = true;
    await this.writing;
    return true;
  }

  /** Records a failed disk write and returns the error to throw: every later call throws it too. */
  protected failed(error: unknown): StorageFailedError {
    const failure = new StorageFailedError('a log write failed; the node must stop (never retry a failed sync)', { cause: error });
    this.failure = failure;
    return failure;
  }

  /** False once a write has failed: nothing more may be written. */
  protected get usable(): boolean {
    return this.failure === null;
  }

  protected ensureUsable(): void {
    if (this.failure !== null) throw this.failure;
    if (this.closed) throw new StorageFailedError('the log storage is closed');
  }
}
