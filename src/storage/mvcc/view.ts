// Read views of the MVCC store and the range and compare logic on them. A
// view is the committed index, optionally overlaid with layers of writes not
// yet published (the current batch, the current transaction), so a
// transaction's later operations see its earlier ones. Planning a range is
// synchronous; values that are not in memory (historical reads) are fetched
// afterwards by the store.

import { assert } from '../../raft/errors.ts';
import { CompactedError, FutureRevisionError } from './errors.ts';
import type { KeyIndex, RevisionRecord } from './key-index.ts';
import { positionAt } from './key-index.ts';
import { compareBytes, inBounds, indexBounds } from './keys.ts';
import type { IndexBounds } from './keys.ts';
import type { Compare, KeyValue, RangeRequest, SortOrder, SortTarget } from './types.ts';

export const EMPTY_BYTES = new Uint8Array(0);

/** Records written but not yet published, per key, oldest first. */
export type Layer = Map<string, { readonly key: Uint8Array; readonly records: RevisionRecord[] }>;

export interface ReadView {
  /** The revision a read without an explicit revision sees. */
  readonly revision: number;
  readonly compactRevision: number;
  /** The key's latest revision (a tombstone included) with main <= atRevision. */
  recordAt(indexKey: string, atRevision: number): RevisionRecord | undefined;
  /** Visits every key in bounds that has any history, in key order, until visit returns false. */
  forEachKey(bounds: IndexBounds, visit: (indexKey: string, key: Uint8Array) => boolean): void;
}

export class IndexView implements ReadView {
  constructor(
    private readonly index: KeyIndex,
    private readonly revisionOf: () => number,
    private readonly compactRevisionOf: () => number,
    private readonly layers: readonly Layer[] = [],
  ) {}

  get revision(): number {
    return this.revisionOf();
  }

  get compactRevision(): number {
    return this.compactRevisionOf();
  }

  recordAt(indexKey: string, atRevision: number): RevisionRecord | undefined {
    for (const layer of this.layers) {
      const entry = layer.get(indexKey);
      if (entry === undefined) continue;
      for (let position = entry.records.length - 1; position >= 0; position--) {
        const record = entry.records[position] as RevisionRecord;
        if (record.main <= atRevision) return record;
      }
    }
    const history = this.index.history(indexKey);
    if (history === undefined) return undefined;
    const position = positionAt(history, atRevision);
    return position < 0 ? undefined : history.at(position);
  }

  forEachKey(bounds: IndexBounds, visit: (indexKey: string, key: Uint8Array) => boolean): void {
    const extra = this.layerKeysIn(bounds);
    let next = 0;
    let stopped = false;
    this.index.forEachInBounds(bounds, (indexKey, history) => {
      while (next < extra.length && (extra[next] as [string, Uint8Array])[0] < indexKey) {
        const [layerKey, key] = extra[next++] as [string, Uint8Array];
        if (!visit(layerKey, key)) {
          stopped = true;
          return false;
        }
      }
      if (next < extra.length && (extra[next] as [string, Uint8Array])[0] === indexKey) next++;
      if (!visit(indexKey, history.key)) {
        stopped = true;
        return false;
      }
      return true;
    });
    while (!stopped && next < extra.length) {
      const [layerKey, key] = extra[next++] as [string, Uint8Array];
      if (!visit(layerKey, key)) return;
    }
  }

  private layerKeysIn(bounds: IndexBounds): [string, Uint8Array][] {
    if (this.layers.length === 0) return [];
    const found = new Map<string, Uint8Array>();
    for (const layer of this.layers) {
      if (bounds.single) {
        const entry = layer.get(bounds.start);
        if (entry !== undefined) found.set(bounds.start, entry.key);
        continue;
      }
      for (const [indexKey, entry] of layer) if (inBounds(bounds, indexKey)) found.set(indexKey, entry.key);
    }
    return [...found].sort((left, right) => (left[0] < right[0] ? -1 : left[0] > right[0] ? 1 : 0));
  }
}

export interface PlannedKeyValue {
  readonly key: Uint8Array;
  readonly record: RevisionRecord;
  /** Captured when planned; undefined when it must be read from disk. */
  value: Uint8Array | undefined;
}

export interface RangePlan {
  readonly revision: number;
  readonly count: number;
  items: PlannedKeyValue[];
  more: boolean;
  readonly limit: number;
  readonly keysOnly: boolean;
  readonly countOnly: boolean;
  /** Set when sorting needs values that are still on disk: sort after fetching them. */
  readonly sortAfterFetch: { readonly order: SortOrder; readonly target: SortTarget } | null;
}

function effectiveSort(request: RangeRequest): { order: SortOrder; target: SortTarget } {
  const target = request.sortTarget ?? 'key';
  let order = request.sortOrder ?? 'none';
  // As etcd: results come in key order; another target without an order sorts ascending.
  if (target !== 'key' && order === 'none') order = 'ascend';
  return { order, target };
}

function sortValue(item: PlannedKeyValue, target: SortTarget): number {
  if (target === 'version') return item.record.version;
  if (target === 'create') return item.record.createRevision;
  return item.record.main;
}

