// A request that is waiting for the leader when its member closes must fail
// with RAFTKV_STOPPED, never wait forever. Found by the history scenarios
// (CI seed 18 and long-run seed 428, both `membership`): a lease client's
// call on a member the nemesis stopped registered its proposal after the
// shutdown had failed every registered caller and stopped the tick that
// expires them, and the scenario hung with no timer left.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCluster } from '../../src/index.ts';
import type { RaftKV } from '../../src/index.ts';

const HUNG = Symbol('hung');

/** How a call settles, or HUNG if it has not 2 s after its member closed. */
async function settle(call: Promise<unknown>): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<typeof HUNG>((resolve) => (timer = setTimeout(() => resolve(HUNG), 2_000)));
  try {
    return await Promise.race([call.then(() => 'resolved', (error: { code?: string }) => error.code ?? String(error)), hung]);
  } finally {
    clearTimeout(timer);
  }
}

test('a put, a linearizable get, a lease grant and a membership change called just before close fail with RAFTKV_STOPPED, never hang', { timeout: 30_000 }, async () => {
  const calls: [string, (member: RaftKV) => Promise<unknown>][] = [
    ['put', (member) => member.put('k', 'v')],
    ['get', (member) => member.get('k')],
    ['grant', (member) => member.grant(10)],
    ['addLearner', (member) => member.addLearner(9)],
  ];
  for (const [name, call] of calls) {
    const cluster = await createCluster({ size: 1, seed: 5 });
    try {
      const member = await cluster.waitForLeader();
      await member.put('k', 'before');
      // Same turn: the call passes its first check and waits for the leader (known: one microtask); close runs meanwhile.
      const pending = call(member);
      const closed = member.close();
      assert.equal(await settle(pending), 'RAFTKV_STOPPED', `${name} called just before close`);
      await closed;
    } finally {
      await cluster.close();
    }
  }
});
