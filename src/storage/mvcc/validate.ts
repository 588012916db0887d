// Input validation of MVCC requests, shared by the public API (before a
// request is proposed) and the store (before it is applied): shapes, sizes,
// range bounds and transaction rules, each failure a typed error with a
// stable code. Checks that depend on the store's state (compacted or future
// revisions, missing keys, quota) happen when the request is applied.

import { InvalidArgumentError, RequestTooLargeError } from '../../raft/errors.ts';
import { DuplicateKeyError, EmptyKeyError, TooManyOperationsError } from './errors.ts';
import { compareBytes, indexKey } from './keys.ts';
import type { Compare, RangeRequest, RequestOp, TxnRequest, WriteRequest } from './types.ts';

export interface RequestLimits {
  /** Largest encoded request (etcd's default: 1.5 MiB). */
  readonly requestBytesMax: number;
  /** Most compares, and most operations per branch, in one transaction (etcd's --max-txn-ops). */
  readonly txnOperationsMax: number;
}

export const DEFAULT_REQUEST_LIMITS: RequestLimits = {
  requestBytesMax: 1.5 * 1024 * 1024,
  txnOperationsMax: 128,
};

/** etcd's MaxLeaseTTL. */
export const LEASE_TTL_SECONDS_MAX = 9_000_000_000;
/** Leases one checkpoint request carries at most. */
export const LEASE_CHECKPOINTS_MAX = 1_000;

/** Checks a lease id: a positive safe integer. */
export function leaseId(id: unknown, name = 'lease id'): number {
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 1) throw new InvalidArgumentError(`${name} must be a positive safe integer`);
  return id;
}

const SORT_ORDERS = new Set(['none', 'ascend', 'descend']);
const SORT_TARGETS = new Set(['key', 'version', 'create', 'mod', 'value']);
const COMPARE_TARGETS = new Set(['value', 'version', 'create', 'mod', 'lease']);
const COMPARE_RESULTS = new Set(['=', '!=', '<', '>']);
const OPERATION_OVERHEAD_BYTES = 16;

function isBytes(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array;
}

function requireKey(key: unknown, name = 'key'): Uint8Array {
  if (!isBytes(key)) throw new InvalidArgumentError(`${name} must be a Uint8Array`);
  if (key.length === 0) throw new EmptyKeyError();
  return key;
}

function optionalRevision(value: unknown, name: string): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`${name} must be a non-negative safe integer`);
  }
}

function optionalBoolean(value: unknown, name: string): void {
  if (value !== undefined && typeof value !== 'boolean') throw new InvalidArgumentError(`${name} must be a boolean`);
}

/** Checks a key and an optional range end; a range end before the key is an error. */
function checkRange(key: unknown, rangeEnd: unknown): void {
  const start = requireKey(key);
  if (rangeEnd === undefined) return;
  if (!isBytes(rangeEnd)) throw new InvalidArgumentError('rangeEnd must be a Uint8Array');
  if (rangeEnd.length === 0 || (rangeEnd.length === 1 && rangeEnd[0] === 0)) return;
  if (compareBytes(rangeEnd, start) < 0) throw new InvalidArgumentError('rangeEnd must not be before key');
}

export function validateRangeRequest(request: RangeRequest): void {
  if (typeof request !== 'object' || request === null) throw new InvalidArgumentError('a range request must be an object');
  checkRange(request.key, request.rangeEnd);
  optionalRevision(request.limit, 'limit');
  optionalRevision(request.revision, 'revision');
  optionalRevision(request.minModRevision, 'minModRevision');
  optionalRevision(request.maxModRevision, 'maxModRevision');
  optionalRevision(request.minCreateRevision, 'minCreateRevision');
  optionalRevision(request.maxCreateRevision, 'maxCreateRevision');
  optionalBoolean(request.keysOnly, 'keysOnly');
  optionalBoolean(request.countOnly, 'countOnly');
  if (request.sortOrder !== undefined && !SORT_ORDERS.has(request.sortOrder)) {
    throw new InvalidArgumentError('sortOrder must be one of none, ascend, descend');
  }
  if (request.sortTarget !== undefined && !SORT_TARGETS.has(request.sortTarget)) {
    throw new InvalidArgumentError('sortTarget must be one of key, version, create, mod, value');
  }
}

