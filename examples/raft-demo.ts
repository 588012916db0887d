// A 3-node Raft group in this process, on the pure core alone: ticks until a
// leader is elected, replicates a few commands, crashes the leader, elects a
// new one, and prints who leads and what every node committed.
// Run: node --import tsx examples/raft-demo.ts

import { RawNode } from '../src/raft/raw-node.ts';
import { createRandom } from '../src/raft/random.ts';
import { EntryType, Role } from '../src/raft/types.ts';
import type { Message } from '../src/raft/types.ts';
import { MemoryLogStorage } from '../src/storage/log/memory.ts';

const ids = [1, 2, 3];
const text = new TextDecoder();
const members = new Map<number, { node: RawNode; storage: MemoryLogStorage; committed: string[]; alive: boolean }>();
for (const id of ids) {
  const storage = new MemoryLogStorage();
  await storage.bootstrap({ voters: ids, learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false });
  members.set(id, { node: new RawNode({ id, random: createRandom(id) }, storage), storage, committed: [], alive: true });
}

function settle(): void {
  for (let busy = true; busy; ) {
    busy = false;
    for (const member of members.values()) {
      if (!member.alive || !member.node.hasReady()) continue;
      busy = true;
      const ready = member.node.ready();
      const out: Message[] = [...ready.messagesBeforePersist];
      member.storage.saveSync({ snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState, sync: ready.mustSync });
      out.push(...ready.messages);
      for (const entry of ready.committedEntries) {
        if (entry.type === EntryType.Normal && entry.data.length > 0) member.committed.push(text.decode(entry.data));
      }
      member.node.advance();
      for (const message of out) {
        const to = members.get(message.to);
        if (to?.alive) to.node.step(message);
      }
    }
  }
}

function tickUntilLeader(): number {
  for (let tick = 1; tick <= 200; tick++) {
    for (const member of members.values()) if (member.alive) member.node.tick();
    settle();
    for (const [id, member] of members) {
      if (member.alive && member.node.status().role === Role.Leader) {
        console.log(`tick ${tick}: node ${id} is leader of term ${member.node.status().term}`);
        return id;
      }
    }
  }
  throw new Error('no leader elected');
}

let leader = tickUntilLeader();
for (const command of ['set x=1', 'set y=2', 'set z=3']) {
  const result = members.get(leader)!.node.propose(new TextEncoder().encode(command));
  if (!result.ok) throw result.error;
}
settle();
members.get(leader)!.node.tick(); // a heartbeat carries the commit index to followers
settle();
for (const [id, member] of members) console.log(`node ${id} committed: ${member.committed.join(', ')}`);

console.log(`crashing leader ${leader}`);
members.get(leader)!.alive = false;
leader = tickUntilLeader();
members.get(leader)!.node.propose(new TextEncoder().encode('set after-failover=4'));
settle();
members.get(leader)!.node.tick();
settle();
for (const [id, member] of members) {
  if (member.alive) console.log(`node ${id} committed: ${member.committed.join(', ')}`);
}
