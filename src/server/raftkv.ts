// RaftKV: one member of a replicated, strongly consistent key-value store,
// embedded in the app's process. It wires one replicated node (Raft core,
// log storage, transport) to one MVCC store and offers etcd's API in the
// shape Node users know from the etcd3 client: put, get, range, delete,
// transactions, compaction, membership and status. Keys and values are
// strings (UTF-8) or bytes; results carry Buffers. Writes go through Raft
// (forwarded to the leader from any member); reads are linearizable by
// default (a batched ReadIndex round) or serializable (local) on request.

import { randomInt } from 'node:crypto';
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, NodeStoppedError, RaftKVError } from '../raft/errors.ts';
import type { RandomSource } from '../raft/random.ts';
import { ConfChangeTransition, ConfChangeType } from '../raft/types.ts';
import type { ConfState, NodeId } from '../raft/types.ts';
import { ClassicLogStorage } from '../storage/log/classic.ts';
import type { LogStorage } from '../storage/log/types.ts';
import { WalLogStorage } from '../storage/log/wal.ts';
import {
  CompactedError,
  DuplicateKeyError,
  EmptyKeyError,
  FutureRevisionError,
  KeyNotFoundError,
  LeaseExistsError,
  LeaseNotFoundError,
  LeaseRenewedError,
  NoSpaceError,
  TooManyLeasesError,
  TooManyOperationsError,
} from '../storage/mvcc/errors.ts';
import { prefixEnd } from '../storage/mvcc/keys.ts';
import { MvccStore } from '../storage/mvcc/store.ts';
import type {
  Compare,
  CompareResult,
  CompareTarget,
  KeyValue,
  RangeRequest,
  RangeResponse,
  RequestOp,
  SortOrder,
  SortTarget,
  TxnRequest,
  TxnResponse,
  ErrorResponse,
  Event,
  WriteRequest,
  WriteResponse,
} from '../storage/mvcc/types.ts';
import { DEFAULT_REQUEST_LIMITS, LEASE_TTL_SECONDS_MAX, leaseId, validateRangeRequest, validateWriteRequest } from '../storage/mvcc/validate.ts';
import type { RequestLimits } from '../storage/mvcc/validate.ts';
import { withBuffers } from './buffers.ts';
import { grantedTtlSeconds, LeaseKeepAlive, Lessor } from './lease.ts';
import type { KeepAliveOptions } from './lease.ts';
import type { StateMachinePort, TransportPort } from './ports.ts';
import { ReplicatedNode } from './replicated-node.ts';
import type { NodeStatus } from './replicated-node.ts';
import { WatchHub } from './watch.ts';
import type { Watch, WatchFilter, WatchHubOptions } from './watch.ts';

/** A key or value: a string (stored as UTF-8) or bytes. */
export type Bytes = string | Uint8Array;

export interface RaftKVOptions extends WatchHubOptions {
  /** This member's id: a positive integer, unique in the cluster. */
  readonly id: NodeId;
  /** Where this member keeps its Raft log and its store (created if missing). */
  readonly dataDir: string;
  /** How this member reaches the others (e.g. MemoryNetwork.endpoint(id)). */
  readonly transport: TransportPort;
  /** Voters of a brand-new cluster, this member included; ignored once the data directory has state. Omit to join an existing cluster. */
  readonly initialMembers?: readonly NodeId[];
  /** Milliseconds per Raft tick. Default 100. */
  readonly tickMs?: number;
  /** Ticks without a leader before an election. Default 10. */
  readonly electionTimeoutTicks?: number;
  /** Ticks between leader heartbeats. Default 1. */
  readonly heartbeatTicks?: number;
  /** Deadline of every request, in milliseconds. Default 5,000. */
  readonly requestTimeoutMs?: number;
  /** Applied entries between automatic snapshots. Default 10,000. */
  readonly snapshotEntries?: number;
  /** Entries kept behind a snapshot for slow followers. Default 5,000. */
  readonly snapshotCatchUpEntries?: number;
  /** Live data the store accepts before refusing writes (RAFTKV_NO_SPACE). Default 2 GiB. */
  readonly quotaBytes?: number;
  /**
   * How a new data directory keeps the Raft log: 'wal' (default), append-only
   * segment files synced per write; or 'classic', a classic-level database.
   * A directory that already has a log keeps the engine it was created with.
   */
  readonly logEngine?: 'wal' | 'classic';
  /** Largest request. Default 1.5 MiB. */
  readonly requestBytesMax?: number;
  /** Most compares / operations per branch in a transaction. Default 128. */
  readonly txnOperationsMax?: number;
  /** Writes proposed and not yet applied, at most. Default 100,000. */
  readonly proposalsMax?: number;
  /** Linearizable reads waiting, at most. Default 100,000. */
  readonly readsMax?: number;
  /** Seeded randomness for election timeouts (tests); crypto-random when omitted. */
  readonly random?: RandomSource;
  /** Called once if the member stops on a fatal error (a failed disk write). */
  readonly onFatal?: (error: Error) => void;
  /** Leases the store holds at most (equal on every member). Default 10,000. */
  readonly leasesMax?: number;
  /** How often the leader checkpoints leases' remaining TTLs through Raft, in ms (0: never). Default 300,000 (etcd's 5 minutes). */
  readonly leaseCheckpointIntervalMs?: number;
  /** Keep-alive streams open on this member at most. Default 10,000. */
  readonly keepAlivesMax?: number;
}

