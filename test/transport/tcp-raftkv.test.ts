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
    const one = members.get(1)!;
    await one.waitForLeader();
    await one.put('before', 'x');
    await members.get(3)!.close();
    members.delete(3);
    for (let index = 0; index < 300; index++) await one.put(`key/${String(index).padStart(3, '0')}`, `value ${index}`);
    // Both running members compact on their own schedule: wait until each has, so the leader cannot send entries.
    for (const id of [1, 2]) {
      const compactedBy = Date.now() + 30_000;
      while ((await members.get(id)!.status()).firstLogIndex <= 20) {
        assert.ok(Date.now() < compactedBy, `member ${id} compacted its log in time`);
        await sleep(20);
      }
    }

    const three = await open(3, await TcpTransport.listen({ id: 3, listen: addresses.get(3)!, reconnectDelayMs: 10, reconnectDelayMaxMs: 100 }));
    members.set(3, three);
    const target = (await one.status()).appliedIndex;
    const deadline = Date.now() + 30_000;
    while ((await three.status()).appliedIndex < target) {
      assert.ok(Date.now() < deadline, 'member 3 caught up in time');
      await sleep(50);
    }
    const installed = await three.status();
    assert.ok(installed.snapshotIndex > 1 && installed.firstLogIndex > 20, `member 3 installed a snapshot (${installed.snapshotIndex}, first index ${installed.firstLogIndex})`);
    const [theirs, ours] = await Promise.all([one.range({ prefix: 'key/', serializable: true }), three.range({ prefix: 'key/', serializable: true })]);
    assert.deepEqual(ours.kvs.map((kv) => [kv.key.toString(), kv.value.toString()]), theirs.kvs.map((kv) => [kv.key.toString(), kv.value.toString()]));
    assert.equal((await three.get('before', { serializable: true }))?.value.toString(), 'x');
  } finally {
    for (const member of members.values()) await member.close();
    rmSync(root, { recursive: true, force: true });
  }
});
