// The in-memory index of the MVCC store: an ordered map (a B+ tree) from
// each key to its revision history, oldest first. A history is a run of
// generations, each ended by a tombstone. The value of a key's latest live
// revision stays in memory (reads at the current revision never touch the
// disk); older values live only in the rows on disk.

import * as sortedBtree from 'sorted-btree';
import { assert } from '../../raft/errors.ts';
import type { IndexBounds } from './keys.ts';

/** The part of sorted-btree's BTree we use (the smallest structural type we need). */
interface SortedMap<K, V> {
  readonly size: number;
  get(key: K): V | undefined;
  set(key: K, value: V): boolean;
  delete(key: K): boolean;
  entries(lowestKey?: K): IterableIterator<[K, V]>;
  clear(): void;
}
type SortedMapConstructor = new <K, V>(entries: undefined, compare: (left: K, right: K) => number) => SortedMap<K, V>;

// sorted-btree is CommonJS: depending on the loader the class is `default` or `default.default`.
function sortedMapConstructor(): SortedMapConstructor {
  let candidate = (sortedBtree as unknown as { default: unknown }).default;
  if (typeof candidate !== 'function') candidate = (candidate as { default: unknown }).default;
  assert(typeof candidate === 'function', 'sorted-btree exports no BTree class');
  return candidate as SortedMapConstructor;
}
const SortedMapClass = sortedMapConstructor();
const compareStrings = (left: string, right: string): number => (left < right ? -1 : left > right ? 1 : 0);

export interface RevisionRecord {
  readonly main: number;
  readonly sub: number;
  /** Revision that created this generation (0 for a tombstone). */
  readonly createRevision: number;
  /** Puts in this generation so far (0 for a tombstone). */
  readonly version: number;
  readonly lease: number;
  readonly tombstone: boolean;
  /** Kept while this is the key's latest revision; undefined once superseded. */
  value: Uint8Array | undefined;
}

/** Numbers per revision in a history's packed array: main, sub (tombstone: -1 - sub), createRevision, version, lease. */
const PACKED_FIELDS = 5;

/**
 * One key's revisions, ascending by (main, sub); never empty while in the
 * index. Every revision, the latest too, is packed into one array of
 * doubles, and only the latest's value is kept beside it: a key costs the
 * collector a fixed handful of objects however many revisions it keeps
 * until compaction (an object per revision grew a member's heap by one
 * object per put; see docs/storage.md), and a put leaves no record object
 * behind to survive into the old generation. Records are built on demand
 * (`latest`, `at`) and die young.
 */
export class KeyHistory {
  private revisions: number[] = emptyDoubles();
  /** The latest revision's value (a tombstone's is empty); undefined while the history is empty. */
  private latestValue: Uint8Array | undefined;

  constructor(
    readonly key: Uint8Array,
    first: RevisionRecord,
  ) {
    this.push(first);
  }

  get length(): number {
    return this.revisions.length / PACKED_FIELDS;
  }

  /** The latest revision, with its value unless it is a tombstone. */
  get latest(): RevisionRecord {
    assert(this.revisions.length > 0, 'an empty history has no latest revision');
    return this.at(this.revisions.length / PACKED_FIELDS - 1);
  }

  /** The lease the latest revision holds, or 0 (none, or the key is deleted): without building its record. */
  get latestLiveLease(): number {
    const base = this.revisions.length - PACKED_FIELDS;
    assert(base >= 0, 'an empty history has no latest revision');
    return (this.revisions[base + 1] as number) < 0 ? 0 : (this.revisions[base + 4] as number);
  }

  mainAt(position: number): number {
    return this.revisions[position * PACKED_FIELDS] as number;
  }

  private subAt(position: number): number {
    const packedSub = this.revisions[position * PACKED_FIELDS + 1] as number;
    return packedSub < 0 ? -1 - packedSub : packedSub;
  }

  /**
   * The revision at a position. Only the latest carries its value: a
   * superseded one's lives only in its row on disk.
   */
  at(position: number): RevisionRecord {
    const count = this.revisions.length / PACKED_FIELDS;
    assert(position >= 0 && position < count && Number.isInteger(position), `no revision at position ${position}`);
    const base = position * PACKED_FIELDS;
    const revisions = this.revisions;
    return {
      main: revisions[base] as number,
      sub: this.subAt(position),
      createRevision: revisions[base + 2] as number,
      version: revisions[base + 3] as number,
      lease: revisions[base + 4] as number,
      tombstone: (revisions[base + 1] as number) < 0,
      value: position === count - 1 ? this.latestValue : undefined,
    };
  }

  /** Appends a revision newer than the latest; the latest's value is let go. */
  push(record: RevisionRecord): void {
    const count = this.revisions.length / PACKED_FIELDS;
    if (count > 0) {
      const lastMain = this.mainAt(count - 1);
      assert(lastMain < record.main || (lastMain === record.main && this.subAt(count - 1) < record.sub), 'index revisions must be appended in increasing order');
    }
    this.revisions.push(record.main, record.tombstone ? -1 - record.sub : record.sub, record.createRevision, record.version, record.lease);
    this.latestValue = record.value;
  }

