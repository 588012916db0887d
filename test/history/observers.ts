// What runs beside a scenario's key-value clients, for the watch, lease and
// mutex checks (watch-check.ts, lease-check.ts, mutex-check.ts): watchers
// of every key that reopen where they stopped, lease clients that grant,
// attach a key, renew for a while and then revoke or walk away, and mutex
// clients that take a lock and make fenced writes while they hold it. All
// go through the public API of whichever members are running, under the
// same nemesis; every random choice comes from the seed. Each records only
// what it saw, bounded.

import { Mutex, Session, op } from '../../src/index.ts';
import type { Cluster, LockGrant, RaftKV } from '../../src/index.ts';
import type { Event } from '../../src/storage/mvcc/types.ts';
import { createRandom } from '../../src/raft/random.ts';
import type { RandomSource } from '../../src/raft/random.ts';
import type { LeaseRecord, ObservedDelete } from './lease-check.ts';
import type { FencedWrite } from './mutex-check.ts';
import type { WatchedEvent, WatchSegment, WatchTruth } from './watch-check.ts';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString();
const codeOf = (error: unknown): string => {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'UNTYPED';
};

/** Keys of the lease clients and the mutex clients live under these prefixes, apart from the history's keys. */
export const LEASE_PREFIX = 'lease/';
export const LOCK_PREFIX = 'lock/';
const FENCED_KEY = 'fenced/owner';
/** Events one watcher records at most (over all its segments). */
const WATCHED_EVENTS_MAX = 200_000;

function toWatched(event: Event, receivedAtMs: number): WatchedEvent {
  return {
    revision: event.kv.modRevision,
    type: event.type,
    key: text(event.kv.key),
    value: text(event.kv.value),
    createRevision: event.kv.createRevision,
    version: event.kv.version,
    lease: event.kv.lease,
    receivedAtMs,
  };
}

function runningMember(cluster: Cluster, random: RandomSource): RaftKV | undefined {
  const nodes = cluster.nodes().filter((node) => !node.isStopped);
  return nodes[random(Math.max(1, nodes.length))];
}

/** Watchers of every key, each reopening (on some running member) right after the last revision it was promised. */
export class Watchers {
  readonly segments: WatchSegment[] = [];
  private stopped = false;
  private readonly controllers = new Set<AbortController>();
  private readonly loops: Promise<void>[] = [];
  private readonly recorded: number[];
  overflow = false;

  constructor(
    private readonly cluster: Cluster,
    readonly count: number,
  ) {
    this.recorded = new Array<number>(count).fill(0);
  }

  start(): void {
    for (let watcher = 0; watcher < this.count; watcher++) this.loops.push(this.loop(watcher));
  }

  /** The lowest revision every watcher has been promised. */
  get coveredTo(): number {
    let lowest = Infinity;
    for (let watcher = 0; watcher < this.count; watcher++) {
      let last = 0;
      for (const segment of this.segments) if (segment.watcher === watcher) last = segment.coveredTo;
      lowest = Math.min(lowest, last);
    }
    return lowest;
  }

  /** Waits until every watcher has been promised `revision` (false after `timeoutMs`). */
  async waitFor(revision: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.coveredTo < revision) {
      if (Date.now() > deadline) return false;
      await sleep(20);
    }
    return true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const controller of this.controllers) controller.abort();
    await Promise.all(this.loops);
  }

  private async loop(watcher: number): Promise<void> {
    let next = 1;
    for (let attempt = 0; !this.stopped; attempt++) {
      const nodes = this.cluster.nodes().filter((node) => !node.isStopped);
      const member = nodes[(watcher + attempt) % Math.max(1, nodes.length)];
      if (member === undefined) {
        await sleep(20);
        continue;
      }
      const segment: WatchSegment = { watcher, member: member.id, startRevision: next, coveredTo: next - 1, events: [], end: '' };
      this.segments.push(segment);
      const controller = new AbortController();
      this.controllers.add(controller);
      try {
        const stream = member.watch({ all: true, startRevision: next, signal: controller.signal });
        for await (const response of stream) {
          const now = Date.now();
          for (const event of response.events) {
            if (this.recorded[watcher]! >= WATCHED_EVENTS_MAX) this.overflow = true;
            else segment.events.push(toWatched(event, now));
            this.recorded[watcher]! += 1;
          }
          segment.coveredTo = Math.max(segment.coveredTo, response.revision);
        }
        segment.end = 'cancelled';
      } catch (error) {
        segment.end = codeOf(error);
        const compactRevision = (error as { compactRevision?: unknown }).compactRevision;
        if (segment.end === 'RAFTKV_COMPACTED' && typeof compactRevision === 'number') segment.compactRevision = compactRevision;
        await sleep(20);
      } finally {
        this.controllers.delete(controller);
      }
      next = segment.compactRevision !== undefined ? Math.max(segment.coveredTo + 1, segment.compactRevision) : segment.coveredTo + 1;
    }
  }
}