/** A granted lease. */
export interface LeaseGrant {
  readonly id: number;
  /** The TTL granted: the one asked for, raised to the minimum (1.5 election timeouts, at least 1 s). */
  readonly ttlSeconds: number;
}

export interface LeaseTimeToLive {
  readonly id: number;
  readonly grantedTtlSeconds: number;
  /**
   * Milliseconds before expiry as the leader measures it; on a follower (which keeps no
   * deadlines) an upper bound: the checkpointed remaining time, else the whole TTL.
   */
  readonly remainingMs: number;
  /** Whether remainingMs was measured by this member as leader. */
  readonly measuredByLeader: boolean;
  /** The attached keys, with `{ keys: true }`. */
  readonly keys?: readonly Buffer[];
}

export interface PutOptions {
  readonly lease?: number;
  /** Return the previous key-value. */
  readonly prevKv?: boolean;
  readonly ignoreValue?: boolean;
  readonly ignoreLease?: boolean;
}

export interface ReadOptions {
  /** Read at a past revision (0: current). */
  readonly revision?: number;
  /** Serve from this member's state without a ReadIndex round: faster, possibly stale. */
  readonly serializable?: boolean;
}

/** Which keys: one `key`; a `prefix`; `key` up to `rangeEnd` (exclusive); `fromKey` onward; or `all`. */
export interface KeySelector {
  readonly key?: Bytes;
  readonly rangeEnd?: Bytes;
  readonly prefix?: Bytes;
  readonly fromKey?: Bytes;
  readonly all?: boolean;
}

export interface RangeOptions extends KeySelector, ReadOptions {
  readonly limit?: number;
  readonly keysOnly?: boolean;
  readonly countOnly?: boolean;
  readonly sort?: { readonly target?: SortTarget; readonly order?: SortOrder };
  readonly minModRevision?: number;
  readonly maxModRevision?: number;
  readonly minCreateRevision?: number;
  readonly maxCreateRevision?: number;
}

export interface DeleteOptions extends KeySelector {
  readonly prevKv?: boolean;
}

export interface WatchOptions extends KeySelector {
  /** First revision to deliver; omitted or 0: the next change after this call. A compacted revision fails with RAFTKV_COMPACTED. */
  readonly startRevision?: number;
  /** Give each event the key's previous key-value (when history still holds it). */
  readonly prevKv?: boolean;
  /** Leave out put or delete events. */
  readonly filters?: readonly WatchFilter[];
  /** Send progress notifications (no events, only the revision) every `watchProgressNotifyMs` while idle. */
  readonly progressNotify?: boolean;
  /** Cancels the watch when aborted. */
  readonly signal?: AbortSignal;
}

export interface PutResult {
  readonly revision: number;
  readonly prevKv?: KeyValue;
}

export interface DeleteResult {
  readonly revision: number;
  readonly deleted: number;
  readonly prevKvs: readonly KeyValue[];
}

export interface Member {
  readonly id: NodeId;
  readonly isLearner: boolean;
}

export interface Status extends NodeStatus {
  readonly revision: number;
  readonly compactRevision: number;
  readonly dbSizeBytes: number;
  readonly keyCount: number;
}

const encoder = new TextEncoder();

/** A string as UTF-8 bytes; bytes as they are. */
export function toBytes(value: Bytes, name = 'key'): Uint8Array {
  if (typeof value === 'string') return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  throw new InvalidArgumentError(`${name} must be a string or a Uint8Array`);
}

