// The deterministic simulator: whole Raft clusters in one thread over a
// faulty in-memory network (drops, duplicates, reordering, delays,
// partitions) with nodes that crash and restart from only what they
// persisted through Ready. Clients propose unique values, request ReadIndex
// reads and leadership transfers; hosts snapshot and compact their logs.
// After every step the invariants of Raft are checked; one seed is one exact
// run, so any failure replays with its seed.

import { RawNode } from '../../src/raft/raw-node.ts';
import type { RaftConfig } from '../../src/raft/raw-node.ts';
import { createRandom } from '../../src/raft/random.ts';
import type { RandomSource } from '../../src/raft/random.ts';
import { EntryType, MessageType, Role } from '../../src/raft/types.ts';
import type { ConfState, Entry, Message, NodeId, Ready } from '../../src/raft/types.ts';
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
  readonly raft?: Partial<RaftConfig>;
}

export class InvariantViolation extends Error {}

interface SimNode {
  readonly id: NodeId;
  node: RawNode;
  storage: MemoryLogStorage;
  alive: boolean;
  /** Applied normal entries' values, by index (the state machine). */
  applied: Map<number, string>;
  appliedIndex: number;
  lastCommit: number;
  confState: ConfState;
  /** Snapshot data this host can send: the state machine at that index. */
  snapshots: Map<number, Map<number, string>>;
  /** Snapshot data received and waiting for the core to install. */
  staged: Map<number, Map<number, string>>;
  pendingReads: Map<string, { issuedAtCommitted: number; readIndex: number }>;
  /** A Ready whose write has started but is not yet durable. */
  inFlight: Ready | null;
}

interface InFlight {
  readonly message: Message;
  readonly snapshotData: Map<number, string> | null;
  deliverAt: number;
}

const text = new TextDecoder();
const encoder = new TextEncoder();

