// Proposal tracking: each write a node proposes gets an id (this node's id
// plus a sequence number) that travels inside the log entry; when the entry is
// applied on this node, the waiting caller is resolved with the state
// machine's response. A proposal that is not applied by its deadline is
// reported as OutcomeUnknownError: it may still commit later.

import { assert, OutcomeUnknownError, ProposalDroppedError } from '../raft/errors.ts';

interface Pending<T> {
  readonly resolve: (value: T) => void;
  readonly reject: (error: Error) => void;
  readonly deadlineMs: number;
}

export class ProposalTracker<T> {
  private readonly pending = new Map<number, Pending<T>>();
  private sequence = 0;

  constructor(private readonly proposalsMax: number) {
    assert(Number.isSafeInteger(proposalsMax) && proposalsMax > 0, 'proposalsMax must be a positive integer');
  }

  get size(): number {
    return this.pending.size;
  }

  /** Registers a caller; returns its sequence number and the promise it waits on. */
  register(deadlineMs: number): { sequence: number; promise: Promise<T> } {
    if (this.pending.size >= this.proposalsMax) {
      throw new ProposalDroppedError(`too many proposals in flight (${this.proposalsMax})`);
    }
    this.sequence += 1;
    const sequence = this.sequence;
    const promise = new Promise<T>((resolve, reject) => {
      this.pending.set(sequence, { resolve, reject, deadlineMs });
    });
    return { sequence, promise };
  }

  resolve(sequence: number, value: T): void {
    const entry = this.pending.get(sequence);
    if (entry === undefined) return; // timed out already, or proposed by an earlier incarnation
    this.pending.delete(sequence);
    entry.resolve(value);
  }

  reject(sequence: number, error: Error): void {
    const entry = this.pending.get(sequence);
    if (entry === undefined) return;
    this.pending.delete(sequence);
    entry.reject(error);
  }

  /** Fails every proposal whose deadline passed with OutcomeUnknownError. */
  expire(nowMs: number): void {
    for (const [sequence, entry] of this.pending) {
      if (entry.deadlineMs > nowMs) continue;
      this.pending.delete(sequence);
      entry.reject(new OutcomeUnknownError('the write timed out after it was proposed; it may or may not be applied'));
    }
  }

  /** Fails everything (node closing or stopped). */
  rejectAll(makeError: () => Error): void {
    const entries = [...this.pending.values()];
    this.pending.clear();
    for (const entry of entries) entry.reject(makeError());
  }
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