/** The committed history, replayed from one member's store: every event from its compact revision up to `to`. */
export async function replayTruth(member: RaftKV, to: number, timeoutMs: number): Promise<WatchTruth> {
  const status = await member.status();
  const from = Math.max(1, status.compactRevision);
  const events: WatchedEvent[] = [];
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let covered = from - 1;
  try {
    if (covered < to) {
      for await (const response of member.watch({ all: true, startRevision: from, signal: controller.signal })) {
        for (const event of response.events) events.push(toWatched(event, 0));
        covered = Math.max(covered, response.revision);
        if (covered >= to) break;
      }
    }
  } finally {
    clearTimeout(timer);
  }
  if (covered < to) throw new Error(`the final replay from member ${member.id} reached only revision ${covered} of ${to}`);
  return { member: member.id, from, to: covered, events };
}

/** Delete events of lease keys the watchers received. */
export function leaseDeletes(segments: readonly WatchSegment[]): ObservedDelete[] {
  const deletes: ObservedDelete[] = [];
  for (const segment of segments) {
    for (const event of segment.events) {
      if (event.type === 'delete' && event.key.startsWith(LEASE_PREFIX)) deletes.push({ key: event.key, revision: event.revision, receivedAtMs: event.receivedAtMs });
    }
  }
  return deletes;
}

/** Clients that grant a lease, attach a key, renew a few times, then revoke it or let it expire, reading the key meanwhile. */
export class LeaseClients {
  readonly records: LeaseRecord[] = [];
  readonly errors = new Map<string, number>();
  private stopped = false;
  private readonly loops: Promise<void>[] = [];

  constructor(
    private readonly cluster: Cluster,
    private readonly seed: number,
    readonly count: number,
    private readonly recordsMax = 10_000,
  ) {}

  start(): void {
    for (let client = 0; client < this.count; client++) this.loops.push(this.loop(client));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }

  /**
   * After the clients stopped and the cluster healed: revokes every lease
   * still granted (the lease clients' last ones, the sessions the mutex
   * clients abandoned), so no expiry changes the store while the members'
   * hashes are compared. The revokes are noted for the lease check.
   */
  async revokeRemaining(): Promise<void> {
    const byId = new Map(this.records.map((record) => [record.id, record] as const));
    for (let attempt = 0; attempt < 20; attempt++) {
      const member = this.cluster.leader() ?? this.cluster.nodes()[0];
      try {
        const leases = await (member as RaftKV).leases();
        if (leases.length === 0) return;
        for (const lease of leases) {
          const record = byId.get(lease.id);
          if (record !== undefined) record.revokeInvokedAtMs ??= Date.now();
          await (member as RaftKV).revoke(lease.id).catch((error: unknown) => this.failed(error));
        }
      } catch (error) {
        this.failed(error);
        await sleep(50);
      }
    }
  }

  private failed(error: unknown): void {
    const code = codeOf(error);
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }

  private async loop(client: number): Promise<void> {
    const random = createRandom(this.seed * 4_099 + client * 13 + 5);
    for (let cycle = 0; !this.stopped && this.records.length < this.recordsMax; cycle++) {
      const member = runningMember(this.cluster, random);
      if (member === undefined) {
        await sleep(20);
        continue;
      }
      const grantInvokedAtMs = Date.now();
      let granted: { id: number; ttlSeconds: number };
      try {
        granted = await member.grant(1 + random(2));
      } catch (error) {
        this.failed(error);
        await sleep(20);
        continue;
      }
      const record: LeaseRecord = { client, id: granted.id, ttlSeconds: granted.ttlSeconds, acknowledgedInvokedAtMs: [grantInvokedAtMs], keys: [], gets: [] };
      this.records.push(record);
      await this.cycle(record, `${LEASE_PREFIX}${client}/${cycle}`, random);
    }
  }

  private async get(record: LeaseRecord, key: string, random: RandomSource): Promise<boolean | undefined> {
    const member = runningMember(this.cluster, random);
    if (member === undefined) return undefined;
    const invokedAtMs = Date.now();
    try {
      const present = (await member.get(key)) !== undefined;
      if (record.gets.length < 1_000) record.gets.push({ key, invokedAtMs, completedAtMs: Date.now(), present });
      return present;
    } catch (error) {
      this.failed(error);
      return undefined;
    }
  }

