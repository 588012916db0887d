// The deterministic simulator: whole Raft clusters in one thread over a
// faulty in-memory network (drops, duplicates, reordering, delays,
// partitions) with nodes that crash and restart from only what they
// persisted through Ready. Clients propose unique values, request ReadIndex
// reads (served from the state machine and checked against the writes
// acknowledged before they began) and leadership transfers; hosts snapshot
// and compact their logs; an operator changes the membership (adds learners
// under fresh ids, promotes, demotes, removes voters, replaces several voters
// at once through joint configurations). After every step the invariants of
// Raft are checked; one seed is one exact run, so any failure replays with
// its seed.
//
// Removed members: ids are never reused. A node that is no longer a member
// keeps running (it may still be asked for votes by nodes that have not
// applied its removal) until every voter of the latest configuration has
// durably recorded a commit index at or past the change that removed it;
// then it is stopped for good, as an operator would shut the process down.

import { allMembers, isJoint } from '../../src/raft/confchange.ts';
import { decodeConfChange, RawNode } from '../../src/raft/raw-node.ts';
import type { RaftConfig } from '../../src/raft/raw-node.ts';
import { createRandom } from '../../src/raft/random.ts';
import type { RandomSource } from '../../src/raft/random.ts';
import { ConfChangeTransition, ConfChangeType, EntryType, MessageType, Role } from '../../src/raft/types.ts';
import type { ConfChange, ConfChangeSingle, ConfState, Entry, Message, NodeId, Ready } from '../../src/raft/types.ts';
import { MemoryLogStorage } from '../../src/storage/log/memory.ts';

export interface SimulationOptions {
  readonly seed: number;
  readonly nodes: number;
  readonly steps: number;
  /** Probabilities per delivered message. */
  readonly dropRate?: number;
  readonly duplicateRate?: number;
  /** Keep every trace line (for replay) instead of the last 60. */
  readonly trace?: boolean;
  /** Steps of the final fault-free period in which the cluster must make progress. */
  readonly quietSteps?: number;
  /** Drive random membership changes. Default true. */
  readonly membership?: boolean;
  /** Fresh ids the operator may add over the run. Default 6. */
  readonly joinersMax?: number;
  readonly raft?: Partial<RaftConfig>;
}

export class InvariantViolation extends Error {}

interface SimNode {
  readonly id: NodeId;
  node: RawNode;
  storage: MemoryLogStorage;
  alive: boolean;
  /** Stopped for good after its removal from the configuration. */
  removed: boolean;
  /** Applied normal entries' values, by index (the state machine). */
  applied: Map<number, string>;
  appliedIndex: number;
  /** Index of the latest value applied (what a read returns); 0 before any. */
  lastValueIndex: number;
  lastCommit: number;
  confState: ConfState;
  /** Snapshot data this host can send: the state machine at that index. */
  snapshots: Map<number, Map<number, string>>;
  /** Snapshot data received and waiting for the core to install. */
  staged: Map<number, Map<number, string>>;
  pendingReads: Map<string, PendingRead>;
  /** A Ready whose write has started but is not yet durable. */
  inFlight: Ready | null;
}

interface PendingRead {
  /** The highest index some node had applied (so acknowledged) when the read began. */
  readonly appliedAnywhere: number;
  /** Index of the latest value some node had applied when the read began. */
  readonly latestWriteIndex: number;
  /** From the read state; -1 until it arrives. */
  readIndex: number;
}

interface InFlight {
  readonly message: Message;
  readonly snapshotData: Map<number, string> | null;
  deliverAt: number;
}

const text = new TextDecoder();
const encoder = new TextEncoder();

function entryKey(entry: Entry): string {
  if (entry.type === EntryType.ConfChange) return `${entry.type}:${Buffer.from(entry.data).toString('hex')}`;
  return `${entry.type}:${entry.data.length === 0 ? '' : text.decode(entry.data)}`;
}

function describeConf(conf: ConfState): string {
  let out = `voters {${conf.voters.join(',')}}`;
  if (conf.votersOutgoing.length > 0) out += ` & {${conf.votersOutgoing.join(',')}}${conf.autoLeave ? ' auto-leave' : ' explicit-leave'}`;
  if (conf.learners.length > 0) out += ` learners {${conf.learners.join(',')}}`;
  if (conf.learnersNext.length > 0) out += ` learnersNext {${conf.learnersNext.join(',')}}`;
  return out;
}

function describeChange(change: ConfChange): string {
  if (change.changes.length === 0) return 'leave joint';
  const names = ['add-voter', 'remove', 'add-learner'];
  const transition = ['auto', 'joint-implicit', 'joint-explicit'][change.transition]!;
  return `${change.changes.map((c) => `${names[c.type]} ${c.nodeId}`).join(', ')} (${transition})`;
}

function isMember(conf: ConfState, id: NodeId): boolean {
  return conf.voters.includes(id) || conf.votersOutgoing.includes(id) || conf.learners.includes(id) || conf.learnersNext.includes(id);
}

