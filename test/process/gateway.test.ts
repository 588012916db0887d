// The HTTP/JSON client endpoint `raftkv serve --client-listen` offers: etcd
// gateway shapes (snake_case, base64 bytes, int64 as strings, zero values
// left out) for put, range, deleterange and status, and a JSON error with
// etcd's gRPC code for every bad request. Runs in-process on a one-member
// cluster.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createCluster } from '../../src/server/cluster.ts';
import { HttpGateway } from '../../src/server/http-gateway.ts';

const b64 = (text: string): string => Buffer.from(text).toString('base64');

function call(address: string, path: string, body: string | object, method = 'POST'): Promise<{ status: number; body: Record<string, unknown> }> {
  const [host, port] = address.split(':') as [string, string];
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const outgoing = request({ host, port: Number(port), path, method, agent: false, headers: { 'content-length': Buffer.byteLength(text) } }, (response) => {
      const pieces: Buffer[] = [];
      response.on('data', (piece: Buffer) => pieces.push(piece));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(Buffer.concat(pieces).toString('utf8')) as Record<string, unknown> }));
    });
    outgoing.on('error', reject);
    outgoing.end(method === 'GET' ? undefined : text);
  });
}

test('the client endpoint speaks etcd gateway JSON, and refuses bad requests with JSON errors', async () => {
  const cluster = await createCluster({ size: 1, seed: 3 });
  const gateway = await HttpGateway.start(cluster.node(1), { listen: '127.0.0.1:0', bodyBytesMax: 4096 });
  const at = gateway.address;
  try {
    await cluster.waitForLeader();
    const put = await call(at, '/v3/kv/put', { key: b64('a'), value: b64('1') });
    assert.equal(put.status, 200);
    const term = (put.body.header as { raft_term: string }).raft_term;
    assert.match(term, /^\d+$/, 'int64 as a decimal string');
    assert.deepEqual(put.body, { header: { member_id: '1', revision: '1', raft_term: term } });
    const again = await call(at, '/v3/kv/put', { key: b64('a'), value: b64('2'), prev_kv: true });
    assert.deepEqual(again.body.prev_kv, { key: b64('a'), create_revision: '1', mod_revision: '1', version: '1', value: b64('1') });
    await call(at, '/v3/kv/put', { key: b64('b'), value: '' });
    await call(at, '/v3/kv/put', { key: b64('c'), value: b64('3') });

    const one = await call(at, '/v3/kv/range', { key: b64('a') });
    assert.deepEqual(one.body, {
      header: { member_id: '1', revision: '4', raft_term: term },
      kvs: [{ key: b64('a'), create_revision: '1', mod_revision: '2', version: '2', value: b64('2') }],
      count: '1',
    });
    const limited = await call(at, '/v3/kv/range', { key: b64('a'), range_end: b64('z'), limit: '2', sort_order: 'DESCEND', keys_only: true });
    assert.deepEqual((limited.body.kvs as { key: string; value?: string }[]).map((kv) => [kv.key, kv.value]), [[b64('c'), undefined], [b64('b'), undefined]]);
    assert.equal(limited.body.more, true);
    assert.equal(limited.body.count, '3');
    const counted = await call(at, '/v3/kv/range', { key: 'AA==', range_end: 'AA==', count_only: true, serializable: true });
    assert.equal(counted.body.kvs, undefined);
    assert.equal(counted.body.count, '3');
    const missing = await call(at, '/v3/kv/range', { key: b64('nope') });
    assert.deepEqual(Object.keys(missing.body), ['header'], 'no kvs, no count: zero values are left out');

    const deleted = await call(at, '/v3/kv/deleterange', { key: b64('b'), range_end: b64('d'), prev_kv: true });
    assert.equal(deleted.body.deleted, '2');
    assert.deepEqual((deleted.body.prev_kvs as { key: string }[]).map((kv) => kv.key), [b64('b'), b64('c')]);

    const status = await call(at, '/v3/maintenance/status', {});
    assert.equal(status.status, 200);
    assert.equal(status.body.leader, '1');
    assert.equal(status.body.raftTerm, term);
    assert.match(String(status.body.raftIndex), /^\d+$/);
    assert.equal(status.body.isLearner, undefined);

    await cluster.node(1).compact(3);
    const bad: [string, string | object, number, number, string?][] = [
      ['/v3/kv/range', { key: b64('a'), bogus: 1 }, 400, 3],
      ['/v3/kv/range', { key: '***' }, 400, 3],
      ['/v3/kv/range', { key: '' }, 400, 3],
      ['/v3/kv/range', { key: b64('a'), limit: -1 }, 400, 3],
      ['/v3/kv/range', { key: b64('a'), sort_order: 'SIDEWAYS' }, 400, 3],
      ['/v3/kv/range', '{"key":', 400, 3],
      ['/v3/kv/range', '[1,2]', 400, 3],
      ['/v3/kv/range', { key: b64('a'), revision: 2 }, 400, 11],
      ['/v3/kv/range', { key: b64('a'), revision: 99 }, 400, 11],
      ['/v3/kv/put', { key: b64('a'), value: 'x'.repeat(5000) }, 413, 8],
      ['/v3/kv/put', { value: b64('x') }, 400, 3],
      ['/v3/kv/watch', {}, 404, 5],
      ['/v3/kv/range', '', 405, 12, 'GET'],
    ];
    for (const [path, body, status, code, method] of bad) {
      const reply = await call(at, path, body, method);
      assert.equal(reply.status, status, `${path} ${JSON.stringify(body)}: ${JSON.stringify(reply.body)}`);
      assert.equal(reply.body.code, code, `${path} ${JSON.stringify(body)}`);
      assert.equal(typeof reply.body.error, 'string');
      assert.equal(reply.body.message, reply.body.error);
    }
  } finally {
    await gateway.close();
    await gateway.close();
    await cluster.close();
  }
});