function selectorBounds(selector: KeySelector): { key: Uint8Array; rangeEnd?: Uint8Array } {
  if (selector.all === true) return { key: new Uint8Array([0]), rangeEnd: new Uint8Array([0]) };
  if (selector.prefix !== undefined) {
    const prefix = toBytes(selector.prefix, 'prefix');
    if (prefix.length === 0) return { key: new Uint8Array([0]), rangeEnd: new Uint8Array([0]) };
    return { key: prefix, rangeEnd: prefixEnd(prefix) };
  }
  if (selector.fromKey !== undefined) return { key: toBytes(selector.fromKey, 'fromKey'), rangeEnd: new Uint8Array([0]) };
  if (selector.key === undefined) throw new InvalidArgumentError('name the keys: key, key + rangeEnd, prefix, fromKey or all');
  const key = toBytes(selector.key);
  return selector.rangeEnd === undefined ? { key } : { key, rangeEnd: toBytes(selector.rangeEnd, 'rangeEnd') };
}

function rangeRequestOf(options: RangeOptions): RangeRequest {
  const request: { -readonly [K in keyof RangeRequest]: RangeRequest[K] } = { ...selectorBounds(options) };
  if (options.limit !== undefined) request.limit = options.limit;
  if (options.revision !== undefined) request.revision = options.revision;
  if (options.keysOnly !== undefined) request.keysOnly = options.keysOnly;
  if (options.countOnly !== undefined) request.countOnly = options.countOnly;
  if (options.sort?.target !== undefined) request.sortTarget = options.sort.target;
  if (options.sort?.order !== undefined) request.sortOrder = options.sort.order;
  if (options.minModRevision !== undefined) request.minModRevision = options.minModRevision;
  if (options.maxModRevision !== undefined) request.maxModRevision = options.maxModRevision;
  if (options.minCreateRevision !== undefined) request.minCreateRevision = options.minCreateRevision;
  if (options.maxCreateRevision !== undefined) request.maxCreateRevision = options.maxCreateRevision;
  return request;
}

/** Builders of transaction operations: `kv.txn().if(...).then(op.put('k', 'v')).commit()`. */
export const op = {
  put(key: Bytes, value: Bytes, options: PutOptions = {}): RequestOp {
    return { type: 'put', key: toBytes(key), value: toBytes(value, 'value'), ...options };
  },
  get(key: Bytes, options: Omit<RangeOptions, keyof KeySelector | 'serializable'> = {}): RequestOp {
    return { type: 'range', ...rangeRequestOf({ ...options, key }) };
  },
  range(options: Omit<RangeOptions, 'serializable'>): RequestOp {
    return { type: 'range', ...rangeRequestOf(options) };
  },
  delete(selector: Bytes | DeleteOptions): RequestOp {
    const options: DeleteOptions = typeof selector === 'string' || selector instanceof Uint8Array ? { key: selector } : selector;
    return { type: 'deleteRange', ...selectorBounds(options), ...(options.prevKv === true ? { prevKv: true } : {}) };
  },
};

/** A transaction: compares, then the operations of the branch they select, at one revision. */
export class TxnBuilder {
  private readonly compares: Compare[] = [];
  private success: RequestOp[] = [];
  private failure: RequestOp[] = [];

  constructor(private readonly commitRequest: (request: TxnRequest) => Promise<TxnResponse>) {}

  /** Adds a compare: `if('k', 'value', '=', 'v')`, `if('k', 'version', '>', 0)`, `if('k', 'mod', '<', 42)`. */
  if(key: Bytes | KeySelector, target: CompareTarget, result: CompareResult, operand: Bytes | number): this {
    const bounds = typeof key === 'string' || key instanceof Uint8Array ? { key: toBytes(key) } : selectorBounds(key);
    if (target === 'value') {
      if (typeof operand === 'number') throw new InvalidArgumentError('a value compare takes a string or bytes');
      this.compares.push({ ...bounds, target, result, value: toBytes(operand, 'value') });
    } else {
      if (typeof operand !== 'number') throw new InvalidArgumentError(`a ${target} compare takes a number`);
      this.compares.push({ ...bounds, target, result, number: operand });
    }
    return this;
  }

  then(...operations: RequestOp[]): this {
    this.success = operations;
    return this;
  }

  else(...operations: RequestOp[]): this {
    this.failure = operations;
    return this;
  }