export class Simulation {
  readonly random: RandomSource;
  readonly nodes = new Map<NodeId, SimNode>();
  private inflight: InFlight[] = [];
  private partition: Set<NodeId> | null = null;
  private quiet = false;
  private step = 0;
  private valueCounter = 0;
  private readCounter = 0;
  private readonly traceLines: string[] = [];
  /** Invariant state. */
  private readonly leaderOfTerm = new Map<number, NodeId>();
  private readonly entryAt = new Map<string, string>(); // `${index}/${term}` → entry key
  private readonly committed = new Map<number, { term: number; key: string }>();
  private committedMax = 0;
  private readonly proposedValues = new Set<string>();
  private readonly dropRate: number;
  private readonly duplicateRate: number;
  /** Membership: the configuration after the highest-index change applied anywhere. */
  private latestConf: { index: number; conf: ConfState };
  /** Ids no longer members, with the index of the change that removed them (not yet stopped). */
  private readonly leftAt = new Map<NodeId, number>();
  /** Fresh ids named in a proposed change; their process starts when the first message is sent to them. */
  private readonly announced = new Set<NodeId>();
  private nextId: number;
  private readonly idsMax: number;
  private readonly membership: boolean;
  readonly stats = {
    messages: 0,
    dropped: 0,
    crashes: 0,
    snapshotsSent: 0,
    reads: 0,
    transfers: 0,
    leaders: 0,
    applied: 0,
    confChangesProposed: 0,
    confChangesApplied: 0,
    joined: 0,
    stopped: 0,
  };

