// The raftkv side of `npm run bench`: a 3-member in-process cluster with
// durable storage (every write synced on a quorum before it is
// acknowledged), driven through the public API. Clients spread over the
// members as etcd clients spread over endpoints: writes from followers are
// forwarded to the leader inside raftkv.

import { createCluster, op } from '../../src/index.ts';
import type { BenchTarget } from '../load.ts';

export async function startRaftkvTarget(directory: string, logEngine: 'wal' | 'classic' = 'wal'): Promise<BenchTarget> {
  const cluster = await createCluster({ size: 3, dataDir: directory, memberOptions: { tickMs: 100, requestTimeoutMs: 30_000, logEngine } });
  await cluster.waitForLeader();
  const members = cluster.nodes();
  let next = 0;
  const pick = () => members[next++ % members.length]!;
  return {
    name: 'raftkv',
    async put(key, value) {
      await pick().put(key, value);
    },
    async get(key, serializable) {
      await pick().get(key, { serializable });
    },
    async compareAndSwap(key, expected, next) {
      const member = pick();
      const txn = member.txn();
      if (expected === null) txn.if(key, 'version', '=', 0);
      else txn.if(key, 'value', '=', expected);
      const result = await txn.then(op.put(key, next)).commit();
      return result.succeeded;
    },
    async close() {
      await cluster.close();
    },
  };
}
