// The linearizability checker for key-value histories. Linearizability is
// local (P-compositional): a history is linearizable exactly when each key's
// sub-history is, so each key is searched alone (search.ts). Before the
// search, operations that cannot matter go: writes that failed for sure,
// reads with no answer, and writes of unknown outcome whose effect nobody
// observed (leaving an unknown write out is always a legal choice, and
// when nothing reads its value or the absence it creates, including it
// can never be necessary). On a violation the key's history is shrunk to a
// small failing sub-history by delta debugging, with reductions that keep a
// failure a failure: a read may be dropped, a write may be weakened to
// "outcome unknown" (then dropped if nothing observes it). Revisions give
// further checks across keys (revisions.ts).

import type { Operation, Value } from './history.ts';
import { isWrite, observedValue, writtenValue } from './model.ts';
import { DEFAULT_SEARCH_LIMITS, searchLinearization } from './search.ts';
import type { SearchLimits, SearchVerdict } from './search.ts';

export interface CheckOptions {
  /** Limits of the search of one key. */
  readonly limits?: SearchLimits;
  /** Operations on one key the checker accepts (more: the key's verdict is unknown). */
  readonly operationsPerKeyMax?: number;
  /** Shrink a failing key's history (default true). */
  readonly minimize?: boolean;
  /** Searches the shrinking may run per failing key. */
  readonly minimizeChecksMax?: number;
  /** Failing keys left to shrink (the others report their violation unshrunk); shared by every key of one check. */
  readonly shrinkBudget?: { keysLeft: number };
}

export interface KeyVerdict {
  readonly key: string;
  readonly verdict: SearchVerdict;
  /** Operations searched, after the pruning. */
  readonly searched: number;
  readonly pruned: number;
  readonly steps: number;
  readonly reason?: string;
  /** For a violation: the smallest failing sub-history found, in call order. */
  readonly minimal?: readonly MinimalOperation[];
  /** Whether the shrinking finished (the sub-history is then 1-minimal). */
  readonly minimalComplete?: boolean;
}

export interface MinimalOperation {
  readonly operation: Operation;
  /** A write the shrinking weakened to "outcome unknown". */
  readonly weakened: boolean;
}

export interface LinearizabilityResult {
  readonly verdict: SearchVerdict;
  readonly keys: readonly KeyVerdict[];
  readonly operations: number;
  readonly steps: number;
}

/** Groups operations by key, keeping each group in call order. */
export function partitionByKey(operations: readonly Operation[]): Map<string, Operation[]> {
  const byKey = new Map<string, Operation[]>();
  for (const operation of operations) {
    let group = byKey.get(operation.input.key);
    if (group === undefined) byKey.set(operation.input.key, (group = []));
    group.push(operation);
  }
  for (const group of byKey.values()) group.sort((left, right) => left.invokedAt - right.invokedAt);
  return byKey;
}

/** The operations the search needs to see: ok ones and unknown writes (no historical reads, no failures). */
export function searchable(operations: readonly Operation[]): Operation[] {
  return operations.filter((operation) => {
    if (operation.input.kind === 'getAt') return false;
    if (operation.outcome === 'ok') return true;
    return operation.outcome === 'unknown' && operation.input.kind !== 'get';
  });
}

/**
 * Drops unknown writes nobody observes, until none is left to drop: an
 * unknown put or compare-and-swap whose value no other operation saw, and an
 * unknown delete after whose call no operation saw the key absent.
 */
export function pruneUnobserved(operations: readonly Operation[]): Operation[] {
  let current = [...operations];
  for (;;) {
    const seen = new Map<Value, number>();
    let lastAbsentSeenAt = -Infinity;
    for (const operation of current) {
      const value = observedValue(operation);
      if (value === undefined) continue;
      seen.set(value, (seen.get(value) ?? 0) + 1);
      if (value === null) lastAbsentSeenAt = Math.max(lastAbsentSeenAt, operation.completedAt);
    }
    const kept = current.filter((operation) => {
      if (operation.outcome !== 'unknown') return true;
      if (operation.input.kind === 'delete') return lastAbsentSeenAt > operation.invokedAt;
      const written = writtenValue(operation) as string;
      const selfSeen = observedValue(operation) === written ? 1 : 0;
      return (seen.get(written) ?? 0) - selfSeen > 0;
    });
    if (kept.length === current.length) return kept;
    current = kept;
  }
}

