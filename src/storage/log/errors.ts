// Errors of the durable Raft log, shared by its implementations (and by the
// MVCC store, whose writes fail the same way).

import { RaftKVError } from '../../raft/errors.ts';

/** A write to the log failed; the storage (and its node) must stop. */
export class StorageFailedError extends RaftKVError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('RAFTKV_STORAGE_FAILED', message, options);
  }
}

/** Recovery found a damaged or inconsistent log. */
export class LogCorruptError extends RaftKVError {
  readonly index: number;
  constructor(index: number, message: string) {
    super('RAFTKV_LOG_CORRUPT', `log corrupt at index ${index}: ${message}`);
    this.index = index;
  }
}
