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
  /** Search steps the shrinking of one key may spend in all (default 5,000,000, a few seconds); past it, the report says "not minimal". */
  readonly minimizeStepsMax?: number;
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
  const { minimal, complete } = minimize(candidates, options.minimizeChecksMax ?? 2_000, options.minimizeStepsMax ?? 5_000_000, limits);
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
 * reduce(kept): a short failing prefix (kept = operations completed by some
 * time), then a late start of a failing window ending there, then delta
 * debugging (Zeller's ddmin) over the window's operations. The result still
 * fails; when `complete`, keeping any one operation fewer would not. The
 * checks are bounded in number and in search steps all told: the shrinking
 * only shapes the report, so it stops (incomplete) rather than hold up the
 * verdict, which is already known.
 */
function minimize(universe: readonly Operation[], checksMax: number, stepsMax: number, limits: SearchLimits): { minimal: MinimalOperation[]; complete: boolean } {
  const shrinkLimits: SearchLimits = { stepsMax: Math.min(limits.stepsMax, 200_000), memoBytesMax: Math.min(limits.memoBytesMax, 64 * 1024 * 1024) };
  let checks = 0;
  let steps = 0;
  const withinBudget = (): boolean => checks < checksMax && steps < stepsMax;
  const fails = (ids: readonly number[]): boolean => {
    checks += 1;
    const result = searchLinearization(reduce(universe, new Set(ids)).operations, { ...shrinkLimits, stepsMax: Math.max(1, Math.min(shrinkLimits.stepsMax, stepsMax - steps)) });
    steps += result.steps;
    return result.verdict === 'violation';
  };
  const completions = [...new Set(universe.filter((operation) => Number.isFinite(operation.completedAt)).map((operation) => operation.completedAt))].sort((a, b) => a - b);
  const keptBetween = (from: number, to: number): number[] =>
    universe.filter((operation) => operation.invokedAt >= from && operation.completedAt <= to).map((operation) => operation.id);
  // An early failing position among `count` (the last one stands for the whole history, which fails): galloping
  // from the start, then bisecting back. The predicate is not monotone, so this is a heuristic — any failing
  // position is correct, an early one makes the window short — and it costs a logarithmic number of searches
  // (a scan in order cost one search per position: minutes on a long history whose prefixes are hard to search).
  const earlyFailing = (count: number, failsAt: (position: number) => boolean): number => {
    let passing = -1;
    let failing = count - 1;
    for (let stride = 1; passing + stride < failing && withinBudget(); stride *= 2) {
      if (failsAt(passing + stride)) {
        failing = passing + stride;
        break;
      }
      passing += stride;
    }
    while (failing - passing > 1 && withinBudget()) {
      const middle = passing + Math.floor((failing - passing) / 2);
      if (failsAt(middle)) failing = middle;
      else passing = middle;
    }
    return failing;
  };
  const end = completions[earlyFailing(completions.length, (position) => fails(keptBetween(-Infinity, completions[position] as number)))] ?? Infinity;
  // Window starts, latest first: position 0 is the latest start, the last one the earliest (the whole prefix).
  const starts = [...new Set(universe.filter((operation) => operation.completedAt <= end).map((operation) => operation.invokedAt))].sort((a, b) => b - a);
  const start = starts[earlyFailing(starts.length, (position) => fails(keptBetween(starts[position] as number, end)))] ?? -Infinity;
  let kept = keptBetween(start, end);
  if (!fails(kept)) kept = universe.map((operation) => operation.id); // the phases are heuristics; fall back to everything
  let granularity = 2;
  let complete = false;
  while (withinBudget()) {
    if (kept.length <= 1) {
      complete = true;
      break;
    }
    const chunkSize = Math.ceil(kept.length / granularity);
    let reduced = false;
    for (let offset = 0; offset < kept.length && withinBudget(); offset += chunkSize) {
      const complement = [...kept.slice(0, offset), ...kept.slice(offset + chunkSize)];
      if (fails(complement)) {
        kept = complement;
        granularity = Math.max(granularity - 1, 2);
        reduced = true;
        break;
      }
    }
    if (reduced) continue;
    if (!withinBudget()) break;
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

/**
 * Checks every key; the verdict is the worst one (violation over unknown over
 * linearizable). Only a few failing keys are shrunk (shrinking costs many
 * searches), the ones whose search was shortest first: their small reports
 * come quickest and are as telling as any.
 */
export function checkLinearizability(operations: readonly Operation[], options: CheckOptions = {}): LinearizabilityResult {
  const shrinkBudget = options.shrinkBudget ?? { keysLeft: 4 };
  const groups = [...partitionByKey(operations)].sort(([left], [right]) => (left < right ? -1 : left > right ? 1 : 0));
  const keys = groups.map(([key, group]) => checkKey(key, group, { ...options, minimize: false }));
  if (options.minimize !== false) {
    const failing = keys.flatMap((verdict, position) => (verdict.verdict === 'violation' ? [{ steps: verdict.steps, position }] : []));
    for (const { position } of failing.sort((left, right) => left.steps - right.steps)) {
      if (shrinkBudget.keysLeft <= 0) break;
      const [key, group] = groups[position] as [string, Operation[]];
      keys[position] = checkKey(key, group, { ...options, shrinkBudget });
    }
  }
  const steps = keys.reduce((total, key) => total + key.steps, 0);
  const verdict: SearchVerdict = keys.some((key) => key.verdict === 'violation') ? 'violation' : keys.some((key) => key.verdict === 'unknown') ? 'unknown' : 'linearizable';
  return { verdict, keys, operations: operations.length, steps };
}