function entryKey(entry: Entry): string {
  return `${entry.type}:${entry.data.length === 0 ? '' : text.decode(entry.data)}`;
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
  readonly stats = { messages: 0, dropped: 0, crashes: 0, snapshotsSent: 0, reads: 0, transfers: 0, leaders: 0, applied: 0 };

  constructor(private readonly options: SimulationOptions) {
    this.random = createRandom(options.seed);
    const choose = createRandom(options.seed * 31 + 7);
    this.flowControl = { messageBytesMax: [1, 16, 64, 1024][choose(4)]!, inflightMessagesMax: [1, 2, 8, 256][choose(4)]! };
    this.dropRate = options.dropRate ?? 0.05;
    this.duplicateRate = options.duplicateRate ?? 0.02;
    const ids = Array.from({ length: options.nodes }, (_, i) => i + 1);
    const conf: ConfState = { voters: ids, learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
    for (const id of ids) {
      const storage = new MemoryLogStorage();
      storage.saveSync({ snapshot: { index: 1, term: 1, confState: conf }, entries: [], hardState: { term: 1, vote: 0, commit: 1 }, sync: true });
      const simNode: SimNode = {
        id,
        storage,
        node: this.makeRawNode(id, storage),
        alive: true,
        applied: new Map(),
        appliedIndex: 1,
        lastCommit: 1,
        confState: conf,
        snapshots: new Map([[1, new Map()]]),
        staged: new Map(),
        pendingReads: new Map(),
        inFlight: null,
      };
      this.nodes.set(id, simNode);
    }
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
    if (faults) {
      const fault = this.random(1000);
      if (fault < 6) this.crashOrRestart();
      else if (fault < 12) this.changePartition();
      else if (fault < 16) this.crashLeader();
    }
    if (this.random(100) < 30) this.tickOne(this.randomLiveNode());
    this.deliverSome();
    this.processReady(this.randomLiveNode());
    if (this.random(2) === 0) this.processReady(this.randomLiveNode());
  }

  /** No faults: heal, restart everyone, then a new value must commit everywhere. */
  private quietPeriod(): void {
    this.partition = null;
    this.trace('quiet period: heal and restart all');
    for (const simNode of this.nodes.values()) if (!simNode.alive) this.restart(simNode);
    this.quiet = true;
    const quietSteps = this.options.quietSteps ?? 2_000;
    const values: string[] = [];
    for (let i = 0; i < quietSteps; i++, this.step++) {
      for (const simNode of this.nodes.values()) simNode.node.tick();
      for (let r = 0; r < 4; r++) {
        for (const simNode of this.nodes.values()) this.processReady(simNode);
        this.deliverAll();
      }
      // (Re)propose a fresh value every 100 steps until one is applied everywhere.
      if (i % 100 === 0) {
        const leader = [...this.nodes.values()].find((n) => n.node.status().role === Role.Leader);
        if (leader !== undefined) {
          const value = `final-${this.options.seed}-${values.length}`;
          values.push(value);
          this.proposeValue(leader, value);
        }
      }
      const everywhere = values.find((value) => [...this.nodes.values()].every((n) => [...n.applied.values()].includes(value)));
      if (everywhere !== undefined) {
        this.trace(`liveness: ${everywhere} applied on every node after ${i} quiet steps`);
        return;
      }
    }
    const states = [...this.nodes.values()].map((n) => {
      const st = n.node.status();
      const progress = [...st.progress].map(([id, p]) => `${id}:${p.state}/m${p.match}/n${p.next}${p.recentActive ? '' : '/inactive'}`).join(' ');
      return `  node ${n.id}: role ${st.role} term ${st.term} leader ${st.leader} commit ${st.commit} applied ${st.applied} first ${st.firstIndex} last ${st.lastIndex} ${progress}`;
    });
    this.fail(`liveness: no value committed on every node within ${quietSteps} quiet steps (proposed ${values.length} values)\n${states.join('\n')}`);
  }

  // ---- Actions ----

  private randomLiveNode(): SimNode {
    const live = [...this.nodes.values()].filter((n) => n.alive);
    if (live.length === 0) return this.nodes.get(1)!;
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
    // Linearizability: the read must see every entry some node applied (so committed) before it began.
    let committedBefore = 0;
    for (const other of this.nodes.values()) committedBefore = Math.max(committedBefore, other.appliedIndex);
    const result = simNode.node.readIndex(encoder.encode(context));
    this.trace(`node ${simNode.id} readIndex ${context} (applied anywhere: ${committedBefore}): ${result.ok ? 'ok' : result.error.code}`);
    if (result.ok) simNode.pendingReads.set(context, { issuedAtCommitted: committedBefore, readIndex: -1 });
  }

  private transfer(): void {
    const leader = [...this.nodes.values()].find((n) => n.alive && n.node.status().role === Role.Leader);
    if (leader === undefined) return;
    const target = 1 + this.random(this.nodes.size);
    if (target === leader.id) return;
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
    const simNode = this.nodes.get(1 + this.random(this.nodes.size))!;
    if (simNode.alive) {
      const down = [...this.nodes.values()].filter((n) => !n.alive).length;
      if (down + 1 > Math.floor((this.nodes.size - 1) / 2) && this.random(4) !== 0) return; // mostly keep a quorum
      this.crash(simNode, simNode.inFlight !== null ? 'with a write in flight' : '');
    } else {
      this.restart(simNode);
    }
  }

  /** Leader crashes (often mid-write) are what Figure 8 is made of. */
  private crashLeader(): void {
    const leader = [...this.nodes.values()].find((n) => n.alive && n.node.status().role === Role.Leader);
    if (leader === undefined) return;
    this.crash(leader, leader.inFlight !== null ? '(leader) with a write in flight' : '(leader)');
    // Bring someone back so that a quorum can form again.
    const down = [...this.nodes.values()].filter((n) => !n.alive && n !== leader);
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
    for (const id of this.nodes.keys()) if (this.random(2) === 0) side.add(id);
    // Often isolate the leader.
    if (this.random(3) === 0) {
      const leader = [...this.nodes.values()].find((n) => n.alive && n.node.status().role === Role.Leader);
      if (leader !== undefined) {
        side.clear();
        side.add(leader.id);
      }
    }
    this.partition = side;
    this.trace(`partition {${[...side].join(',')}} | rest`);
  }

  // ---- Network ----

  private send(from: SimNode, messages: readonly Message[]): void {
    for (const message of messages) {
      this.stats.messages += 1;
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
   * steps, ticks and crashes happen in between.
   */
  private processReady(simNode: SimNode): void {
    if (!simNode.alive) return;
    if (simNode.inFlight !== null) {
      this.finishReady(simNode, simNode.inFlight);
      return;
    }
    if (!simNode.node.hasReady()) return;
    const ready = simNode.node.ready();
    if (ready.softState !== null && ready.softState.role === Role.Leader) this.onLeader(simNode);
    this.send(simNode, ready.messagesBeforePersist);
    this.checkEntries(simNode, ready);
    simNode.inFlight = ready;
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
    for (const entry of ready.committedEntries) this.apply(simNode, entry);
    for (const state of ready.readStates) this.onReadState(simNode, text.decode(state.context), state.index);
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
    const term = simNode.node.status().term;
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
    if (entry.type === EntryType.Normal && entry.data.length > 0) simNode.applied.set(entry.index, text.decode(entry.data));
    if (entry.type === EntryType.ConfChange) this.fail('no membership changes are proposed by this simulation');
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
    simNode.confState = confState;
    this.trace(`node ${simNode.id} installed snapshot ${index}`);
  }

  private onReadState(simNode: SimNode, context: string, index: number): void {
    const read = simNode.pendingReads.get(context);
    if (read === undefined) return; // a duplicate answer
    simNode.pendingReads.delete(context);
    this.stats.reads += 1;
    if (index < read.issuedAtCommitted) {
      this.fail(`stale read: ${context} on node ${simNode.id} got read index ${index}, but ${read.issuedAtCommitted} was applied before the read began`);
    }
    this.trace(`node ${simNode.id} read ${context} at index ${index}`);
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
