// Concurrency helpers on top of leases and watch, after etcd's clientv3
// concurrency package: a Session (a lease kept alive in the background), a
// Mutex and an Election. Each participant writes one key,
// `<prefix>/<lease id in hex>`, attached to its session's lease; the
// participant whose key has the smallest create revision holds the lock (or
// leads). A waiter watches only the key just before its own (the last one
// with a smaller create revision), so a release wakes one waiter, not all.
// If the session's lease expires, the key is deleted with it and the next
// waiter proceeds: a holder must therefore guard its writes with the lock
// key's create revision (the fencing token, `mutex.fence()`), which fails
// once the lock has passed on.

import { InvalidArgumentError, NodeStoppedError, RaftKVError } from '../raft/errors.ts';
import type { KeyValue } from '../storage/mvcc/types.ts';
import { LeaseLostError } from './lease.ts';
import type { LeaseKeepAlive } from './lease.ts';
import { op, toBytes } from './raftkv.ts';
import type { Bytes, RaftKV } from './raftkv.ts';

export interface SessionOptions {
  /** TTL of the session's lease, in seconds. Default 60. */
  readonly ttlSeconds?: number;
  /** Use this existing lease instead of granting one (it is revoked on close all the same). */
  readonly lease?: number;
  /** Closes the session when aborted. */
  readonly signal?: AbortSignal;
}

/** The session's lease was lost or it was closed: the lock or leadership it held is gone. */
export class SessionClosedError extends RaftKVError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('RAFTKV_SESSION_CLOSED', message, options);
  }
}

/** tryLock found the lock held by someone else. */
export class LockedError extends RaftKVError {
  constructor(holder: string) {
    super('RAFTKV_LOCKED', `the lock is held by ${holder}`);
  }
}

/** proclaim or resign was called by a participant that is not the leader. */
export class NotElectionLeaderError extends RaftKVError {
  constructor() {
    super('RAFTKV_NOT_LEADER', 'this participant is not the election leader');
  }
}

/** A lease kept alive in the background; closing it revokes the lease. */
export class Session {
  private readonly controller = new AbortController();
  private closing: Promise<void> | null = null;

  private constructor(
    readonly kv: RaftKV,
    readonly lease: number,
    readonly ttlSeconds: number,
    private readonly keepAlive: LeaseKeepAlive,
  ) {
    keepAlive.onLost((error) => this.controller.abort(error));
  }

  /** Grants a lease (or adopts `lease`) and starts keeping it alive. */
  static async create(kv: RaftKV, options: SessionOptions = {}): Promise<Session> {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('session options must be an object');
    options.signal?.throwIfAborted();
    let lease: number;
    let ttlSeconds: number;
    if (options.lease !== undefined) {
      const live = await kv.timeToLive(options.lease);
      lease = options.lease;
      ttlSeconds = live.grantedTtlSeconds;
    } else {
      const granted = await kv.grant(options.ttlSeconds ?? 60);
      lease = granted.id;
      ttlSeconds = granted.ttlSeconds;
    }
    const session = new Session(kv, lease, ttlSeconds, kv.keepAlive(lease));
    if (options.signal !== undefined) {
      options.signal.addEventListener('abort', () => void session.close().catch(() => undefined), { once: true });
    }
    return session;
  }

  /** Aborted once the session is lost or closed; its reason says which. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get isClosed(): boolean {
    return this.controller.signal.aborted;
  }

  /** Throws if the session is lost or closed. */
  throwIfClosed(): void {
    if (!this.controller.signal.aborted) return;
    const reason: unknown = this.controller.signal.reason;
    throw reason instanceof LeaseLostError ? new SessionClosedError(`the session's ${reason.message}`, { cause: reason }) : new SessionClosedError('the session is closed');
  }

