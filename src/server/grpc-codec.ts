// Translation between etcd's v3 protobuf messages (as @grpc/proto-loader
// hands them over: snake_case fields, int64 as decimal strings, enums as
// their names, bytes as Buffers) and raftkv's own requests and results, plus
// the gRPC status — code and etcd's exact message — each raftkv error
// becomes, so etcd clients recognise it (etcdctl prints the message as is).

import { status as GrpcStatus } from '@grpc/grpc-js';
import { InvalidArgumentError, RaftKVError } from '../raft/errors.ts';
import type {
  Compare,
  CompareResult,
  CompareTarget,
  DeleteRangeRequest,
  Event,
  KeyValue,
  OpResponse,
  PutRequest,
  RangeRequest,
  RequestOp,
  SortOrder,
  SortTarget,
  TxnResponse,
} from '../storage/mvcc/types.ts';

/** A decoded protobuf message: field name → value. */
export type Message = Readonly<Record<string, unknown>>;

/** An error for a gRPC caller: etcd's status code and message. */
export class GrpcCallError extends Error {
  constructor(
    readonly grpcCode: GrpcStatus,
    message: string,
  ) {
    super(message);
  }

  /** The shape grpc-js sends: `details` becomes the status message. */
  toStatus(): { code: GrpcStatus; details: string } {
    return { code: this.grpcCode, details: this.message };
  }
}

/** etcd's rpctypes errors, by the raftkv code that stands for the same failure. */
const ETCD_ERROR_OF_CODE: Readonly<Record<string, readonly [GrpcStatus, string]>> = {
  RAFTKV_EMPTY_KEY: [GrpcStatus.INVALID_ARGUMENT, 'etcdserver: key is not provided'],
  RAFTKV_KEY_NOT_FOUND: [GrpcStatus.INVALID_ARGUMENT, 'etcdserver: key not found'],
  RAFTKV_TOO_MANY_OPS: [GrpcStatus.INVALID_ARGUMENT, 'etcdserver: too many operations in txn request'],
  RAFTKV_DUPLICATE_KEY: [GrpcStatus.INVALID_ARGUMENT, 'etcdserver: duplicate key given in txn request'],
  RAFTKV_REQUEST_TOO_LARGE: [GrpcStatus.INVALID_ARGUMENT, 'etcdserver: request is too large'],
  RAFTKV_COMPACTED: [GrpcStatus.OUT_OF_RANGE, 'etcdserver: mvcc: required revision has been compacted'],
  RAFTKV_FUTURE_REVISION: [GrpcStatus.OUT_OF_RANGE, 'etcdserver: mvcc: required revision is a future revision'],
  RAFTKV_NO_SPACE: [GrpcStatus.RESOURCE_EXHAUSTED, 'etcdserver: mvcc: database space exceeded'],
  RAFTKV_LEASE_NOT_FOUND: [GrpcStatus.NOT_FOUND, 'etcdserver: requested lease not found'],
  RAFTKV_LEASE_EXISTS: [GrpcStatus.FAILED_PRECONDITION, 'etcdserver: lease already exists'],
  RAFTKV_NO_LEADER: [GrpcStatus.UNAVAILABLE, 'etcdserver: no leader'],
  RAFTKV_STOPPED: [GrpcStatus.UNAVAILABLE, 'etcdserver: server stopped'],
  RAFTKV_PROPOSAL_DROPPED: [GrpcStatus.UNAVAILABLE, 'etcdserver: leader changed'],
  RAFTKV_TIMEOUT: [GrpcStatus.UNAVAILABLE, 'etcdserver: request timed out'],
  RAFTKV_OUTCOME_UNKNOWN: [GrpcStatus.UNAVAILABLE, 'etcdserver: request timed out, possibly due to previous leader failure'],
};

export const MEMBER_NOT_FOUND = (): GrpcCallError => new GrpcCallError(GrpcStatus.NOT_FOUND, 'etcdserver: member not found');
export const MEMBER_NOT_LEARNER = (): GrpcCallError =>
  new GrpcCallError(GrpcStatus.FAILED_PRECONDITION, 'etcdserver: can only promote a learner member');
export const TOO_MANY_REQUESTS = (): GrpcCallError => new GrpcCallError(GrpcStatus.RESOURCE_EXHAUSTED, 'etcdserver: too many requests');

/** The gRPC status for any failure: etcd's own for the failures etcd has, INVALID_ARGUMENT / INTERNAL otherwise. */
export function grpcErrorOf(error: unknown): GrpcCallError {
  if (error instanceof GrpcCallError) return error;
  if (error instanceof RaftKVError) {
    const known = ETCD_ERROR_OF_CODE[error.code];
    if (known !== undefined) return new GrpcCallError(known[0], known[1]);
    if (error.code === 'RAFTKV_INVALID_ARGUMENT') return new GrpcCallError(GrpcStatus.INVALID_ARGUMENT, `etcdserver: ${error.message}`);
    return new GrpcCallError(GrpcStatus.UNKNOWN, `etcdserver: ${error.message} (${error.code})`);
  }
  return new GrpcCallError(GrpcStatus.INTERNAL, 'etcdserver: internal error');
}

