// A deliberately simple reference model of the MVCC store for model-based
// tests: every key's full history in a Map, never pruned, each operation
// recomputed from scratch, transactions applied to a copy that is kept only
// if the whole request succeeds. Its answers are plain JSON so they compare
// with the store's directly. It shares no code with the store beyond the
// request types.

import type {
  Compare,
  LeaseRequest,
  RangeRequest,
  RequestOp,
  WriteRequest,
} from '../../src/storage/mvcc/types.ts';

interface ModelRecord {
  main: number;
  sub: number;
  value: string;
  create: number;
  version: number;
  lease: number;
  tombstone: boolean;
}

export interface PlainKeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  lease: number;
}

export type Plain = unknown;

const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString('latin1');

class ModelError extends Error {
  constructor(readonly code: string, readonly compactRevision?: number) {
    super(code);
  }
}

function inRange(key: string, start: string, end: string | undefined): boolean {
  if (end === undefined) return key === start;
  if (end === '\u0000') return key >= start;
  return key >= start && key < end;
}

interface ModelLease {
  ttlSeconds: number;
  renewals: number;
  remainingMs: number;
}

export class MvccModel {
  revision = 0;
  compactRevision = 0;
  histories = new Map<string, ModelRecord[]>();
  leases = new Map<number, ModelLease>();

  clone(): MvccModel {
    const copy = new MvccModel();
    for (const [id, lease] of this.leases) copy.leases.set(id, { ...lease });
    copy.revision = this.revision;
    copy.compactRevision = this.compactRevision;
    for (const [key, records] of this.histories) copy.histories.set(key, records.map((record) => ({ ...record })));
    return copy;
  }

  private at(key: string, revision: number): ModelRecord | undefined {
    const records = this.histories.get(key) ?? [];
    let found: ModelRecord | undefined;
    for (const record of records) if (record.main <= revision) found = record;
    return found === undefined || found.tombstone ? undefined : found;
  }

  private keysIn(start: string, end: string | undefined): string[] {
    return [...this.histories.keys()].filter((key) => inRange(key, start, end)).sort();
  }

  private plain(key: string, record: ModelRecord, keysOnly = false): PlainKeyValue {
    return {
      key,
      value: keysOnly ? '' : record.value,
      createRevision: record.create,
      modRevision: record.main,
      version: record.version,
      lease: record.lease,
    };
  }

  range(request: RangeRequest, currentRevision = this.revision): Plain {
    const revision = (request.revision ?? 0) > 0 ? (request.revision as number) : currentRevision;
    if (revision > currentRevision) throw new ModelError('RAFTKV_FUTURE_REVISION');
    if (revision < this.compactRevision) throw new ModelError('RAFTKV_COMPACTED', this.compactRevision);
    const start = text(request.key);
    const end = request.rangeEnd === undefined || request.rangeEnd.length === 0 ? undefined : text(request.rangeEnd);
    let matches = this.keysIn(start, end)
      .map((key) => ({ key, record: this.at(key, revision) }))
      .filter((item): item is { key: string; record: ModelRecord } => item.record !== undefined);
    const count = matches.length;
    if (request.countOnly === true) return { revision, count, more: false, kvs: [] };
    matches = matches.filter(({ record }) => {
      if ((request.minModRevision ?? 0) > 0 && record.main < (request.minModRevision as number)) return false;
      if ((request.maxModRevision ?? 0) > 0 && record.main > (request.maxModRevision as number)) return false;
      if ((request.minCreateRevision ?? 0) > 0 && record.create < (request.minCreateRevision as number)) return false;
      if ((request.maxCreateRevision ?? 0) > 0 && record.create > (request.maxCreateRevision as number)) return false;
      return true;
    });
    const target = request.sortTarget ?? 'key';
    let order = request.sortOrder ?? 'none';
    if (target !== 'key' && order === 'none') order = 'ascend';
    if (order !== 'none') {
      const sign = order === 'descend' ? -1 : 1;
      const field = (item: { key: string; record: ModelRecord }): number | string =>
        target === 'key' ? item.key : target === 'value' ? item.record.value : target === 'version' ? item.record.version : target === 'create' ? item.record.create : item.record.main;
      matches = matches
        .map((item, position) => ({ item, position }))
        .sort((left, right) => {
          const a = field(left.item);
          const b = field(right.item);
          const byField = a < b ? -1 : a > b ? 1 : 0;
          if (byField !== 0) return sign * byField;
          // Ties keep key order; a descending sort by key has no ties.
          return left.position - right.position;
        })
        .map(({ item }) => item);
    }
    const limit = request.limit ?? 0;
    const more = limit > 0 && matches.length > limit;
    if (more) matches = matches.slice(0, limit);
    return { revision, count, more, kvs: matches.map(({ key, record }) => this.plain(key, record, request.keysOnly === true)) };
  }