/**
 * Gives each unknown write whose value an ok operation read a deadline:
 * values are unique, so the write took effect before the first such read
 * completed. Its completedAt becomes that time (its outcome stays unknown),
 * which lets the search and the pruning treat it like a completed write.
 */
export function withDeadlines(operations: readonly Operation[]): Operation[] {
  const firstSeen = new Map<string, number>();
  for (const operation of operations) {
    const value = observedValue(operation);
    if (operation.outcome !== 'ok' || value === undefined || value === null) continue;
    firstSeen.set(value, Math.min(firstSeen.get(value) ?? Infinity, operation.completedAt));
  }
  return operations.map((operation) => {
    if (operation.outcome !== 'unknown' || Number.isFinite(operation.completedAt)) return operation;
    const written = writtenValue(operation);
    const deadline = written === undefined ? undefined : firstSeen.get(written);
    // A read that completed before the write was even called is a violation the search will find by itself.
    if (deadline === undefined || !(deadline > operation.invokedAt)) return operation;
    return { ...operation, completedAt: deadline };
  });
}

/** What the search gets: searchable operations with deadlines, unobserved unknown writes pruned. */
export function prepare(operations: readonly Operation[]): Operation[] {
  return pruneUnobserved(withDeadlines(operations));
}

/** Weakens an operation to "outcome unknown" (sound for writes: it only adds linearizations). */
function weaken(operation: Operation): Operation {
  const weakened: Operation = { ...operation, outcome: 'unknown', completedAt: Infinity };
  delete weakened.output;
  return weakened;
}

/** Checks one key's operations (any outcomes; the filtering happens here). */
export function checkKey(key: string, operations: readonly Operation[], options: CheckOptions = {}): KeyVerdict {
  const limits = options.limits ?? DEFAULT_SEARCH_LIMITS;
  const candidates = searchable(operations);
  const searched = prepare(candidates);
  const pruned = candidates.length - searched.length;
  const operationsMax = options.operationsPerKeyMax ?? 100_000;
  if (searched.length > operationsMax) {
    return { key, verdict: 'unknown', searched: searched.length, pruned, steps: 0, reason: `${searched.length} operations on one key, over the limit of ${operationsMax}` };
  }
  const result = searchLinearization(searched, limits);
  const verdict: KeyVerdict = { key, verdict: result.verdict, searched: searched.length, pruned, steps: result.steps, ...(result.reason === undefined ? {} : { reason: result.reason }) };
  if (result.verdict !== 'violation' || options.minimize === false) return verdict;
  if (options.shrinkBudget !== undefined && options.shrinkBudget.keysLeft <= 0) return verdict;
  if (options.shrinkBudget !== undefined) options.shrinkBudget.keysLeft -= 1;
  const { minimal, complete } = minimize(candidates, options.minimizeChecksMax ?? 2_000, limits);
  return { ...verdict, minimal, minimalComplete: complete };
}

/** The sub-history a kept set stands for: kept operations as they are, the other writes weakened, unobserved ones dropped. */
function reduce(universe: readonly Operation[], kept: ReadonlySet<number>): { operations: Operation[]; weakened: Set<number> } {
  const operations: Operation[] = [];
  const weakened = new Set<number>();
  for (const operation of universe) {
    if (kept.has(operation.id)) operations.push(operation);
    else if (isWrite(operation)) {
      if (operation.outcome === 'unknown') operations.push(operation);
      else {
        operations.push(weaken(operation));
        weakened.add(operation.id);
      }
    }
  }
  return { operations: prepare(operations), weakened };
}

