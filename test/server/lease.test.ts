// Leases on a 3-member in-process cluster: the API and its errors; expiry
// decided by the leader and applied through Raft (every member deletes the
// attached keys at the same revision, watchers see the DELETEs); a lease
// kept alive through repeated leader kills never expires early (the
// leader's measured remaining TTL never falls below what the holder is
// owed); checkpoints keep a long lease's remaining time across a leader
// change; the lease table survives a restart of every member.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCluster } from '../../src/index.ts';
import type { Cluster, Event, RaftKV, Watch } from '../../src/index.ts';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString('latin1');

async function withCluster(options: Parameters<typeof createCluster>[0], body: (cluster: Cluster) => Promise<void>): Promise<void> {
  const cluster = await createCluster({ seed: 7, ...options });
  try {
    await cluster.waitForLeader();
    await body(cluster);
  } finally {
    await cluster.close();
  }
}

async function until(condition: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    return (error as { code?: string }).code ?? String(error);
  }
  return 'no error';
}

/** Collects a watch's events in the background. */
function collect(watch: Watch): Event[] {
  const events: Event[] = [];
  void (async () => {
    try {
      for await (const response of watch) events.push(...response.events);
    } catch {
      // closed with the cluster
    }
  })();
  return events;
}

test('lease API: grant, attach, time to live, list, revoke; unknown leases and bad input are typed errors', async () => {
  await withCluster({}, async (cluster) => {
    const follower = cluster.nodes().find((node) => !node.isLeader) as RaftKV;
    const minimum = follower.leaseMinimumTtlSeconds;
    assert.ok(minimum >= 1);
    const short = await follower.grant(1, 77);
    assert.deepEqual(short, { id: 77, ttlSeconds: Math.max(1, minimum) }, 'the TTL is raised to the minimum');
    assert.equal(await codeOf(follower.grant(60, 77)), 'RAFTKV_LEASE_EXISTS');
    const lease = await follower.grant(60);
    assert.ok(Number.isSafeInteger(lease.id) && lease.id > 0 && lease.id !== 77);
    await follower.put('svc/a', '1', { lease: lease.id });
    await follower.put('svc/b', '2', { lease: lease.id });
    await follower.put('svc/c', '3', { lease: 77 });
    const before = (await follower.status()).revision;
    assert.equal(await codeOf(follower.put('svc/x', 'x', { lease: 123456 })), 'RAFTKV_LEASE_NOT_FOUND');
    assert.equal(
      await codeOf(follower.txn().then({ type: 'put', key: Buffer.from('t'), value: Buffer.from('v') }, { type: 'put', key: Buffer.from('u'), value: Buffer.from('v'), lease: 99 }).commit()),
      'RAFTKV_LEASE_NOT_FOUND',
    );
    assert.equal((await follower.status()).revision, before, 'a refused put changes nothing');
    assert.equal(await follower.get('t'), undefined, 'nothing of the refused transaction was applied');
    const live = await follower.timeToLive(lease.id, { keys: true });
    assert.equal(live.grantedTtlSeconds, 60);
    assert.deepEqual(live.keys?.map(text), ['svc/a', 'svc/b']);
    assert.ok(live.remainingMs <= 60_000 && live.remainingMs > 0);
    const leader = await cluster.waitForLeader();
    const measured = await leader.timeToLive(lease.id);
    assert.equal(measured.measuredByLeader, true);
    assert.ok(measured.remainingMs > 50_000 && measured.remainingMs <= 60_000);
    assert.deepEqual((await follower.leases()).map((item) => item.id).sort((a, b) => a - b), [77, lease.id].sort((a, b) => a - b));
    const renewed = await follower.keepAliveOnce(lease.id);
    assert.equal(renewed.ttlSeconds, 60);
    // A key moved to another lease leaves the first one.
    await follower.put('svc/b', '2', { lease: 77 });
    const revoked = await follower.revoke(lease.id);
    assert.equal(revoked.deleted, 1);
    assert.equal(await follower.get('svc/a'), undefined);
    assert.equal(text((await follower.get('svc/b'))?.value ?? new Uint8Array()), '2', 'a key re-attached elsewhere survives');
    for (const call of [() => follower.revoke(lease.id), () => follower.keepAliveOnce(lease.id), () => follower.timeToLive(lease.id)]) {
      const code = await codeOf(call());
      assert.equal(code, 'RAFTKV_LEASE_NOT_FOUND');
    }
    try {
      await follower.revoke(lease.id);
    } catch (error) {
      assert.match((error as Error).message, /lease not found/);
    }
    for (const bad of [() => follower.grant(0), () => follower.grant(1.5), () => follower.grant(10, -1), () => follower.revoke(0), () => follower.timeToLive(Number.NaN)]) {
      assert.equal(await codeOf(bad()), 'RAFTKV_INVALID_ARGUMENT');
    }
    assert.throws(() => follower.keepAlive(0), { code: 'RAFTKV_INVALID_ARGUMENT' });
    const hashes = new Set((await cluster.hashes()).values());
    assert.equal(hashes.size, 1, 'every member holds the same store and lease table');
  });
});

