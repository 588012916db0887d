// Applying write requests to the MVCC store, in memory: each request runs
// against a view of the store plus the writes of its batch so far, and
// stages its own changes in a layer that joins the batch only if the whole
// request succeeds (nothing is half-applied). A request that changes
// something takes the next main revision; each change in it the next sub
// revision. Range operations inside transactions are planned here and
// resolved by the store once their values can be read.

import { assert, RaftKVError } from '../../raft/errors.ts';
import {
  CompactedError,
  FutureRevisionError,
  KeyNotFoundError,
  LeaseExistsError,
  LeaseNotFoundError,
  LeaseRenewedError,
  NoSpaceError,
  TooManyLeasesError,
} from './errors.ts';
import type { KeyIndex, RevisionRecord } from './key-index.ts';
import { indexBounds, indexKey } from './keys.ts';
import type {
  DeleteRangeRequest,
  DeleteRangeResponse,
  Event,
  KeyValue,
  LeaseRecord,
  LeaseRequest,
  LeaseResponse,
  OpResponse,
  PutRequest,
  PutResponse,
  RangeOpResponse,
  RequestOp,
  TxnRequest,
  TxnResponse,
  WriteRequest,
  WriteResponse,
} from './types.ts';
import { EMPTY_BYTES, evaluateCompare, IndexView, keyValueOf, planRange } from './view.ts';
import type { Layer, RangePlan } from './view.ts';

/** A range inside a transaction whose kvs the store fills in once it can read them. */
export interface DeferredRange {
  readonly plan: RangePlan;
  readonly response: { kvs: readonly KeyValue[]; more: boolean };
}

/** The committed lease table a batch starts from (the store's, read-only here). */
export interface LeaseState {
  readonly table: ReadonlyMap<number, LeaseRecord>;
  /** Lease id → index keys whose latest live revision is attached to it. */
  readonly attached: ReadonlyMap<number, ReadonlySet<string>>;
  readonly leasesMax: number;
}

const NO_LEASES: LeaseState = { table: new Map(), attached: new Map(), leasesMax: 0 };

/** The state of one batch being applied; published to the index only once written. */
export class BatchState {
  readonly layer: Layer = new Map();
  /** Leases this batch granted, changed (a record) or removed (null). */
  readonly leaseChanges = new Map<number, LeaseRecord | null>();
  readonly deferred: DeferredRange[] = [];
  /** Records in the order they were written (row order on disk). */
  readonly written: { readonly key: Uint8Array; readonly indexKey: string; readonly record: RevisionRecord }[] = [];

  constructor(
    public revision: number,
    public compactRevision: number,
    public liveBytes: number,
    readonly quotaBytes: number,
    readonly leases: LeaseState = NO_LEASES,
    /** Whether responses carry their events; without them a put builds no key-values nobody reads. */
    readonly events = true,
  ) {}

  /** A record joins the batch: readable by its later requests, and a row to write. */
  join(indexKeyOfKey: string, key: Uint8Array, record: RevisionRecord): void {
    addToLayer(this.layer, indexKeyOfKey, key, record);
    this.written.push({ key, indexKey: indexKeyOfKey, record });
  }

  lease(id: number): LeaseRecord | undefined {
    const changed = this.leaseChanges.get(id);
    if (changed !== undefined) return changed ?? undefined;
    return this.leases.table.get(id);
  }

  leaseCount(): number {
    let count = this.leases.table.size;
    for (const [id, record] of this.leaseChanges) {
      const before = this.leases.table.has(id);
      if (before && record === null) count--;
      else if (!before && record !== null) count++;
    }
    return count;
  }
}

/** The events of a response from a batch that carries none. */
const NO_EVENTS: readonly Event[] = Object.freeze([]);

function liveSize(key: Uint8Array, record: RevisionRecord | undefined): number {
  if (record === undefined || record.tombstone) return 0;
  return key.length + (record.value as Uint8Array).length;
}

function addToLayer(layer: Layer, indexKeyOfKey: string, key: Uint8Array, record: RevisionRecord): void {
  const entry = layer.get(indexKeyOfKey);
  if (entry === undefined) layer.set(indexKeyOfKey, { key, records: [record] });
  else entry.records.push(record);
}

/** The key's latest record (a tombstone included) in the batch so far, else in the index. */
function latestInBatch(index: KeyIndex, batch: BatchState, indexKeyOfKey: string): RevisionRecord | undefined {
  const entry = batch.layer.get(indexKeyOfKey);
  if (entry !== undefined) return entry.records[entry.records.length - 1];
  return index.history(indexKeyOfKey)?.latest;
}

