// Leases on the host side: the lessor and the keep-alive stream.
//
// The lease table (ids, TTLs, renewal counts, checkpointed remaining time)
// is replicated state inside the MVCC store; this file owns only what is
// not replicated — wall-clock deadlines. Like etcd's primary lessor, only
// the leader keeps deadlines: each tick it reconciles them with the store's
// table (a lease it has not seen gets now + its checkpointed remaining time
// or its full TTL — so a new leader extends every lease and none expires
// early because of an election; a lease whose renewal count went up since
// the last tick gets now + TTL), and proposes a revoke for each lease past
// its deadline. A revoke carries the renewal count the leader saw: if a
// renewal was applied in between, the store refuses it. A stale leader's
// revoke cannot commit. Followers keep no deadlines.
//
// Renewals (keepAlive) go through Raft from any member, as a log entry:
// that makes a follower's renewal reach the leader without another RPC, and
// a renewal is acknowledged only once a quorum has it, so a deposed leader
// can never acknowledge one. The cost is one log entry per renewal, every
// TTL/3 per kept-alive lease.

import createDebug from 'debug';
import { InvalidArgumentError, RaftKVError } from '../raft/errors.ts';
import type { LeaseRecord, WriteRequest, WriteResponse } from '../storage/mvcc/types.ts';
import { LEASE_CHECKPOINTS_MAX } from '../storage/mvcc/validate.ts';

const log = createDebug('raftkv:lease');

/** What the lessor needs of its member. */
export interface LessorHost {
  /** The replicated lease table, by id. */
  leases(): readonly LeaseRecord[];
  /** One lease of the table. */
  lease(id: number): LeaseRecord | undefined;
  readonly isLeader: boolean;
  /** Proposes a request through Raft; resolves once applied here. */
  propose(request: WriteRequest): Promise<WriteResponse>;
}

export interface LessorOptions {
  /** How often deadlines are checked, in milliseconds. */
  readonly tickMs: number;
  /** How often the leader checkpoints remaining TTLs through Raft (0: never). */
  readonly checkpointIntervalMs: number;
  /** Revokes proposed per tick at most (etcd spreads mass expiry the same way). */
  readonly revokesPerTickMax: number;
  /** The clock (tests may replace it). */
  readonly now?: () => number;
}

interface Deadline {
  deadlineMs: number;
  renewals: number;
  revoking: boolean;
}

export class Lessor {
  private readonly deadlines = new Map<number, Deadline>();
  private timer: NodeJS.Timeout | undefined;
  private lastCheckpointMs = 0;
  private checkpointing = false;
  private readonly now: () => number;