test('an expired lease deletes its keys on every member at one revision; watchers everywhere see the DELETEs', async () => {
  await withCluster({}, async (cluster) => {
    const node = cluster.nodes()[0] as RaftKV;
    const lease = await node.grant(1);
    for (const key of ['job/1', 'job/2', 'job/3']) await node.put(key, 'x', { lease: lease.id });
    await node.put('job/keep', 'y');
    const start = (await node.status()).revision + 1;
    const streams = cluster.nodes().map((member) => collect(member.watch({ prefix: 'job/', startRevision: start })));
    await until(async () => (await node.range({ prefix: 'job/', countOnly: true })).count === 1, 10_000, 'the lease to expire');
    await until(() => streams.every((events) => events.length >= 3), 5_000, 'every watcher to see the deletes');
    const revisions = new Set<number>();
    for (const events of streams) {
      assert.deepEqual(events.map((event) => `${event.type} ${text(event.kv.key)}`), ['delete job/1', 'delete job/2', 'delete job/3']);
      for (const event of events) revisions.add(event.kv.modRevision);
    }
    assert.equal(revisions.size, 1, 'one revision for the whole revoke, the same on every member');
    for (const member of cluster.nodes()) {
      const keys = await member.range({ prefix: 'job/', serializable: true });
      assert.deepEqual(keys.kvs.map((kv) => text(kv.key)), ['job/keep']);
    }
    assert.equal(await codeOf(node.timeToLive(lease.id)), 'RAFTKV_LEASE_NOT_FOUND');
    assert.equal(new Set((await cluster.hashes()).values()).size, 1);
  });
});

test('a lease kept alive survives repeated leader kills and never has less time than its holder is owed', async () => {
  await withCluster({}, async (cluster) => {
    const holder = cluster.node(1);
    const lease = await holder.grant(1);
    await holder.put('lock/holder', 'me', { lease: lease.id });
    const deletes = collect(holder.watch({ key: 'lock/holder', filters: ['noPut'] }));
    const stream = holder.keepAlive(lease.id);
    let lost: Error | null = null;
    stream.onLost((error) => (lost = error));
    let checks = 0;
    const measure = async (): Promise<void> => {
      const leader = cluster.leader();
      if (leader === undefined) return;
      const owedUntil = stream.guaranteedUntilMs;
      let ttl;
      try {
        ttl = await leader.timeToLive(lease.id);
      } catch (error) {
        if ((error as { code?: string }).code === 'RAFTKV_LEASE_NOT_FOUND') throw error;
        return; // no leader at the moment, or the member stopped
      }
      if (!ttl.measuredByLeader) return;
      const latestDeadline = Date.now() + ttl.remainingMs;
      assert.ok(latestDeadline >= owedUntil, `the leader would expire the lease ${owedUntil - latestDeadline} ms before it is owed`);
      checks++;
    };
    for (let round = 0; round < 4; round++) {
      let leader = await cluster.waitForLeader();
      if (leader.id === holder.id) {
        await leader.transferLeadership(round % 2 === 0 ? 2 : 3);
        leader = await cluster.waitForLeader();
      }
      await measure();
      await cluster.stop(leader.id);
      for (let sample = 0; sample < 6; sample++) {
        await sleep(100);
        await measure();
      }
      await cluster.restart(leader.id);
      await cluster.waitForLeader();
      await measure();
    }
    assert.equal(lost, null, 'the lease was never lost');
    assert.ok(checks >= 4, `measured on leaders ${checks} times`);
    assert.equal(text((await holder.get('lock/holder'))?.value ?? new Uint8Array()), 'me');
    assert.deepEqual(deletes, [], 'the key was never deleted');
    stream.close();
    await stream.done;
    // Once no longer renewed, it does expire.
    await until(async () => (await holder.get('lock/holder')) === undefined, 10_000, 'the lease to expire after keep-alive stopped');
  });
});

