// The smallest reproduction of a bug the history runs hit under load (a run
// of membership seeds died with an unhandled OutcomeUnknownError raised in
// ProposalTracker.expire from the confChanges tracker).
// ReplicatedNode.changeMembership() registers the change's promise, then,
// while an earlier change is still pending ('pending-conf-change'), waits in
// a setTimeout loop before returning that promise. If the node's tick
// expires the change during that wait — its deadline passed while the event
// loop was busy — the promise is rejected while nothing listens to it yet:
// an unhandled rejection, which ends a Node.js 20 process by default (the
// host app embedding raftkv). Here the leader is cut off so the first change
// cannot commit, a second one waits behind it, and the event loop is kept
// busy past the deadline, with different offsets.
// Not a test file (it fails while the bug is there): run it with
//   node --import tsx test/history/repro-membership-unhandled-rejection.ts
// It exits 1 and counts the unhandled rejections while the bug reproduces, 0 otherwise.

import { createCluster } from '../../src/index.ts';

const unhandled: string[] = [];
process.on('unhandledRejection', (reason) => {
  unhandled.push(`${(reason as { code?: string }).code ?? ''}: ${(reason as Error).message ?? String(reason)}`);
});
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

for (let offset = 0; offset < 12; offset++) {
  // A long election timeout keeps the cut-off leader leading; a short request deadline passes quickly.
  const cluster = await createCluster({ seed: 1, memberOptions: { tickMs: 10, electionTimeoutTicks: 300, requestTimeoutMs: 100 } });
  try {
    const leader = await cluster.waitForLeader();
    cluster.network.partition([leader.id], cluster.ids.filter((id) => id !== leader.id));
    const first = leader.addLearner(10).catch((error: { code?: string }) => error.code);
    await sleep(5);
    const second = leader.addLearner(11).catch((error: { code?: string }) => error.code); // waits behind the first
    await sleep(20 + offset);
    const busyUntil = Date.now() + 150;
    while (Date.now() < busyUntil) {
      // the event loop is busy past the deadline, as on a loaded machine
    }
    await Promise.all([first, second]);
    await sleep(50);
  } finally {
    cluster.network.heal();
    await cluster.close();
  }
}
if (unhandled.length > 0) {
  console.log(`${unhandled.length} of 12 attempts left an unhandled rejection (a crash without a listener):\n  ${unhandled.join('\n  ')}`);
  process.exit(1);
}
console.log('no unhandled rejection');