  constructor(
    private readonly host: LessorHost,
    private readonly options: LessorOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.timer ??= setInterval(() => this.tick(), this.options.tickMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.deadlines.clear();
  }

  /** Milliseconds left before the leader revokes the lease; undefined on a follower or for an unknown lease. */
  remainingMs(id: number): number | undefined {
    if (!this.host.isLeader) return undefined;
    const deadline = this.deadlines.get(id);
    const lease = this.host.lease(id);
    if (deadline === undefined || lease === undefined) return undefined;
    const now = this.now();
    // A renewal applied since the last tick counts at once, as the next tick (which decides expiry) will count it.
    if (deadline.renewals !== lease.renewals) {
      deadline.deadlineMs = now + lease.ttlSeconds * 1000;
      deadline.renewals = lease.renewals;
    }
    return Math.max(0, deadline.deadlineMs - now);
  }

  /** One pass: reconcile deadlines with the table, revoke what expired, checkpoint now and then. */
  tick(): void {
    if (!this.host.isLeader) {
      this.deadlines.clear();
      return;
    }
    const now = this.now();
    const table = this.host.leases();
    const seen = new Set<number>();
    for (const lease of table) {
      seen.add(lease.id);
      const known = this.deadlines.get(lease.id);
      if (known === undefined) {
        // First sight as leader: a fresh grant, or a lease inherited from the previous leader.
        const remaining = lease.remainingMs > 0 ? Math.min(lease.remainingMs, lease.ttlSeconds * 1000) : lease.ttlSeconds * 1000;
        this.deadlines.set(lease.id, { deadlineMs: now + remaining, renewals: lease.renewals, revoking: false });
      } else if (known.renewals !== lease.renewals) {
        known.deadlineMs = now + lease.ttlSeconds * 1000;
        known.renewals = lease.renewals;
      }
    }
    for (const id of this.deadlines.keys()) if (!seen.has(id)) this.deadlines.delete(id);
    this.revokeExpired(now);
    if (this.options.checkpointIntervalMs > 0 && now - this.lastCheckpointMs >= this.options.checkpointIntervalMs) {
      this.lastCheckpointMs = now;
      this.checkpoint(now, table);
    }
  }

  private revokeExpired(now: number): void {
    let proposed = 0;
    for (const [id, deadline] of this.deadlines) {
      if (proposed >= this.options.revokesPerTickMax) break;
      if (deadline.revoking || deadline.deadlineMs > now) continue;
      deadline.revoking = true;
      proposed++;
      log('lease %d expired; proposing its revoke', id);
      this.host.propose({ type: 'leaseRevoke', id, renewals: deadline.renewals }).then(
        (response) => {
          if (response.type === 'error') deadline.revoking = false; // renewed or gone; the next tick decides again
        },
        () => {
          deadline.revoking = false;
        },
      );
    }
  }

  /** Records, through Raft, how much time each long lease has left (for a future leader to resume from). */
  private checkpoint(now: number, table: readonly LeaseRecord[]): void {
    if (this.checkpointing) return;
    const checkpoints: { id: number; renewals: number; remainingMs: number }[] = [];
    for (const lease of table) {
      const deadline = this.deadlines.get(lease.id);
      if (deadline === undefined || deadline.renewals !== lease.renewals) continue;
      const remainingMs = Math.max(1, Math.ceil(deadline.deadlineMs - now));
      // Only worth it when the lease has used a good part of its TTL since the last checkpoint.
      if (remainingMs >= lease.ttlSeconds * 1000 - this.options.checkpointIntervalMs / 2) continue;
      if (lease.remainingMs > 0 && Math.abs(lease.remainingMs - remainingMs) < this.options.checkpointIntervalMs / 2) continue;
      checkpoints.push({ id: lease.id, renewals: lease.renewals, remainingMs });
      if (checkpoints.length >= LEASE_CHECKPOINTS_MAX) break;
    }
    if (checkpoints.length === 0) return;
    this.checkpointing = true;
    this.host
      .propose({ type: 'leaseCheckpoint', checkpoints })
      .catch((error: unknown) => log('checkpoint failed: %O', error))
      .finally(() => {
        this.checkpointing = false;
      });
  }
}

/** One message of a keep-alive stream. */
export type KeepAliveEvent =
  | { readonly type: 'renewed'; readonly id: number; readonly ttlSeconds: number }
  | { readonly type: 'lost'; readonly id: number; readonly error: Error };

const TRANSIENT_CODES = new Set(['RAFTKV_NO_LEADER', 'RAFTKV_TIMEOUT', 'RAFTKV_OUTCOME_UNKNOWN', 'RAFTKV_PROPOSAL_DROPPED']);

/** Whether a failed renewal may be retried (the lease may still be alive). */
export function isTransientLeaseError(error: unknown): boolean {
  return error instanceof RaftKVError && TRANSIENT_CODES.has(error.code);
}

/** Lease lost: revoked, expired, or not renewed before its TTL ran out. */
export class LeaseLostError extends RaftKVError {
  constructor(id: number, message: string, options?: { cause?: unknown }) {
    super('RAFTKV_LEASE_LOST', `lease ${id} (0x${id.toString(16)}) is lost: ${message}`, options);
  }
}

export interface KeepAliveOptions {
  /** Stops the stream (the lease is not revoked). */
  readonly signal?: AbortSignal;
}

const EVENTS_BUFFERED_MAX = 16;

/**
 * Renews a lease about every TTL/3 until it is lost, closed or aborted, and
 * reports each renewal and the loss as an async iterable. Transient errors
 * (no leader, timeouts) are retried until the TTL of the last successful
 * renewal has run out. At most 16 events wait for a slow consumer (older
 * renewals are dropped; the loss is always delivered).
 */
export class LeaseKeepAlive implements AsyncIterableIterator<KeepAliveEvent> {
  private readonly events: KeepAliveEvent[] = [];
  private waiter: ((result: IteratorResult<KeepAliveEvent>) => void) | null = null;
  private closed = false;
  private finished = false;
  private timer: NodeJS.Timeout | undefined;
  private wakeSleep: (() => void) | null = null;
  private lostHandlers: ((error: Error) => void)[] = [];
  private detachSignal: () => void = () => {};
  /** When the last renewal was sent and acknowledged (ms), and its TTL. */
  private lastRenewedMs = 0;
  private ttlSeconds = 0;
  readonly done: Promise<void>;

