// The replicated node: drives one pure Raft core with a timer, persists each
// Ready as one synced batch, sends, applies committed entries to the state
// machine, and resolves every caller with an outcome. It owns one log
// storage, one state machine and one transport; everything here is
// single-threaded and at most one Ready is in flight at a time, so proposals
// and messages that arrive meanwhile batch into the next one.

import { randomInt } from 'node:crypto';
import { mkdir, open as openFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import createDebug from 'debug';
import {
  assert,
  InvalidArgumentError,
  NodeStoppedError,
  NoLeaderError,
  OutcomeUnknownError,
  ProposalDroppedError,
  RaftKVError,
  RequestTooLargeError,
  TimeoutError,
} from '../raft/errors.ts';
import { createRandom } from '../raft/random.ts';
import type { RandomSource } from '../raft/random.ts';
import { RawNode, decodeConfChange } from '../raft/raw-node.ts';
import { ConfChangeType, EntryType, MessageType, NONE, Role } from '../raft/types.ts';
import type { ConfChange, ConfState, Entry, Message, NodeId, Ready } from '../raft/types.ts';
import type { LogStorage } from '../storage/log/types.ts';
import { decodeProposal, encodeProposal, proposalId } from './codec.ts';
import type { StateMachinePort, TransportPort } from './ports.ts';
import { ProposalTracker, RecentIds } from './proposals.ts';
import { ReadIndexBatcher } from './read-index.ts';

const log = createDebug('raftkv:node');

export interface ReplicatedNodeOptions<Request, Response> {
  readonly id: NodeId;
  readonly log: LogStorage;
  readonly stateMachine: StateMachinePort<Request, Response>;
  readonly transport: TransportPort;
  /** Voters of a brand-new cluster; used only if the log is empty. Omit to join an existing cluster. */
  readonly initialMembers?: readonly NodeId[];
  /** Where incoming snapshots are staged on disk; in memory when omitted. */
  readonly snapshotDirectory?: string;
  readonly tickMs?: number;
  readonly electionTimeoutTicks?: number;
  readonly heartbeatTicks?: number;
  readonly requestTimeoutMs?: number;
  readonly requestBytesMax?: number;
  readonly snapshotEntries?: number;
  readonly snapshotCatchUpEntries?: number;
  readonly proposalsMax?: number;
  readonly readsMax?: number;
  readonly random?: RandomSource;
  /** Called once if the node stops on a fatal error (e.g. a failed fsync). */
  readonly onFatal?: (error: Error) => void;
}

export interface NodeStatus {
  readonly id: NodeId;
  readonly leader: NodeId;
  readonly role: 'follower' | 'pre-candidate' | 'candidate' | 'leader';
  readonly term: number;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly snapshotIndex: number;
  readonly firstLogIndex: number;
  readonly lastLogIndex: number;
  readonly confState: ConfState;
}

const roleNames = ['follower', 'pre-candidate', 'candidate', 'leader'] as const;

interface StagedSnapshot {
  readonly index: number;
  readonly path: string | null;
  readonly chunks: Uint8Array[] | null;
}

function positiveInteger(value: number | undefined, fallback: number, name: string): number {
  const result = value ?? fallback;
  if (!Number.isSafeInteger(result) || result <= 0) {
    throw new InvalidArgumentError(`${name} must be a positive integer, got ${String(value)}`);
  }
  return result;
}

export class ReplicatedNode<Request, Response> {
  readonly id: NodeId;
  private readonly raw: RawNode;
  private readonly logStorage: LogStorage;
  private readonly stateMachine: StateMachinePort<Request, Response>;
  private readonly transport: TransportPort;
  private readonly proposals: ProposalTracker<Response>;
  private readonly confChanges: ProposalTracker<ConfState>;
  private readonly reads: ReadIndexBatcher;
  private readonly tickMs: number;
  private readonly electionTimeoutTicks: number;
  private readonly requestTimeoutMs: number;
  private readonly requestBytesMax: number;
  private readonly snapshotEntries: number;
  private readonly snapshotCatchUpEntries: number;
  private readonly snapshotDirectory: string | undefined;
  private readonly onFatal: ((error: Error) => void) | undefined;
  private readonly staged = new Map<number, StagedSnapshot>();
  private readonly snapshotsSending = new Set<NodeId>();
  private leaderWaiters: { resolve: () => void; deadlineMs: number; reject: (e: Error) => void }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private loopScheduled = false;
  private loopRunning: Promise<void> | null = null;
  private stopped: Error | null = null;
  private leader: NodeId = NONE;
  private role: Role = Role.Follower;
  private appliedIndex: number;
  private snapshotIndex: number;
  private confState: ConfState;
  /** Identifies this incarnation's proposals in the log (a restarted node must not claim old ones). */
  private readonly proposerId = randomInt(1, 2 ** 47);

  private constructor(options: ReplicatedNodeOptions<Request, Response>, raw: RawNode) {
    this.id = options.id;
    this.raw = raw;
    this.logStorage = options.log;
    this.stateMachine = options.stateMachine;
    this.transport = options.transport;
    this.tickMs = positiveInteger(options.tickMs, 100, 'tickMs');
    this.electionTimeoutTicks = positiveInteger(options.electionTimeoutTicks, 10, 'electionTimeoutTicks');
    this.requestTimeoutMs = positiveInteger(options.requestTimeoutMs, 5_000, 'requestTimeoutMs');
    this.requestBytesMax = positiveInteger(options.requestBytesMax, 1.5 * 1024 * 1024, 'requestBytesMax');
    this.snapshotEntries = positiveInteger(options.snapshotEntries, 10_000, 'snapshotEntries');
    this.snapshotCatchUpEntries = positiveInteger(options.snapshotCatchUpEntries, 5_000, 'snapshotCatchUpEntries');
    this.proposals = new ProposalTracker(positiveInteger(options.proposalsMax, 100_000, 'proposalsMax'));
    this.confChanges = new ProposalTracker(16);
    this.reads = new ReadIndexBatcher(options.id, positiveInteger(options.readsMax, 100_000, 'readsMax'));
    this.snapshotDirectory = options.snapshotDirectory;
    this.onFatal = options.onFatal;
    const status = raw.status();
    this.appliedIndex = status.applied;
    this.snapshotIndex = options.log.snapshot().index;
    this.confState = options.log.initialState().confState;
  }

  /** Opens the node: bootstraps a new member if asked, restarts from storage otherwise. */
  static async start<Request, Response>(
    options: ReplicatedNodeOptions<Request, Response>,
  ): Promise<ReplicatedNode<Request, Response>> {
    if (!Number.isSafeInteger(options.id) || options.id <= 0) {
      throw new InvalidArgumentError(`node id must be a positive integer, got ${String(options.id)}`);
    }
    if (options.log.isEmpty() && options.initialMembers !== undefined) {
      const voters = [...new Set(options.initialMembers)];
      if (voters.length === 0 || !voters.includes(options.id)) {
        throw new InvalidArgumentError('initialMembers must be non-empty and include the node itself');
      }
      await options.log.bootstrap({ voters, learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false });
    }
    const raw = new RawNode(
      {
        id: options.id,
        random: options.random ?? createRandom(randomInt(0, 2 ** 32)),
        electionTimeoutTicks: options.electionTimeoutTicks ?? 10,
        heartbeatTicks: options.heartbeatTicks ?? 1,
        preVote: true,
        checkQuorum: true,
      },
      options.log,
    );
    if (options.snapshotDirectory !== undefined) {
      await mkdir(options.snapshotDirectory, { recursive: true });
      // Staged snapshots serve only the message they came with: any left by a crash are garbage.
      for (const name of await readdir(options.snapshotDirectory)) {
        if (name.startsWith('incoming-') && name.endsWith('.snap')) await rm(join(options.snapshotDirectory, name), { force: true });
      }
    }
    const node = new ReplicatedNode(options, raw);
    await options.transport.start({
      onMessage: (message) => node.receive(message),
      onSnapshot: (message, chunks) => node.receiveSnapshot(message, chunks),
    });
    node.timer = setInterval(() => node.tick(), node.tickMs);
    node.scheduleLoop();
    return node;
  }

  // ---- Public operations ----

  /** Proposes a state-machine request; resolves with its response once applied here. */
  propose(request: Request): Promise<Response> {
    if (this.stopped !== null) return Promise.reject(this.stopped);
    const deadlineMs = Date.now() + this.requestTimeoutMs;
    // Most proposals find a leader known: no await, so a put costs no extra promise and microtask turn.
    return this.leader !== NONE ? this.proposeNow(request, deadlineMs) : this.proposeOnceLed(request, deadlineMs);
  }

  private async proposeOnceLed(request: Request, deadlineMs: number): Promise<Response> {
    await this.waitForLeader(deadlineMs);
    // The node may have closed while this waited: shutdown failed every caller registered then and stopped the
    // tick that expires them, so one registered now would wait forever.
    this.ensureRunning();
    return this.proposeNow(request, deadlineMs);
  }

  /** Registers and proposes; never throws (a failure rejects the returned promise). */
  private proposeNow(request: Request, deadlineMs: number): Promise<Response> {
    let registered: { sequence: number; promise: Promise<Response> };
    try {
      registered = this.proposals.register(deadlineMs);
    } catch (error) {
      return Promise.reject(error as Error); // too many in flight
    }
    const { sequence, promise } = registered;
    let data: Uint8Array;
    try {
      data = encodeProposal({ node: this.proposerId, sequence, request });
    } catch (error) {
      this.proposals.reject(sequence, error as Error);
      return promise;
    }
    if (data.length > this.requestBytesMax) {
      this.proposals.reject(sequence, new RequestTooLargeError(`request is ${data.length} bytes, the limit is ${this.requestBytesMax}`));
      return promise;
    }
    const result = this.raw.propose(data);
    if (!result.ok) this.proposals.reject(sequence, result.error);
    else this.scheduleLoop();
    return promise;
  }

  /** Resolves once a linearizable read may be served from the local state machine. */
  async readBarrier(): Promise<void> {
    this.ensureRunning();
    const deadlineMs = Date.now() + this.requestTimeoutMs;
    await this.waitForLeader(deadlineMs);
    this.ensureRunning(); // closed meanwhile: see propose()
    const wait = this.reads.wait(deadlineMs);
    this.scheduleLoop();
    return wait;
  }

  /** Proposes a membership change; resolves with the new configuration once applied here. */
  async changeMembership(change: ConfChange): Promise<ConfState> {
    this.ensureRunning();
    const deadlineMs = Date.now() + this.requestTimeoutMs;
    await this.waitForLeader(deadlineMs);
    this.ensureRunning(); // closed meanwhile: see propose()
    const { sequence, promise } = this.confChanges.register(deadlineMs);
    // The tick may expire it while this waits below, before the caller listens: not an unhandled rejection.
    promise.catch(() => undefined);
    const context = encodeProposal({ node: this.proposerId, sequence, request: change.context });
    for (;;) {
      const result = this.raw.proposeConfChange({ ...change, context });
      if (result.ok) {
        this.scheduleLoop();
        break;
      }
      // The previous change (or the automatic leave of a joint one) is committed but not yet
      // marked applied in the core: it will be within a loop turn or two, so wait rather than fail.
      const pending = result.error instanceof ProposalDroppedError && result.error.reason === 'pending-conf-change';
      if (!pending || Date.now() + this.tickMs >= deadlineMs || this.stopped !== null) {
        this.confChanges.reject(sequence, result.error);
        break;
      }
      await new Promise<void>((resolve) => setTimeout(resolve, Math.min(this.tickMs, 10)));
    }
    return promise;
  }

  async transferLeadership(to: NodeId): Promise<void> {
    this.ensureRunning();
    const deadlineMs = Date.now() + this.requestTimeoutMs;
    this.raw.transferLeadership(to);
    this.scheduleLoop();
    while (this.leader !== to) {
      if (Date.now() > deadlineMs) throw new TimeoutError(`leadership did not move to ${to} in time`);
      this.ensureRunning();
      await new Promise((resolve) => setTimeout(resolve, this.tickMs));
    }
  }

  /** Resolves once some node is known as leader (or rejects with NoLeaderError at the deadline). */
  waitForLeader(deadlineMs = Date.now() + this.requestTimeoutMs): Promise<void> {
    if (this.stopped !== null) return Promise.reject(this.stopped);
    if (this.leader !== NONE) return Promise.resolve();
    return new Promise((resolve, reject) => this.leaderWaiters.push({ resolve, reject, deadlineMs }));
  }

  status(): NodeStatus {
    const status = this.raw.status();
    return {
      id: this.id,
      leader: status.leader,
      role: roleNames[status.role],
      term: status.term,
      commitIndex: status.commit,
      appliedIndex: this.appliedIndex,
      snapshotIndex: this.snapshotIndex,
      firstLogIndex: this.logStorage.firstIndex(),
      lastLogIndex: status.lastIndex,
      confState: this.confState,
    };
  }

  get isLeader(): boolean {
    return this.role === Role.Leader;
  }

  /** The Raft term this member is in. */
  get term(): number {
    return this.raw.term;
  }

  get isStopped(): boolean {
    return this.stopped !== null;
  }

  /** Stops ticking and serving; waits for the Ready in flight; closes storage and transport. */
  async close(): Promise<void> {
    if (this.stopped === null) this.stopped = new NodeStoppedError('the node is closed');
    await this.shutdown();
  }

  // ---- The loop ----

  private receive(message: Message): void {
    if (this.stopped !== null) return;
    const fresh = message.type === MessageType.Prop ? this.withoutSeenProposals(message) : message;
    if (fresh === null) return;
    this.raw.step(fresh);
    this.scheduleLoop();
  }

  /** Proposal ids (proposer:sequence) this node has received in forwarded proposals: the latest 65,536. */
  private readonly seenProposals = new RecentIds(65_536);

  /**
   * A forwarded proposal whose frame the network duplicated would be
   * appended, and applied, twice (a put through a follower then gets two
   * revisions, and a write between them is undone). Raft itself does not
   * deduplicate proposals, so the node drops entries it has seen already.
   */
  private withoutSeenProposals(message: Message): Message | null {
    const entries = message.entries.filter((entry) => {
      if (entry.type !== EntryType.Normal || entry.data.length === 0) return true;
      let id: { node: number; sequence: number };
      try {
        id = proposalId(entry.data);
      } catch {
        log('node %d: dropped a forwarded proposal that does not decode, from %d', this.id, message.from);
        return false;
      }
      return this.seenProposals.add(id.node, id.sequence);
    });
    if (entries.length === message.entries.length) return message;
    log('node %d: dropped %d duplicated proposals from %d', this.id, message.entries.length - entries.length, message.from);
    return entries.length === 0 ? null : { ...message, entries };
  }

  private tick(): void {
    if (this.stopped !== null) return;
    this.raw.tick();
    const now = Date.now();
    this.proposals.expire(now);
    this.confChanges.expire(now);
    this.reads.expire(now, 2 * this.electionTimeoutTicks * this.tickMs);
    this.expireLeaderWaiters(now);
    this.scheduleLoop();
  }

  private scheduleLoop(): void {
    if (this.loopScheduled || this.stopped !== null) return;
    this.loopScheduled = true;
    setImmediate(() => {
      this.loopScheduled = false;
      if (this.stopped !== null) return;
      if (this.loopRunning !== null) {
        // A Ready is being persisted: what may leave before persisting goes now, not after that write
        // (a forwarded proposal, the leader's appends of new entries, the commit index to followers),
        // and what committed meanwhile and is already durable here is applied now.
        this.send(this.raw.takeMessagesBeforePersist());
        this.applyWhilePersisting();
        return;
      }
      this.loopRunning = this.runLoop().finally(() => {
        this.loopRunning = null;
      });
    });
  }

  private async runLoop(): Promise<void> {
    try {
      for (;;) {
        this.startReadRound();
        if (this.stopped !== null || !this.raw.hasReady()) break;
        const ready = this.raw.ready();
        await this.handleReady(ready);
        if (this.stopped !== null) break;
        // Everything handed to the apply queue counts as applied at advance(): a membership change
        // among it must be applied first (etcd #12133), and the queue stays bounded. Entries taken
        // while this drains count too, so the flag is cleared before and read again after.
        while (this.stopped === null && (this.drainBeforeAdvance || this.applyQueue.length > this.applyQueueEntriesMax)) {
          this.drainBeforeAdvance = false;
          await this.drainApply();
        }
        if (this.stopped !== null) break;
        this.raw.advance();
      }
    } catch (error) {
      this.fail(error instanceof Error ? error : new Error(String(error)));
    }
  }

  // ---- Applying, pipelined behind the ready loop ----
  //
  // Committed entries are queued and applied in order while the loop goes on
  // persisting and sending the next Ready (as etcd's apply loop does). The
  // loop waits for the queue to drain before it installs a snapshot, after
  // handing over a membership change (the core must see it applied before it
  // may campaign, etcd #12133), and when the queue is over its bound.

  private applyQueue: Entry[] = [];
  private applyWorker: Promise<void> | null = null;
  private readonly applyQueueEntriesMax = 16_384;

  private enqueueApply(entries: readonly Entry[]): void {
    for (const entry of entries) this.applyQueue.push(entry);
    this.applyWorker ??= this.runApply().finally(() => {
      this.applyWorker = null;
    });
  }

  private async runApply(): Promise<void> {
    try {
      while (this.applyQueue.length > 0 && this.stopped === null) {
        const entries = this.applyQueue;
        this.applyQueue = [];
        await this.apply(entries);
        this.reads.release(this.appliedIndex);
        this.maybeSnapshot();
      }
    } catch (error) {
      this.fail(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /** Set when entries queued for this Ready (its own, or taken while its write was in flight) hold a membership change. */
  private drainBeforeAdvance = false;

  /**
   * While a Ready's write is in flight: applies what committed since and is
   * already durable in the local log, and confirms read states, rather than
   * leaving them for the next Ready (behind that write's fsync).
   */
  private applyWhilePersisting(): void {
    const committed = this.raw.takeCommittedEntries();
    if (committed.length > 0) {
      this.enqueueApply(committed);
      if (committed.some((entry) => entry.type === EntryType.ConfChange)) this.drainBeforeAdvance = true;
    }
    const states = this.raw.takeReadStates();
    for (const state of states) this.reads.confirm(state.context, state.index);
    if (states.length > 0) this.reads.release(this.appliedIndex);
  }

  private async drainApply(): Promise<void> {
    while (this.applyWorker !== null) await this.applyWorker;
  }

  private startReadRound(): void {
    const context = this.reads.takeRound(Date.now());
    if (context === undefined) return;
    const result = this.raw.readIndex(context);
    if (!result.ok) this.reads.failRound(context, result.error);
  }

  private async handleReady(ready: Ready): Promise<void> {
    if (ready.softState !== null) this.updateSoftState(ready.softState.leader, ready.softState.role);
    this.send(ready.messagesBeforePersist);
    // The snapshot's data is durable in the state machine before the log records the snapshot:
    // after a crash in between, the store is merely ahead and skips what it already holds.
    if (ready.snapshot !== null) {
      await this.drainApply();
      await this.settleSnapshot();
      await this.installSnapshot(ready.snapshot.index, ready.snapshot.confState);
    }
    // Committed entries already in the local durable log are applied while this Ready's write is in
    // flight (as etcd does): a commit then waits for no fsync of later entries. The rest (a follower's
    // entries committed in the message that brought them) wait for the write, so the store never
    // holds what the local log might not.
    const committed = ready.committedEntries;
    let early = 0;
    if (committed.length > 0 && ready.snapshot === null) {
      const durable = Math.min(this.logStorage.lastIndex(), ready.entries.length > 0 ? ready.entries[0]!.index - 1 : Number.POSITIVE_INFINITY);
      while (early < committed.length && committed[early]!.index <= durable) early += 1;
      if (early > 0) this.enqueueApply(early === committed.length ? committed : committed.slice(0, early));
    }
    if (ready.snapshot !== null || ready.entries.length > 0 || ready.hardState !== null) {
      await this.logStorage.save({
        snapshot: ready.snapshot,
        entries: ready.entries,
        hardState: ready.hardState,
        sync: ready.mustSync,
      });
    }
    this.send(ready.messages);
    for (const state of ready.readStates) this.reads.confirm(state.context, state.index);
    if (committed.length > 0) {
      if (early < committed.length) this.enqueueApply(early === 0 ? committed : committed.slice(early));
      if (committed.some((entry) => entry.type === EntryType.ConfChange)) this.drainBeforeAdvance = true;
    }
    this.reads.release(this.appliedIndex);
  }

  private updateSoftState(leader: NodeId, role: Role): void {
    const leaderChanged = leader !== this.leader;
    this.leader = leader;
    this.role = role;
    if (!leaderChanged) return;
    log('node %d: leader is now %d (role %s)', this.id, leader, roleNames[role]);
    this.reads.retryInFlight();
    if (leader !== NONE) {
      const waiters = this.leaderWaiters;
      this.leaderWaiters = [];
      for (const waiter of waiters) waiter.resolve();
    }
  }

  private expireLeaderWaiters(nowMs: number): void {
    if (this.leaderWaiters.length === 0) return;
    this.leaderWaiters = this.leaderWaiters.filter((waiter) => {
      if (waiter.deadlineMs > nowMs) return true;
      waiter.reject(new NoLeaderError('no leader was elected before the request deadline'));
      return false;
    });
  }

  private send(messages: readonly Message[]): void {
    if (messages.length === 0) return;
    let plain: Message[] | null = null;
    for (const message of messages) {
      if (message.type === MessageType.Snap) this.sendSnapshot(message);
      else (plain ??= []).push(message);
    }
    if (plain !== null) this.transport.send(plain);
  }

  private sendSnapshot(message: Message): void {
    const to = message.to;
    if (this.snapshotsSending.has(to)) return; // one at a time per follower; the core asks again
    this.snapshotsSending.add(to);
    log('node %d: sending snapshot %d to %d', this.id, message.snapshot?.index ?? 0, to);
    this.transport
      .sendSnapshot(message, this.stateMachine.snapshot())
      .then(
        () => {
          if (!this.isStopped) this.raw.reportSnapshot(to, true);
        },
        (error: unknown) => {
          log('node %d: snapshot to %d failed: %O', this.id, to, error);
          if (!this.isStopped) this.raw.reportSnapshot(to, false);
        },
      )
      .finally(() => {
        this.snapshotsSending.delete(to);
        this.scheduleLoop();
      });
  }

  /** Stages a received snapshot's data, then hands its message to the core. */
  private async receiveSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    if (this.stopped !== null || message.snapshot === null) return;
    const index = message.snapshot.index;
    if (this.staged.has(index)) {
      // Another copy of a snapshot already staged (the same index holds the same state): keep the first.
      for await (const _chunk of chunks) {
        // drained, so the sender's stream completes
      }
      this.receive(message);
      return;
    }
    await this.dropStaged();
    if (this.snapshotDirectory !== undefined) {
      // A name of its own per reception: a second copy of the same snapshot must not touch the file being installed.
      const path = join(this.snapshotDirectory, `incoming-${index}-${++this.stagedSerial}.snap`);
      await writeFramed(path, chunks);
      this.staged.set(index, { index, path, chunks: null });
    } else {
      const collected: Uint8Array[] = [];
      for await (const chunk of chunks) collected.push(chunk);
      this.staged.set(index, { index, path: null, chunks: collected });
    }
    this.receive(message);
  }

  private stagedSerial = 0;

  /**
   * Drops staged snapshots before a newer one is staged, except the one the
   * core has accepted and not yet had installed: its Ready may be waiting
   * behind the apply queue, and installing it needs its data (long-run seed
   * 908). So at most two are staged: that one and the newest.
   */
  private async dropStaged(): Promise<void> {
    const pending = this.raw.pendingSnapshotIndex();
    // Out of the map before anything is awaited, so an install starting meanwhile cannot pick a file being removed.
    const dropped = [...this.staged.values()].filter((staged) => staged.index !== pending);
    for (const staged of dropped) this.staged.delete(staged.index);
    for (const staged of dropped) if (staged.path !== null) await rm(staged.path, { force: true });
  }

  private async installSnapshot(index: number, confState: ConfState): Promise<void> {
    const staged = this.staged.get(index);
    assert(staged !== undefined, `the core installs snapshot ${index} but no data was received for it`);
    this.staged.delete(index);
    const source: AsyncIterable<Uint8Array> =
      staged.path !== null ? readFramed(staged.path) : iterate(staged.chunks ?? []);
    await this.stateMachine.restore(source);
    if (staged.path !== null) await rm(staged.path, { force: true });
    for (const other of [...this.staged.keys()]) if (other <= index) this.staged.delete(other);
    this.confState = confState;
    this.snapshotIndex = index;
    this.appliedIndex = Math.max(index, this.appliedIndex);
    log('node %d: installed snapshot %d', this.id, index);
  }

  private async apply(entries: readonly Entry[]): Promise<void> {
    const items: { index: number; request: Request | undefined }[] = [];
    const owners: number[] = [];
    for (const entry of entries) {
      if (entry.type === EntryType.Normal && entry.data.length > 0) {
        const proposal = decodeProposal<Request>(entry.data);
        items.push({ index: entry.index, request: proposal.request });
        owners.push(proposal.node === this.proposerId ? proposal.sequence : 0);
      } else {
        items.push({ index: entry.index, request: undefined });
        owners.push(0);
      }
    }
    const responses = await this.stateMachine.applyBatch(items);
    assert(responses.length === items.length, 'the state machine answered a different number of entries');
    for (const entry of entries) if (entry.type === EntryType.ConfChange) this.applyConfChange(entry);
    for (let position = 0; position < owners.length; position++) {
      const owner = owners[position] as number;
      if (owner === 0) continue;
      const response = responses[position];
      if (response === undefined) {
        // Applied before this node received it (inside a snapshot): committed, but its answer is gone.
        this.proposals.reject(owner, new OutcomeUnknownError('the write was applied through a snapshot; its response is unknown'));
      } else {
        this.proposals.resolve(owner, response);
      }
    }
    this.appliedIndex = (entries[entries.length - 1] as Entry).index;
  }

  private applyConfChange(entry: Entry): void {
    const change = decodeConfChange(entry.data);
    let owner = 0;
    let address: unknown;
    if (change.context.length > 0) {
      const proposal = decodeProposal<unknown>(change.context);
      if (proposal.node === this.proposerId) owner = proposal.sequence;
      address = proposal.request instanceof Uint8Array ? new TextDecoder().decode(proposal.request) : proposal.request;
    }
    let confState: ConfState;
    try {
      confState = this.raw.applyConfChange(change);
    } catch (error) {
      if (!(error instanceof RaftKVError)) throw error;
      if (owner > 0) this.confChanges.reject(owner, error);
      return;
    }
    this.confState = confState;
    for (const single of change.changes) {
      if (single.nodeId === this.id) continue;
      if (single.type === ConfChangeType.RemoveNode) {
        this.transport.removePeer(single.nodeId);
      } else if (typeof address === 'string' && address.length > 0) {
        this.transport.addPeer(single.nodeId, address);
      }
    }
    if (owner > 0) this.confChanges.resolve(owner, confState);
  }

  /** The snapshot being taken, if any (at most one at a time). */
  private snapshotting: Promise<void> | null = null;

  /**
   * Starts a snapshot at the applied index once enough entries were applied
   * since the last. It runs beside the apply loop, not in it: syncing the
   * store takes as long as the writes since the last sync (20-60 ms at
   * 10,000 puts/s), and applies that waited for it stalled every answer of
   * this member once a second.
   */
  private maybeSnapshot(): void {
    if (this.snapshotting !== null || this.appliedIndex - this.snapshotIndex < this.snapshotEntries) return;
    const index = this.appliedIndex;
    let term: number;
    try {
      term = this.logStorage.term(index);
    } catch {
      return; // not in stable storage yet; try after the next Ready
    }
    const confState = this.confState;
    this.snapshotting = this.takeSnapshot(index, term, confState)
      .catch((error: unknown) => this.fail(error instanceof Error ? error : new Error(String(error))))
      .finally(() => {
        this.snapshotting = null;
      });
  }

  private async takeSnapshot(index: number, term: number, confState: ConfState): Promise<void> {
    // Every apply through `index` has finished: the flush makes them durable before the log records the snapshot.
    await this.stateMachine.flush();
    if (this.stopped !== null || index <= this.snapshotIndex) return; // closed, or a received snapshot was installed meanwhile
    await this.logStorage.createSnapshot({ index, term, confState });
    this.snapshotIndex = index;
    const compactIndex = index - this.snapshotCatchUpEntries;
    if (compactIndex >= this.logStorage.firstIndex()) await this.logStorage.compact(compactIndex);
    log('node %d: snapshot at %d, log compacted through %d', this.id, index, compactIndex);
  }

  /** Waits for the snapshot being taken, if any. */
  private async settleSnapshot(): Promise<void> {
    while (this.snapshotting !== null) await this.snapshotting;
  }

  // ---- Stopping ----

  private ensureRunning(): void {
    if (this.stopped !== null) throw this.stopped;
  }

  /** A fatal error (e.g. a failed fsync): stop at once, never retry. */
  private fail(error: Error): void {
    if (this.stopped !== null) return;
    log('node %d: fatal: %O', this.id, error);
    this.stopped = new NodeStoppedError(`node ${this.id} stopped: ${error.message}`, { cause: error });
    this.onFatal?.(error);
    void this.shutdown();
  }

  private async shutdown(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    const error = this.stopped ?? new NodeStoppedError('the node is closed');
    this.proposals.rejectAll(() => error);
    this.confChanges.rejectAll(() => error);
    this.reads.rejectAll(() => error);
    for (const waiter of this.leaderWaiters) waiter.reject(error);
    this.leaderWaiters = [];
    if (this.loopRunning !== null) await this.loopRunning.catch(() => undefined);
    await this.drainApply();
    await this.settleSnapshot();
    await this.closeOnce();
  }

  private closing: Promise<void> | null = null;

  private closeOnce(): Promise<void> {
    this.closing ??= (async () => {
      await this.transport.close();
      await this.stateMachine.close();
      await this.logStorage.close();
      for (const staged of this.staged.values()) if (staged.path !== null) await rm(staged.path, { force: true });
    })();
    return this.closing;
  }
}

async function* iterate(chunks: readonly Uint8Array[]): AsyncIterable<Uint8Array> {
  for (const chunk of chunks) yield chunk;
}

/** Stages snapshot chunks in a file, each behind its 4-byte length, and syncs it. */
async function writeFramed(path: string, chunks: AsyncIterable<Uint8Array>): Promise<void> {
  const handle = await openFile(path, 'w');
  try {
    const header = new Uint8Array(4);
    for await (const chunk of chunks) {
      new DataView(header.buffer).setUint32(0, chunk.length);
      await handle.write(header);
      await handle.write(chunk);
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function* readFramed(path: string): AsyncGenerator<Uint8Array> {
  const handle = await openFile(path, 'r');
  try {
    const header = new Uint8Array(4);
    for (;;) {
      const { bytesRead } = await handle.read(header, 0, 4);
      if (bytesRead === 0) return;
      assert(bytesRead === 4, 'a staged snapshot file is truncated');
      const length = new DataView(header.buffer).getUint32(0);
      const chunk = new Uint8Array(length);
      const read = await handle.read(chunk, 0, length);
      assert(read.bytesRead === length, 'a staged snapshot file is truncated');
      yield chunk;
    }
  } finally {
    await handle.close();
  }
}
