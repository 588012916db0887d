// Batched linearizable reads (ReadIndex): every read that arrives while no
// round is open joins the next round; one round asks the Raft core for a read
// index with a fresh context, and when the matching ReadState comes back and
// the state machine has applied through its index, every read of the round
// may run. Reads that arrive after a round was sent wait for the next one:
// the read index must be fixed after the read began.

import { assert, TimeoutError } from '../raft/errors.ts';
import { bytesEqual } from '../storage/mvcc/keys.ts';

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
  readonly deadlineMs: number;
}

interface Round {
  readonly context: Uint8Array;
  readonly waiters: Waiter[];
  readonly sentAtMs: number;
  /** Known once the ReadState arrives. */
  index: number;
}

export class ReadIndexBatcher {
  private next: Waiter[] = [];
  /**
   * The round in flight: at most one at a time. (A Map from context to round
   * here gained and lost an entry per round, and its obsolete tables, once
   * promoted, kept young rounds and their reads alive; see proposals.ts.)
   */
  private sent: Round | undefined;
  private readonly confirmed: Round[] = [];
  private counter = 0;

  constructor(
    private readonly nodeId: number,
    private readonly waitersMax: number,
  ) {
    assert(waitersMax > 0, 'waitersMax must be positive');
  }

  get waiting(): number {
    let count = this.next.length;
    if (this.sent !== undefined) count += this.sent.waiters.length;
    for (const round of this.confirmed) count += round.waiters.length;
    return count;
  }

  /** A read waits here until it is safe to serve. */
  wait(deadlineMs: number): Promise<void> {
    if (this.waiting >= this.waitersMax) {
      return Promise.reject(new TimeoutError(`too many linearizable reads waiting (${this.waitersMax})`));
    }
    return new Promise<void>((resolve, reject) => {
      this.next.push({ resolve, reject, deadlineMs });
    });
  }

  /** Opens a round for the reads waiting now, if any and if none is in flight. */
  takeRound(nowMs: number): Uint8Array | undefined {
    if (this.next.length === 0 || this.sent !== undefined) return undefined;
    this.counter += 1;
    const context = new Uint8Array(12);
    const view = new DataView(context.buffer);
    view.setUint32(0, this.nodeId);
    view.setFloat64(4, this.counter);
    this.sent = { context, waiters: this.next, sentAtMs: nowMs, index: -1 };
    this.next = [];
    return context;
  }

  /** The core could not start the round (e.g. no leader): fail its reads. */
  failRound(context: Uint8Array, error: Error): void {
    const round = this.sentWith(context);
    if (round === undefined) return;
    this.sent = undefined;
    for (const waiter of round.waiters) waiter.reject(error);
  }

  /** A ReadState arrived. */
  confirm(context: Uint8Array, index: number): void {
    const round = this.sentWith(context);
    if (round === undefined) return; // a duplicate, or a round that already timed out
    this.sent = undefined;
    round.index = index;
    this.confirmed.push(round);
  }

  /** The state machine applied through `appliedIndex`: release what is now safe. */
  release(appliedIndex: number): void {
    for (let i = 0; i < this.confirmed.length; ) {
      const round = this.confirmed[i]!;
      if (round.index <= appliedIndex) {
        this.confirmed.splice(i, 1);
        for (const waiter of round.waiters) waiter.resolve();
      } else {
        i += 1;
      }
    }
  }

  /**
   * Fails reads past their deadline. A round whose ReadState did not come
   * within roundRetryMs (lost with a leader change or a dropped message) is
   * abandoned and its reads join the next round.
   */
  expire(nowMs: number, roundRetryMs: number): void {
    const expired = (waiter: Waiter): boolean => {
      if (waiter.deadlineMs > nowMs) return false;
      waiter.reject(new TimeoutError('linearizable read timed out'));
      return true;
    };
    this.next = this.next.filter((w) => !expired(w));
    const round = this.sent;
    if (round !== undefined) {
      const live = round.waiters.filter((w) => !expired(w));
      round.waiters.length = 0;
      round.waiters.push(...live);
      if (live.length === 0) {
        this.sent = undefined;
      } else if (nowMs - round.sentAtMs > roundRetryMs) {
        this.sent = undefined;
        this.next.unshift(...live);
      }
    }
    for (const round of this.confirmed) {
      const live = round.waiters.filter((w) => !expired(w));
      round.waiters.length = 0;
      round.waiters.push(...live);
    }
  }

  /** Re-queues the reads of rounds still in flight (e.g. after a leader change). */
  retryInFlight(): void {
    if (this.sent !== undefined) this.next.unshift(...this.sent.waiters);
    this.sent = undefined;
  }

  /** The round in flight, if `context` is its context. */
  private sentWith(context: Uint8Array): Round | undefined {
    const round = this.sent;
    return round !== undefined && bytesEqual(round.context, context) ? round : undefined;
  }

  rejectAll(makeError: () => Error): void {
    const all = [...this.next];
    if (this.sent !== undefined) all.push(...this.sent.waiters);
    for (const round of this.confirmed) all.push(...round.waiters);
    this.next = [];
    this.sent = undefined;
    this.confirmed.length = 0;
    for (const waiter of all) waiter.reject(makeError());
  }
}