  /** Stops the keep-alive and revokes the lease (deleting every key written under it). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (!this.controller.signal.aborted) this.controller.abort(new SessionClosedError('the session is closed'));
      this.keepAlive.close();
      try {
        await this.kv.revoke(this.lease);
      } catch (error) {
        // Already gone, or the member is closed (the lease then expires on its own).
        if (!(error instanceof RaftKVError) || (error.code !== 'RAFTKV_LEASE_NOT_FOUND' && !(error instanceof NodeStoppedError))) throw error;
      }
    })();
    return this.closing;
  }

  /**
   * Stops renewing without revoking, as a crashed or paused process would:
   * the lease expires after its TTL. For tests and for handing a lease over.
   */
  orphan(): void {
    this.keepAlive.close();
    if (!this.controller.signal.aborted) this.controller.abort(new SessionClosedError('the session was orphaned'));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function checkPrefix(prefix: unknown): string {
  if (typeof prefix !== 'string' || prefix.length === 0) throw new InvalidArgumentError('prefix must be a non-empty string');
  return prefix.endsWith('/') ? prefix : `${prefix}/`;
}

/** Combines the caller's signal with the session's. */
function linkedSignal(session: Session, signal: AbortSignal | undefined): { signal: AbortSignal; dispose: () => void } {
  if (signal === undefined) return { signal: session.signal, dispose: () => {} };
  // AbortSignal.any needs Node 20.3; this works on every Node 20, and its listeners are removed after each call.
  const controller = new AbortController();
  const sources = [session.signal, signal];
  const listeners = sources.map((source) => () => controller.abort(source.reason));
  sources.forEach((source, position) => {
    if (source.aborted) controller.abort(source.reason);
    else source.addEventListener('abort', listeners[position] as () => void, { once: true });
  });
  return {
    signal: controller.signal,
    dispose: () => sources.forEach((source, position) => source.removeEventListener('abort', listeners[position] as () => void)),
  };
}

function abortError(signal: AbortSignal, session: Session): Error {
  if (session.signal.aborted) {
    try {
      session.throwIfClosed();
    } catch (error) {
      return error as Error;
    }
  }
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new RaftKVError('RAFTKV_ABORTED', 'the operation was aborted');
}

/**
 * The participant key of a session under a prefix, and the plumbing both
 * Mutex and Election share: create it once (keeping its create revision),
 * wait for every key created before it to go.
 */
class Queue {
  readonly key: string;
  /** Create revision of our key (0 until created). */
  revision = 0;

  constructor(
    readonly session: Session,
    readonly prefix: string,
  ) {
    this.key = `${prefix}${session.lease.toString(16)}`;
  }

  /** Creates our key if absent (else keeps it); returns the current first key and the revision of that read. */
  async join(value: Bytes): Promise<{ first: KeyValue | undefined; revision: number }> {
    const kv = this.session.kv;
    const response = await kv
      .txn()
      .if(this.key, 'create', '=', 0)
      .then(op.put(this.key, value, { lease: this.session.lease }), op.get(this.key))
      .else(op.get(this.key))
      .commit();
    const mine = response.responses[response.succeeded ? 1 : 0];
    if (mine?.type !== 'range' || mine.kvs[0] === undefined) throw new SessionClosedError('the participant key vanished: the session expired');
    this.revision = (mine.kvs[0] as KeyValue).createRevision;
    const first = await kv.range({ prefix: this.prefix, sort: { target: 'create', order: 'ascend' }, limit: 1 });
    return { first: first.kvs[0], revision: first.revision };
  }

  /**
   * Waits until no key under the prefix was created before ours (etcd's
   * waitDeletes): watches the last such key until it is deleted, then looks
   * again. Resolves with the revision at which we were first.
   */
  async waitForPredecessors(signal: AbortSignal): Promise<number> {
    const kv = this.session.kv;
    for (;;) {
      if (signal.aborted) throw abortError(signal, this.session);
      const before = await kv.range({
        prefix: this.prefix,
        maxCreateRevision: this.revision - 1,
        sort: { target: 'create', order: 'descend' },
        limit: 1,
      });
      const predecessor = before.kvs[0];
      if (predecessor === undefined) {
        await this.ensureStillQueued(before.revision);
        return before.revision;
      }
      await this.waitForDelete(predecessor.key, before.revision + 1, signal);
    }
  }

  /** Our key must still be there: a session that expired while waiting lost its place. */
  private async ensureStillQueued(atRevision: number): Promise<void> {
    const mine = await this.session.kv.get(this.key, { revision: atRevision });
    if (mine === undefined || mine.createRevision !== this.revision) {
      throw new SessionClosedError('the participant key was deleted while waiting: the session expired');
    }
  }

  private async waitForDelete(key: Uint8Array, startRevision: number, signal: AbortSignal): Promise<void> {
    const watch = this.session.kv.watch({ key, startRevision, filters: ['noPut'], signal });
    try {
      for await (const response of watch) {
        if (response.events.some((event) => event.type === 'delete')) return;
      }
    } catch (error) {
      if (signal.aborted) throw abortError(signal, this.session);
      throw error;
    }
    if (signal.aborted) throw abortError(signal, this.session);
  }

  /** Removes our key (best effort when the member is gone: the lease then takes it). */
  async leave(): Promise<number> {
    const revision = this.revision;
    this.revision = 0;
    const response = await this.session.kv.txn().if(this.key, 'create', '=', revision).then(op.delete(this.key)).commit();
    return response.revision;
  }
}

export interface LockOptions {
  /** Gives up waiting (the queued key is removed) when aborted. */
  readonly signal?: AbortSignal;
}

/** What an acquired lock tells its holder. */
export interface LockGrant {
  /** The lock key. */
  readonly key: string;
  /** Its create revision: the fencing token (see Mutex.fence()). */
  readonly revision: number;
  /** The store revision at which this holder was first in line. */
  readonly acquiredAtRevision: number;
}

/**
 * A distributed lock, fair by arrival (create revision). Not reentrant
 * across sessions; one Mutex object per session and prefix.
 */
export class Mutex {
  private readonly queue: Queue;
  private held = false;

  constructor(session: Session, prefix: string) {
    if (!(session instanceof Session)) throw new InvalidArgumentError('a Mutex needs a Session');
    this.queue = new Queue(session, checkPrefix(prefix));
  }

  /** The lock key of this session. */
  get key(): string {
    return this.queue.key;
  }

  /** The fencing token while held (the key's create revision), else 0. */
  get revision(): number {
    return this.held ? this.queue.revision : 0;
  }

  get isHeld(): boolean {
    return this.held && !this.queue.session.isClosed;
  }

  /** Waits until the lock is ours. */
  async lock(options: LockOptions = {}): Promise<LockGrant> {
    const session = this.queue.session;
    session.throwIfClosed();
    const { signal, dispose } = linkedSignal(session, options.signal);
    let acquiredAtRevision: number;
    try {
      signal.throwIfAborted();
      const { first, revision } = await this.queue.join('');
      acquiredAtRevision = revision;
      try {
        if (first === undefined || first.createRevision !== this.queue.revision) {
          acquiredAtRevision = await this.queue.waitForPredecessors(signal);
        }
      } catch (error) {
        await this.queue.leave().catch(() => undefined);
        throw error;
      }
    } finally {
      dispose();
    }
    this.held = true;
    return { key: this.queue.key, revision: this.queue.revision, acquiredAtRevision };
  }

  /** Takes the lock if it is free; throws LockedError (RAFTKV_LOCKED) otherwise, leaving no key behind. */
  async tryLock(): Promise<LockGrant> {
    this.queue.session.throwIfClosed();
    const { first, revision } = await this.queue.join('');
    if (first !== undefined && first.createRevision !== this.queue.revision) {
      await this.queue.leave();
      throw new LockedError(Buffer.from(first.key).toString());
    }
    this.held = true;
    return { key: this.queue.key, revision: this.queue.revision, acquiredAtRevision: revision };
  }

  /** Releases the lock (deletes the key); resolves with the release revision. */
  async unlock(): Promise<number> {
    this.held = false;
    return this.queue.leave();
  }

  /**
   * The compare that holds only while this lock is ours: put it in the
   * `if` of a transaction to make a write conditional on holding the lock
   * — `kv.txn().if(...mutex.fence()).then(op.put(...)).commit()`.
   */
  fence(): [string, 'create', '=', number] {
    if (!this.held) throw new InvalidArgumentError('the lock is not held');
    return [this.queue.key, 'create', '=', this.queue.revision];
  }
}

/** The current leader of an election. */
export interface ElectionLeader {
  readonly key: string;
  readonly value: Buffer;
  /** The leader key's create revision: the leadership's term. */
  readonly revision: number;
}

/** Leader election among sessions (etcd's concurrency.Election). */
export class Election {
  private readonly queue: Queue;
  private leading = false;

  constructor(session: Session, prefix: string) {
    if (!(session instanceof Session)) throw new InvalidArgumentError('an Election needs a Session');
    this.queue = new Queue(session, checkPrefix(prefix));
  }

  get key(): string {
    return this.queue.key;
  }

  /** The leadership term while leading (our key's create revision), else 0. */
  get revision(): number {
    return this.leading ? this.queue.revision : 0;
  }

  get isLeader(): boolean {
    return this.leading && !this.queue.session.isClosed;
  }

  /** Waits until elected, announcing `value`; resolves with the revision at which we became leader. */
  async campaign(value: Bytes, options: LockOptions = {}): Promise<number> {
    const session = this.queue.session;
    session.throwIfClosed();
    const bytes = toBytes(value, 'value');
    const { signal, dispose } = linkedSignal(session, options.signal);
    let electedAt: number;
    try {
      signal.throwIfAborted();
      const { first, revision } = await this.queue.join(bytes);
      electedAt = revision;
      try {
        if (first === undefined || first.createRevision !== this.queue.revision) {
          // Already queued from an earlier campaign: keep our place but announce the new value.
          await this.proclaimIfQueued(bytes);
          electedAt = await this.queue.waitForPredecessors(signal);
        }
      } catch (error) {
        await this.queue.leave().catch(() => undefined);
        throw error;
      }
    } finally {
      dispose();
    }
    this.leading = true;
    return electedAt;
  }

  /** Announces a new value without losing leadership; fails if not the leader. */
  async proclaim(value: Bytes): Promise<number> {
    if (!this.leading) throw new NotElectionLeaderError();
    this.queue.session.throwIfClosed();
    const response = await this.queue.session.kv
      .txn()
      .if(this.queue.key, 'create', '=', this.queue.revision)
      .then(op.put(this.queue.key, value, { ignoreLease: true }))
      .commit();
    if (!response.succeeded) {
      this.leading = false;
      throw new NotElectionLeaderError();
    }
    return response.revision;
  }

  /** Gives up leadership (or a place in line). */
  async resign(): Promise<number> {
    this.leading = false;
    if (this.queue.revision === 0) return 0;
    return this.queue.leave();
  }

  /** The current leader, or undefined when nobody campaigns. */
  async leader(): Promise<ElectionLeader | undefined> {
    const response = await this.queue.session.kv.range({ prefix: this.queue.prefix, sort: { target: 'create', order: 'ascend' }, limit: 1 });
    const first = response.kvs[0];
    return first === undefined ? undefined : leaderOf(first);
  }

  /**
   * Every change of leader (or of its value), starting with the current
   * one; `undefined` while nobody leads. Ends when the signal aborts.
   */
  async *observe(options: { readonly signal?: AbortSignal } = {}): AsyncGenerator<ElectionLeader | undefined> {
    const kv = this.queue.session.kv;
    const prefix = this.queue.prefix;
    const current = await kv.range({ prefix, sort: { target: 'create', order: 'ascend' }, limit: 1 });
    let last = current.kvs[0];
    yield last === undefined ? undefined : leaderOf(last);
    const watch = kv.watch({ prefix, startRevision: current.revision + 1, ...(options.signal === undefined ? {} : { signal: options.signal }) });
    try {
      for await (const response of watch) {
        // One look per revision that changed something, so no leader (or value) in between is skipped.
        const revisions = [...new Set(response.events.map((event) => event.kv.modRevision))];
        for (const revision of revisions) {
          const now = await kv.range({ prefix, sort: { target: 'create', order: 'ascend' }, limit: 1, revision });
          const first = now.kvs[0];
          if (sameLeader(first, last)) continue;
          last = first;
          yield first === undefined ? undefined : leaderOf(first);
        }
      }
    } catch (error) {
      if (options.signal?.aborted === true) return;
      throw error;
    } finally {
      watch.cancel();
    }
  }

  private async proclaimIfQueued(value: Uint8Array): Promise<void> {
    const kv = this.queue.session.kv;
    await kv.txn().if(this.queue.key, 'create', '=', this.queue.revision).then(op.put(this.queue.key, value, { ignoreLease: true })).commit();
  }
}

function leaderOf(kv: KeyValue): ElectionLeader {
  return { key: Buffer.from(kv.key).toString(), value: Buffer.from(kv.value), revision: kv.createRevision };
}

function sameLeader(left: KeyValue | undefined, right: KeyValue | undefined): boolean {
  if (left === undefined || right === undefined) return left === right;
  return left.createRevision === right.createRevision && left.modRevision === right.modRevision;
}