  constructor(private readonly options: SimulationOptions) {
    this.random = createRandom(options.seed);
    const choose = createRandom(options.seed * 31 + 7);
    this.flowControl = { messageBytesMax: [1, 16, 64, 1024][choose(4)]!, inflightMessagesMax: [1, 2, 8, 256][choose(4)]! };
    // Per seed: stormy runs (a fault every ~60 steps) and calmer ones where longer stable
    // periods let membership changes, transfers and reads interleave with commits.
    this.faultsPerThousandSteps = [16, 16, 8, 4][choose(4)]!;
    this.dropRate = options.dropRate ?? 0.05;
    this.duplicateRate = options.duplicateRate ?? 0.02;
    this.membership = options.membership ?? true;
    this.nextId = options.nodes + 1;
    this.idsMax = options.nodes + (options.joinersMax ?? 6);
    const ids = Array.from({ length: options.nodes }, (_, i) => i + 1);
    const conf: ConfState = { voters: ids, learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
    this.latestConf = { index: 1, conf };
    for (const id of ids) {
      const storage = new MemoryLogStorage();
      storage.saveSync({ snapshot: { index: 1, term: 1, confState: conf }, entries: [], hardState: { term: 1, vote: 0, commit: 1 }, sync: true });
      this.nodes.set(id, this.makeSimNode(id, storage, 1, conf));
    }
  }

  private makeSimNode(id: NodeId, storage: MemoryLogStorage, snapshotIndex: number, conf: ConfState): SimNode {
    return {
      id,
      storage,
      node: this.makeRawNode(id, storage),
      alive: true,
      removed: false,
      applied: new Map(),
      appliedIndex: snapshotIndex,
      lastValueIndex: 0,
      lastCommit: snapshotIndex,
      confState: conf,
      snapshots: new Map([[snapshotIndex, new Map()]]),
      staged: new Map(),
      pendingReads: new Map(),
      inFlight: null,
    };
  }

  /** A new member's process: an empty log and no configuration; it learns both from the leader. */
  private startJoiner(id: NodeId): SimNode {
    const simNode = this.makeSimNode(id, new MemoryLogStorage(), 0, { voters: [], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false });
    simNode.lastCommit = 0;
    this.nodes.set(id, simNode);
    this.announced.delete(id);
    this.stats.joined += 1;
    this.trace(`node ${id} STARTS (joining with an empty log)`);
    return simNode;
  }

  private makeRawNode(id: NodeId, storage: MemoryLogStorage): RawNode {
    return new RawNode(
      {
        id,
        random: createRandom(this.random(2 ** 31)),
        electionTimeoutTicks: 10,
        heartbeatTicks: 1,
        inflightMessagesMax: this.flowControl.inflightMessagesMax,
        messageBytesMax: this.flowControl.messageBytesMax,
        ...this.options.raft,
      },
      storage,
    );
  }

  /** Per seed: from one entry per message and one message in flight up to roomy windows. */
  private readonly flowControl: { readonly messageBytesMax: number; readonly inflightMessagesMax: number };
  private readonly faultsPerThousandSteps: number;

  trace(line: string): void {
    this.traceLines.push(`[${this.step}] ${line}`);
    if (!this.options.trace && this.traceLines.length > 60) this.traceLines.shift();
  }

  get traceText(): string {
    return this.traceLines.join('\n');
  }

  private fail(message: string): never {
    throw new InvariantViolation(message);
  }

  // ---- The run ----

  run(): void {
    const faultSteps = this.options.steps;
    for (this.step = 0; this.step < faultSteps; this.step++) {
      this.randomAction(true);
    }
    this.quietPeriod();
  }

  /**
   * One step: maybe a client action, rarely a fault, maybe a tick, then some
   * network and host progress (random deliveries and Ready handling).
   */
  private randomAction(faults: boolean): void {
    const client = this.random(100);
    if (client < 25) this.propose(this.randomLiveNode());
    else if (client < 33) this.requestRead(this.randomLiveNode());
    else if (client < 38) this.maybeSnapshot(this.randomLiveNode());
    else if (client < 39) this.transfer();
    else if (client < 44 && this.membership) this.changeMembership();
    if (faults) {
      const fault = (this.random(1000) * 16) / this.faultsPerThousandSteps;
      if (fault < 6) this.crashOrRestart();
      else if (fault < 12) this.changePartition();
      else if (fault < 16) this.crashLeader();
    }
    if (this.random(100) < 30) this.tickOne(this.randomLiveNode());
    this.deliverSome();
    this.processReady(this.randomLiveNode());
    if (this.random(2) === 0) this.processReady(this.randomLiveNode());
    if (this.leftAt.size > 0) this.stopRemovedMembers();
  }

  /** No faults: heal, restart everyone, then a new value must commit everywhere. */
  private quietPeriod(): void {
    this.partition = null;
    this.trace('quiet period: heal and restart all');
    for (const simNode of this.nodes.values()) if (!simNode.alive && !simNode.removed) this.restart(simNode);
    this.quiet = true;
    const quietSteps = this.options.quietSteps ?? 2_000;
    const values: string[] = [];
    for (let i = 0; i < quietSteps; i++, this.step++) {
      for (const simNode of this.nodes.values()) if (simNode.alive) simNode.node.tick();
      for (let r = 0; r < 4; r++) {
        for (const simNode of this.nodes.values()) this.processReady(simNode);
        this.deliverAll();
      }
      if (this.leftAt.size > 0) this.stopRemovedMembers();
      // (Re)propose a fresh value every 100 steps until one is applied everywhere.
      if (i % 100 === 0) {
        const leader = [...this.nodes.values()].find((n) => n.alive && n.node.status().role === Role.Leader);
        if (leader !== undefined) {
          const value = `final-${this.options.seed}-${values.length}`;
          values.push(value);
          this.proposeValue(leader, value);
        }
      }
      // Every member of the latest configuration (removed nodes are not sent the log any more).
      const members = allMembers(this.latestConf.conf).map((id) => this.nodes.get(id));
      const everywhere = values.find((value) => members.every((n) => n !== undefined && [...n.applied.values()].includes(value)));
      if (everywhere !== undefined) {
        this.trace(`liveness: ${everywhere} applied on every node after ${i} quiet steps`);
        return;
      }
    }
    const states = [...this.nodes.values()].map((n) => {
      if (n.removed) return `  node ${n.id}: removed`;
      const st = n.node.status();
      const progress = [...st.progress].map(([id, p]) => `${id}:${p.state}/m${p.match}/n${p.next}${p.recentActive ? '' : '/inactive'}`).join(' ');
      return `  node ${n.id}: role ${st.role} term ${st.term} leader ${st.leader} commit ${st.commit} applied ${st.applied} first ${st.firstIndex} last ${st.lastIndex} conf ${describeConf(st.confState)} ${progress}`;
    });
    states.push(`  latest configuration (index ${this.latestConf.index}): ${describeConf(this.latestConf.conf)}`);
    this.fail(`liveness: no value committed on every node within ${quietSteps} quiet steps (proposed ${values.length} values)\n${states.join('\n')}`);
  }

  // ---- Actions ----

  private randomLiveNode(): SimNode {
    const live = [...this.nodes.values()].filter((n) => n.alive);
    if (live.length === 0) return [...this.nodes.values()].find((n) => !n.removed) ?? this.nodes.get(1)!;
    return live[this.random(live.length)]!;
  }

  private tickOne(simNode: SimNode): void {
    if (!simNode.alive) return;
    simNode.node.tick();
  }

  private propose(simNode: SimNode): void {
    if (!simNode.alive) return;
    this.proposeValue(simNode, `v${this.options.seed}-${++this.valueCounter}`);
  }

  private proposeValue(simNode: SimNode, value: string): void {
    this.proposedValues.add(value);
    const result = simNode.node.propose(encoder.encode(value));
    this.trace(`node ${simNode.id} propose ${value}: ${result.ok ? 'ok' : result.error.code}`);
  }

  private requestRead(simNode: SimNode): void {
    if (!simNode.alive) return;
    const context = `r${++this.readCounter}`;
    // Linearizability: the read must see every write some node applied (so acknowledged) before it began.
    let appliedAnywhere = 0;
    let latestWriteIndex = 0;
    for (const other of this.nodes.values()) {
      appliedAnywhere = Math.max(appliedAnywhere, other.appliedIndex);
      latestWriteIndex = Math.max(latestWriteIndex, other.lastValueIndex);
    }
    const result = simNode.node.readIndex(encoder.encode(context));
    this.trace(`node ${simNode.id} readIndex ${context} (applied anywhere: ${appliedAnywhere}): ${result.ok ? 'ok' : result.error.code}`);
    if (result.ok) simNode.pendingReads.set(context, { appliedAnywhere, latestWriteIndex, readIndex: -1 });
  }

  private transfer(): void {
    const leader = this.liveLeader();
    if (leader === undefined) return;
    // Mostly a voter; sometimes a learner or a non-member (the core must ignore those).
    const conf = leader.node.status().confState;
    const candidates = this.random(5) === 0 ? [...this.nodes.keys()] : allMembers(conf).filter((id) => conf.voters.includes(id));
    const target = this.pick(candidates);
    if (target === undefined || target === leader.id) return;
    this.stats.transfers += 1;
    this.trace(`node ${leader.id} transfer leadership to ${target}`);
    leader.node.transferLeadership(target);
  }

  private maybeSnapshot(simNode: SimNode): void {
    if (!simNode.alive) return;
    const index = simNode.appliedIndex;
    const storage = simNode.storage;
    if (index <= storage.snapshot().index + 3 || index > storage.lastIndex()) return;
    storage.createSnapshotSync({ index, term: storage.term(index), confState: simNode.confState });
    simNode.snapshots.set(index, new Map(simNode.applied));
    const compactIndex = index - this.random(3);
    if (compactIndex >= storage.firstIndex()) storage.compactSync(compactIndex);
    this.trace(`node ${simNode.id} snapshot at ${index}, compact through ${compactIndex}`);
  }

  private crashOrRestart(): void {
    const candidates = [...this.nodes.values()].filter((n) => !n.removed);
    const simNode = candidates[this.random(candidates.length)]!;
    if (simNode.alive) {
      const voters = this.latestConf.conf.voters;
      if (voters.includes(simNode.id)) {
        const down = voters.filter((id) => this.nodes.get(id)?.alive !== true).length;
        if (down + 1 > Math.floor((voters.length - 1) / 2) && this.random(4) !== 0) return; // mostly keep a quorum
      }
      this.crash(simNode, simNode.inFlight !== null ? 'with a write in flight' : '');
    } else {
      this.restart(simNode);
    }
  }

  /** Leader crashes (often mid-write) are what Figure 8 is made of. */
  private crashLeader(): void {
    const leader = this.liveLeader();
    if (leader === undefined) return;
    this.crash(leader, leader.inFlight !== null ? '(leader) with a write in flight' : '(leader)');
    // Bring someone back so that a quorum can form again.
    const down = [...this.nodes.values()].filter((n) => !n.alive && !n.removed && n !== leader);
    if (down.length > 0) this.restart(down[this.random(down.length)]!);
  }

  /** A restart keeps only what was persisted (the storage) and durable snapshots. */
  private restart(simNode: SimNode): void {
    simNode.storage = simNode.storage.clone();
    const snapshot = simNode.storage.snapshot();
    const data = simNode.snapshots.get(snapshot.index);
    if (data === undefined) this.fail(`node ${simNode.id} has no state machine data for its snapshot ${snapshot.index}`);
    simNode.applied = new Map(data);
    simNode.appliedIndex = snapshot.index;
    simNode.lastValueIndex = lastKey(data);
    simNode.lastCommit = simNode.storage.initialState().hardState.commit;
    simNode.confState = snapshot.confState;
    simNode.staged = new Map();
    simNode.pendingReads = new Map();
    simNode.inFlight = null;
    simNode.node = this.makeRawNode(simNode.id, simNode.storage);
    simNode.alive = true;
    this.trace(`node ${simNode.id} RESTART (snapshot ${snapshot.index}, commit ${simNode.lastCommit}, last ${simNode.storage.lastIndex()})`);
  }

  private changePartition(): void {
    if (this.partition !== null && this.random(2) === 0) {
      this.partition = null;
      this.trace('partition healed');
      return;
    }
    const side = new Set<NodeId>();
    for (const simNode of this.nodes.values()) if (!simNode.removed && this.random(2) === 0) side.add(simNode.id);
    const shape = this.random(6);
    if (shape < 2) {
      // Often isolate the leader.
      const leader = this.liveLeader();
      if (leader !== undefined) {
        side.clear();
        side.add(leader.id);
      }
    } else if (shape === 2 && isJoint(this.latestConf.conf)) {
      this.splitJointHalves();
      return;
    } else if (shape === 3 && this.latestConf.conf.learners.length > 0) {
      // The leader with the learners only: learners must never make a quorum.
      const leader = this.liveLeader();
      if (leader !== undefined) {
        side.clear();
        side.add(leader.id);
        for (const id of this.latestConf.conf.learners) side.add(id);
      }
    }
    this.partition = side;
    this.trace(`partition {${[...side].join(',')}} | rest`);
  }

  // ---- Network ----

  private send(from: SimNode, messages: readonly Message[]): void {
    for (const message of messages) {
      this.stats.messages += 1;
      if (this.announced.has(message.to) && !this.nodes.has(message.to)) this.startJoiner(message.to);
      let snapshotData: Map<number, string> | null = null;
      if (message.type === MessageType.Snap && message.snapshot !== null) {
        snapshotData = from.snapshots.get(message.snapshot.index) ?? null;
        if (snapshotData === null) this.fail(`node ${from.id} sends snapshot ${message.snapshot.index} it has no data for`);
        this.stats.snapshotsSent += 1;
      }
      const delay = this.random(10) === 0 ? this.random(30) : 0;
      this.inflight.push({ message, snapshotData, deliverAt: this.step + delay });
      if (this.random(1000) < this.duplicateRate * 1000) this.inflight.push({ message, snapshotData, deliverAt: this.step + this.random(20) });
    }
  }

  private deliverSome(): void {
    const count = this.random(8);
    for (let i = 0; i < count && this.inflight.length > 0; i++) {
      // Random choice among deliverable messages: reordering.
      const at = this.random(this.inflight.length);
      const flight = this.inflight[at]!;
      if (flight.deliverAt > this.step) continue;
      this.inflight.splice(at, 1);
      this.deliver(flight, true);
    }
  }

  private deliverAll(): void {
    const flights = this.inflight;
    this.inflight = [];
    for (const flight of flights) this.deliver(flight, false);
  }

  private deliver(flight: InFlight, faults: boolean): void {
    const { message } = flight;
    const to = this.nodes.get(message.to);
    const lost =
      to === undefined ||
      !to.alive ||
      (this.partition !== null && this.partition.has(message.from) !== this.partition.has(message.to)) ||
      (faults && this.random(1000) < this.dropRate * 1000);
    if (message.type === MessageType.Snap) this.reportSnapshot(message, !lost);
    if (lost) {
      this.stats.dropped += 1;
      return;
    }
    if (message.type === MessageType.Snap && message.snapshot !== null && flight.snapshotData !== null) {
      to.staged.set(message.snapshot.index, flight.snapshotData);
    }
    to.node.step(message);
  }

  /** The sender's transport learns whether a snapshot stream arrived (as a real one does). */
  private reportSnapshot(message: Message, delivered: boolean): void {
    const sender = this.nodes.get(message.from);
    if (sender === undefined || !sender.alive) return;
    sender.node.reportSnapshot(message.to, delivered);
    this.trace(`node ${sender.id}: snapshot to ${message.to} ${delivered ? 'delivered' : 'failed'}`);
  }

  // ---- The host's Ready handling, with invariant checks ----

  /**
   * The host's Ready handling in two halves, as the real node does it: begin
   * (take the Ready, send what may leave before persisting, start the write)
   * and finish (the write is durable: send the rest, apply, advance). Other
   * steps, ticks and crashes happen in between, and messages that may leave
   * before persisting are sent while the write is in flight.
   */
  private processReady(simNode: SimNode): void {
    if (!simNode.alive) return;
    if (simNode.inFlight !== null) {
      // As the real node does while a write is in flight: what may leave before persisting (appends of new
      // entries, heartbeats, forwarded proposals, the commit index) goes at once, not after the write.
      // What committed meanwhile and is durable here is applied at once, and read states are confirmed.
      if (!this.quiet && this.random(3) === 0) {
        this.send(simNode, simNode.node.takeMessagesBeforePersist());
        const committed = simNode.node.takeCommittedEntries();
        if (committed.length > 0) this.trace(`node ${simNode.id} applies ${committed[0]!.index}..${committed[committed.length - 1]!.index} while its write is in flight`);
        for (const entry of committed) this.apply(simNode, entry);
        for (const state of simNode.node.takeReadStates()) this.onReadState(simNode, text.decode(state.context), state.index);
        if (simNode.pendingReads.size > 0) this.serveReads(simNode);
        return;
      }
      this.finishReady(simNode, simNode.inFlight);
      return;
    }
    if (!simNode.node.hasReady()) return;
    const ready = simNode.node.ready();
    if (ready.softState !== null && ready.softState.role === Role.Leader) this.onLeader(simNode);
    this.send(simNode, ready.messagesBeforePersist);
    this.checkEntries(simNode, ready);
    simNode.inFlight = ready;
    // As the real node does: committed entries already durable in the local log are applied before the write.
    if (ready.snapshot === null) {
      const durable = Math.min(simNode.storage.lastIndex(), ready.entries.length > 0 ? ready.entries[0]!.index - 1 : Number.POSITIVE_INFINITY);
      for (const entry of ready.committedEntries) if (entry.index <= durable) this.apply(simNode, entry);
    }
    // Often the write completes at once; otherwise a later step finishes it.
    if (this.quiet || this.random(3) !== 0) this.finishReady(simNode, ready);
  }

  private finishReady(simNode: SimNode, ready: Ready): void {
    simNode.inFlight = null;
    // The snapshot's data is made durable before the log records the snapshot.
    if (ready.snapshot !== null) this.stageSnapshotDurably(simNode, ready.snapshot.index);
    simNode.storage.saveSync({ snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState, sync: ready.mustSync });
    if (ready.softState !== null && ready.softState.role === Role.Leader) this.checkLeaderCompleteness(simNode);
    if (ready.hardState !== null) {
      if (ready.hardState.commit < simNode.lastCommit) this.fail(`node ${simNode.id} commit went back from ${simNode.lastCommit} to ${ready.hardState.commit}`);
      simNode.lastCommit = ready.hardState.commit;
    }
    // A crash after persisting, before sending or applying.
    if (!this.quiet && this.random(200) === 0) {
      this.crash(simNode, 'after persisting a Ready');
      return;
    }
    this.send(simNode, ready.messages);
    if (ready.snapshot !== null) this.installSnapshot(simNode, ready.snapshot.index, ready.snapshot.confState);
    for (const entry of ready.committedEntries) if (entry.index > simNode.appliedIndex) this.apply(simNode, entry);
    for (const state of ready.readStates) this.onReadState(simNode, text.decode(state.context), state.index);
    if (simNode.pendingReads.size > 0) this.serveReads(simNode);
    simNode.node.advance();
  }

  /** Everything not persisted is lost: the in-flight write, the core's memory, messages to and from it. */
  private crash(simNode: SimNode, why: string): void {
    simNode.alive = false;
    simNode.inFlight = null;
    this.stats.crashes += 1;
    this.trace(`node ${simNode.id} CRASH ${why}`);
    const lost = this.inflight.filter((f) => f.message.to === simNode.id || f.message.from === simNode.id);
    this.inflight = this.inflight.filter((f) => f.message.to !== simNode.id && f.message.from !== simNode.id);
    for (const flight of lost) if (flight.message.type === MessageType.Snap) this.reportSnapshot(flight.message, false);
  }

  private onLeader(simNode: SimNode): void {
    const { term, confState } = simNode.node.status();
    // Only a voter of its own configuration may win an election (learners and removed nodes never campaign).
    if (!confState.voters.includes(simNode.id) && !confState.votersOutgoing.includes(simNode.id)) {
      this.fail(`node ${simNode.id} became leader of term ${term} without being a voter (${describeConf(confState)})`);
    }
    const existing = this.leaderOfTerm.get(term);
    if (existing !== undefined && existing !== simNode.id) this.fail(`election safety: nodes ${existing} and ${simNode.id} both lead term ${term}`);
    this.leaderOfTerm.set(term, simNode.id);
    this.stats.leaders += 1;
    this.trace(`node ${simNode.id} became LEADER of term ${term}`);
  }

  /** Log matching: an (index, term) pair names one entry everywhere. */
  private checkEntries(simNode: SimNode, ready: Ready): void {
    for (const entry of ready.entries) {
      const slot = `${entry.index}/${entry.term}`;
      const key = entryKey(entry);
      const seen = this.entryAt.get(slot);
      if (seen === undefined) this.entryAt.set(slot, key);
      else if (seen !== key) this.fail(`log matching: node ${simNode.id} has ${key} at ${slot}, another node has ${seen}`);
      if (entry.type === EntryType.Normal && entry.data.length > 0 && !this.proposedValues.has(text.decode(entry.data))) {
        this.fail(`node ${simNode.id} persisted a value nobody proposed: ${text.decode(entry.data)}`);
      }
    }
  }

  /** Leader completeness: a new leader's log holds every entry committed so far. */
  private checkLeaderCompleteness(simNode: SimNode): void {
    const storage = simNode.storage;
    for (let index = Math.max(storage.firstIndex(), 2); index <= this.committedMax; index++) {
      const committed = this.committed.get(index);
      if (committed === undefined) continue;
      let term: number;
      try {
        term = storage.term(index);
      } catch {
        this.fail(`leader completeness: leader ${simNode.id} lacks committed entry ${index}`);
      }
      if (term !== committed.term) this.fail(`leader completeness: leader ${simNode.id} has term ${term} at committed index ${index} (committed term ${committed.term})`);
    }
  }

  /** State machine safety: every node applies the same entry at each index. */
  private apply(simNode: SimNode, entry: Entry): void {
    if (entry.index !== simNode.appliedIndex + 1) this.fail(`node ${simNode.id} applies ${entry.index} after ${simNode.appliedIndex}`);
    // Never apply what the local log does not hold durably: a crash would leave the state machine ahead of the log.
    const storage = simNode.storage;
    if (entry.index > storage.lastIndex() || entry.index < storage.firstIndex() || storage.term(entry.index) !== entry.term) {
      this.fail(`node ${simNode.id} applies ${entry.index}@${entry.term}, which its durable log (${storage.firstIndex()}..${storage.lastIndex()}) does not hold`);
    }
    const key = entryKey(entry);
    const committed = this.committed.get(entry.index);
    if (committed === undefined) {
      this.committed.set(entry.index, { term: entry.term, key });
      this.committedMax = Math.max(this.committedMax, entry.index);
    } else if (committed.key !== key || committed.term !== entry.term) {
      this.fail(`state machine safety: node ${simNode.id} applies ${key}@${entry.term} at ${entry.index}, others applied ${committed.key}@${committed.term}`);
    }
    simNode.appliedIndex = entry.index;
    this.stats.applied += 1;
    if (entry.type === EntryType.Normal && entry.data.length > 0) {
      simNode.applied.set(entry.index, text.decode(entry.data));
      simNode.lastValueIndex = entry.index;
    }
    if (entry.type === EntryType.ConfChange) this.applyConfChange(simNode, entry);
  }

  /** The host applies a committed membership change, as the real node does. */
  private applyConfChange(simNode: SimNode, entry: Entry): void {
    const change = decodeConfChange(entry.data);
    try {
      simNode.confState = simNode.node.applyConfChange(change);
    } catch (error) {
      this.fail(`node ${simNode.id} cannot apply the committed membership change at ${entry.index} (${describeChange(change)}): ${(error as Error).message}`);
    }
    this.trace(`node ${simNode.id} applied conf change ${entry.index}: ${describeChange(change)} -> ${describeConf(simNode.confState)}`);
    const { voters, votersOutgoing } = simNode.confState;
    if (!voters.includes(simNode.id) && !votersOutgoing.includes(simNode.id) && simNode.node.status().role === Role.Leader) {
      this.fail(`node ${simNode.id} applied its removal or demotion but is still leader (etcd #11038)`);
    }
    if (entry.index <= this.latestConf.index) return;
    this.stats.confChangesApplied += 1;
    const before = allMembers(this.latestConf.conf);
    this.latestConf = { index: entry.index, conf: simNode.confState };
    for (const id of before) if (!isMember(simNode.confState, id)) this.leftAt.set(id, entry.index);
    // Targeted fault: the moment a joint configuration first applies, often split off the
    // nodes only one half counts (they may not know yet that it committed).
    if (!this.quiet && isJoint(simNode.confState) && this.random(2) === 0) this.splitJointHalves();
  }

  private splitJointHalves(): void {
    const { voters, votersOutgoing } = this.latestConf.conf;
    const side = new Set(this.random(2) === 0 ? voters.filter((id) => !votersOutgoing.includes(id)) : votersOutgoing.filter((id) => !voters.includes(id)));
    if (side.size === 0) return;
    this.partition = side;
    this.trace(`partition {${[...side].join(',')}} | rest (joint halves)`);
  }

  /** Stops a removed member once every voter of the latest configuration durably knows it was removed. */
  private stopRemovedMembers(): void {
    const conf = this.latestConf.conf;
    const voters = [...new Set([...conf.voters, ...conf.votersOutgoing])];
    for (const [id, index] of this.leftAt) {
      const everyVoterKnows = voters.every((voter) => {
        const simNode = this.nodes.get(voter);
        return simNode !== undefined && simNode.lastCommit >= index;
      });
      if (!everyVoterKnows) continue;
      this.leftAt.delete(id);
      const simNode = this.nodes.get(id);
      if (simNode === undefined || simNode.removed) continue;
      if (simNode.alive) this.crash(simNode, '(removed from the configuration: stopped for good)');
      else this.trace(`node ${id} removed from the configuration: stays down for good`);
      simNode.removed = true;
      this.stats.stopped += 1;
    }
  }

  private stageSnapshotDurably(simNode: SimNode, index: number): void {
    const data = simNode.staged.get(index);
    if (data === undefined) this.fail(`node ${simNode.id} installs snapshot ${index} without its data`);
    simNode.snapshots.set(index, new Map(data));
  }

  private installSnapshot(simNode: SimNode, index: number, confState: ConfState): void {
    const data = simNode.snapshots.get(index);
    if (data === undefined) this.fail(`node ${simNode.id} installs snapshot ${index} without its data`);
    simNode.staged.delete(index);
    // The snapshot must agree with what is known committed up to its index.
    for (const [at, value] of data) {
      const committed = this.committed.get(at);
      if (committed !== undefined && committed.key !== `0:${value}`) this.fail(`snapshot ${index} disagrees with committed entry ${at}`);
    }
    simNode.applied = new Map(data);
    simNode.appliedIndex = index;
    simNode.lastValueIndex = lastKey(data);
    simNode.confState = confState;
    this.trace(`node ${simNode.id} installed snapshot ${index} (${describeConf(confState)})`);
  }

  private onReadState(simNode: SimNode, context: string, index: number): void {
    const read = simNode.pendingReads.get(context);
    if (read === undefined || read.readIndex >= 0) return; // a duplicate answer
    if (index < read.appliedAnywhere) {
      this.fail(`stale read: ${context} on node ${simNode.id} got read index ${index}, but ${read.appliedAnywhere} was applied before the read began`);
    }
    read.readIndex = index;
    this.trace(`node ${simNode.id} read ${context} confirmed at index ${index}`);
  }

  /**
   * Serves the confirmed reads whose index this node has applied: the value
   * returned must be the latest write acknowledged before the read began, or
   * a later one, and it must be the committed value at its index.
   */
  private serveReads(simNode: SimNode): void {
    for (const [context, read] of simNode.pendingReads) {
      if (read.readIndex < 0 || simNode.appliedIndex < read.readIndex) continue;
      simNode.pendingReads.delete(context);
      this.stats.reads += 1;
      const valueIndex = simNode.lastValueIndex;
      const value = simNode.applied.get(valueIndex);
      if (valueIndex < read.latestWriteIndex) {
        this.fail(`stale read: ${context} on node ${simNode.id} returned the value written at ${valueIndex} (${value}), but the write at ${read.latestWriteIndex} was acknowledged before the read began`);
      }
      const committed = this.committed.get(valueIndex);
      if (valueIndex > 0 && (committed === undefined || committed.key !== `${EntryType.Normal}:${value}`)) {
        this.fail(`read ${context} on node ${simNode.id} returned ${value} at ${valueIndex}, which is not the committed value there`);
      }
      this.trace(`node ${simNode.id} served read ${context}: ${value ?? '(nothing written)'} at ${valueIndex}`);
    }
  }

  // ---- Membership ----

  private liveLeader(): SimNode | undefined {
    return [...this.nodes.values()].find((n) => n.alive && n.node.status().role === Role.Leader);
  }

  /** The operator asks the leader for a random membership change (or to leave an explicit joint configuration). */
  private changeMembership(): void {
    const leader = this.liveLeader();
    if (leader === undefined) return;
    const conf = leader.node.status().confState;
    const allocated: NodeId[] = [];
    const fresh = (): NodeId | null => {
      if (this.nextId > this.idsMax) return null;
      const id = this.nextId++;
      allocated.push(id);
      return id;
    };
    let change: ConfChange | null;
    if (isJoint(conf)) {
      if (conf.autoLeave) return;
      change = { transition: ConfChangeTransition.Auto, changes: [], context: new Uint8Array(0) };
    } else {
      change = this.randomConfChange(conf, fresh);
    }
    if (change === null) {
      this.nextId -= allocated.length;
      return;
    }
    const result = leader.node.proposeConfChange(change);
    this.trace(`node ${leader.id} propose conf change ${describeChange(change)} on ${describeConf(conf)}: ${result.ok ? 'ok' : result.error.code}`);
    if (result.ok) {
      this.stats.confChangesProposed += 1;
      for (const id of allocated) this.announced.add(id);
    } else {
      this.nextId -= allocated.length; // nobody will ever hear of these ids: reuse them
    }
  }

  private pick<T>(items: readonly T[]): T | undefined {
    return items.length === 0 ? undefined : items[this.random(items.length)];
  }

  /** A random change of a non-joint configuration, keeping between 2 and 7 voters. */
  private randomConfChange(conf: ConfState, fresh: () => NodeId | null): ConfChange | null {
    const { AddVoter, AddLearner, RemoveNode } = ConfChangeType;
    const voters = conf.voters;
    const learner = this.pick(conf.learners);
    const voter = this.pick(voters);
    const changes: ConfChangeSingle[] = [];
    let transition: ConfChangeTransition = ConfChangeTransition.Auto;
    switch (this.random(7)) {
      case 0: {
        const id = fresh();
        if (id !== null) changes.push({ type: AddLearner, nodeId: id });
        break;
      }
      case 1:
        if (learner !== undefined && voters.length < 7) changes.push({ type: AddVoter, nodeId: learner });
        break;
      case 2:
        if (voter !== undefined && voters.length > 2) changes.push({ type: RemoveNode, nodeId: voter });
        break;
      case 3:
        if (learner !== undefined) changes.push({ type: RemoveNode, nodeId: learner });
        else if (voter !== undefined && voters.length > 2) changes.push({ type: AddLearner, nodeId: voter }); // demote
        break;
      default: {
        // Several voters at once (joint consensus): replace one or two voters by fresh nodes or learners.
        const replaced = voters.slice();
        const count = Math.min(this.random(3) === 0 ? 1 : 2, voters.length - 1);
        for (let i = 0; i < count; i++) {
          const out = replaced.splice(this.random(replaced.length), 1)[0]!;
          const incoming = conf.learners.find((id) => !changes.some((c) => c.nodeId === id)) ?? fresh();
          if (incoming === null) break;
          changes.push({ type: AddVoter, nodeId: incoming });
          changes.push(this.random(3) === 0 ? { type: AddLearner, nodeId: out } : { type: RemoveNode, nodeId: out });
        }
        transition = [ConfChangeTransition.Auto, ConfChangeTransition.JointImplicit, ConfChangeTransition.JointExplicit][this.random(3)]!;
      }
    }
    if (changes.length === 0) return null;
    return { transition, changes, context: new Uint8Array(0) };
  }
}

/** Runs one seed; returns null on success or a failure report. */
export function runSeed(options: SimulationOptions): { error: Error; trace: string } | null {
  const simulation = new Simulation(options);
  try {
    simulation.run();
    return null;
  } catch (error) {
    return { error: error as Error, trace: simulation.traceText };
  }
}

/** Runs one seed and returns its whole trace (for determinism checks). */
export function traceOf(options: SimulationOptions): string {
  const simulation = new Simulation({ ...options, trace: true });
  try {
    simulation.run();
  } catch (error) {
    return `${simulation.traceText}\nFAILED: ${(error as Error).message}`;
  }
  return simulation.traceText;
}

function lastKey(data: Map<number, string>): number {
  let last = 0;
  for (const index of data.keys()) last = Math.max(last, index);
  return last;
}
