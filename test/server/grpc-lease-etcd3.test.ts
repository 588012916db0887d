// The etcd3 npm client's lease, lock and election helpers, unchanged,
// against the gRPC gateways of a three-member raftkv cluster (one gateway
// per member, each client on its own member, so writes, keep-alives and
// watches also go through followers): a lease granted, kept alive (the
// client's own keep-alive stream and keepaliveOnce), keys attached and
// removed by revoke; two lock contenders never inside together; an
// election whose leader is observed, then resigns to the next candidate.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Etcd3, EtcdLockFailedError } from 'etcd3';
import { createCluster } from '../../src/server/cluster.ts';
import { GrpcGateway } from '../../src/server/grpc-gateway.ts';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let attempt = 0; !condition(); attempt++) {
    assert.ok(attempt < 200, `timed out waiting for ${what}`);
    await sleep(50);
  }
}

test('etcd3 client: lease, lock and election helpers against the gateways', { timeout: 90_000 }, async () => {
  const cluster = await createCluster({ size: 3, seed: 31 });
  const leader = await cluster.waitForLeader();
  const gateways = await Promise.all([1, 2, 3].map((id) => GrpcGateway.start(cluster.node(id), { listen: '127.0.0.1:0' })));
  const [first, second] = [1, 2].map((index) => new Etcd3({ hosts: `http://${gateways[index]?.address ?? ''}` })) as [Etcd3, Etcd3];
  try {
    // ---- lease ----
    // Short TTLs: the client arms a TTL-long timer that can outlive close(), and the test's process waits for it.
    const ttl = Math.max(3, leader.leaseMinimumTtlSeconds);
    const lease = first.lease(ttl, { autoKeepAlive: true });
    const id = await lease.grant();
    assert.match(id, /^[1-9]\d*$/, 'a decimal int64 id');
    const renewed = new Promise<string>((resolve) => lease.once('keepaliveSucceeded', (response: { TTL: string }) => resolve(response.TTL)));
    await lease.put('leased/a').value('1');
    await lease.put('leased/b').value('2');
    assert.equal((await leader.get('leased/a'))?.lease, Number(id), 'the key carries the lease in the store');
    assert.equal(await renewed, String(ttl), "the client's own keep-alive stream renews with the granted TTL");
    await lease.keepaliveOnce();
    const alive = await first.leaseClient.leaseTimeToLive({ ID: id, keys: true });
    assert.deepEqual([alive.grantedTTL, alive.keys.map((key) => key.toString()).sort()], [String(ttl), ['leased/a', 'leased/b']]);
    assert.ok(Number(alive.TTL) >= 0 && Number(alive.TTL) <= ttl);
    const listed = await second.leaseClient.leaseLeases({});
    assert.ok(listed.leases.some((each) => each.ID === id), 'listed through another member');
    await lease.revoke();
    assert.deepEqual(await first.getAll().prefix('leased/').keys(), [], 'revoke deleted the attached keys');
    assert.equal((await second.leaseClient.leaseTimeToLive({ ID: id })).TTL, '-1');

    // ---- lock: two contenders, one at a time ----
    const inside: string[] = [];
    const overlaps: string[] = [];
    const acquired = new Map<string, number>();
    let refusals = 0;
    const contend = async (name: string, client: Etcd3): Promise<void> => {
      for (let round = 0; round < 3; round++) {
        const lock = client.lock('locks/report').ttl(ttl);
        for (;;) {
          try {
            await lock.acquire();
            break;
          } catch (error) {
            assert.ok(error instanceof EtcdLockFailedError, `${name}: ${String(error)}`);
            refusals++;
            await sleep(20);
          }
        }
        if (inside.length > 0) overlaps.push(`${name} entered while ${inside.join(',')} held the lock`);
        inside.push(name);
        acquired.set(name, (acquired.get(name) ?? 0) + 1);
        await sleep(100);
        inside.splice(inside.indexOf(name), 1);
        await lock.release();
      }
    };
    await Promise.all([contend('first', first), contend('second', second)]);
    assert.deepEqual(overlaps, []);
    assert.deepEqual([acquired.get('first'), acquired.get('second')], [3, 3]);
    assert.ok(refusals > 0, 'the contenders did meet a held lock');
    assert.deepEqual(await first.getAll().prefix('locks/').keys(), [], 'every lock key released');

    // ---- election: campaign, observe, resign ----
    const observer = await second.election('jobs', ttl).observe();
    const seen: (string | undefined)[] = [];
    observer.on('change', (value) => seen.push(value));
    const campaignA = first.election('jobs', ttl).campaign('a');
    await campaignA.wait();
    await until(() => observer.leader() === 'a', 'the observer to see leader a');
    const campaignB = second.election('jobs', ttl).campaign('b');
    let bElected = false;
    campaignB.on('elected', () => (bElected = true));
    await sleep(300);
    assert.equal(bElected, false, 'b waits while a leads');
    assert.equal(await first.election('jobs').leader(), 'a');
    await campaignA.proclaim('a2');
    await until(() => observer.leader() === 'a2', 'the observer to see the proclaimed value');
    await campaignA.resign();
    await campaignB.wait();
    assert.equal(bElected, true);
    await until(() => observer.leader() === 'b', 'the observer to see leader b');
    assert.equal(await second.election('jobs').leader(), 'b');
    assert.ok(seen.includes('a') && seen.lastIndexOf('b') > seen.indexOf('a'), `observed changes: ${JSON.stringify(seen)}`);
    await campaignB.resign();
    await observer.cancel();
  } finally {
    first.close();
    second.close();
    await Promise.all(gateways.map((gateway) => gateway.close()));
    await cluster.close();
  }
});