/** Sorts in place, stably: ties keep key order whichever the direction. */
export function sortPlanned(items: PlannedKeyValue[], order: SortOrder, target: SortTarget): void {
  if (order === 'none') return;
  const sign = order === 'descend' ? -1 : 1;
  if (target === 'key') {
    if (order === 'descend') items.reverse();
    return;
  }
  if (target === 'value') {
    items.sort((left, right) => sign * compareBytes(left.value as Uint8Array, right.value as Uint8Array));
    return;
  }
  items.sort((left, right) => sign * (sortValue(left, target) - sortValue(right, target)));
}

function passesFilters(record: RevisionRecord, request: RangeRequest): boolean {
  if ((request.minModRevision ?? 0) > 0 && record.main < (request.minModRevision as number)) return false;
  if ((request.maxModRevision ?? 0) > 0 && record.main > (request.maxModRevision as number)) return false;
  if ((request.minCreateRevision ?? 0) > 0 && record.createRevision < (request.minCreateRevision as number)) return false;
  if ((request.maxCreateRevision ?? 0) > 0 && record.createRevision > (request.maxCreateRevision as number)) return false;
  return true;
}

function hasFilters(request: RangeRequest): boolean {
  return (
    (request.minModRevision ?? 0) > 0 ||
    (request.maxModRevision ?? 0) > 0 ||
    (request.minCreateRevision ?? 0) > 0 ||
    (request.maxCreateRevision ?? 0) > 0
  );
}

/** The revision a read resolves to, or a typed error if it is compacted or in the future. */
export function readRevision(view: ReadView, requested: number | undefined): number {
  const revision = requested !== undefined && requested > 0 ? requested : view.revision;
  if (revision > view.revision) throw new FutureRevisionError(revision, view.revision);
  if (revision < view.compactRevision) throw new CompactedError(revision, view.compactRevision);
  return revision;
}

/** Everything about a range but the values still on disk, with etcd's count / limit / more rules. */
export function planRange(view: ReadView, request: RangeRequest): RangePlan {
  const revision = readRevision(view, request.revision);
  const bounds = indexBounds(request.key, request.rangeEnd);
  const sort = effectiveSort(request);
  const limit = request.limit ?? 0;
  const countOnly = request.countOnly === true;
  const collectAll = sort.order !== 'none' || hasFilters(request);
  const items: PlannedKeyValue[] = [];
  let count = 0;
  view.forEachKey(bounds, (indexKey, key) => {
    const record = view.recordAt(indexKey, revision);
    if (record === undefined || record.tombstone) return true;
    count++;
    if (countOnly || !passesFilters(record, request)) return true;
    if (!collectAll && limit > 0 && items.length > limit) return true;
    items.push({ key, record, value: record.value });
    return true;
  });
  const needsValuesToSort = sort.target === 'value' && sort.order !== 'none' && items.some((item) => item.value === undefined);
  const plan: RangePlan = {
    revision,
    count,
    items,
    more: false,
    limit,
    keysOnly: request.keysOnly === true,
    countOnly,
    sortAfterFetch: needsValuesToSort ? sort : null,
  };
  if (!needsValuesToSort) finishPlan(plan, sort.order, sort.target);
  return plan;
}

/** Sorts and truncates a plan whose sort keys are all known. */
export function finishPlan(plan: RangePlan, order: SortOrder, target: SortTarget): void {
  sortPlanned(plan.items, order, target);
  if (plan.limit > 0 && plan.items.length > plan.limit) {
    plan.items = plan.items.slice(0, plan.limit);
    plan.more = true;
  }
}

export function keyValueOf(key: Uint8Array, record: RevisionRecord, value: Uint8Array): KeyValue {
  assert(!record.tombstone, 'a tombstone has no key-value');
  return {
    key,
    value,
    createRevision: record.createRevision,
    modRevision: record.main,
    version: record.version,
    lease: record.lease,
  };
}

function compareNumbers(actual: number, expected: number): number {
  return actual < expected ? -1 : actual > expected ? 1 : 0;
}

function compareOne(compare: Compare, record: RevisionRecord | undefined): boolean {
  let outcome: number;
  if (compare.target === 'value') {
    assert(record !== undefined && record.value !== undefined, 'a value compare needs the latest value in memory');
    outcome = compareBytes(record.value, compare.value as Uint8Array);
  } else {
    const actual =
      record === undefined
        ? 0
        : compare.target === 'version'
          ? record.version
          : compare.target === 'create'
            ? record.createRevision
            : compare.target === 'mod'
              ? record.main
              : record.lease;
    outcome = compareNumbers(actual, compare.number as number);
  }
  switch (compare.result) {
    case '=':
      return outcome === 0;
    case '!=':
      return outcome !== 0;
    case '<':
      return outcome < 0;
    case '>':
      return outcome > 0;
  }
}

/**
 * etcd's applyCompare: every live key in the range must satisfy the compare;
 * with no live key, a value compare fails and the others compare against
 * zero (version 0, create 0, mod 0, lease 0).
 */
export function evaluateCompare(view: ReadView, compare: Compare): boolean {
  const bounds = indexBounds(compare.key, compare.rangeEnd);
  let matched = false;
  let satisfied = true;
  view.forEachKey(bounds, (indexKey) => {
    const record = view.recordAt(indexKey, view.revision);
    if (record === undefined || record.tombstone) return true;
    matched = true;
    if (!compareOne(compare, record)) {
      satisfied = false;
      return false;
    }
    return true;
  });
  if (!matched) return compare.target === 'value' ? false : compareOne(compare, undefined);
  return satisfied;
}
