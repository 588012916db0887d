// The pure Raft core alone: a 3-node group in one thread, memory storage,
// messages handed over directly. Measures committed entries per second for
// 16-byte and 256-byte entries, so the core never becomes the bottleneck of
// the replicated node. Usage: node --import tsx bench/raft-core.ts [--json]
//   [--seconds N] [--batch N]   (batch = proposals per round, like the node's
//   proposal batching between two Ready cycles)

import { RawNode } from '../src/raft/raw-node.ts';
import { createRandom } from '../src/raft/random.ts';
import { Role } from '../src/raft/types.ts';
import type { Message } from '../src/raft/types.ts';
import { MemoryLogStorage } from '../src/storage/log/memory.ts';

interface Member {
  readonly id: number;
  readonly node: RawNode;
  readonly storage: MemoryLogStorage;
}

function argument(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  if (at < 0) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} needs a positive number`);
  return value;
}

async function startGroup(): Promise<Member[]> {
  const ids = [1, 2, 3];
  const members: Member[] = [];
  for (const id of ids) {
    const storage = new MemoryLogStorage();
    await storage.bootstrap({ voters: ids, learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false });
    const node = new RawNode({ id, random: createRandom(id), uncommittedBytesMax: 1 << 30 }, storage);
    members.push({ id, node, storage });
  }
  return members;
}

/** Runs Ready cycles until nothing is left to do; returns entries applied by node 1. */
function pump(members: readonly Member[], byId: Map<number, Member>): number {
  let applied = 0;
  let busy = true;
  while (busy) {
    busy = false;
    for (const member of members) {
      if (!member.node.hasReady()) continue;
      busy = true;
      const ready = member.node.ready();
      const outbox: Message[] = [...ready.messagesBeforePersist];
      member.storage.saveSync({ snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState, sync: ready.mustSync });
      outbox.push(...ready.messages);
      if (member.id === 1) applied += ready.committedEntries.length;
      member.node.advance();
      for (const message of outbox) byId.get(message.to)?.node.step(message);
    }
  }
  return applied;
}

async function measure(entryBytes: number, seconds: number, batch: number): Promise<{ entriesPerSecond: number; entries: number }> {
  const members = await startGroup();
  const byId = new Map(members.map((m) => [m.id, m]));
  const leader = members[0]!;
  leader.node.campaign();
  pump(members, byId);
  if (leader.node.status().role !== Role.Leader) throw new Error('node 1 did not become leader');
  const data = new Uint8Array(entryBytes).fill(7);
  let applied = 0;
  let compactedThrough = 1;
  const start = performance.now();
  const end = start + seconds * 1000;
  let lastPrint = start;
  while (performance.now() < end) {
    for (let i = 0; i < batch; i++) {
      const result = leader.node.propose(data);
      if (!result.ok) throw result.error;
    }
    applied += pump(members, byId);
    // Keep memory flat: compact every member's log behind what all applied.
    const commit = leader.node.status().commit;
    if (commit - compactedThrough > 100_000) {
      for (const member of members) {
        const status = member.node.status();
        const confState = status.confState;
        const index = status.applied;
        await member.storage.createSnapshot({ index, term: member.storage.term(index), confState });
        await member.storage.compact(index - 1000);
      }
      compactedThrough = commit;
    }
    const now = performance.now();
    if (now - lastPrint > 1000) {
      lastPrint = now;
      process.stderr.write(`\r  ${entryBytes}-byte entries: ${Math.round((applied * 1000) / (now - start)).toLocaleString('en-US')} entries/s`);
    }
  }
  const elapsed = (performance.now() - start) / 1000;
  process.stderr.write('\n');
  return { entriesPerSecond: applied / elapsed, entries: applied };
}

const seconds = argument('--seconds', 5);
const batch = argument('--batch', 256);
const rows = [];
for (const bytes of [16, 256]) {
  const result = await measure(bytes, seconds, batch);
  rows.push({ entryBytes: bytes, batch, seconds, entries: result.entries, entriesPerSecond: Math.round(result.entriesPerSecond) });
}
if (process.argv.includes('--json')) {
  console.log(JSON.stringify({ benchmark: 'raft-core', node: process.version, rows }, null, 2));
} else {
  console.log('\nPure Raft core, 3 nodes in one thread, memory storage');
  console.log('entry bytes | proposals per round | entries committed/s');
  for (const row of rows) {
    console.log(`${String(row.entryBytes).padStart(11)} | ${String(row.batch).padStart(19)} | ${row.entriesPerSecond.toLocaleString('en-US').padStart(19)}`);
  }
}