// ---- Reading requests ----

/** An int64 field (a decimal string from proto-loader, or a number) as a safe integer. */
export function int64Of(message: Message, field: string): number {
  const value = message[field];
  if (value === undefined || value === null) return 0;
  const number = typeof value === 'string' ? Number(value) : value;
  if (typeof number !== 'number' || !Number.isSafeInteger(number)) {
    throw new InvalidArgumentError(`${field} must be an integer within ±2^53`);
  }
  return number;
}

export function bytesOf(message: Message, field: string): Uint8Array {
  const value = message[field];
  if (value instanceof Uint8Array) return value;
  if (value === undefined || value === null) return new Uint8Array(0);
  throw new InvalidArgumentError(`${field} must be bytes`);
}

export function boolOf(message: Message, field: string): boolean {
  return message[field] === true;
}

function messageOf(message: Message, field: string): Message {
  const value = message[field];
  return typeof value === 'object' && value !== null ? (value as Message) : {};
}

function listOf(message: Message, field: string): readonly Message[] {
  const value = message[field];
  return Array.isArray(value) ? (value as Message[]) : [];
}

const SORT_ORDERS: Readonly<Record<string, SortOrder>> = { NONE: 'none', ASCEND: 'ascend', DESCEND: 'descend' };
const SORT_TARGETS: Readonly<Record<string, SortTarget>> = { KEY: 'key', VERSION: 'version', CREATE: 'create', MOD: 'mod', VALUE: 'value' };

function enumOf<T>(message: Message, field: string, names: Readonly<Record<string, T>>): T {
  const name = message[field] ?? Object.keys(names)[0];
  const value = typeof name === 'string' ? names[name] : undefined;
  if (value === undefined) throw new InvalidArgumentError(`${field} has an unknown value ${String(name)}`);
  return value;
}

/** A RangeRequest as the store's range request (revision ≤ 0 and limit ≤ 0 mean "current" and "no limit", as in etcd). */
export function rangeRequestOf(message: Message): RangeRequest & { readonly serializable: boolean } {
  const request: { -readonly [K in keyof RangeRequest]: RangeRequest[K] } = { key: bytesOf(message, 'key') };
  const rangeEnd = bytesOf(message, 'range_end');
  if (rangeEnd.length > 0) request.rangeEnd = rangeEnd;
  const limit = int64Of(message, 'limit');
  if (limit > 0) request.limit = limit;
  const revision = int64Of(message, 'revision');
  if (revision > 0) request.revision = revision;
  const order = enumOf(message, 'sort_order', SORT_ORDERS);
  const target = enumOf(message, 'sort_target', SORT_TARGETS);
  // etcd: a sort target without an order sorts ascending; key order ascending is the natural order.
  if (order !== 'none' || target !== 'key') {
    request.sortOrder = order === 'none' ? 'ascend' : order;
    request.sortTarget = target;
  }
  if (boolOf(message, 'keys_only')) request.keysOnly = true;
  if (boolOf(message, 'count_only')) request.countOnly = true;
  const bounds = [
    ['min_mod_revision', 'minModRevision'],
    ['max_mod_revision', 'maxModRevision'],
    ['min_create_revision', 'minCreateRevision'],
    ['max_create_revision', 'maxCreateRevision'],
  ] as const;
  for (const [field, option] of bounds) {
    const value = int64Of(message, field);
    if (value > 0) request[option] = value;
  }
  return { ...request, serializable: boolOf(message, 'serializable') };
}

export function putRequestOf(message: Message): PutRequest {
  const lease = int64Of(message, 'lease');
  return {
    type: 'put',
    key: bytesOf(message, 'key'),
    value: bytesOf(message, 'value'),
    ...(lease !== 0 ? { lease } : {}),
    ...(boolOf(message, 'prev_kv') ? { prevKv: true } : {}),
    ...(boolOf(message, 'ignore_value') ? { ignoreValue: true } : {}),
    ...(boolOf(message, 'ignore_lease') ? { ignoreLease: true } : {}),
  };
}

export function deleteRequestOf(message: Message): DeleteRangeRequest {
  const rangeEnd = bytesOf(message, 'range_end');
  return {
    type: 'deleteRange',
    key: bytesOf(message, 'key'),
    ...(rangeEnd.length > 0 ? { rangeEnd } : {}),
    ...(boolOf(message, 'prev_kv') ? { prevKv: true } : {}),
  };
}