/** One request's changes: a layer over the batch, and the events it produced. */
class RequestContext {
  readonly layer: Layer = new Map();
  readonly events: Event[] = [];
  readonly main: number;
  sub = 0;
  liveBytesDelta = 0;
  readonly deferred: DeferredRange[] = [];
  private indexView: IndexView | undefined;

  constructor(
    readonly index: KeyIndex,
    readonly batch: BatchState,
  ) {
    this.main = batch.revision + 1;
  }

  /** The store as this request sees it: the index, the batch so far and this request's own writes. */
  get view(): IndexView {
    this.indexView ??= new IndexView(
      this.index,
      () => (this.sub > 0 ? this.main : this.batch.revision),
      () => this.batch.compactRevision,
      [this.layer, this.batch.layer],
    );
    return this.indexView;
  }

  latest(key: string): RevisionRecord | undefined {
    const entry = this.layer.get(key);
    return entry === undefined ? latestInBatch(this.index, this.batch, key) : entry.records[entry.records.length - 1];
  }

  write(indexKeyOfKey: string, key: Uint8Array, record: RevisionRecord): void {
    addToLayer(this.layer, indexKeyOfKey, key, record);
    this.sub++;
  }
}

/** What a put writes over the key's latest record, or the error that makes it change nothing. */
interface PlannedPut {
  readonly record: RevisionRecord;
  /** The change in live bytes (key and value sizes) the put makes. */
  readonly growth: number;
  /** Undefined when the batch carries no events. */
  readonly event: Event | undefined;
  /** The key-value the put replaces, when the key was live. */
  readonly previous: KeyValue | undefined;
}

/**
 * Plans a put at revision main.sub against the key's latest record, with the
 * batch's live bytes already grown by liveBytesDelta; throws an operating
 * error (missing key or lease, no space) and changes nothing.
 */
function planPut(
  batch: BatchState,
  request: PutRequest,
  latest: RevisionRecord | undefined,
  main: number,
  sub: number,
  liveBytesDelta: number,
  indexKeyOfKey: string,
): PlannedPut {
  const live = latest !== undefined && !latest.tombstone ? latest : undefined;
  if ((request.ignoreValue === true || request.ignoreLease === true) && live === undefined) {
    throw new KeyNotFoundError(indexKeyOfKey);
  }
  const value = request.ignoreValue === true ? (live?.value as Uint8Array) : request.value;
  const lease = request.ignoreLease === true ? (live?.lease ?? 0) : (request.lease ?? 0);
  if (lease !== 0 && batch.lease(lease) === undefined) throw new LeaseNotFoundError(lease);
  const growth = request.key.length + value.length - liveSize(request.key, live);
  const liveBytesAfter = batch.liveBytes + liveBytesDelta + growth;
  if (growth > 0 && liveBytesAfter > batch.quotaBytes) throw new NoSpaceError(liveBytesAfter, batch.quotaBytes);
  const record: RevisionRecord = {
    main,
    sub,
    createRevision: live?.createRevision ?? main,
    version: (live?.version ?? 0) + 1,
    lease,
    tombstone: false,
    value,
  };
  const previous =
    live === undefined || (!batch.events && request.prevKv !== true) ? undefined : keyValueOf(request.key, live, live.value as Uint8Array);
  if (!batch.events) return { record, growth, event: undefined, previous };
  const kv = keyValueOf(request.key, record, value);
  const event: Event = previous === undefined ? { type: 'put', kv } : { type: 'put', kv, prevKv: previous };
  return { record, growth, event, previous };
}

function put(context: RequestContext, request: PutRequest): PutResponse {
  const key = indexKey(request.key);
  const planned = planPut(context.batch, request, context.latest(key), context.main, context.sub, context.liveBytesDelta, key);
  context.write(key, request.key, planned.record);
  context.liveBytesDelta += planned.growth;
  if (planned.event !== undefined) context.events.push(planned.event);
  const response: PutResponse = { type: 'put', revision: 0 };
  return request.prevKv === true && planned.previous !== undefined ? { ...response, prevKv: planned.previous } : response;
}

/**
 * A put that is a whole request (most writes): the same as applying it
 * through a RequestContext, without building one. A put writes one key, so
 * it joins the batch directly once planned.
 */
function applyPut(index: KeyIndex, batch: BatchState, request: PutRequest): WriteResponse {
  const key = indexKey(request.key);
  const main = batch.revision + 1;
  let planned: PlannedPut;
  try {
    planned = planPut(batch, request, latestInBatch(index, batch, key), main, 0, 0, key);
  } catch (error) {
    return errorResponse(error, batch);
  }
  batch.revision = main;
  batch.liveBytes += planned.growth;
  batch.join(key, request.key, planned.record);
  const events = planned.event === undefined ? NO_EVENTS : [planned.event];
  return request.prevKv === true && planned.previous !== undefined
    ? { type: 'put', revision: main, prevKv: planned.previous, events }
    : { type: 'put', revision: main, events };
}

