// The README's main job, part 1: a 3-node raftkv cluster in this process with
// durable storage (segment-file log, classic-level store). Shows the election, writes on different members,
// linearizable reads everywhere, a transaction, a leader crash and failover,
// a restart from disk, and that every member ends with the same store (hash).
// Run: npm run demo

import { createCluster, op } from '../src/index.ts';

const cluster = await createCluster({ size: 3, memberOptions: { tickMs: 50 } });
try {
  const leader = await cluster.waitForLeader();
  console.log(`3 members started in ${cluster.dataDir}; member ${leader.id} leads (term ${(await leader.status()).term})`);

  for (const [i, member] of cluster.nodes().entries()) {
    const result = await member.put(`config/service-${i}`, `endpoint-${i}.internal:8080`);
    console.log(`member ${member.id} wrote config/service-${i} at revision ${result.revision}`);
  }
  for (const member of cluster.nodes()) {
    const range = await member.range({ prefix: 'config/' });
    console.log(`member ${member.id} reads ${range.count} keys under config/ (linearizable): ${range.kvs.map((kv) => kv.key.toString()).join(', ')}`);
  }

  const swap = await leader
    .txn()
    .if('config/service-0', 'value', '=', 'endpoint-0.internal:8080')
    .then(op.put('config/service-0', 'endpoint-0.internal:9090'))
    .else(op.get('config/service-0'))
    .commit();
  console.log(`compare-and-swap on config/service-0 ${swap.succeeded ? 'succeeded' : 'failed'} at revision ${swap.revision}`);

  console.log(`stopping the leader, member ${leader.id} ...`);
  await cluster.stop(leader.id);
  const next = await cluster.waitForLeader();
  console.log(`member ${next.id} now leads (term ${(await next.status()).term})`);
  const write = await next.put('config/failover', 'survived');
  console.log(`write after failover committed at revision ${write.revision}`);
  const restarted = await cluster.restart(leader.id);
  const value = await restarted.get('config/failover');
  console.log(`member ${leader.id} restarted from disk and reads config/failover = ${value?.value.toString() ?? '(missing)'}`);

  const hashes = await cluster.hashes();
  console.log(`store hash per member: ${[...hashes].map(([id, hash]) => `${id}:${hash.slice(0, 12)}`).join(' ')}`);
  if (new Set(hashes.values()).size !== 1) throw new Error('members disagree');
  console.log('all members agree.');
} finally {
  await cluster.close();
}
