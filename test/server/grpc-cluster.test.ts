// The gRPC gateway on a follower of a three-member cluster: writes are
// forwarded to the leader, MemberList shows every member, membership
// errors are etcd's, and with the rest of the cluster gone a write fails
// UNAVAILABLE with one of etcd's messages for it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createCluster } from '../../src/server/cluster.ts';
import { GrpcGateway } from '../../src/server/grpc-gateway.ts';

type Call = (request: object) => Promise<Record<string, unknown>>;

function clients(address: string): { kv: (method: string) => Call; cluster: (method: string) => Call; close: () => void } {
  const definition = protoLoader.loadSync('etcd/api/etcdserverpb/rpc.proto', {
    includeDirs: [fileURLToPath(new URL('../../proto', import.meta.url))],
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition).etcdserverpb as grpc.GrpcObject;
  const make = (name: string): grpc.Client => new (pkg[name] as grpc.ServiceClientConstructor)(address, grpc.credentials.createInsecure());
  const [kv, cluster] = [make('KV'), make('Cluster')];
  const bind = (client: grpc.Client) => (method: string): Call => (request) =>
    new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + 10_000);
      (client as unknown as Record<string, (r: object, o: object, c: (e: Error | null, v: Record<string, unknown>) => void) => void>)[method]?.(request, { deadline }, (error, value) => (error === null ? resolve(value) : reject(error)));
    });
  return { kv: bind(kv), cluster: bind(cluster), close: () => [kv, cluster].forEach((client) => client.close()) };
}

test('gRPC on a follower: forwarded writes, members, etcd errors, no leader', { timeout: 60_000 }, async () => {
  const cluster = await createCluster({ size: 3, seed: 23, memberOptions: { tickMs: 20, requestTimeoutMs: 2_000 } });
  const leader = await cluster.waitForLeader();
  const followerId = [1, 2, 3].find((id) => id !== leader.id) ?? 1;
  const gateway = await GrpcGateway.start(cluster.node(followerId), { listen: '127.0.0.1:0' });
  const { kv, cluster: members, close } = clients(gateway.address);
  try {
    const put = await kv('Put')({ key: Buffer.from('k'), value: Buffer.from('v') });
    assert.equal((put.header as { member_id: string }).member_id, String(followerId));
    assert.equal((await leader.get('k'))?.value.toString(), 'v', 'the write reached the leader');
    const range = await kv('Range')({ key: Buffer.from('k') });
    assert.deepEqual((range.kvs as { value: Buffer }[]).map((each) => each.value.toString()), ['v']);

    const list = await members('MemberList')({});
    assert.deepEqual((list.members as { ID: string; isLearner: boolean }[]).map((member) => [member.ID, member.isLearner]), [['1', false], ['2', false], ['3', false]]);
    await assert.rejects(members('MemberRemove')({ ID: 9 }), (error: grpc.ServiceError) => error.code === grpc.status.NOT_FOUND && error.details === 'etcdserver: member not found');
    await assert.rejects(members('MemberPromote')({ ID: leader.id }), (error: grpc.ServiceError) =>
      error.code === grpc.status.FAILED_PRECONDITION && error.details === 'etcdserver: can only promote a learner member');
    await assert.rejects(kv('Put')({ key: Buffer.alloc(0), value: Buffer.from('v') }), (error: grpc.ServiceError) =>
      error.code === grpc.status.INVALID_ARGUMENT && error.details === 'etcdserver: key is not provided');

    for (const id of [1, 2, 3]) if (id !== followerId) await cluster.stop(id);
    await assert.rejects(kv('Put')({ key: Buffer.from('k'), value: Buffer.from('w') }), (error: grpc.ServiceError) => {
      assert.equal(error.code, grpc.status.UNAVAILABLE, error.details);
      assert.match(error.details, /^etcdserver: (no leader|request timed out|leader changed)/);
      return true;
    });
  } finally {
    close();
    await gateway.close();
    await cluster.close();
  }
});
