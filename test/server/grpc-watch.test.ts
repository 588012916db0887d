// The gRPC Watch stream driven directly, message by message, with a client
// built from the same proto/ files: watch ids (assigned and chosen, a
// duplicate refused), events with the member's header, cancel (and nothing
// after it), progress on request at the stream's revision, server-side
// filters, and a compacted start revision answered with compact_revision.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createCluster } from '../../src/server/cluster.ts';
import { GrpcGateway } from '../../src/server/grpc-gateway.ts';

type Response = Record<string, unknown> & { watch_id: string; header: { revision: string; member_id: string }; events: { type: string; kv: { key: Buffer; value: Buffer } }[] };

function watchClient(address: string): grpc.ClientDuplexStream<unknown, Response> {
  const definition = protoLoader.loadSync('etcd/api/etcdserverpb/rpc.proto', {
    includeDirs: [fileURLToPath(new URL('../../proto', import.meta.url))],
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition).etcdserverpb as grpc.GrpcObject;
  const Watch = pkg.Watch as grpc.ServiceClientConstructor;
  const client = new Watch(address, grpc.credentials.createInsecure()) as unknown as { Watch: () => grpc.ClientDuplexStream<unknown, Response> };
  return client.Watch();
}

/** Responses as they arrive; `next()` waits for the next one. */
function reader(stream: grpc.ClientDuplexStream<unknown, Response>): () => Promise<Response> {
  const queue: Response[] = [];
  const waiting: ((response: Response) => void)[] = [];
  stream.on('data', (response: Response) => {
    const resolve = waiting.shift();
    if (resolve === undefined) queue.push(response);
    else resolve(response);
  });
  stream.on('error', () => undefined);
  return () => {
    const queued = queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no watch response within 5 s')), 5_000);
      waiting.push((response) => {
        clearTimeout(timer);
        resolve(response);
      });
    });
  };
}

const text = (bytes: Buffer): string => bytes.toString('utf8');

test('gRPC Watch: create, events, cancel, progress, filters, duplicate ids, compaction', { timeout: 60_000 }, async () => {
  const cluster = await createCluster({ size: 1, seed: 5 });
  const kv = await cluster.waitForLeader();
  const gateway = await GrpcGateway.start(kv, { listen: '127.0.0.1:0', watchesPerStreamMax: 3 });
  const stream = watchClient(gateway.address);
  const next = reader(stream);
  try {
    await kv.put('k/0', 'before'); // revision 1
    stream.write({ create_request: { key: Buffer.from('k/'), range_end: Buffer.from('k0') } });
    const created = await next();
    assert.equal(created.created, true);
    assert.equal(created.watch_id, '0', 'ids are assigned from 0, as etcd does');
    assert.equal(created.header.member_id, '1');
    assert.equal(created.header.revision, '1');

    stream.write({ create_request: { key: Buffer.from('k/'), range_end: Buffer.from('k0'), watch_id: 7, filters: ['NOPUT'], start_revision: 1 } });
    const chosen = await next();
    assert.deepEqual([chosen.watch_id, chosen.created], ['7', true]);
    stream.write({ create_request: { key: Buffer.from('x'), watch_id: 7 } });
    const duplicate = await next();
    assert.deepEqual([duplicate.watch_id, duplicate.created, duplicate.canceled], ['7', true, true]);

    await kv.put('k/1', 'one'); // revision 2
    await kv.delete('k/0'); // revision 3
    const seen = new Map<string, string[]>();
    while ((seen.get('0')?.length ?? 0) < 2 || (seen.get('7')?.length ?? 0) < 1) {
      const response = await next();
      for (const event of response.events) seen.set(response.watch_id, [...(seen.get(response.watch_id) ?? []), `${event.type} ${text(event.kv.key)}@${response.header.revision}`]);
    }
    assert.deepEqual(seen.get('0'), ['PUT k/1@2', 'DELETE k/0@3']);
    assert.deepEqual(seen.get('7'), ['DELETE k/0@3'], 'NOPUT leaves out puts, even replayed from revision 1');

    stream.write({ progress_request: {} });
    const progress = [await next(), await next()];
    assert.deepEqual(progress.map((response) => [response.watch_id, response.events.length, response.header.revision]).sort(), [['0', 0, '3'], ['7', 0, '3']]);

    stream.write({ cancel_request: { watch_id: 0 } });
    const canceled = await next();
    assert.deepEqual([canceled.watch_id, canceled.canceled], ['0', true]);
    await kv.put('k/2', 'two'); // revision 4: only watch 7 remains, and it filters puts
    await kv.delete('k/2'); // revision 5
    const after = await next();
    assert.equal(after.watch_id, '7', 'nothing arrives for a canceled watch');
    assert.deepEqual(after.events.map((event) => `${event.type} ${text(event.kv.key)}`), ['DELETE k/2']);

    await kv.compact(4);
    stream.write({ create_request: { key: Buffer.from('k/1'), start_revision: 2 } });
    const compactedCreate = await next();
    assert.equal(compactedCreate.created, true);
    const compacted = await next();
    assert.equal(compacted.canceled, true);
    assert.equal(compacted.compact_revision, '4');

    // Open now: watch 7 only (0 was canceled, the compacted one removed).
    for (const key of ['a', 'b', 'c']) stream.write({ create_request: { key: Buffer.from(key) } });
    const [second, third, fourth] = [await next(), await next(), await next()];
    assert.deepEqual([second.canceled, third.canceled], [false, false], 'a second and third watch fit (watchesPerStreamMax 3)');
    assert.deepEqual([fourth.created, fourth.canceled], [true, true], 'a fourth is refused');
    assert.match(String(fourth.cancel_reason), /too many watches/);
  } finally {
    stream.end();
    await gateway.close();
    await cluster.close();
  }
});
