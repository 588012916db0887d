// Three RaftKV members in one process over the TCP transport on 127.0.0.1:
// a member that was down while the others compacted their logs catches up
// by a snapshot streamed over TCP (real store chunks, restored on arrival).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftKV } from '../../src/server/raftkv.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A put whose outcome is unknown (an election on a loaded machine lost the
 * forwarded proposal) is retried: these puts are idempotent, and the test is
 * about catching up, not about failover.
 */
async function putSurely(member: RaftKV, key: string, value: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await member.put(key, value);
      return;
    } catch (error) {
      if (attempt >= 5 || (error as { code?: string }).code !== 'RAFTKV_OUTCOME_UNKNOWN') throw error;
    }
  }
}

test('a member behind a compacted log catches up by a snapshot streamed over TCP', { timeout: 60_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'raftkv-tcp-kv-'));
  const ids = [1, 2, 3];
  const addresses = new Map<number, string>();
  const members = new Map<number, RaftKV>();
  const open = async (id: number, transport: TcpTransport): Promise<RaftKV> => {
    for (const [other, address] of addresses) if (other !== id) transport.addPeer(other, address);
    return RaftKV.open({ id, dataDir: join(root, `n${id}`), transport, initialMembers: ids, tickMs: 20, snapshotEntries: 50, snapshotCatchUpEntries: 10 });
  };
  try {
    const transports = await Promise.all(ids.map((id) => TcpTransport.listen({ id, listen: '127.0.0.1:0', reconnectDelayMs: 10, reconnectDelayMaxMs: 100 })));
    transports.forEach((transport) => addresses.set(transport.id, transport.address));
    for (const transport of transports) members.set(transport.id, await open(transport.id, transport));
    await members.get(1)!.waitForLeader();
    // The member taken down is a follower: closing the leader would make this a failover test.
    const leader = (await members.get(1)!.status()).leader;
    const down = ids.find((id) => id !== leader)!;
    const up = ids.filter((id) => id !== down);
    const writer = members.get(leader)!;
    await putSurely(writer, 'before', 'x');
    await members.get(down)!.close();
    members.delete(down);
    for (let index = 0; index < 300; index++) await putSurely(writer, `key/${String(index).padStart(3, '0')}`, `value ${index}`);
    // Both running members compact on their own schedule: wait until each has, so the leader cannot send entries.
    for (const id of up) {
      const compactedBy = Date.now() + 30_000;
      while ((await members.get(id)!.status()).firstLogIndex <= 20) {
        assert.ok(Date.now() < compactedBy, `member ${id} compacted its log in time`);
        await sleep(20);
      }
    }

    const behind = await open(down, await TcpTransport.listen({ id: down, listen: addresses.get(down)!, reconnectDelayMs: 10, reconnectDelayMaxMs: 100 }));
    members.set(down, behind);
    const target = (await writer.status()).appliedIndex;
    const deadline = Date.now() + 30_000;
    while ((await behind.status()).appliedIndex < target) {
      assert.ok(Date.now() < deadline, `member ${down} caught up in time`);
      await sleep(50);
    }
    const installed = await behind.status();
    assert.ok(installed.snapshotIndex > 1 && installed.firstLogIndex > 20, `member ${down} installed a snapshot (${installed.snapshotIndex}, first index ${installed.firstLogIndex})`);
    const [theirs, ours] = await Promise.all([writer.range({ prefix: 'key/', serializable: true }), behind.range({ prefix: 'key/', serializable: true })]);
    assert.deepEqual(ours.kvs.map((kv) => [kv.key.toString(), kv.value.toString()]), theirs.kvs.map((kv) => [kv.key.toString(), kv.value.toString()]));
    assert.equal((await behind.get('before', { serializable: true }))?.value.toString(), 'x');
  } finally {
    for (const member of members.values()) await member.close();
    rmSync(root, { recursive: true, force: true });
  }
});