function validateCompare(compare: Compare): number {
  if (typeof compare !== 'object' || compare === null) throw new InvalidArgumentError('a compare must be an object');
  checkRange(compare.key, compare.rangeEnd);
  if (!COMPARE_TARGETS.has(compare.target)) throw new InvalidArgumentError('compare target must be one of value, version, create, mod, lease');
  if (!COMPARE_RESULTS.has(compare.result)) throw new InvalidArgumentError('compare result must be one of =, !=, <, >');
  if (compare.target === 'value') {
    if (!isBytes(compare.value)) throw new InvalidArgumentError('a value compare needs a Uint8Array value');
  } else if (typeof compare.number !== 'number' || !Number.isSafeInteger(compare.number)) {
    throw new InvalidArgumentError(`a ${compare.target} compare needs an integer number`);
  }
  return OPERATION_OVERHEAD_BYTES + compare.key.length + (compare.rangeEnd?.length ?? 0) + (compare.value?.length ?? 0);
}

/** Validates one operation of a transaction branch; returns its size in bytes. */
function validateOperation(operation: RequestOp, limits: RequestLimits, depth: number): number {
  if (typeof operation !== 'object' || operation === null) throw new InvalidArgumentError('an operation must be an object');
  switch (operation.type) {
    case 'range':
      validateRangeRequest(operation);
      return OPERATION_OVERHEAD_BYTES + operation.key.length + (operation.rangeEnd?.length ?? 0);
    case 'put':
    case 'deleteRange':
    case 'txn':
      return validateWrite(operation, limits, depth);
    default:
      throw new InvalidArgumentError('an operation must be a range, put, deleteRange or txn');
  }
}

function validateWrite(request: WriteRequest, limits: RequestLimits, depth: number): number {
  switch (request.type) {
    case 'put': {
      const key = requireKey(request.key);
      if (!isBytes(request.value)) throw new InvalidArgumentError('value must be a Uint8Array');
      optionalRevision(request.lease, 'lease');
      optionalBoolean(request.prevKv, 'prevKv');
      optionalBoolean(request.ignoreValue, 'ignoreValue');
      optionalBoolean(request.ignoreLease, 'ignoreLease');
      if (request.ignoreValue === true && request.value.length > 0) {
        throw new InvalidArgumentError('a put with ignoreValue must not carry a value');
      }
      if (request.ignoreLease === true && (request.lease ?? 0) !== 0) {
        throw new InvalidArgumentError('a put with ignoreLease must not carry a lease');
      }
      return OPERATION_OVERHEAD_BYTES + key.length + request.value.length;
    }
    case 'deleteRange':
      checkRange(request.key, request.rangeEnd);
      optionalBoolean(request.prevKv, 'prevKv');
      return OPERATION_OVERHEAD_BYTES + request.key.length + (request.rangeEnd?.length ?? 0);
    case 'txn':
      return validateTxn(request, limits, depth);
    case 'compact':
      if (typeof request.revision !== 'number' || !Number.isSafeInteger(request.revision) || request.revision < 1) {
        throw new InvalidArgumentError('compact revision must be a positive safe integer');
      }
      return OPERATION_OVERHEAD_BYTES;
    case 'leaseGrant':
      leaseId(request.id);
      if (!Number.isSafeInteger(request.ttlSeconds) || request.ttlSeconds < 1 || request.ttlSeconds > LEASE_TTL_SECONDS_MAX) {
        throw new InvalidArgumentError(`a lease TTL is a whole number of seconds from 1 to ${LEASE_TTL_SECONDS_MAX}`);
      }
      return OPERATION_OVERHEAD_BYTES;
    case 'leaseRevoke':
      leaseId(request.id);
      if (request.renewals !== undefined && (!Number.isSafeInteger(request.renewals) || request.renewals < 0)) {
        throw new InvalidArgumentError('renewals must be a non-negative safe integer');
      }
      return OPERATION_OVERHEAD_BYTES;
    case 'leaseKeepAlive':
      leaseId(request.id);
      return OPERATION_OVERHEAD_BYTES;
    case 'leaseCheckpoint':
      if (!Array.isArray(request.checkpoints) || request.checkpoints.length > LEASE_CHECKPOINTS_MAX) {
        throw new InvalidArgumentError(`a checkpoint request carries an array of at most ${LEASE_CHECKPOINTS_MAX} checkpoints`);
      }
      for (const checkpoint of request.checkpoints) {
        leaseId(checkpoint.id);
        if (!Number.isSafeInteger(checkpoint.renewals) || checkpoint.renewals < 0 || !Number.isSafeInteger(checkpoint.remainingMs) || checkpoint.remainingMs < 1) {
          throw new InvalidArgumentError('a checkpoint needs non-negative integer renewals and a positive integer remainingMs');
        }
      }
      return OPERATION_OVERHEAD_BYTES * (1 + request.checkpoints.length);
    default:
      throw new InvalidArgumentError('a write request must be a put, deleteRange, txn, compact or lease request');
  }
}

