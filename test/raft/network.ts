// A tiny synchronous network for scenario tests of the Raft core: nodes with
// memory storage, Ready cycles run to quiescence, per-link drops, and the
// ability to hold messages back so a test can deliver them by hand. Committed
// membership changes are applied as a host does; nodes may join with an empty
// log, and hosts may snapshot and compact their logs.

import { RawNode } from '../../src/raft/raw-node.ts';
import type { RaftConfig } from '../../src/raft/raw-node.ts';
import { decodeConfChange } from '../../src/raft/raw-node.ts';
import { createRandom } from '../../src/raft/random.ts';
import { EntryType } from '../../src/raft/types.ts';
import type { ConfChange, ConfChangeSingle, ConfState, Entry, Message, NodeId, ReadState, SnapshotMetadata } from '../../src/raft/types.ts';
import { MemoryLogStorage } from '../../src/storage/log/memory.ts';

export interface TestNode {
  readonly id: NodeId;
  node: RawNode;
  storage: MemoryLogStorage;
  applied: Entry[];
  /** The membership as this host last applied it (from a snapshot or a ConfChange entry). */
  confState: ConfState;
  /** Snapshots this node installed through Ready (metadata only). */
  installedSnapshots: SnapshotMetadata[];
  /** Read states this node's Readies handed out (confirmed ReadIndex requests). */
  readStates: ReadState[];
}

export function confOf(voters: NodeId[], learners: NodeId[] = []): ConfState {
  return { voters, learners, votersOutgoing: [], learnersNext: [], autoLeave: false };
}

export class TestNetwork {
  readonly nodes = new Map<NodeId, TestNode>();
  /** Links (from→to) that drop everything. */
  readonly cut = new Set<string>();
  /** When set, messages are queued here instead of delivered. */
  hold = false;
  held: Message[] = [];
  /** Nodes whose host is stalled: settle() does not run their Ready (a test drives them by hand). */
  readonly paused = new Set<NodeId>();
  /** When set, every delivered message is appended to `delivered`. */
  record = false;
  delivered: Message[] = [];

  constructor(
    ids: NodeId[],
    private readonly options: Partial<RaftConfig> = {},
    learners: NodeId[] = [],
  ) {
    for (const id of [...ids, ...learners]) {
      const storage = new MemoryLogStorage();
      storage.saveSync({ snapshot: { index: 1, term: 1, confState: confOf(ids, learners) }, entries: [], hardState: { term: 1, vote: 0, commit: 1 }, sync: true });
      this.nodes.set(id, { id, storage, node: this.makeNode(id, storage), applied: [], confState: confOf(ids, learners), installedSnapshots: [], readStates: [] });
    }
  }

  makeNode(id: NodeId, storage: MemoryLogStorage, extra: Partial<RaftConfig> = {}): RawNode {
    return new RawNode({ id, random: createRandom(id * 7919), electionTimeoutTicks: 10, heartbeatTicks: 1, ...this.options, ...extra }, storage);
  }

  get(id: NodeId): TestNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  isolate(id: NodeId): void {
    for (const other of this.nodes.keys()) {
      if (other === id) continue;
      this.cut.add(`${id}->${other}`);
      this.cut.add(`${other}->${id}`);
    }
  }

  heal(): void {
    this.cut.clear();
  }

  /** Runs Ready cycles on every node until no node has anything to do. */
  settle(limit = 10_000): void {
    for (let round = 0; round < limit; round++) {
      let busy = false;
      for (const member of this.nodes.values()) {
        if (this.paused.has(member.id) || !member.node.hasReady()) continue;
        busy = true;
        const ready = member.node.ready();
        const out = [...ready.messagesBeforePersist];
        member.storage.saveSync({ snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState, sync: ready.mustSync });
        out.push(...ready.messages);
        if (ready.snapshot !== null) {
          member.installedSnapshots.push(ready.snapshot);
          member.confState = ready.snapshot.confState;
        }
        for (const entry of ready.committedEntries) {
          member.applied.push(entry);
          if (entry.type === EntryType.ConfChange) member.confState = member.node.applyConfChange(decodeConfChange(entry.data));
        }
        member.readStates.push(...ready.readStates);
        member.node.advance();
        for (const message of out) this.deliver(message);
      }
      if (!busy) return;
    }
    throw new Error('network did not settle');
  }

  deliver(message: Message): void {
    if (this.cut.has(`${message.from}->${message.to}`)) return;
    if (this.hold) {
      this.held.push(message);
      return;
    }
    if (this.record) this.delivered.push(message);
    this.nodes.get(message.to)?.node.step(message);
  }

  tick(id: NodeId, times = 1): void {
    for (let i = 0; i < times; i++) this.get(id).node.tick();
  }

  tickAll(times = 1): void {
    for (let i = 0; i < times; i++) {
      for (const member of this.nodes.values()) member.node.tick();
      this.settle();
    }
  }

  elect(id: NodeId): void {
    this.get(id).node.campaign();
    this.settle();
  }

  leaders(): NodeId[] {
    return [...this.nodes.values()].filter((m) => m.node.status().role === 3).map((m) => m.id);
  }

  /** Data of applied normal, non-empty entries, as strings. */
  appliedData(id: NodeId): string[] {
    return this.get(id)
      .applied.filter((e) => e.type === EntryType.Normal && e.data.length > 0)
      .map((e) => new TextDecoder().decode(e.data));
  }

  /** Crash and restart a node from what it persisted. */
  restart(id: NodeId, extra: Partial<RaftConfig> = {}): void {
    const member = this.get(id);
    member.storage = member.storage.clone();
    member.node = this.makeNode(id, member.storage, extra);
    member.applied = [];
    member.confState = member.storage.snapshot().confState;
  }

  /** A new member's process: empty storage, no configuration (it learns one from the leader). */
  addNode(id: NodeId): TestNode {
    if (this.nodes.has(id)) throw new Error(`node ${id} exists`);
    const storage = new MemoryLogStorage();
    const member: TestNode = { id, storage, node: this.makeNode(id, storage), applied: [], confState: confOf([]), installedSnapshots: [], readStates: [] };
    this.nodes.set(id, member);
    return member;
  }

  /** The host of `id` snapshots its state machine at its applied index and compacts its log through it. */
  compact(id: NodeId): number {
    const member = this.get(id);
    const index = member.node.status().applied;
    member.storage.createSnapshotSync({ index, term: member.storage.term(index), confState: member.confState });
    member.storage.compactSync(index);
    return index;
  }

  /** Runs election-timeout ticks on the given nodes only (settling after each) until `done` or `limit` rounds. */
  tickUntil(ids: NodeId[], done: () => boolean, limit = 100): boolean {
    for (let i = 0; i < limit; i++) {
      if (done()) return true;
      for (const id of ids) this.tick(id);
      this.settle();
    }
    return done();
  }
}

/** A ConfChange record (context empty). */
export function confChange(transition: ConfChange['transition'], ...changes: ConfChangeSingle[]): ConfChange {
  return { transition, changes, context: new Uint8Array(0) };
}

export const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