function deleteRange(context: RequestContext, request: DeleteRangeRequest): DeleteRangeResponse {
  const bounds = indexBounds(request.key, request.rangeEnd);
  const victims: { indexKey: string; key: Uint8Array; record: RevisionRecord }[] = [];
  context.view.forEachKey(bounds, (indexKeyOfKey, key) => {
    const record = context.latest(indexKeyOfKey);
    if (record !== undefined && !record.tombstone) victims.push({ indexKey: indexKeyOfKey, key, record });
    return true;
  });
  const prevKvs: KeyValue[] = [];
  for (const victim of victims) {
    const previous = deleteKey(context, victim.indexKey, victim.key, victim.record);
    if (request.prevKv === true) prevKvs.push(previous);
  }
  return { type: 'deleteRange', revision: 0, deleted: victims.length, prevKvs };
}

/** Writes a tombstone over a live key; returns the key-value it deleted. */
function deleteKey(context: RequestContext, indexKeyOfKey: string, key: Uint8Array, record: RevisionRecord): KeyValue {
  assert(!record.tombstone, 'only a live key is deleted');
  const tombstone: RevisionRecord = {
    main: context.main,
    sub: context.sub,
    createRevision: 0,
    version: 0,
    lease: 0,
    tombstone: true,
    value: EMPTY_BYTES,
  };
  context.write(indexKeyOfKey, key, tombstone);
  context.liveBytesDelta -= liveSize(key, record);
  const previous = keyValueOf(key, record, record.value as Uint8Array);
  if (context.batch.events) {
    const deleted: KeyValue = { key, value: EMPTY_BYTES, createRevision: 0, modRevision: context.main, version: 0, lease: 0 };
    context.events.push({ type: 'delete', kv: deleted, prevKv: previous });
  }
  return previous;
}

/**
 * The keys attached to a lease, sorted (so every member deletes them in the
 * same sub-revision order): the committed attachments plus any key this
 * batch wrote, each kept only if its latest revision is live and still
 * attached to the lease.
 */
function attachedKeys(context: RequestContext, id: number): { indexKey: string; key: Uint8Array; record: RevisionRecord }[] {
  const candidates = new Map<string, Uint8Array | undefined>();
  for (const key of context.batch.leases.attached.get(id) ?? []) candidates.set(key, undefined);
  for (const [key, entry] of context.batch.layer) candidates.set(key, entry.key);
  const found: { indexKey: string; key: Uint8Array; record: RevisionRecord }[] = [];
  for (const key of [...candidates.keys()].sort()) {
    const record = context.latest(key);
    if (record === undefined || record.tombstone || record.lease !== id) continue;
    const bytes = candidates.get(key) ?? context.index.history(key)?.key;
    assert(bytes !== undefined, 'an attached key is in the index');
    found.push({ indexKey: key, key: bytes, record });
  }
  return found;
}

function leaseResponse(type: LeaseResponse['type'], id: number, ttlSeconds: number, deleted = 0): LeaseResponse {
  return { type, revision: 0, id, ttlSeconds, deleted };
}

/** Applies a lease request; lease changes join the batch only if it succeeds (see applyRequest). */
function applyLease(context: RequestContext, request: LeaseRequest, changes: Map<number, LeaseRecord | null>): LeaseResponse {
  const batch = context.batch;
  switch (request.type) {
    case 'leaseGrant': {
      if (batch.lease(request.id) !== undefined) throw new LeaseExistsError(request.id);
      if (batch.leaseCount() >= batch.leases.leasesMax) throw new TooManyLeasesError(batch.leases.leasesMax);
      changes.set(request.id, { id: request.id, ttlSeconds: request.ttlSeconds, renewals: 0, remainingMs: 0 });
      return leaseResponse('leaseGrant', request.id, request.ttlSeconds);
    }
    case 'leaseRevoke': {
      const lease = batch.lease(request.id);
      if (lease === undefined) throw new LeaseNotFoundError(request.id);
      if (request.renewals !== undefined && request.renewals !== lease.renewals) throw new LeaseRenewedError(request.id);
      const victims = attachedKeys(context, request.id);
      for (const victim of victims) deleteKey(context, victim.indexKey, victim.key, victim.record);
      changes.set(request.id, null);
      return leaseResponse('leaseRevoke', request.id, 0, victims.length);
    }
    case 'leaseKeepAlive': {
      const lease = batch.lease(request.id);
      if (lease === undefined) throw new LeaseNotFoundError(request.id);
      changes.set(request.id, { ...lease, renewals: lease.renewals + 1, remainingMs: 0 });
      return leaseResponse('leaseKeepAlive', request.id, lease.ttlSeconds);
    }
    case 'leaseCheckpoint': {
      for (const checkpoint of request.checkpoints) {
        const lease = changes.get(checkpoint.id) ?? batch.lease(checkpoint.id);
        // A lease gone or renewed since the leader measured it keeps what it has.
        if (lease === undefined || lease === null || lease.renewals !== checkpoint.renewals) continue;
        changes.set(checkpoint.id, { ...lease, remainingMs: checkpoint.remainingMs });
      }
      return leaseResponse('leaseCheckpoint', 0, 0);
    }
  }
}

