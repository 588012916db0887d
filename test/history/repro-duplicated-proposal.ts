// The smallest reproduction of a bug the history checks found (profile
// 'duplication', e.g. SEED=5 npm test -- history): when the network
// duplicates the frame that carries a proposal a follower forwards to the
// leader, the leader appends the proposal twice and every member applies it
// twice. A put made through a follower then gets two revisions (version 2),
// and when another write lands between the two copies, the key goes back to
// the older value: one client, one call after another —
//   put(x, A) via a follower → ok;  put(x, B) via the leader → ok;  get(x) → A.
// Not a test file (it fails while the bug is there): run it with
//   node --import tsx test/history/repro-duplicated-proposal.ts
// It exits 1 and prints what it saw while the bug reproduces, 0 otherwise.

import { createCluster } from '../../src/index.ts';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const cluster = await createCluster({ seed: 1, memberOptions: { tickMs: 10 } });
const seen: string[] = [];
try {
  const leader = await cluster.waitForLeader();
  const follower = cluster.nodes().find((node) => !node.isLeader);
  if (follower === undefined) throw new Error('no follower');

  // 1. One put through a follower, every frame duplicated: applied twice.
  cluster.network.setFaults({ duplicateRate: 1 });
  const once = await follower.put('once', 'v');
  cluster.network.setFaults({});
  await sleep(100);
  const kv = await leader.get('once');
  if (kv?.version !== 1 || kv.modRevision !== once.revision) {
    seen.push(`put(once) through follower ${follower.id} answered revision ${once.revision}; the key now has version ${kv?.version} and mod revision ${kv?.modRevision}`);
  }

  // 2. The second copy lands after a later write: the older value comes back.
  for (let round = 0; round < 30; round++) {
    cluster.network.setFaults({ duplicateRate: 1, delayMs: [0, 60] });
    await follower.put('x', `A${round}`);
    const later = await leader.put('x', `B${round}`);
    await sleep(150);
    cluster.network.setFaults({});
    const now = await leader.get('x');
    const value = now?.value.toString();
    if (value !== `B${round}`) {
      seen.push(`round ${round}: put(x, A${round}) via follower ok, then put(x, B${round}) via leader ok at revision ${later.revision}, then get(x) = ${value} (mod revision ${now?.modRevision})`);
    }
  }
} finally {
  await cluster.close();
}
if (seen.length > 0) {
  console.log(`duplicated forwarded proposals are applied twice:\n  ${seen.join('\n  ')}`);
  process.exit(1);
}
console.log('no duplicate application seen');