  constructor(
    readonly id: number,
    private readonly renew: (id: number) => Promise<{ ttlSeconds: number }>,
    private readonly retryMs: number,
    options: KeepAliveOptions = {},
  ) {
    const signal = options.signal;
    if (signal !== undefined) {
      if (signal.aborted) {
        this.closed = true;
        this.finished = true; // an already-aborted stream ends at once
      } else {
        const onAbort = (): void => this.close();
        signal.addEventListener('abort', onAbort, { once: true });
        this.detachSignal = () => signal.removeEventListener('abort', onAbort);
      }
    }
    this.done = this.run().finally(() => this.detachSignal());
  }

  /** Milliseconds-since-epoch deadline the last acknowledged renewal guarantees (0 before the first). */
  get guaranteedUntilMs(): number {
    return this.lastRenewedMs === 0 ? 0 : this.lastRenewedMs + this.ttlSeconds * 1000;
  }

  /** Calls back once if the lease is lost (not on close). */
  onLost(handler: (error: Error) => void): void {
    this.lostHandlers.push(handler);
  }

  /** Stops renewing (the lease then expires after its TTL unless revoked). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.wakeSleep?.();
    this.finish();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<KeepAliveEvent>> {
    const event = this.events.shift();
    if (event !== undefined) return Promise.resolve({ value: event, done: false });
    if (this.finished) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.waiter = resolve));
  }

  async return(): Promise<IteratorResult<KeepAliveEvent>> {
    this.close();
    return { value: undefined, done: true };
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      const sentMs = Date.now();
      let delayMs: number;
      try {
        const { ttlSeconds } = await this.renew(this.id);
        if (this.closed) return;
        this.lastRenewedMs = sentMs;
        this.ttlSeconds = ttlSeconds;
        this.push({ type: 'renewed', id: this.id, ttlSeconds });
        delayMs = Math.max(this.retryMs, Math.floor((ttlSeconds * 1000) / 3) - (Date.now() - sentMs));
      } catch (error) {
        if (this.closed) return;
        const outOfTime = this.lastRenewedMs === 0 || Date.now() >= this.guaranteedUntilMs;
        if (!isTransientLeaseError(error) || outOfTime) {
          this.lose(error instanceof Error ? error : new Error(String(error)));
          return;
        }
        delayMs = this.retryMs;
      }
      await this.sleep(delayMs);
    }
  }

  private lose(cause: Error): void {
    const error = cause instanceof RaftKVError && cause.code === 'RAFTKV_LEASE_NOT_FOUND'
      ? new LeaseLostError(this.id, 'revoked or expired', { cause })
      : new LeaseLostError(this.id, cause.message, { cause });
    this.push({ type: 'lost', id: this.id, error });
    this.closed = true;
    for (const handler of this.lostHandlers) handler(error);
    this.finish();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wakeSleep = () => {
        clearTimeout(this.timer);
        resolve();
      };
      this.timer = setTimeout(resolve, ms);
    });
  }

  private push(event: KeepAliveEvent): void {
    if (this.waiter !== null) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter({ value: event, done: false });
      return;
    }
    if (this.events.length >= EVENTS_BUFFERED_MAX) {
      const dropAt = this.events.findIndex((queued) => queued.type === 'renewed');
      if (dropAt >= 0) this.events.splice(dropAt, 1);
    }
    this.events.push(event);
  }

  private finish(): void {
    this.finished = true;
    if (this.waiter !== null && this.events.length === 0) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter({ value: undefined, done: true });
    }
  }
}

/** Checks a requested TTL and raises it to the minimum (as etcd does). */
export function grantedTtlSeconds(ttlSeconds: unknown, minimumSeconds: number, maximumSeconds: number): number {
  if (typeof ttlSeconds !== 'number' || !Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > maximumSeconds) {
    throw new InvalidArgumentError(`ttlSeconds must be a whole number of seconds from 1 to ${maximumSeconds}`);
  }
  return Math.max(ttlSeconds, minimumSeconds);
}
