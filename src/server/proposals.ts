// Proposal tracking: each write a node proposes gets an id (this node's id
// plus a sequence number) that travels inside the log entry; when the entry is
// applied on this node, the waiting caller is resolved with the state
// machine's response. A proposal that is not applied by its deadline is
// reported as OutcomeUnknownError: it may still commit later.

import { assert, OutcomeUnknownError, ProposalDroppedError } from '../raft/errors.ts';

/** Slots in a new tracker's table; it doubles while more than half of them are in use. */
const INITIAL_SLOTS = 64;

/**
 * The proposals waiting for their entries to apply, in an open table indexed
 * by sequence modulo its size (a power of two, doubled while more than half
 * of it is in use; register skips a sequence whose slot is taken, so a lookup
 * reads one slot). Not a Map: a Map that gains and loses an entry per write
 * replaces its backing table every few hundred writes, and each obsolete
 * table, once promoted, links to its successor and keeps the young waiters
 * in it alive through the next scavenge. The bench's client, which tracked
 * its requests that way, promoted about 1.3 MB per scavenge of objects that
 * had lived a few milliseconds. These arrays live as long as the tracker;
 * only their slots change.
 */
export class ProposalTracker<T> {
  /** The sequence in each slot, 0 for an empty slot (sequences start at 1). */
  private sequences = new Float64Array(INITIAL_SLOTS);
  private deadlinesMs = new Float64Array(INITIAL_SLOTS);
  private resolvers: (((value: T) => void) | undefined)[] = emptySlots(INITIAL_SLOTS);
  private rejecters: (((error: Error) => void) | undefined)[] = emptySlots(INITIAL_SLOTS);
  private count = 0;
  private sequence = 0;
  /** No deadline in the table is earlier (Infinity while it is empty): expire scans only once one may have passed. */
  private earliestDeadlineMs = Infinity;

  constructor(private readonly proposalsMax: number) {
    assert(Number.isSafeInteger(proposalsMax) && proposalsMax > 0, 'proposalsMax must be a positive integer');
  }

  get size(): number {
    return this.count;
  }

  /** Registers a caller; returns its sequence number and the promise it waits on. */
  register(deadlineMs: number): { sequence: number; promise: Promise<T> } {
    if (this.count >= this.proposalsMax) {
      throw new ProposalDroppedError(`too many proposals in flight (${this.proposalsMax})`);
    }
    if (2 * (this.count + 1) > this.sequences.length) this.grow();
    const mask = this.sequences.length - 1;
    let sequence = this.sequence + 1;
    while (this.sequences[sequence & mask] !== 0) sequence += 1;
    assert(Number.isSafeInteger(sequence), 'proposal sequence numbers ran out');
    this.sequence = sequence;
    const slot = sequence & mask;
    const promise = new Promise<T>((resolve, reject) => {
      this.resolvers[slot] = resolve;
      this.rejecters[slot] = reject;
    });
    this.sequences[slot] = sequence;
    this.deadlinesMs[slot] = deadlineMs;
    this.count += 1;
    if (deadlineMs < this.earliestDeadlineMs) this.earliestDeadlineMs = deadlineMs;
    return { sequence, promise };
  }

  resolve(sequence: number, value: T): void {
    const slot = this.slotOf(sequence);
    if (slot < 0) return; // timed out already, or proposed by an earlier incarnation
    const resolve = this.resolvers[slot]!;
    this.clear(slot);
    resolve(value);
  }

  reject(sequence: number, error: Error): void {
    const slot = this.slotOf(sequence);
    if (slot < 0) return;
    const reject = this.rejecters[slot]!;
    this.clear(slot);
    reject(error);
  }

  /** Fails every proposal whose deadline passed with OutcomeUnknownError. */
  expire(nowMs: number): void {
    if (nowMs < this.earliestDeadlineMs) return;
    let earliestMs = Infinity;
    for (let slot = 0; slot < this.sequences.length; slot++) {
      if (this.sequences[slot] === 0) continue;
      const deadlineMs = this.deadlinesMs[slot]!;
      if (deadlineMs > nowMs) {
        if (deadlineMs < earliestMs) earliestMs = deadlineMs;
        continue;
      }
      const reject = this.rejecters[slot]!;
      this.clear(slot);
      reject(new OutcomeUnknownError('the write timed out after it was proposed; it may or may not be applied'));
    }
    this.earliestDeadlineMs = earliestMs;
  }

