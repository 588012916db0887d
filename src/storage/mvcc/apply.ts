// Applying write requests to the MVCC store, in memory: each request runs
// against a view of the store plus the writes of its batch so far, and
// stages its own changes in a layer that joins the batch only if the whole
// request succeeds (nothing is half-applied). A request that changes
// something takes the next main revision; each change in it the next sub
// revision. Range operations inside transactions are planned here and
// resolved by the store once their values can be read.

import { RaftKVError } from '../../raft/errors.ts';
import { CompactedError, FutureRevisionError, KeyNotFoundError, NoSpaceError } from './errors.ts';
import type { KeyIndex, RevisionRecord } from './key-index.ts';
import { indexBounds, indexKey } from './keys.ts';
import type {
  DeleteRangeRequest,
  DeleteRangeResponse,
  Event,
  KeyValue,
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

/** The state of one batch being applied; published to the index only once written. */
export class BatchState {
  readonly layer: Layer = new Map();
  readonly deferred: DeferredRange[] = [];
  /** Records in the order they were written (row order on disk). */
  readonly written: { readonly key: Uint8Array; readonly indexKey: string; readonly record: RevisionRecord }[] = [];

  constructor(
    public revision: number,
    public compactRevision: number,
    public liveBytes: number,
    readonly quotaBytes: number,
  ) {}
}

function liveSize(key: Uint8Array, record: RevisionRecord | undefined): number {
  if (record === undefined || record.tombstone) return 0;
  return key.length + (record.value as Uint8Array).length;
}

/** One request's changes: a layer over the batch, and the events it produced. */
class RequestContext {
  readonly layer: Layer = new Map();
  readonly events: Event[] = [];
  readonly main: number;
  sub = 0;
  liveBytesDelta = 0;
  readonly view: IndexView;
  readonly deferred: DeferredRange[] = [];

  constructor(
    index: KeyIndex,
    readonly batch: BatchState,
  ) {
    this.main = batch.revision + 1;
    this.view = new IndexView(
      index,
      () => (this.sub > 0 ? this.main : batch.revision),
      () => batch.compactRevision,
      [this.layer, batch.layer],
    );
  }

  latest(key: string): RevisionRecord | undefined {
    return this.view.recordAt(key, Number.MAX_SAFE_INTEGER);
  }

  write(indexKeyOfKey: string, key: Uint8Array, record: RevisionRecord): void {
    let entry = this.layer.get(indexKeyOfKey);
    if (entry === undefined) {
      entry = { key, records: [] };
      this.layer.set(indexKeyOfKey, entry);
    }
    entry.records.push(record);
    this.sub++;
  }
}

function put(context: RequestContext, request: PutRequest): PutResponse {
  const key = indexKey(request.key);
  const current = context.latest(key);
  const live = current !== undefined && !current.tombstone ? current : undefined;
  if ((request.ignoreValue === true || request.ignoreLease === true) && live === undefined) {
    throw new KeyNotFoundError(key);
  }
  const value = request.ignoreValue === true ? (live?.value as Uint8Array) : request.value;
  const lease = request.ignoreLease === true ? (live?.lease ?? 0) : (request.lease ?? 0);
  const growth = request.key.length + value.length - liveSize(request.key, live);
  const liveBytesAfter = context.batch.liveBytes + context.liveBytesDelta + growth;
  if (growth > 0 && liveBytesAfter > context.batch.quotaBytes) throw new NoSpaceError(liveBytesAfter, context.batch.quotaBytes);
  const record: RevisionRecord = {
    main: context.main,
    sub: context.sub,
    createRevision: live?.createRevision ?? context.main,
    version: (live?.version ?? 0) + 1,
    lease,
    tombstone: false,
    value,
  };
  context.write(key, request.key, record);
  context.liveBytesDelta += growth;
  const previous = live === undefined ? undefined : keyValueOf(request.key, live, live.value as Uint8Array);
  context.events.push(
    previous === undefined
      ? { type: 'put', kv: keyValueOf(request.key, record, value) }
      : { type: 'put', kv: keyValueOf(request.key, record, value), prevKv: previous },
  );
  const response: PutResponse = { type: 'put', revision: 0 };
  return request.prevKv === true && previous !== undefined ? { ...response, prevKv: previous } : response;
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
    const tombstone: RevisionRecord = {
      main: context.main,
      sub: context.sub,
      createRevision: 0,
      version: 0,
      lease: 0,
      tombstone: true,
      value: EMPTY_BYTES,
    };
    context.write(victim.indexKey, victim.key, tombstone);
    context.liveBytesDelta -= liveSize(victim.key, victim.record);
    const previous = keyValueOf(victim.key, victim.record, victim.record.value as Uint8Array);
    const deleted: KeyValue = { key: victim.key, value: EMPTY_BYTES, createRevision: 0, modRevision: context.main, version: 0, lease: 0 };
    context.events.push({ type: 'delete', kv: deleted, prevKv: previous });
    if (request.prevKv === true) prevKvs.push(previous);
  }
  return { type: 'deleteRange', revision: 0, deleted: victims.length, prevKvs };
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
  const context = new RequestContext(index, batch);
  let response: OpResponse | { type: 'compact'; revision: number };
  try {
    if (request.type === 'compact') {
      if (request.revision <= batch.compactRevision) throw new CompactedError(request.revision, batch.compactRevision);
      if (request.revision > batch.revision) throw new FutureRevisionError(request.revision, batch.revision);
      batch.compactRevision = request.revision;
      return { type: 'compact', revision: batch.revision, events: [] };
    }
    response = operate(context, request);
  } catch (error) {
    if (!(error instanceof RaftKVError)) throw error;
    const compactRevision = error instanceof CompactedError ? { compactRevision: error.compactRevision } : {};
    return { type: 'error', revision: batch.revision, code: error.code, message: error.message, events: [], ...compactRevision };
  }
  if (context.sub > 0) {
    batch.revision = context.main;
    batch.liveBytes += context.liveBytesDelta;
    for (const [key, entry] of context.layer) {
      let batchEntry = batch.layer.get(key);
      if (batchEntry === undefined) {
        batchEntry = { key: entry.key, records: [] };
        batch.layer.set(key, batchEntry);
      }
      for (const record of entry.records) {
        batchEntry.records.push(record);
        batch.written.push({ key: entry.key, indexKey: key, record });
      }
    }
  }
  batch.deferred.push(...context.deferred);
  return { ...(stampRevision(response, batch.revision) as Exclude<OpResponse, RangeOpResponse>), events: context.events };
}