function range(context: RequestContext, request: RequestOp & { type: 'range' }): RangeOpResponse {
  const plan = planRange(context.view, request);
  const response = { type: 'range' as const, revision: plan.revision, kvs: [] as readonly KeyValue[], more: false, count: plan.count };
  context.deferred.push({ plan, response });
  return response;
}

function txn(context: RequestContext, request: TxnRequest): TxnResponse {
  const succeeded = request.compare.every((compare) => evaluateCompare(context.view, compare));
  const operations = succeeded ? request.success : request.failure;
  const responses: OpResponse[] = [];
  for (const operation of operations) responses.push(operate(context, operation));
  return { type: 'txn', revision: 0, succeeded, responses };
}

function operate(context: RequestContext, operation: RequestOp): OpResponse {
  switch (operation.type) {
    case 'put':
      return put(context, operation);
    case 'deleteRange':
      return deleteRange(context, operation);
    case 'range':
      return range(context, operation);
    case 'txn':
      return txn(context, operation);
  }
}

function withRevision<T extends { readonly revision: number }>(response: T, revision: number): T {
  return { ...response, revision };
}

/** Nested responses carry the transaction's header revision too, as etcd's do. */
function stampRevision(response: OpResponse, revision: number): OpResponse {
  if (response.type === 'range') return response;
  if (response.type === 'txn') {
    return { ...response, revision, responses: response.responses.map((inner) => stampRevision(inner, revision)) };
  }
  return withRevision(response, revision);
}

/**
 * Applies one request to the batch. Operating errors (compacted, future
 * revision, missing key, no space) become an error response and change
 * nothing; anything else is a bug and propagates.
 */
export function applyRequest(index: KeyIndex, batch: BatchState, request: WriteRequest): WriteResponse {
  if (request.type === 'put') return applyPut(index, batch, request);
  const context = new RequestContext(index, batch);
  let response: OpResponse | LeaseResponse;
  const leaseChanges = new Map<number, LeaseRecord | null>();
  try {
    if (request.type === 'compact') {
      if (request.revision <= batch.compactRevision) throw new CompactedError(request.revision, batch.compactRevision);
      if (request.revision > batch.revision) throw new FutureRevisionError(request.revision, batch.revision);
      batch.compactRevision = request.revision;
      return { type: 'compact', revision: batch.revision, events: [] };
    }
    if (request.type === 'leaseGrant' || request.type === 'leaseRevoke' || request.type === 'leaseKeepAlive' || request.type === 'leaseCheckpoint') {
      response = applyLease(context, request, leaseChanges);
    } else {
      response = operate(context, request);
    }
  } catch (error) {
    return errorResponse(error, batch);
  }
  if (context.sub > 0) {
    batch.revision = context.main;
    batch.liveBytes += context.liveBytesDelta;
    for (const [key, entry] of context.layer) for (const record of entry.records) batch.join(key, entry.key, record);
  }
  for (const [id, record] of leaseChanges) batch.leaseChanges.set(id, record);
  batch.deferred.push(...context.deferred);
  if (response.type.startsWith('lease')) return { ...(response as LeaseResponse), revision: batch.revision, events: context.events };
  return { ...(stampRevision(response as OpResponse, batch.revision) as Exclude<OpResponse, RangeOpResponse>), events: context.events };
}

/** An operating error as the request's response (it changed nothing); anything else is a bug and propagates. */
function errorResponse(error: unknown, batch: BatchState): WriteResponse {
  if (!(error instanceof RaftKVError)) throw error;
  const compactRevision = error instanceof CompactedError ? { compactRevision: error.compactRevision } : {};
  return { type: 'error', revision: batch.revision, code: error.code, message: error.message, events: [], ...compactRevision };
}
