// A tiny synchronous network for scenario tests of the Raft core: nodes with
// memory storage, Ready cycles run to quiescence, per-link drops, and the
// ability to hold messages back so a test can deliver them by hand.

import { RawNode } from '../../src/raft/raw-node.ts';
import type { RaftConfig } from '../../src/raft/raw-node.ts';
import { createRandom } from '../../src/raft/random.ts';
import { EntryType } from '../../src/raft/types.ts';
import type { ConfState, Entry, Message, NodeId } from '../../src/raft/types.ts';
import { MemoryLogStorage } from '../../src/storage/log/memory.ts';

export interface TestNode {
  readonly id: NodeId;
  node: RawNode;
  storage: MemoryLogStorage;
  applied: Entry[];
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

  constructor(
    ids: NodeId[],
    private readonly options: Partial<RaftConfig> = {},
    learners: NodeId[] = [],
  ) {
    for (const id of [...ids, ...learners]) {
      const storage = new MemoryLogStorage();
      storage.saveSync({ snapshot: { index: 1, term: 1, confState: confOf(ids, learners) }, entries: [], hardState: { term: 1, vote: 0, commit: 1 }, sync: true });
      this.nodes.set(id, { id, storage, node: this.makeNode(id, storage), applied: [] });
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
        if (!member.node.hasReady()) continue;
        busy = true;
        const ready = member.node.ready();
        const out = [...ready.messagesBeforePersist];
        member.storage.saveSync({ snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState, sync: ready.mustSync });
        out.push(...ready.messages);
        for (const entry of ready.committedEntries) member.applied.push(entry);
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
  }
}

export const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
