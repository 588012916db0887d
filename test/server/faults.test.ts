// A seeded fault run on a 3-member in-process cluster: concurrent clients
// write unique keys and counters through every member while the network
// drops, duplicates and delays frames, partitions come and go, and members
// are stopped and restarted. Afterwards: every acknowledged write is
// readable with its value, no write reported as failed-for-sure is present,
// each counter's final value lies between its acknowledged and its
// attempted increments, and every member's store hash is equal.
// SEED=n replays one seed; FAULT_SECONDS sets the length (default 4).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCluster, op } from '../../src/index.ts';
import type { Cluster, RaftKV } from '../../src/index.ts';
import { createRandom } from '../../src/raft/random.ts';
import type { RandomSource } from '../../src/raft/random.ts';

const seconds = Number(process.env['FAULT_SECONDS'] ?? 4);
const only = process.env['SEED'];
const seeds = only !== undefined ? [Number(only)] : [11, 12];

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function anyRunning(cluster: Cluster, random: RandomSource): RaftKV | undefined {
  const nodes = cluster.nodes();
  return nodes.length === 0 ? undefined : nodes[random(nodes.length)];
}

/** Codes that mean "this write certainly did not apply". */
const DEFINITELY_NOT_APPLIED = new Set(['RAFTKV_NO_LEADER', 'RAFTKV_PROPOSAL_DROPPED', 'RAFTKV_REQUEST_TOO_LARGE', 'RAFTKV_INVALID_ARGUMENT']);

async function nemesis(cluster: Cluster, random: RandomSource, until: number): Promise<void> {
  const stopped: number[] = [];
  while (Date.now() < until) {
    const roll = random(100);
    if (roll < 25) {
      const ids = [1, 2, 3];
      const lonely = ids[random(3)] as number;
      cluster.network.partition([lonely], ids.filter((id) => id !== lonely));
    } else if (roll < 40) {
      cluster.network.setFaults({ dropRate: random(20) / 100, duplicateRate: random(20) / 100, delayMs: [0, random(15)] });
    } else if (roll < 55 && stopped.length === 0 && cluster.ids.length === 3) {
      const victim = cluster.ids[random(3)] as number;
      await cluster.stop(victim);
      stopped.push(victim);
    } else if (stopped.length > 0) {
      await cluster.restart(stopped.pop() as number);
    } else {
      cluster.network.heal();
      cluster.network.setFaults({});
    }
    await sleep(100 + random(250));
  }
  cluster.network.heal();
  cluster.network.setFaults({});
  for (const id of stopped) await cluster.restart(id);
}

async function runSeed(seed: number): Promise<void> {
  const random = createRandom(seed);
  const cluster = await createCluster({ seed, memberOptions: { requestTimeoutMs: 1_000, snapshotEntries: 200, snapshotCatchUpEntries: 50 } });
  const acknowledged = new Map<string, string>();
  const failedForSure = new Set<string>();
  const counters = new Map<string, { acknowledged: number; attempted: number }>();
  try {
    await cluster.waitForLeader();
    const until = Date.now() + seconds * 1000;
    const client = async (clientId: number): Promise<void> => {
      let sequence = 0;
      while (Date.now() < until) {
        const member = anyRunning(cluster, random);
        if (member === undefined || member.isStopped) {
          await sleep(20);
          continue;
        }
        if (random(3) === 0) {
          // A counter increment by compare-and-swap on the value read.
          const key = `counter/${random(3)}`;
          const counter = counters.get(key) ?? { acknowledged: 0, attempted: 0 };
          counters.set(key, counter);
          try {
            const current = await member.get(key);
            const value = current === undefined ? 0 : Number(current.value.toString());
            const txn = member.txn();
            if (current === undefined) txn.if(key, 'version', '=', 0);
            else txn.if(key, 'mod', '=', current.modRevision);
            counter.attempted++;
            const result = await txn.then(op.put(key, String(value + 1))).commit();
            if (result.succeeded) counter.acknowledged++;
            else counter.attempted--;
          } catch {
            // Unknown or failed: the attempted count already covers it.
          }
        } else {
          const key = `client${clientId}/${sequence++}`;
          const value = `${seed}:${clientId}:${sequence}`;
          try {
            await member.put(key, value);
            acknowledged.set(key, value);
          } catch (error) {
            const code = (error as { code?: string }).code ?? '';
            assert.match(code, /^RAFTKV_[A-Z_]+$/, `an untyped error escaped: ${String(error)}`);
            if (DEFINITELY_NOT_APPLIED.has(code)) failedForSure.add(key);
          }
        }
      }
    };
    await Promise.all([nemesis(cluster, random, until), ...Array.from({ length: 8 }, (_, id) => client(id))]);
    const leader = await cluster.waitForLeader(20_000);
    for (const [key, value] of acknowledged) {
      assert.equal((await leader.get(key))?.value.toString(), value, `acknowledged write ${key} is lost`);
    }
    for (const key of failedForSure) {
      assert.equal(await leader.get(key), undefined, `${key} failed for sure, yet it applied`);
    }
    for (const [key, counter] of counters) {
      const current = await leader.get(key);
      const value = current === undefined ? 0 : Number(current.value.toString());
      assert.ok(value >= counter.acknowledged && value <= counter.attempted, `${key} = ${value}, acknowledged ${counter.acknowledged}, attempted ${counter.attempted}`);
    }
    assert.ok(acknowledged.size > 0, 'some writes got through');
    const hashes = await cluster.hashes(20_000);
    assert.equal(new Set(hashes.values()).size, 1, `members' hashes differ: ${JSON.stringify([...hashes])}`);
  } catch (error) {
    (error as Error).message += `\n  replay: SEED=${seed} npm test -- server/faults`;
    throw error;
  } finally {
    await cluster.close();
  }
}

for (const seed of seeds) {
  test(`faults: seed ${seed}, ${seconds} s of partitions, loss, duplication, delay and restarts lose no acknowledged write`, async () => {
    await runSeed(seed);
  });
}