const COMPARE_RESULTS: Readonly<Record<string, CompareResult>> = { EQUAL: '=', GREATER: '>', LESS: '<', NOT_EQUAL: '!=' };
const COMPARE_TARGETS: Readonly<Record<string, CompareTarget>> = { VERSION: 'version', CREATE: 'create', MOD: 'mod', VALUE: 'value', LEASE: 'lease' };
const NUMBER_FIELD_OF_TARGET: Readonly<Record<Exclude<CompareTarget, 'value'>, string>> = {
  version: 'version',
  create: 'create_revision',
  mod: 'mod_revision',
  lease: 'lease',
};

export function compareOf(message: Message): Compare {
  const target = enumOf(message, 'target', COMPARE_TARGETS);
  const result = enumOf(message, 'result', COMPARE_RESULTS);
  const rangeEnd = bytesOf(message, 'range_end');
  const bounds = { key: bytesOf(message, 'key'), ...(rangeEnd.length > 0 ? { rangeEnd } : {}) };
  if (target === 'value') return { ...bounds, target, result, value: bytesOf(message, 'value') };
  return { ...bounds, target, result, number: int64Of(message, NUMBER_FIELD_OF_TARGET[target]) };
}

/** A RequestOp (one of range / put / delete_range / txn); `depth` bounds nesting. */
export function requestOpOf(message: Message, depth: number): RequestOp {
  if (depth > 16) throw new InvalidArgumentError('transactions nest at most 16 deep');
  if (message.request_range !== undefined && message.request_range !== null) {
    const { serializable: _serializable, ...range } = rangeRequestOf(messageOf(message, 'request_range'));
    return { type: 'range', ...range };
  }
  if (message.request_put !== undefined && message.request_put !== null) return putRequestOf(messageOf(message, 'request_put'));
  if (message.request_delete_range !== undefined && message.request_delete_range !== null) {
    return deleteRequestOf(messageOf(message, 'request_delete_range'));
  }
  if (message.request_txn !== undefined && message.request_txn !== null) return txnRequestOf(messageOf(message, 'request_txn'), depth + 1);
  throw new InvalidArgumentError('a transaction operation must set one of request_range, request_put, request_delete_range, request_txn');
}

export function txnRequestOf(message: Message, depth = 0): { type: 'txn'; compare: Compare[]; success: RequestOp[]; failure: RequestOp[] } {
  return {
    type: 'txn',
    compare: listOf(message, 'compare').map(compareOf),
    success: listOf(message, 'success').map((operation) => requestOpOf(operation, depth)),
    failure: listOf(message, 'failure').map((operation) => requestOpOf(operation, depth)),
  };
}

// ---- Writing responses ----

export interface Header {
  readonly cluster_id: string;
  readonly member_id: string;
  readonly revision: number;
  readonly raft_term: number;
}

export function keyValueMessage(kv: KeyValue): Record<string, unknown> {
  return {
    key: kv.key,
    create_revision: kv.createRevision,
    mod_revision: kv.modRevision,
    version: kv.version,
    value: kv.value,
    lease: kv.lease,
  };
}

export function eventMessage(event: Event): Record<string, unknown> {
  return {
    type: event.type === 'put' ? 'PUT' : 'DELETE',
    kv: keyValueMessage(event.kv),
    ...(event.prevKv !== undefined ? { prev_kv: keyValueMessage(event.prevKv) } : {}),
  };
}

/** A transaction's responses; nested responses carry only the transaction's revision in their header, as etcd's do. */
export function txnResponseMessage(response: TxnResponse, header: Header | { readonly revision: number }): Record<string, unknown> {
  const inner = { revision: response.revision };
  return { header, succeeded: response.succeeded, responses: response.responses.map((each) => responseOpMessage(each, inner)) };
}

function responseOpMessage(response: OpResponse, header: { readonly revision: number }): Record<string, unknown> {
  switch (response.type) {
    case 'range':
      return { response_range: { header, kvs: response.kvs.map(keyValueMessage), more: response.more, count: response.count } };
    case 'put':
      return { response_put: { header, ...(response.prevKv !== undefined ? { prev_kv: keyValueMessage(response.prevKv) } : {}) } };
    case 'deleteRange':
      return { response_delete_range: { header, deleted: response.deleted, prev_kvs: response.prevKvs.map(keyValueMessage) } };
    case 'txn':
      // etcd leaves a nested transaction's own header empty (its responses still carry the revision).
      return { response_txn: { ...txnResponseMessage(response, header), header: {} } };
  }
}

/** etcd's hashes are uint32: the first 32 bits of raftkv's SHA-256 store hash. */
export function hash32Of(hexDigest: string): number {
  const hash = Number.parseInt(hexDigest.slice(0, 8), 16);
  if (!Number.isSafeInteger(hash)) throw new RaftKVError('RAFTKV_INTERNAL', 'the store hash is not hexadecimal');
  return hash;
}