function validateTxn(request: TxnRequest, limits: RequestLimits, depth: number): number {
  if (depth > 8) throw new InvalidArgumentError('transactions nest at most 8 deep');
  if (!Array.isArray(request.compare) || !Array.isArray(request.success) || !Array.isArray(request.failure)) {
    throw new InvalidArgumentError('a txn needs compare, success and failure arrays');
  }
  for (const list of [request.compare, request.success, request.failure]) {
    if (list.length > limits.txnOperationsMax) throw new TooManyOperationsError(list.length, limits.txnOperationsMax);
  }
  let bytes = OPERATION_OVERHEAD_BYTES;
  for (const compare of request.compare) bytes += validateCompare(compare);
  for (const operation of request.success) bytes += validateOperation(operation, limits, depth + 1);
  for (const operation of request.failure) bytes += validateOperation(operation, limits, depth + 1);
  checkBranchWrites(request.success);
  checkBranchWrites(request.failure);
  return bytes;
}

/**
 * etcd's rule for one branch (nested transactions included): no key is put
 * twice, since two values at one revision would be ambiguous. (A delete and
 * a put of the same key are allowed: their sub-revisions order them.)
 */
function checkBranchWrites(operations: readonly RequestOp[]): Set<string> {
  const puts = new Set<string>();
  const addPut = (key: string): void => {
    if (puts.has(key)) throw new DuplicateKeyError(key);
    puts.add(key);
  };
  for (const operation of operations) {
    if (operation.type === 'put') addPut(indexKey(operation.key));
    else if (operation.type === 'txn') {
      // then and else exclude each other: a key may be put in both.
      const nested = new Set([...checkBranchWrites(operation.success), ...checkBranchWrites(operation.failure)]);
      for (const key of nested) addPut(key);
    }
  }
  return puts;
}

/** Validates a write request; returns its approximate size, which must be within the limit. */
export function validateWriteRequest(request: WriteRequest, limits: RequestLimits = DEFAULT_REQUEST_LIMITS): number {
  if (typeof request !== 'object' || request === null) throw new InvalidArgumentError('a write request must be an object');
  const bytes = validateWrite(request, limits, 0);
  if (bytes > limits.requestBytesMax) {
    throw new RequestTooLargeError(`request of about ${bytes} bytes exceeds the limit of ${limits.requestBytesMax}`);
  }
  return bytes;
}