  /** Removes the `count` oldest revisions, reporting each to `dropped`. */
  dropOldest(count: number, dropped: { main: number; sub: number }[]): void {
    assert(count >= 0 && count <= this.length, `cannot drop ${count} of ${this.length} revisions`);
    for (let position = 0; position < count; position++) dropped.push({ main: this.mainAt(position), sub: this.subAt(position) });
    this.revisions.splice(0, count * PACKED_FIELDS);
    if (this.revisions.length === 0) this.latestValue = undefined;
  }
}

/** An empty array whose elements are unboxed doubles (the collector does not visit them). */
function emptyDoubles(): number[] {
  const numbers = [0.5];
  numbers.length = 0;
  return numbers;
}

/** Position of the last revision with main <= atRevision, or -1. */
export function positionAt(history: KeyHistory, atRevision: number): number {
  let low = 0;
  let high = history.length - 1;
  let found = -1;
  while (low <= high) {
    const middle = (low + high) >>> 1;
    if (history.mainAt(middle) <= atRevision) {
      found = middle;
      low = middle + 1;
    } else {
      high = middle - 1;
    }
  }
  return found;
}

/** The live revision of a key at a revision, if the key existed then. */
export function liveAt(history: KeyHistory, atRevision: number): RevisionRecord | undefined {
  const position = positionAt(history, atRevision);
  if (position < 0) return undefined;
  const record = history.at(position);
  return record.tombstone ? undefined : record;
}

/**
 * How many of a history's oldest revisions a compaction at `revision` makes
 * unreachable. Every revision at or above the compaction revision stays (a
 * watcher may resume exactly there: a tombstone at the compaction revision
 * must survive, etcd #18089, and so must a delete and a put of the same key
 * in that revision, #22376). Below it, only the latest revision can still
 * be read, and only if it is live and not shadowed by a revision exactly at
 * the compaction revision.
 */
export function unreachableCount(history: KeyHistory, compactRevision: number): number {
  const below = positionAt(history, compactRevision - 1);
  if (below < 0) return 0;
  const record = history.at(below);
  const shadowed = below + 1 < history.length && history.mainAt(below + 1) === compactRevision;
  return record.tombstone || shadowed ? below + 1 : below;
}

export class KeyIndex {
  private readonly tree = new SortedMapClass<string, KeyHistory>(undefined, compareStrings);
  /**
   * The same histories by key, for point lookups: every put and every
   * single-key read looks its key up, and a hash lookup costs a fraction of
   * a descent through the tree's string comparisons (about 40 bytes a key).
   */
  private readonly byKey = new Map<string, KeyHistory>();

  get keyCount(): number {
    return this.tree.size;
  }

  history(key: string): KeyHistory | undefined {
    return this.byKey.get(key);
  }

  /**
   * Appends a revision to a key's history; it must be newer than the last.
   * A caller that just looked the history up passes it, saving a lookup.
   */
  append(indexKey: string, key: Uint8Array, record: RevisionRecord, known: KeyHistory | undefined = this.byKey.get(indexKey)): void {
    if (known === undefined) {
      // A key that arrived as a view into a larger buffer (a proposal in a received frame) is copied: the view would
      // keep all of that buffer alive for as long as the key is indexed.
      const history = new KeyHistory(key.byteLength === key.buffer.byteLength ? key : key.slice(), record);
      this.tree.set(indexKey, history);
      this.byKey.set(indexKey, history);
    } else {
      known.push(record);
    }
  }

  /** Visits the histories of the keys in bounds, in key order, until visit returns false. */
  forEachInBounds(bounds: IndexBounds, visit: (indexKey: string, history: KeyHistory) => boolean): void {
    if (bounds.single) {
      const history = this.byKey.get(bounds.start);
      if (history !== undefined) visit(bounds.start, history);
      return;
    }
    if (bounds.end !== undefined && bounds.end <= bounds.start) return;
    for (const [indexKey, history] of this.tree.entries(bounds.start)) {
      if (bounds.end !== undefined && indexKey >= bounds.end) return;
      if (!visit(indexKey, history)) return;
    }
  }

  /**
   * Drops the revisions a compaction made unreachable, for at most `keysMax`
   * keys from `fromKey` on and at most `rowsMax` revisions (a key with more
   * is finished in later steps, oldest revisions first); reports the dropped
   * revisions (their rows can be deleted) and where to continue (undefined:
   * done).
   */
  prune(
    compactRevision: number,
    fromKey: string,
    keysMax: number,
    rowsMax = Number.POSITIVE_INFINITY,
  ): { dropped: { main: number; sub: number }[]; nextKey: string | undefined } {
    const dropped: { main: number; sub: number }[] = [];
    const emptied: string[] = [];
    let visited = 0;
    let nextKey: string | undefined;
    for (const [indexKey, history] of this.tree.entries(fromKey)) {
      if (visited === keysMax || dropped.length >= rowsMax) {
        nextKey = indexKey;
        break;
      }
      visited++;
      const count = unreachableCount(history, compactRevision);
      if (count === 0) continue;
      const taken = Math.min(count, rowsMax - dropped.length);
      history.dropOldest(taken, dropped);
      if (taken < count) {
        nextKey = indexKey; // the rest of this key's unreachable revisions go in the next step
        break;
      }
      if (history.length === 0) emptied.push(indexKey);
    }
    for (const indexKey of emptied) {
      this.tree.delete(indexKey);
      this.byKey.delete(indexKey);
    }
    return { dropped, nextKey };
  }

  clear(): void {
    this.tree.clear();
    this.byKey.clear();
  }
}
