// The etcd3 npm client, unchanged, against a raftkv member's gRPC gateway:
// put / get / prefix listing / delete / a transaction / a watch, and
// etcd's errors for a compacted revision and a request over the size
// limit arriving as the errors the client raises for etcd itself.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Etcd3, GRPCInvalidArgumentError, GRPCOutOfRangeError } from 'etcd3';
import { createCluster } from '../../src/server/cluster.ts';
import { GrpcGateway } from '../../src/server/grpc-gateway.ts';

test('the etcd3 npm client works against the gRPC gateway', { timeout: 60_000 }, async () => {
  const cluster = await createCluster({ size: 1, seed: 17 });
  const kv = await cluster.waitForLeader();
  const gateway = await GrpcGateway.start(kv, { listen: '127.0.0.1:0' });
  const client = new Etcd3({ hosts: `http://${gateway.address}` });
  try {
    await client.put('app/a').value('1');
    await client.put('app/b').value('2');
    await client.put('other').value('x');
    assert.equal(await client.get('app/a').string(), '1');
    assert.deepEqual(await client.getAll().prefix('app/').strings(), { 'app/a': '1', 'app/b': '2' });
    assert.equal(await client.getAll().prefix('app/').count(), 2);

    const swapped = await client.if('app/a', 'Value', '==', '1').then(client.put('app/a').value('10')).else(client.get('app/a')).commit();
    assert.equal(swapped.succeeded, true);
    const refused = await client.if('app/a', 'Value', '==', '1').then(client.put('app/a').value('11')).commit();
    assert.equal(refused.succeeded, false);
    assert.equal(await kv.get('app/a').then((found) => Buffer.from(found?.value ?? []).toString()), '10', 'the write reached the store');

    const watcher = await client.watch().prefix('app/').create();
    const seen: string[] = [];
    const done = new Promise<void>((resolve) => {
      watcher.on('put', (event) => {
        seen.push(`put ${event.key.toString()}=${event.value.toString()}`);
      });
      watcher.on('delete', (event) => {
        seen.push(`delete ${event.key.toString()}`);
        resolve();
      });
    });
    await client.put('app/c').value('3');
    await client.put('other').value('y');
    await client.delete().key('app/b');
    await done;
    assert.deepEqual(seen, ['put app/c=3', 'delete app/b']);
    await watcher.cancel();

    const { revision } = await kv.status();
    await client.put('app/d').value('4');
    await kv.compact(revision);
    await assert.rejects(client.get('app/a').revision(1).string(), (error: Error) => {
      assert.ok(error instanceof GRPCOutOfRangeError, `${error.constructor.name}: ${error.message}`);
      assert.match(error.message, /required revision has been compacted/);
      return true;
    });
    await assert.rejects(client.put('big').value(Buffer.alloc(1_600_000)).exec(), (error: Error) => {
      assert.ok(error instanceof GRPCInvalidArgumentError, `${error.constructor.name}: ${error.message}`);
      assert.match(error.message, /request is too large/);
      return true;
    });
  } finally {
    client.close();
    await gateway.close();
    await cluster.close();
  }
});