  /** Applies one write request; returns its plain response (with events) or an error object. */
  apply(request: WriteRequest): Plain {
    if (request.type === 'compact') {
      if (request.revision <= this.compactRevision) return this.error('RAFTKV_COMPACTED', this.compactRevision);
      if (request.revision > this.revision) return this.error('RAFTKV_FUTURE_REVISION');
      this.compactRevision = request.revision;
      return { type: 'compact', revision: this.revision, events: [] };
    }
    const work = this.clone();
    const context = { main: this.revision + 1, sub: 0, events: [] as Plain[] };
    try {
      const response =
        request.type === 'leaseGrant' || request.type === 'leaseRevoke' || request.type === 'leaseKeepAlive' || request.type === 'leaseCheckpoint'
          ? work.lease(request, context)
          : work.operate(request, context);
      if (context.sub > 0) work.revision = context.main;
      this.revision = work.revision;
      this.histories = work.histories;
      this.leases = work.leases;
      return { ...(stamp(response, this.revision) as object), events: context.events };
    } catch (error) {
      if (!(error instanceof ModelError)) throw error;
      return this.error(error.code, error.compactRevision);
    }
  }

  private lease(request: LeaseRequest, context: { main: number; sub: number; events: Plain[] }): Plain {
    const plain = (type: string, id: number, ttlSeconds: number, deleted = 0): Plain => ({ type, id, ttlSeconds, deleted });
    if (request.type === 'leaseCheckpoint') {
      for (const checkpoint of request.checkpoints) {
        const lease = this.leases.get(checkpoint.id);
        if (lease !== undefined && lease.renewals === checkpoint.renewals) lease.remainingMs = checkpoint.remainingMs;
      }
      return plain('leaseCheckpoint', 0, 0);
    }
    const lease = this.leases.get(request.id);
    if (request.type === 'leaseGrant') {
      if (lease !== undefined) throw new ModelError('RAFTKV_LEASE_EXISTS');
      this.leases.set(request.id, { ttlSeconds: request.ttlSeconds, renewals: 0, remainingMs: 0 });
      return plain('leaseGrant', request.id, request.ttlSeconds);
    }
    if (lease === undefined) throw new ModelError('RAFTKV_LEASE_NOT_FOUND');
    if (request.type === 'leaseKeepAlive') {
      lease.renewals++;
      lease.remainingMs = 0;
      return plain('leaseKeepAlive', request.id, lease.ttlSeconds);
    }
    if (request.renewals !== undefined && request.renewals !== lease.renewals) throw new ModelError('RAFTKV_LEASE_RENEWED');
    const victims = [...this.histories.keys()].filter((key) => this.latest(key)?.lease === request.id).sort();
    for (const key of victims) {
      const previous = this.plain(key, this.latest(key) as ModelRecord);
      this.write(key, { main: context.main, sub: context.sub++, value: '', create: 0, version: 0, lease: 0, tombstone: true });
      context.events.push({ type: 'delete', kv: { key, value: '', createRevision: 0, modRevision: context.main, version: 0, lease: 0 }, prevKv: previous });
    }
    this.leases.delete(request.id);
    return plain('leaseRevoke', request.id, 0, victims.length);
  }

  private error(code: string, compactRevision?: number): Plain {
    return compactRevision === undefined
      ? { type: 'error', revision: this.revision, code, events: [] }
      : { type: 'error', revision: this.revision, code, compactRevision, events: [] };
  }

  latest(key: string): ModelRecord | undefined {
    return this.at(key, Number.MAX_SAFE_INTEGER);
  }

  private write(key: string, record: ModelRecord): void {
    const records = this.histories.get(key) ?? [];
    records.push(record);
    this.histories.set(key, records);
  }