test('checkpoints carry a long lease\'s remaining time to the next leader (no reset to the full TTL), never below what is owed', async () => {
  await withCluster({ memberOptions: { leaseCheckpointIntervalMs: 100 } }, async (cluster) => {
    const node = cluster.node(1);
    const sentMs = Date.now();
    const lease = await node.grant(30);
    await sleep(2_000);
    const leader = await cluster.waitForLeader();
    await cluster.stop(leader.id);
    const next = await cluster.waitForLeader();
    await until(async () => (await next.timeToLive(lease.id)).measuredByLeader, 5_000, 'the new leader to measure the lease');
    const ttl = await next.timeToLive(lease.id);
    const latestDeadline = Date.now() + ttl.remainingMs;
    assert.ok(latestDeadline >= sentMs + 30_000, 'never less than owed');
    assert.ok(ttl.remainingMs < 29_000, `the new leader resumed from a checkpoint (${ttl.remainingMs} ms left), not the full TTL`);
  });
});

test('the lease table survives a restart of every member; the new leader then expires the lease', async () => {
  await withCluster({}, async (cluster) => {
    const node = cluster.node(2);
    const lease = await node.grant(2);
    await node.put('eph', 'x', { lease: lease.id });
    const ids = cluster.ids;
    for (const id of ids) await cluster.stop(id);
    for (const id of ids) await cluster.restart(id);
    await cluster.waitForLeader();
    const after = cluster.node(3);
    const ttl = await after.timeToLive(lease.id, { keys: true });
    assert.deepEqual(ttl.keys?.map(text), ['eph']);
    await until(async () => (await after.get('eph')) === undefined, 10_000, 'the restored lease to expire');
    assert.equal(new Set((await cluster.hashes()).values()).size, 1);
  });
});

test('a keep-alive stream reports each renewal, and the loss when the lease is revoked', async () => {
  await withCluster({}, async (cluster) => {
    const node = cluster.node(1);
    const lease = await node.grant(1);
    const controller = new AbortController();
    const stream = node.keepAlive(lease.id, { signal: controller.signal });
    const seen: string[] = [];
    for await (const event of stream) {
      seen.push(event.type);
      if (seen.length === 2) await cluster.node(2).revoke(lease.id);
    }
    assert.equal(seen.at(-1), 'lost');
    assert.ok(seen.filter((type) => type === 'renewed').length >= 2);
    const aborted = node.keepAlive((await node.grant(5)).id, { signal: controller.signal });
    controller.abort();
    await aborted.done;
    const rest = [];
    for await (const event of aborted) rest.push(event);
    assert.ok(rest.every((event) => event.type === 'renewed'), 'an aborted stream just ends');
    const never = node.keepAlive(lease.id, { signal: AbortSignal.abort() });
    assert.deepEqual(await never.next(), { value: undefined, done: true }, 'a stream started with an aborted signal ends at once');
  });
});
