// Errors of the MVCC store, with stable codes.
import { RaftKVError } from '../../raft/errors.ts';

/** The requested revision was compacted away. */
export class CompactedError extends RaftKVError {
  readonly compactRevision: number;
  constructor(revision: number, compactRevision: number) {
    super('RAFTKV_COMPACTED', `revision ${revision} is compacted (compact revision ${compactRevision})`);
    this.compactRevision = compactRevision;
  }
}

/** The requested revision is beyond the current one. */
export class FutureRevisionError extends RaftKVError {
  constructor(revision: number, currentRevision: number) {
    super('RAFTKV_FUTURE_REVISION', `revision ${revision} is in the future (current revision ${currentRevision})`);
  }
}

/** A request named no key (etcd: "key is not provided"). */
export class EmptyKeyError extends RaftKVError {
  constructor() {
    super('RAFTKV_EMPTY_KEY', 'a key is required and must not be empty');
  }
}

/** A put with ignoreValue or ignoreLease named a key that does not exist. */
export class KeyNotFoundError extends RaftKVError {
  constructor(key: string) {
    super('RAFTKV_KEY_NOT_FOUND', `key ${JSON.stringify(key)} not found`);
  }
}

/** A transaction writes the same key twice, or puts a key it also deletes in the same branch. */
export class DuplicateKeyError extends RaftKVError {
  constructor(key: string) {
    super('RAFTKV_DUPLICATE_KEY', `duplicate key ${JSON.stringify(key)} in one transaction`);
  }
}

/** A transaction has more compares or operations than allowed. */
export class TooManyOperationsError extends RaftKVError {
  constructor(count: number, limit: number) {
    super('RAFTKV_TOO_MANY_OPS', `${count} operations in one transaction (at most ${limit})`);
  }
}

/** The write would take the live data over the store's quota; deletes and compaction still work. */
export class NoSpaceError extends RaftKVError {
  constructor(liveBytes: number, quotaBytes: number) {
    super('RAFTKV_NO_SPACE', `the store's live data would reach ${liveBytes} bytes (quota ${quotaBytes})`);
  }
}

/** A request named a lease that does not exist (never granted, revoked or expired). */
export class LeaseNotFoundError extends RaftKVError {
  constructor(id: number) {
    super('RAFTKV_LEASE_NOT_FOUND', `lease not found: ${id} (0x${id.toString(16)})`);
  }
}

/** A grant named a lease id that is already in use. */
export class LeaseExistsError extends RaftKVError {
  constructor(id: number) {
    super('RAFTKV_LEASE_EXISTS', `lease ${id} (0x${id.toString(16)}) already exists`);
  }
}

/** The store holds as many leases as it accepts. */
export class TooManyLeasesError extends RaftKVError {
  constructor(limit: number) {
    super('RAFTKV_TOO_MANY_LEASES', `the store already holds ${limit} leases (the limit)`);
  }
}

/** An expiry decided before the lease's latest renewal was refused. */
export class LeaseRenewedError extends RaftKVError {
  constructor(id: number) {
    super('RAFTKV_LEASE_RENEWED', `lease ${id} was renewed after its expiry was decided`);
  }
}