  commit(): Promise<TxnResponse> {
    return this.commitRequest({ type: 'txn', compare: this.compares, success: this.success, failure: this.failure });
  }
}

function rangeWithBuffers<T extends RangeResponse>(response: T): T {
  return { ...response, kvs: response.kvs.map(withBuffers) };
}

function txnWithBuffers(response: TxnResponse): TxnResponse {
  return {
    ...response,
    responses: response.responses.map((inner) => {
      if (inner.type === 'range') return rangeWithBuffers(inner);
      if (inner.type === 'txn') return txnWithBuffers(inner);
      if (inner.type === 'put') return inner.prevKv === undefined ? inner : { ...inner, prevKv: withBuffers(inner.prevKv) };
      return { ...inner, prevKvs: inner.prevKvs.map(withBuffers) };
    }),
  };
}

/** Turns a deterministic refusal from the store into the typed error it stands for. */
function raiseIfError(response: WriteResponse): WriteResponse {
  if (response.type !== 'error') return response;
  throw typedError(response);
}

/** The store's refusal as the error class its code stands for, with the store's own message. */
function typedError(response: ErrorResponse): RaftKVError {
  const byCode: Record<string, () => RaftKVError> = {
    RAFTKV_COMPACTED: () => new CompactedError(response.revision, response.compactRevision ?? 0),
    RAFTKV_FUTURE_REVISION: () => new FutureRevisionError(0, response.revision),
    RAFTKV_EMPTY_KEY: () => new EmptyKeyError(),
    RAFTKV_KEY_NOT_FOUND: () => new KeyNotFoundError(''),
    RAFTKV_DUPLICATE_KEY: () => new DuplicateKeyError(''),
    RAFTKV_TOO_MANY_OPS: () => new TooManyOperationsError(0, 0),
    RAFTKV_NO_SPACE: () => new NoSpaceError(0, 0),
    RAFTKV_LEASE_NOT_FOUND: () => new LeaseNotFoundError(0),
    RAFTKV_LEASE_EXISTS: () => new LeaseExistsError(0),
    RAFTKV_TOO_MANY_LEASES: () => new TooManyLeasesError(0),
    RAFTKV_LEASE_RENEWED: () => new LeaseRenewedError(0),
  };
  const error = byCode[response.code]?.() ?? new RaftKVError(response.code, response.message);
  error.message = response.message;
  return error;
}

export class RaftKV {
  readonly id: NodeId;
  private readonly limits: RequestLimits;
  private lessor: Lessor | null = null;
  private leaseMinimumSeconds = 1;
  private retryMs = 100;
  private keepAlivesMax = 10_000;
  private readonly keepAlives = new Set<LeaseKeepAlive>();

  private constructor(
    private readonly node: ReplicatedNode<WriteRequest, WriteResponse>,
    private readonly store: MvccStore,
    private readonly hub: WatchHub,
    limits: RequestLimits,
  ) {
    this.id = node.id;
    this.limits = limits;
  }

