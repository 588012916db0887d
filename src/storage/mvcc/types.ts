// The MVCC store's records, following etcd v3's API: key-values with
// revisions, range / put / delete-range / txn / compact requests, their
// responses, and the events a write produces (for watchers).

/** A key's state at some revision (etcd's mvccpb.KeyValue). */
export interface KeyValue {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  /** Revision of the put that created this generation of the key. */
  readonly createRevision: number;
  /** Revision of the last modification. */
  readonly modRevision: number;
  /** Number of puts in this generation (1 after creation). */
  readonly version: number;
  /** Lease id attached (0: none). */
  readonly lease: number;
}

export type SortOrder = 'none' | 'ascend' | 'descend';
export type SortTarget = 'key' | 'version' | 'create' | 'mod' | 'value';

export interface RangeRequest {
  readonly key: Uint8Array;
  /** Exclusive end; absent: the single key; [0] (one zero byte): every key >= key. */
  readonly rangeEnd?: Uint8Array;
  /** At most this many kvs (0: no limit). */
  readonly limit?: number;
  /** Read at this revision (0 or absent: the current one). */
  readonly revision?: number;
  readonly keysOnly?: boolean;
  readonly countOnly?: boolean;
  readonly sortOrder?: SortOrder;
  readonly sortTarget?: SortTarget;
  readonly minModRevision?: number;
  readonly maxModRevision?: number;
  readonly minCreateRevision?: number;
  readonly maxCreateRevision?: number;
}

export interface RangeResponse {
  readonly revision: number;
  readonly kvs: readonly KeyValue[];
  /** More keys matched than `limit` allowed. */
  readonly more: boolean;
  /** How many keys matched (before limit). */
  readonly count: number;
}

export interface PutRequest {
  readonly type: 'put';
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  readonly lease?: number;
  readonly prevKv?: boolean;
  /** Keep the current value (the key must exist). */
  readonly ignoreValue?: boolean;
  /** Keep the current lease (the key must exist). */
  readonly ignoreLease?: boolean;
}

export interface DeleteRangeRequest {
  readonly type: 'deleteRange';
  readonly key: Uint8Array;
  readonly rangeEnd?: Uint8Array;
  readonly prevKv?: boolean;
}

export interface RangeOp extends RangeRequest {
  readonly type: 'range';
}

export type CompareTarget = 'value' | 'version' | 'create' | 'mod' | 'lease';
export type CompareResult = '=' | '!=' | '<' | '>';

export interface Compare {
  readonly key: Uint8Array;
  readonly rangeEnd?: Uint8Array;
  readonly target: CompareTarget;
  readonly result: CompareResult;
  /** For target 'value'. */
  readonly value?: Uint8Array;
  /** For the numeric targets. */
  readonly number?: number;
}

export type RequestOp = PutRequest | DeleteRangeRequest | RangeOp | TxnRequest;

export interface TxnRequest {
  readonly type: 'txn';
  readonly compare: readonly Compare[];
  readonly success: readonly RequestOp[];
  readonly failure: readonly RequestOp[];
}

export interface CompactRequest {
  readonly type: 'compact';
  readonly revision: number;
}

/** Creates a lease (no revision). The id is chosen by the proposer so that every member applies the same one. */
export interface LeaseGrantRequest {
  readonly type: 'leaseGrant';
  readonly id: number;
  readonly ttlSeconds: number;
}

/**
 * Deletes a lease and every key attached to it, at one revision. With
 * `renewals`, only if the lease was renewed exactly that many times (an
 * expiry decided on stale information is refused: RAFTKV_LEASE_RENEWED).
 */
export interface LeaseRevokeRequest {
  readonly type: 'leaseRevoke';
  readonly id: number;
  readonly renewals?: number;
}

/** Renews a lease: counts the renewal and clears its checkpointed remaining time. */
export interface LeaseKeepAliveRequest {
  readonly type: 'leaseKeepAlive';
  readonly id: number;
}

/** The remaining time of leases, as the leader measured it, for a future leader to resume from. */
export interface LeaseCheckpointRequest {
  readonly type: 'leaseCheckpoint';
  readonly checkpoints: readonly { readonly id: number; readonly renewals: number; readonly remainingMs: number }[];
}

export type LeaseRequest = LeaseGrantRequest | LeaseRevokeRequest | LeaseKeepAliveRequest | LeaseCheckpointRequest;

export type WriteRequest = PutRequest | DeleteRangeRequest | TxnRequest | CompactRequest | LeaseRequest;

/** A lease as replicated state (its wall-clock deadline is not: only the leader keeps one). */
export interface LeaseRecord {
  readonly id: number;
  readonly ttlSeconds: number;
  /** Renewals applied so far. */
  readonly renewals: number;
  /** Remaining time at the last checkpoint since the last renewal (0: none, the full TTL). */
  readonly remainingMs: number;
}

export interface Event {
  readonly type: 'put' | 'delete';
  /** For a delete: the key with modRevision = the delete's revision, empty value. */
  readonly kv: KeyValue;
  readonly prevKv?: KeyValue;
}

export interface PutResponse {
  readonly type: 'put';
  readonly revision: number;
  readonly prevKv?: KeyValue;
}

export interface DeleteRangeResponse {
  readonly type: 'deleteRange';
  readonly revision: number;
  readonly deleted: number;
  readonly prevKvs: readonly KeyValue[];
}

export interface RangeOpResponse extends RangeResponse {
  readonly type: 'range';
}

export interface TxnResponse {
  readonly type: 'txn';
  readonly revision: number;
  readonly succeeded: boolean;
  readonly responses: readonly OpResponse[];
}

export type OpResponse = PutResponse | DeleteRangeResponse | RangeOpResponse | TxnResponse;

export interface CompactResponse {
  readonly type: 'compact';
  readonly revision: number;
}

/** A request that was refused as a whole (deterministically, on every node). */
export interface ErrorResponse {
  readonly type: 'error';
  readonly revision: number;
  readonly code: string;
  readonly message: string;
  /** For RAFTKV_COMPACTED. */
  readonly compactRevision?: number;
}

export interface LeaseResponse {
  readonly type: 'leaseGrant' | 'leaseRevoke' | 'leaseKeepAlive' | 'leaseCheckpoint';
  readonly revision: number;
  /** The lease (0 for a checkpoint). */
  readonly id: number;
  /** Its TTL (0 for a revoke or a checkpoint). */
  readonly ttlSeconds: number;
  /** Keys a revoke deleted. */
  readonly deleted: number;
}

export type WriteResponse = (PutResponse | DeleteRangeResponse | TxnResponse | CompactResponse | LeaseResponse | ErrorResponse) & {
  /** What the request changed, in order (empty if it changed nothing). */
  readonly events: readonly Event[];
};