  private operate(operation: RequestOp, context: { main: number; sub: number; events: Plain[] }): Plain {
    const current = context.sub > 0 ? context.main : this.revision;
    switch (operation.type) {
      case 'range':
        return { type: 'range', ...(this.range(operation, current) as object) };
      case 'put': {
        const key = text(operation.key);
        const live = this.latest(key);
        if ((operation.ignoreValue === true || operation.ignoreLease === true) && live === undefined) throw new ModelError('RAFTKV_KEY_NOT_FOUND');
        if (operation.ignoreLease !== true && (operation.lease ?? 0) !== 0 && !this.leases.has(operation.lease as number)) {
          throw new ModelError('RAFTKV_LEASE_NOT_FOUND');
        }
        const record: ModelRecord = {
          main: context.main,
          sub: context.sub++,
          value: operation.ignoreValue === true ? (live as ModelRecord).value : text(operation.value),
          create: live?.create ?? context.main,
          version: (live?.version ?? 0) + 1,
          lease: operation.ignoreLease === true ? (live as ModelRecord).lease : (operation.lease ?? 0),
          tombstone: false,
        };
        this.write(key, record);
        const previous = live === undefined ? undefined : this.plain(key, live);
        context.events.push(previous === undefined ? { type: 'put', kv: this.plain(key, record) } : { type: 'put', kv: this.plain(key, record), prevKv: previous });
        return operation.prevKv === true && previous !== undefined ? { type: 'put', prevKv: previous } : { type: 'put' };
      }
      case 'deleteRange': {
        const start = text(operation.key);
        const end = operation.rangeEnd === undefined || operation.rangeEnd.length === 0 ? undefined : text(operation.rangeEnd);
        const victims = this.keysIn(start, end).filter((key) => this.latest(key) !== undefined);
        const prevKvs: Plain[] = [];
        for (const key of victims) {
          const previous = this.plain(key, this.latest(key) as ModelRecord);
          this.write(key, { main: context.main, sub: context.sub++, value: '', create: 0, version: 0, lease: 0, tombstone: true });
          context.events.push({
            type: 'delete',
            kv: { key, value: '', createRevision: 0, modRevision: context.main, version: 0, lease: 0 },
            prevKv: previous,
          });
          if (operation.prevKv === true) prevKvs.push(previous);
        }
        return { type: 'deleteRange', deleted: victims.length, prevKvs };
      }
      case 'txn': {
        const succeeded = operation.compare.every((compare) => this.compare(compare));
        const responses = (succeeded ? operation.success : operation.failure).map((inner) => this.operate(inner, context));
        return { type: 'txn', succeeded, responses };
      }
    }
  }

  private compare(compare: Compare): boolean {
    const start = text(compare.key);
    const end = compare.rangeEnd === undefined || compare.rangeEnd.length === 0 ? undefined : text(compare.rangeEnd);
    const live = this.keysIn(start, end)
      .map((key) => this.latest(key))
      .filter((record): record is ModelRecord => record !== undefined);
    const check = (record: ModelRecord | undefined): boolean => {
      let outcome: number;
      if (compare.target === 'value') {
        const actual = (record as ModelRecord).value;
        const expected = text(compare.value as Uint8Array);
        outcome = actual < expected ? -1 : actual > expected ? 1 : 0;
      } else {
        const actual = record === undefined ? 0 : { version: record.version, create: record.create, mod: record.main, lease: record.lease }[compare.target];
        outcome = Math.sign(actual - (compare.number as number));
      }
      return { '=': outcome === 0, '!=': outcome !== 0, '<': outcome < 0, '>': outcome > 0 }[compare.result];
    };
    if (live.length === 0) return compare.target === 'value' ? false : check(undefined);
    return live.every(check);
  }
}

function stamp(response: Plain, revision: number): Plain {
  const object = response as { type: string; responses?: Plain[] };
  if (object.type === 'range') return response;
  if (object.type === 'txn') return { ...object, revision, responses: (object.responses ?? []).map((inner) => stamp(inner, revision)) };
  return { ...object, revision };
}

/** The store's answers in the model's plain form. */
export function plainOf(value: unknown): Plain {
  if (value instanceof Uint8Array) return text(value);
  if (Array.isArray(value)) return value.map(plainOf);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(value)) {
      if (inner === undefined || key === 'message') continue;
      out[key] = plainOf(inner);
    }
    return out;
  }
  return value;
}

export function errorCodeOf(error: unknown): Plain {
  if (error instanceof ModelError) {
    return error.compactRevision === undefined ? { error: error.code } : { error: error.code, compactRevision: error.compactRevision };
  }
  const typed = error as { code?: string; compactRevision?: number };
  if (typeof typed.code !== 'string') throw error;
  return typed.compactRevision === undefined ? { error: typed.code } : { error: typed.code, compactRevision: typed.compactRevision };
}