  /** Fails everything (node closing or stopped). */
  rejectAll(makeError: () => Error): void {
    const rejecters: ((error: Error) => void)[] = [];
    for (let slot = 0; slot < this.sequences.length; slot++) {
      if (this.sequences[slot] === 0) continue;
      rejecters.push(this.rejecters[slot]!);
      this.clear(slot);
    }
    this.earliestDeadlineMs = Infinity;
    for (const reject of rejecters) reject(makeError());
  }

  /** The slot holding this sequence, or -1 if none does. */
  private slotOf(sequence: number): number {
    if (!(sequence > 0)) return -1;
    const slot = sequence & (this.sequences.length - 1);
    return this.sequences[slot] === sequence ? slot : -1;
  }

  private clear(slot: number): void {
    assert(this.sequences[slot] !== 0, 'cleared an empty proposal slot');
    this.sequences[slot] = 0;
    this.resolvers[slot] = undefined;
    this.rejecters[slot] = undefined;
    this.count -= 1;
  }

  /** Doubles the table. Two sequences in different slots differ modulo the old size, so also modulo the new one. */
  private grow(): void {
    const size = this.sequences.length * 2;
    const sequences = new Float64Array(size);
    const deadlinesMs = new Float64Array(size);
    const resolvers = emptySlots<(value: T) => void>(size);
    const rejecters = emptySlots<(error: Error) => void>(size);
    for (let slot = 0; slot < this.sequences.length; slot++) {
      const sequence = this.sequences[slot]!;
      if (sequence === 0) continue;
      const target = sequence & (size - 1);
      assert(sequences[target] === 0, 'two proposals in one slot after growing the table');
      sequences[target] = sequence;
      deadlinesMs[target] = this.deadlinesMs[slot]!;
      resolvers[target] = this.resolvers[slot];
      rejecters[target] = this.rejecters[slot];
    }
    this.sequences = sequences;
    this.deadlinesMs = deadlinesMs;
    this.resolvers = resolvers;
    this.rejecters = rejecters;
  }
}

function emptySlots<V>(size: number): (V | undefined)[] {
  return new Array<V | undefined>(size).fill(undefined);
}

/**
 * The last `capacity` proposal ids (proposer, sequence) added, for
 * deduplication: a set of sequences per proposer plus a ring of the same ids
 * in arrival order, so forgetting the oldest is one hash delete. (Evicting
 * through `set.values().next()` instead walks every deleted slot at the
 * front of the set's table: with 65,536 ids, about 30 µs per add, and 40% of
 * a leader's time at 8,000 forwarded puts/s. Ids as `node:sequence` strings
 * cost a string per forwarded proposal, each promoted out of the young
 * generation before it was forgotten.)
 */
export class RecentIds {
  private readonly byNode = new Map<number, Set<number>>();
  private readonly ringNodes: Float64Array;
  private readonly ringSequences: Float64Array;
  private next = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    assert(Number.isSafeInteger(capacity) && capacity > 0, 'capacity must be a positive integer');
    this.ringNodes = new Float64Array(capacity);
    this.ringSequences = new Float64Array(capacity);
  }

  get size(): number {
    return this.count;
  }

  has(node: number, sequence: number): boolean {
    return this.byNode.get(node)?.has(sequence) === true;
  }

  /** Remembers the id (forgetting the oldest once full); false if it is remembered already. */
  add(node: number, sequence: number): boolean {
    let sequences = this.byNode.get(node);
    if (sequences?.has(sequence) === true) return false;
    if (this.count === this.capacity) {
      const oldestNode = this.ringNodes[this.next]!;
      const oldest = this.byNode.get(oldestNode)!;
      oldest.delete(this.ringSequences[this.next]!);
      if (oldest.size === 0) {
        this.byNode.delete(oldestNode);
        if (oldest === sequences) sequences = undefined;
      }
    } else {
      this.count += 1;
    }
    if (sequences === undefined) this.byNode.set(node, (sequences = new Set()));
    sequences.add(sequence);
    this.ringNodes[this.next] = node;
    this.ringSequences[this.next] = sequence;
    this.next = (this.next + 1) % this.capacity;
    return true;
  }
}