  private async cycle(record: LeaseRecord, key: string, random: RandomSource): Promise<void> {
    const ttlMs = record.ttlSeconds * 1000;
    const entry = { key, putOk: false, putCompletedAtMs: Infinity };
    record.keys.push(entry);
    try {
      await runningMember(this.cluster, random)?.put(key, `${this.seed}.${record.id}`, { lease: record.id });
      entry.putOk = true;
      entry.putCompletedAtMs = Date.now();
    } catch (error) {
      this.failed(error);
    }
    const renewals = random(4);
    for (let renewal = 0; renewal < renewals && !this.stopped; renewal++) {
      await sleep(Math.floor(ttlMs / 4) + random(Math.floor(ttlMs / 8)));
      const member = runningMember(this.cluster, random);
      if (member === undefined) continue;
      const invokedAtMs = Date.now();
      try {
        await member.keepAliveOnce(record.id);
        record.acknowledgedInvokedAtMs.push(invokedAtMs);
      } catch (error) {
        this.failed(error);
      }
      if (random(2) === 0) await this.get(record, key, random);
    }
    if (this.stopped || random(3) === 0) {
      record.revokeInvokedAtMs = Date.now();
      try {
        await runningMember(this.cluster, random)?.revoke(record.id);
      } catch (error) {
        this.failed(error);
      }
      return;
    }
    // Walk away: read the key now and then until it is gone (or for at most three TTLs).
    const giveUpAt = Date.now() + 3 * ttlMs;
    while (!this.stopped && Date.now() < giveUpAt) {
      if ((await this.get(record, key, random)) === false) return;
      await sleep(100 + random(200));
    }
  }
}

/** Clients that take one Mutex, make fenced writes while holding it, release it, and now and then abandon their session. */
export class MutexClients {
  readonly writes: FencedWrite[] = [];
  readonly errors = new Map<string, number>();
  acquisitions = 0;
  private stopped = false;
  private readonly stopController = new AbortController();
  private readonly loops: Promise<void>[] = [];

  constructor(
    private readonly cluster: Cluster,
    private readonly seed: number,
    readonly count: number,
    private readonly writesMax = 20_000,
  ) {}

  start(): void {
    for (let client = 0; client < this.count; client++) this.loops.push(this.loop(client));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopController.abort();
    await Promise.all(this.loops);
  }

  private failed(error: unknown): void {
    const code = codeOf(error);
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }

  private async loop(client: number): Promise<void> {
    const random = createRandom(this.seed * 8_191 + client * 17 + 9);
    while (!this.stopped) {
      const member = runningMember(this.cluster, random);
      if (member === undefined) {
        await sleep(20);
        continue;
      }
      let session: Session;
      try {
        session = await Session.create(member, { ttlSeconds: 1 });
      } catch (error) {
        this.failed(error);
        await sleep(20);
        continue;
      }
      const mutex = new Mutex(session, LOCK_PREFIX);
      // A few acquisitions per session; a lock() that timed out keeps its place in line and tries again.
      for (let round = 0; round < 4 && !this.stopped && !session.isClosed && !member.isStopped; round++) {
        const outcome = await this.hold(client, member, mutex, random);
        if (outcome === 'lost') break;
        await sleep(100 + random(200)); // contention, not load: the key-value clients set the pace
      }
      if (random(4) === 0) {
        session.orphan(); // as a crashed client: the lock passes on when the lease expires
        continue;
      }
      try {
        await session.close();
      } catch (error) {
        // Its member is gone: revoke through another, as a client that reconnects would (else the lock waits for the expiry).
        this.failed(error);
        await runningMember(this.cluster, random)?.revoke(session.lease).catch((error: unknown) => this.failed(error));
      }
    }
  }

  /** One acquisition: lock, a few fenced writes, unlock. 'lost' when the lock passed on while held or the member stopped. */
  private async hold(client: number, member: RaftKV, mutex: Mutex, random: RandomSource): Promise<'released' | 'not acquired' | 'lost'> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 1_500);
    const onStop = (): void => controller.abort();
    this.stopController.signal.addEventListener('abort', onStop, { once: true });
    let grant: LockGrant;
    try {
      grant = await mutex.lock({ signal: controller.signal });
    } catch (error) {
      this.failed(error);
      clearTimeout(timer);
      this.stopController.signal.removeEventListener('abort', onStop);
      return 'not acquired';
    }
    try {
      this.acquisitions += 1;
      const holder = `${grant.key}@${grant.revision}`;
      for (let write = 0; write < 3; write++) {
        await sleep(random(20));
        const response = await member.txn().if(...mutex.fence()).then(op.put(FENCED_KEY, `${holder}#${write}`)).commit();
        if (!response.succeeded) return 'lost'; // the lock passed on (the session expired)
        if (this.writes.length < this.writesMax) this.writes.push({ client, holder, revision: response.revision });
      }
      await mutex.unlock();
      return 'released';
    } catch (error) {
      this.failed(error);
      return 'lost';
    } finally {
      clearTimeout(timer);
      this.stopController.signal.removeEventListener('abort', onStop);
    }
  }
}
