// The linearizability search for one key's history: Wing & Gong's
// backtracking search with Lowe's just-in-time linearization and a memo of
// visited configurations (the set of operations linearized so far, the
// model's state). Call and return events sit in a doubly linked list sorted
// by logical time; the search walks it, linearizing a call when the model
// accepts it and the configuration is new (the call and its return are then
// lifted out of the list), and backtracking when it meets the return of an
// operation it has not linearized yet. Operations with an unknown outcome
// have no return event (unless the checker proved a deadline for one and
// set its completedAt): they may be linearized any time after their call,
// and leaving them out altogether is always allowed, so the search succeeds
// once no return event is left. The search is bounded in steps and memo
// size; past either bound the answer is "unknown", never "linearizable".

import type { Operation, Value } from './history.ts';
import { step } from './model.ts';

export type SearchVerdict = 'linearizable' | 'violation' | 'unknown';

export interface SearchLimits {
  /** Loop iterations before giving up. */
  readonly stepsMax: number;
  /** Memo size before giving up, in bytes (approximate). */
  readonly memoBytesMax: number;
}

export interface SearchResult {
  readonly verdict: SearchVerdict;
  readonly steps: number;
  /** Why the answer is unknown. */
  readonly reason?: string;
}

export const DEFAULT_SEARCH_LIMITS: SearchLimits = { stepsMax: 20_000_000, memoBytesMax: 512 * 1024 * 1024 };

/** Small deterministic hash words per operation (Zobrist hashing of the linearized set). */
function hashWords(count: number): { high: Uint32Array; low: Uint32Array } {
  const high = new Uint32Array(count);
  const low = new Uint32Array(count);
  let seed = 0x2545f491;
  const next = (): number => {
    seed = (seed + 0x9e3779b9) >>> 0;
    let z = seed;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  for (let position = 0; position < count; position++) {
    high[position] = next();
    low[position] = next();
  }
  return { high, low };
}

/** Visited configurations: exact (bitset and state compared on a hash match). */
class Memo {
  private readonly buckets = new Map<number, { state: number; bits: Uint32Array }[]>();
  private entries = 0;

  constructor(private readonly entriesMax: number) {}

  get full(): boolean {
    return this.entries >= this.entriesMax;
  }

  /** Adds the configuration; false if it was visited before. */
  add(hashHigh: number, hashLow: number, state: number, bits: Uint32Array): boolean {
    const mixed = (hashHigh ^ Math.imul(state + 1, 0x9e3779b1)) >>> 0;
    const key = mixed * 0x100000 + (hashLow & 0xfffff);
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      bucket = [];
      this.buckets.set(key, bucket);
    }
    for (const entry of bucket) {
      if (entry.state === state && sameBits(entry.bits, bits)) return false;
    }
    bucket.push({ state, bits: bits.slice() });
    this.entries += 1;
    return true;
  }
}

function sameBits(left: Uint32Array, right: Uint32Array): boolean {
  for (let word = 0; word < left.length; word++) if (left[word] !== right[word]) return false;
  return true;
}

/**
 * Searches for a linearization of `operations` (one key, every operation
 * ok or unknown; unknown reads excluded) starting from an absent key.
 */
export function searchLinearization(operations: readonly Operation[], limits: SearchLimits = DEFAULT_SEARCH_LIMITS): SearchResult {
  const count = operations.length;
  if (count === 0) return { verdict: 'linearizable', steps: 0 };
  // Event 2i is operation i's call, 2i + 1 its return; HEAD is the list's sentinel.
  const head = 2 * count;
  const next = new Int32Array(2 * count + 1);
  const previous = new Int32Array(2 * count + 1);
  const events: { event: number; time: number }[] = [];
  let returnsLeft = 0;
  operations.forEach((operation, position) => {
    if (operation.outcome !== 'ok' && operation.outcome !== 'unknown') throw new Error(`operation ${operation.id} is ${operation.outcome}; only ok and unknown ones are searched`);
    events.push({ event: 2 * position, time: operation.invokedAt });
    if (Number.isFinite(operation.completedAt)) {
      if (!(operation.completedAt > operation.invokedAt)) throw new Error(`operation ${operation.id} completes before it is invoked`);
      events.push({ event: 2 * position + 1, time: operation.completedAt });
      returnsLeft += 1;
    }
  });
  events.sort((left, right) => left.time - right.time || left.event - right.event);
  let last = head;
  for (const { event } of events) {
    next[last] = event;
    previous[event] = last;
    last = event;
  }
  next[last] = head;
  previous[head] = last;

  const states: Value[] = [null];
  const stateIds = new Map<Value, number>([[null, 0]]);
  const intern = (value: Value): number => {
    let id = stateIds.get(value);
    if (id === undefined) {
      id = states.length;
      states.push(value);
      stateIds.set(value, id);
    }
    return id;
  };
  const words = Math.ceil(count / 32);
  const bits = new Uint32Array(words);
  const { high, low } = hashWords(count);
  const memo = new Memo(Math.max(1, Math.floor(limits.memoBytesMax / (words * 4 + 96))));
  const hasReturn = (position: number): boolean => Number.isFinite((operations[position] as Operation).completedAt);

  const unlink = (event: number): void => {
    next[previous[event] as number] = next[event] as number;
    previous[next[event] as number] = previous[event] as number;
  };
  const relink = (event: number): void => {
    next[previous[event] as number] = event;
    previous[next[event] as number] = event;
  };

  const stack: { call: number; state: number }[] = [];
  let state = 0;
  let hashHigh = 0;
  let hashLow = 0;
  let steps = 0;
  let entry = next[head] as number;
  while (returnsLeft > 0) {
    steps += 1;
    if (steps > limits.stepsMax) return { verdict: 'unknown', steps, reason: `gave up after ${limits.stepsMax} search steps` };
    if (entry === head) throw new Error('the search ran off the event list with return events left');
    const position = entry >> 1;
    if ((entry & 1) === 0) {
      const result = step(states[state] as Value, operations[position] as Operation);
      if (result.legal) {
        const nextState = intern(result.next);
        const word = position >> 5;
        const mask = 1 << (position & 31);
        bits[word] = (bits[word] as number) | mask;
        const nextHigh = (hashHigh ^ (high[position] as number)) >>> 0;
        const nextLow = (hashLow ^ (low[position] as number)) >>> 0;
        if (memo.add(nextHigh, nextLow, nextState, bits)) {
          if (memo.full) return { verdict: 'unknown', steps, reason: `the memo outgrew ${limits.memoBytesMax} bytes` };
          stack.push({ call: entry, state });
          unlink(entry);
          if (hasReturn(position)) {
            unlink(entry + 1);
            returnsLeft -= 1;
          }
          state = nextState;
          hashHigh = nextHigh;
          hashLow = nextLow;
          entry = next[head] as number;
          continue;
        }
        bits[word] = (bits[word] as number) & ~mask;
      }
      entry = next[entry] as number;
    } else {
      const frame = stack.pop();
      if (frame === undefined) return { verdict: 'violation', steps };
      const undone = frame.call >> 1;
      if (hasReturn(undone)) {
        relink(frame.call + 1);
        returnsLeft += 1;
      }
      relink(frame.call);
      bits[undone >> 5] = (bits[undone >> 5] as number) & ~(1 << (undone & 31));
      hashHigh = (hashHigh ^ (high[undone] as number)) >>> 0;
      hashLow = (hashLow ^ (low[undone] as number)) >>> 0;
      state = frame.state;
      entry = next[frame.call] as number;
    }
  }
  return { verdict: 'linearizable', steps };
}