/**
 * Shrinks a failing key history in three phases, each check a search of
 * reduce(kept): the shortest failing prefix (kept = operations completed by
 * some time), then the latest start of a failing window ending there, then
 * delta debugging (Zeller's ddmin) over the window's operations. The result
 * still fails; when `complete`, keeping any one operation fewer would not.
 */
function minimize(universe: readonly Operation[], checksMax: number, limits: SearchLimits): { minimal: MinimalOperation[]; complete: boolean } {
  const shrinkLimits: SearchLimits = { stepsMax: Math.min(limits.stepsMax, 200_000), memoBytesMax: Math.min(limits.memoBytesMax, 64 * 1024 * 1024) };
  let checks = 0;
  const fails = (ids: readonly number[]): boolean => {
    checks += 1;
    return searchLinearization(reduce(universe, new Set(ids)).operations, shrinkLimits).verdict === 'violation';
  };
  const completions = [...new Set(universe.filter((operation) => Number.isFinite(operation.completedAt)).map((operation) => operation.completedAt))].sort((a, b) => a - b);
  const keptBetween = (from: number, to: number): number[] =>
    universe.filter((operation) => operation.invokedAt >= from && operation.completedAt <= to).map((operation) => operation.id);
  // The first failing prefix, then the latest start of a failing window before that end (scanned in order: the
  // predicate is not monotone, so a binary search could stop at a needlessly long window).
  const firstFailing = (count: number, failsAt: (position: number) => boolean): number => {
    for (let position = 0; position < count && checks < checksMax / 2; position++) if (failsAt(position)) return position;
    return count - 1;
  };
  const end = completions[firstFailing(completions.length, (position) => fails(keptBetween(-Infinity, completions[position] as number)))] ?? Infinity;
  const starts = [...new Set(universe.filter((operation) => operation.completedAt <= end).map((operation) => operation.invokedAt))].sort((a, b) => b - a);
  const start = starts[firstFailing(starts.length, (position) => fails(keptBetween(starts[position] as number, end)))] ?? -Infinity;
  let kept = keptBetween(start, end);
  if (!fails(kept)) kept = universe.map((operation) => operation.id); // the phases are heuristics; fall back to everything
  let granularity = 2;
  let complete = false;
  while (checks < checksMax) {
    if (kept.length <= 1) {
      complete = true;
      break;
    }
    const chunkSize = Math.ceil(kept.length / granularity);
    let reduced = false;
    for (let offset = 0; offset < kept.length && checks < checksMax; offset += chunkSize) {
      const complement = [...kept.slice(0, offset), ...kept.slice(offset + chunkSize)];
      if (fails(complement)) {
        kept = complement;
        granularity = Math.max(granularity - 1, 2);
        reduced = true;
        break;
      }
    }
    if (reduced) continue;
    if (checks >= checksMax) break;
    if (chunkSize <= 1) {
      complete = true;
      break;
    }
    granularity = Math.min(granularity * 2, kept.length);
  }
  const { operations, weakened } = reduce(universe, new Set(kept));
  const byId = new Map(universe.map((operation) => [operation.id, operation] as const));
  const minimal = operations.map((operation) => ({ operation: byId.get(operation.id) as Operation, weakened: weakened.has(operation.id) }));
  return { minimal, complete };
}

/** Checks every key; the verdict is the worst one (violation over unknown over linearizable). */
export function checkLinearizability(operations: readonly Operation[], options: CheckOptions = {}): LinearizabilityResult {
  const keys: KeyVerdict[] = [];
  // Shrinking costs many searches: by default only the first few failing keys are shrunk.
  options = { shrinkBudget: { keysLeft: 4 }, ...options };
  let steps = 0;
  for (const [key, group] of [...partitionByKey(operations)].sort(([left], [right]) => (left < right ? -1 : left > right ? 1 : 0))) {
    const verdict = checkKey(key, group, options);
    steps += verdict.steps;
    keys.push(verdict);
  }
  const verdict: SearchVerdict = keys.some((key) => key.verdict === 'violation') ? 'violation' : keys.some((key) => key.verdict === 'unknown') ? 'unknown' : 'linearizable';
  return { verdict, keys, operations: operations.length, steps };
}
