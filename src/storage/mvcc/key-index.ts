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

export interface KeyHistory {
  readonly key: Uint8Array;
  /** Ascending by (main, sub); never empty while in the index. */
  readonly revisions: RevisionRecord[];
}

/** Position of the last revision with main <= atRevision, or -1. */
export function positionAt(history: KeyHistory, atRevision: number): number {
  const revisions = history.revisions;
  let low = 0;
  let high = revisions.length - 1;
  let found = -1;
  while (low <= high) {
    const middle = (low + high) >>> 1;
    if ((revisions[middle] as RevisionRecord).main <= atRevision) {
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
  const record = history.revisions[position] as RevisionRecord;
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
  const record = history.revisions[below] as RevisionRecord;
  const next = history.revisions[below + 1];
  const shadowed = next !== undefined && next.main === compactRevision;
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
    let history = known;
    if (history === undefined) {
      history = { key, revisions: [] };
      this.tree.set(indexKey, history);
      this.byKey.set(indexKey, history);
    }
    const last = history.revisions[history.revisions.length - 1];
    if (last !== undefined) {
      assert(
        last.main < record.main || (last.main === record.main && last.sub < record.sub),
        'index revisions must be appended in increasing order',
      );
      last.value = undefined;
    }
    history.revisions.push(record);
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
      for (const record of history.revisions.splice(0, taken)) dropped.push({ main: record.main, sub: record.sub });
      if (taken < count) {
        nextKey = indexKey; // the rest of this key's unreachable revisions go in the next step
        break;
      }
      if (history.revisions.length === 0) emptied.push(indexKey);
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