  /** Opens a member: bootstraps a new cluster with `initialMembers`, or restarts from `dataDir`. */
  static async open(options: RaftKVOptions): Promise<RaftKV> {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options are required');
    if (typeof options.dataDir !== 'string' || options.dataDir.length === 0) throw new InvalidArgumentError('dataDir must be a directory path');
    const limits: RequestLimits = {
      requestBytesMax: options.requestBytesMax ?? DEFAULT_REQUEST_LIMITS.requestBytesMax,
      txnOperationsMax: options.txnOperationsMax ?? DEFAULT_REQUEST_LIMITS.txnOperationsMax,
    };
    for (const [name, value] of Object.entries(limits)) {
      if (!Number.isSafeInteger(value) || value < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${String(value)}`);
    }
    if (options.logEngine !== undefined && options.logEngine !== 'wal' && options.logEngine !== 'classic') {
      throw new InvalidArgumentError(`logEngine must be 'wal' or 'classic', got ${String(options.logEngine)}`);
    }
    // A data directory, or one of its parts, that exists as something else is refused up front
    // (rather than with whatever error the file system gives the first engine to open it).
    for (const path of [options.dataDir, ...DATA_PARTS.map((part) => join(options.dataDir, part))]) {
      if ((await kindOf(path)) === 'other') throw new InvalidArgumentError(`${path} exists and is not a directory`);
    }
    await mkdir(options.dataDir, { recursive: true });
    // The store first: its LevelDB lock keeps a second process (or instance) off this directory,
    // and the log's recovery writes (a new segment, a cut torn tail) must not race another writer.
    const store = await MvccStore.open(join(options.dataDir, 'kv'), {
      ...(options.quotaBytes === undefined ? {} : { quotaBytes: options.quotaBytes }),
      ...(options.leasesMax === undefined ? {} : { leasesMax: options.leasesMax }),
    });
    let log: LogStorage;
    try {
      log = await openLog(options.dataDir, options.logEngine);
    } catch (error) {
      await store.close();
      throw error;
    }
    const {
      dataDir: _dataDir,
      quotaBytes: _quota,
      logEngine: _logEngine,
      txnOperationsMax: _ops,
      watchersMax: _watchers,
      watchBufferEvents: _bufferEvents,
      watchBufferBytes: _bufferBytes,
      watchResponseEvents: _responseEvents,
      watchCatchUpRows: _catchUpRows,
      watchProgressNotifyMs: _progressMs,
      leasesMax: _leasesMax,
      leaseCheckpointIntervalMs: _checkpointMs,
      keepAlivesMax: _keepAlivesMax,
      ...nodeOptions
    } = options;
    let hub: WatchHub;
    try {
      hub = new WatchHub(store, store.currentRevision, options);
    } catch (error) {
      await store.close();
      await log.close();
      throw error;
    }
    try {
      const node = await ReplicatedNode.start<WriteRequest, WriteResponse>({
        ...nodeOptions,
        log,
        stateMachine: new WatchedStore(store, hub),
        snapshotDirectory: join(options.dataDir, 'snap'),
        requestBytesMax: limits.requestBytesMax + 4096,
      });
      const kv = new RaftKV(node, store, hub, limits);
      kv.startLeases(options);
      return kv;
    } catch (error) {
      await store.close();
      await log.close();
      throw error;
    }
  }

  /** Sets a key; resolves once the write is committed and applied on this member. */
  async put(key: Bytes, value: Bytes, options: PutOptions = {}): Promise<PutResult> {
    const response = raiseIfError(await this.write({ type: 'put', key: toBytes(key), value: toBytes(value, 'value'), ...options }));
    return response.type === 'put' && response.prevKv !== undefined
      ? { revision: response.revision, prevKv: withBuffers(response.prevKv) }
      : { revision: response.revision };
  }

  /** One key's current (or historical) key-value, or undefined if it does not exist. */
  async get(key: Bytes, options: ReadOptions = {}): Promise<KeyValue | undefined> {
    const response = await this.range({ ...options, key });
    return response.kvs[0];
  }

  /** Keys by key, range, prefix, fromKey or all, with etcd's range options. */
  async range(options: RangeOptions): Promise<RangeResponse> {
    const request = rangeRequestOf(options);
    validateRangeRequest(request);
    this.ensureOpen();
    if (options.serializable !== true) await this.node.readBarrier();
    // A local read completes in microtasks only; yield once so a tight loop of them cannot starve the member's own timers and I/O.
    else await new Promise<void>((resolve) => setImmediate(resolve));
    return rangeWithBuffers(await this.store.range(request));
  }

  /** Deletes a key, or every key a selector names; deleting nothing is not an error. */
  async delete(selector: Bytes | DeleteOptions): Promise<DeleteResult> {
    const operation = op.delete(selector) as WriteRequest;
    const response = raiseIfError(await this.write(operation));
    if (response.type !== 'deleteRange') throw new RaftKVError('RAFTKV_INTERNAL', 'unexpected response to a delete');
    return { revision: response.revision, deleted: response.deleted, prevKvs: response.prevKvs.map(withBuffers) };
  }

  /** Starts a transaction: `.if(...)`, `.then(...)`, `.else(...)`, `.commit()`. */
  txn(): TxnBuilder {
    return new TxnBuilder(async (request) => {
      const response = raiseIfError(await this.write(request));
      if (response.type !== 'txn') throw new RaftKVError('RAFTKV_INTERNAL', 'unexpected response to a txn');
      return txnWithBuffers(response);
    });
  }

  /** Makes revisions before `revision` unreadable and reclaims their space in the background. */
  async compact(revision: number): Promise<{ revision: number }> {
    const response = raiseIfError(await this.write({ type: 'compact', revision }));
    return { revision: response.revision };
  }

  /**
   * Follows changes to a key, a prefix or a range: `for await (const { events } of kv.watch({ prefix: 'config/' }))`.
   * Events arrive in revision order, each revision whole, with no gap and no duplicate; resume after
   * a failure with `startRevision: lastRevision + 1` on any member.
   */
  watch(options: WatchOptions): Watch {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('watch options are required');
    this.ensureOpen();
    const prefix = options.prefix === undefined ? undefined : toBytes(options.prefix, 'prefix');
    const bounds = prefix !== undefined ? { key: prefix } : selectorBounds(options);
    if (prefix === undefined && bounds.key.length === 0) throw new EmptyKeyError();
    return this.hub.watch({
      ...bounds,
      ...(prefix !== undefined ? { prefix: true } : {}),
      ...(options.startRevision !== undefined ? { startRevision: options.startRevision } : {}),
      ...(options.prevKv !== undefined ? { prevKv: options.prevKv } : {}),
      ...(options.filters !== undefined ? { filters: options.filters } : {}),
      ...(options.progressNotify !== undefined ? { progressNotify: options.progressNotify } : {}),
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    });
  }

  members(): Member[] {
    const confState: ConfState = this.node.status().confState;
    return [
      ...confState.voters.map((id) => ({ id, isLearner: false })),
      ...confState.learners.map((id) => ({ id, isLearner: true })),
    ].sort((left, right) => left.id - right.id);
  }

  /** Adds a voting member (start it with no initialMembers; it catches up by snapshot). */
  async addMember(id: NodeId, address = ''): Promise<Member[]> {
    await this.changeMembership(ConfChangeType.AddVoter, id, address);
    return this.members();
  }

  /** Adds a non-voting member that receives the log; promote it once it caught up. */
  async addLearner(id: NodeId, address = ''): Promise<Member[]> {
    await this.changeMembership(ConfChangeType.AddLearner, id, address);
    return this.members();
  }

  async promoteMember(id: NodeId): Promise<Member[]> {
    if (!this.members().some((member) => member.id === id && member.isLearner)) {
      throw new InvalidArgumentError(`member ${id} is not a learner`);
    }
    await this.changeMembership(ConfChangeType.AddVoter, id, '');
    return this.members();
  }

  async removeMember(id: NodeId): Promise<Member[]> {
    if (!this.members().some((member) => member.id === id)) throw new InvalidArgumentError(`member ${id} is not in the cluster`);
    await this.changeMembership(ConfChangeType.RemoveNode, id, '');
    return this.members();
  }

  /** Asks the leader to hand leadership to `id`; resolves once `id` leads. */
  async transferLeadership(id: NodeId): Promise<void> {
    if (!this.members().some((member) => member.id === id && !member.isLearner)) throw new InvalidArgumentError(`member ${id} is not a voter`);
    await this.node.transferLeadership(id);
  }

  async status(): Promise<Status> {
    this.ensureOpen();
    const store = this.store.status();
    return {
      ...this.node.status(),
      revision: store.currentRevision,
      compactRevision: store.compactRevision,
      keyCount: store.keyCount,
      dbSizeBytes: await this.store.dbSizeBytes(),
    };
  }

  /** A hash of the store at a revision; equal on every member that applied the same log. */
  async hash(revision?: number): Promise<{ hash: string; revision: number; compactRevision: number }> {
    this.ensureOpen();
    return this.store.hash(revision);
  }

  /** Resolves once this member knows a leader (or fails with RAFTKV_NO_LEADER at the request deadline). */
  waitForLeader(): Promise<void> {
    return this.node.waitForLeader();
  }

  get isLeader(): boolean {
    return this.node.isLeader;
  }

  /** The Raft term this member is in, read without I/O (status() also sizes the store on disk). */
  get raftTerm(): number {
    return this.node.term;
  }

  /** The store's current revision on this member, read without I/O. */
  get revision(): number {
    return this.store.currentRevision;
  }

  get isStopped(): boolean {
    return this.node.isStopped;
  }

  async close(): Promise<void> {
    this.lessor?.stop();
    for (const keepAlive of this.keepAlives) keepAlive.close();
    await this.node.close();
  }

  // ---- Leases (see lease.ts and docs/leases.md) ----

  private startLeases(options: RaftKVOptions): void {
    const tickMs = options.tickMs ?? 100;
    const electionMs = (options.electionTimeoutTicks ?? 10) * tickMs;
    const checkpointIntervalMs = options.leaseCheckpointIntervalMs ?? 300_000;
    if (!Number.isSafeInteger(checkpointIntervalMs) || checkpointIntervalMs < 0) {
      throw new InvalidArgumentError('leaseCheckpointIntervalMs must be a non-negative integer');
    }
    this.keepAlivesMax = options.keepAlivesMax ?? 10_000;
    if (!Number.isSafeInteger(this.keepAlivesMax) || this.keepAlivesMax < 1) throw new InvalidArgumentError('keepAlivesMax must be a positive integer');
    // etcd's minimum TTL: 1.5 election timeouts, so a lease outlives a leader change.
    this.leaseMinimumSeconds = Math.max(1, Math.ceil((1.5 * electionMs) / 1000));
    this.retryMs = Math.max(10, tickMs);
    const node = this.node;
    const store = this.store;
    this.lessor = new Lessor(
      {
        leases: () => store.leases(),
        lease: (id) => store.lease(id),
        get isLeader() {
          return node.isLeader && !node.isStopped;
        },
        propose: (request) => node.propose(request),
      },
      { tickMs, checkpointIntervalMs, revokesPerTickMax: 100 },
    );
    this.lessor.start();
  }

  /** Creates a lease of `ttlSeconds` (raised to the minimum); `id` is chosen at random unless given. */
  async grant(ttlSeconds: number, id?: number): Promise<LeaseGrant> {
    const ttl = grantedTtlSeconds(ttlSeconds, this.leaseMinimumSeconds, LEASE_TTL_SECONDS_MAX);
    if (id !== undefined) leaseId(id);
    for (let attempt = 0; ; attempt++) {
      const chosen = id ?? randomInt(1, 2 ** 48);
      try {
        const response = raiseIfError(await this.write({ type: 'leaseGrant', id: chosen, ttlSeconds: ttl }));
        return { id: chosen, ttlSeconds: response.type === 'leaseGrant' ? response.ttlSeconds : ttl };
      } catch (error) {
        // A random id that collided: draw another.
        if (id !== undefined || attempt >= 3 || !(error instanceof LeaseExistsError)) throw error;
      }
    }
  }

  /** Deletes a lease and every key attached to it, at one revision. */
  async revoke(id: number): Promise<{ revision: number; deleted: number }> {
    const response = raiseIfError(await this.write({ type: 'leaseRevoke', id: leaseId(id) }));
    return { revision: response.revision, deleted: response.type === 'leaseRevoke' ? response.deleted : 0 };
  }

  /** Renews a lease once (through Raft, from any member). */
  async keepAliveOnce(id: number): Promise<LeaseGrant> {
    const response = raiseIfError(await this.write({ type: 'leaseKeepAlive', id: leaseId(id) }));
    return { id, ttlSeconds: response.type === 'leaseKeepAlive' ? response.ttlSeconds : 0 };
  }

  /** Renews a lease about every TTL/3 until it is lost or the stream is closed; iterate it for renewals and the loss. */
  keepAlive(id: number, options: KeepAliveOptions = {}): LeaseKeepAlive {
    leaseId(id);
    if (this.node.isStopped) throw new NodeStoppedError('the member is closed');
    if (this.keepAlives.size >= this.keepAlivesMax) {
      throw new RaftKVError('RAFTKV_TOO_MANY_KEEPALIVES', `${this.keepAlivesMax} keep-alive streams are open on this member (the limit)`);
    }
    const stream = new LeaseKeepAlive(id, (lease) => this.keepAliveOnce(lease), this.retryMs, options);
    this.keepAlives.add(stream);
    void stream.done.finally(() => this.keepAlives.delete(stream));
    return stream;
  }

  /** A lease's TTL, remaining time and (with `keys: true`) attached keys, after a linearizable read barrier. */
  async timeToLive(id: number, options: { readonly keys?: boolean } = {}): Promise<LeaseTimeToLive> {
    leaseId(id);
    await this.node.readBarrier();
    const lease = this.store.lease(id);
    if (lease === undefined) throw new LeaseNotFoundError(id);
    const measured = this.lessor?.remainingMs(id);
    const remainingMs = measured ?? (lease.remainingMs > 0 ? lease.remainingMs : lease.ttlSeconds * 1000);
    const result: LeaseTimeToLive = { id, grantedTtlSeconds: lease.ttlSeconds, remainingMs, measuredByLeader: measured !== undefined };
    return options.keys === true ? { ...result, keys: this.store.leaseKeys(id).map((key) => Buffer.from(key)) } : result;
  }

  /** Every lease (after a linearizable read barrier). */
  async leases(): Promise<{ id: number; ttlSeconds: number }[]> {
    await this.node.readBarrier();
    return this.store.leases().map((lease) => ({ id: lease.id, ttlSeconds: lease.ttlSeconds }));
  }

  /** The smallest TTL a grant gets, in seconds. */
  get leaseMinimumTtlSeconds(): number {
    return this.leaseMinimumSeconds;
  }

  /** A closed or stopped member answers RAFTKV_STOPPED, whichever part is asked. */
  private ensureOpen(): void {
    if (this.node.isStopped) throw new NodeStoppedError(`member ${this.id} is closed or stopped`);
  }

  /**
   * Validates and proposes a write. Not async, to spare every put a promise and a turn: it throws
   * a validation error synchronously, so callers are async functions that turn it into a rejection,
   * and each passes the response through raiseIfError.
   */
  private write(request: WriteRequest): Promise<WriteResponse> {
    validateWriteRequest(request, this.limits);
    return this.node.propose(request);
  }

  private async changeMembership(type: ConfChangeType, id: NodeId, address: string): Promise<void> {
    if (!Number.isSafeInteger(id) || id <= 0) throw new InvalidArgumentError(`member id must be a positive integer, got ${String(id)}`);
    if (typeof address !== 'string') throw new InvalidArgumentError('address must be a string');
    await this.node.changeMembership({
      transition: ConfChangeTransition.Auto,
      changes: [{ type, nodeId: id }],
      context: toBytes(address, 'address'),
    });
  }
}

/**
 * The store as the node's state machine, with the watch hub fed from each
 * applied batch (one pass for all watchers) and resynced after a snapshot.
 * @internal Exported for the watch tests, which feed a hub through it.
 */
export class WatchedStore implements StateMachinePort<WriteRequest, WriteResponse> {
  constructor(
    private readonly store: MvccStore,
    private readonly hub: WatchHub,
  ) {}

  appliedIndex(): number {
    return this.store.appliedIndex();
  }

  async applyBatch(
    items: readonly { readonly index: number; readonly request: WriteRequest | undefined }[],
  ): Promise<readonly (WriteResponse | undefined)[]> {
    // Events only while watchers exist: most puts then build none. A watcher that starts during
    // the apply has the batch's revisions read from the store's history instead (skip).
    const withEvents = this.hub.watching;
    const responses = await this.store.applyBatch(items, { events: withEvents });
    if (!withEvents) {
      this.hub.skip(this.store.currentRevision);
      return responses;
    }
    // Every event: while watchers exist, the hub also keeps the recent ones for watchers that start in the past.
    const events: Event[] = [];
    for (const response of responses) if (response !== undefined) for (const event of response.events) events.push(event);
    this.hub.dispatch(events, this.store.currentRevision);
    return responses;
  }

  flush(): Promise<void> {
    return this.store.flush();
  }

  snapshot(): AsyncIterable<Uint8Array> {
    return this.store.snapshot();
  }

  async restore(chunks: AsyncIterable<Uint8Array>): Promise<void> {
    await this.store.restore(chunks);
    this.hub.resync(this.store.currentRevision);
  }

  async close(): Promise<void> {
    this.hub.close();
    await this.store.close();
  }
}

/** The data directory's Raft log: the engine it already has, else the one asked for (default 'wal'). */
async function openLog(dataDir: string, engine: 'wal' | 'classic' | undefined): Promise<LogStorage> {
  const [hasClassic, hasWal] = (await Promise.all([kindOf(join(dataDir, 'log')), kindOf(join(dataDir, 'wal'))])).map((kind) => kind !== 'missing');
  if (hasClassic && hasWal) throw new InvalidArgumentError(`${dataDir} holds both a 'log' and a 'wal' directory; remove the one that is not in use`);
  const classic = hasClassic || (!hasWal && engine === 'classic');
  return classic ? ClassicLogStorage.open(join(dataDir, 'log')) : WalLogStorage.open(join(dataDir, 'wal'));
}

/** What a member keeps in its data directory: the store, either log engine's directory, staged snapshots. */
const DATA_PARTS = ['kv', 'log', 'wal', 'snap'] as const;

async function kindOf(path: string): Promise<'missing' | 'directory' | 'other'> {
  try {
    return (await stat(path)).isDirectory() ? 'directory' : 'other';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw error;
  }
}
