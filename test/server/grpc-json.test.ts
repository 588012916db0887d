// etcd's HTTP/JSON gateway paths that HttpGateway does not serve itself
// (txn, compaction, member list, hash, hashkv, watch) reach EtcdJsonApi
// through HttpGateway's fallback, and must answer what a real etcd's
// gateway answers to the same requests — status and JSON body, with only
// cluster and member ids, raft terms, hash values and URLs masked. As in
// the etcdctl test, raftkv gets one write first ("0pad") so that revisions
// line up with etcd's, which starts at 1; revisions are compared exactly.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createCluster } from '../../src/server/cluster.ts';
import { GrpcGateway } from '../../src/server/grpc-gateway.ts';
import { EtcdJsonApi } from '../../src/server/grpc-json.ts';
import { HttpGateway } from '../../src/server/http-gateway.ts';
import { b64, post, startEtcd, type RealEtcd } from './grpc-etcd.ts';

/** POST /v3/watch and read `lines` streamed responses, then hang up. */
function watchLines(address: string, body: object, lines: number, during: () => Promise<void>): Promise<string[]> {
  const [host, port] = address.split(':') as [string, string];
  const text = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const outgoing = request({ host, port: Number(port), path: '/v3/watch', method: 'POST', agent: false, headers: { 'content-length': Buffer.byteLength(text) } }, (response) => {
      let buffered = '';
      let started = false;
      response.on('data', (piece: Buffer) => {
        buffered += piece.toString('utf8');
        const complete = buffered.split('\n').filter((line) => line.trim() !== '');
        if (!started && complete.length >= 1) {
          started = true;
          during().catch(reject);
        }
        if (buffered.endsWith('\n') && complete.length >= lines) {
          outgoing.destroy();
          resolve(complete.slice(0, lines));
        }
      });
    });
    const timer = setTimeout(() => {
      outgoing.destroy();
      reject(new Error(`${lines} watch responses did not arrive from ${address}`));
    }, 10_000);
    outgoing.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`the watch stream from ${address} closed early`));
    });
    outgoing.on('error', () => undefined);
    outgoing.end(text);
  });
}

function normalize(text: string): unknown {
  return JSON.parse(
    text
      // HttpGateway's own put and range leave cluster_id out: not compared.
      .replace(/"cluster_id":"\d+",?/g, '')
      .replace(/"(member_id|raft_term|ID)":"\d+"/g, '"$1":"<$1>"')
      .replace(/"hash":\d+/g, '"hash":"<hash>"')
      .replace(/"(peerURLs|clientURLs)":\[[^\]]*\]/g, '"$1":"<urls>"'),
  );
}

const REQUESTS: readonly (readonly [string, object | string])[] = [
  ['/v3/kv/put', { key: b64('foo'), value: b64('bar') }],
  ['/v3/kv/put', { key: b64('foo/1'), value: b64('one') }],
  ['/v3/kv/txn', {
    compare: [{ key: b64('foo'), target: 'VALUE', result: 'EQUAL', value: b64('bar') }, { key: b64('foo/1'), target: 'VERSION', result: 'GREATER', version: '0' }],
    success: [{ request_put: { key: b64('foo'), value: b64('baz'), prev_kv: true } }, { request_range: { key: b64('foo'), range_end: b64('fop') } }],
    failure: [{ request_delete_range: { key: b64('foo') } }],
  }],
  ['/v3/kv/txn', {
    compare: [{ key: b64('foo'), target: 'MOD', result: 'LESS', mod_revision: '2' }],
    success: [{ request_put: { key: b64('no'), value: b64('no') } }],
    failure: [{ request_delete_range: { key: b64('foo/1'), prev_kv: true } }, { request_txn: { success: [{ request_range: { key: b64('foo') } }] } }],
  }],
  ['/v3/kv/compaction', { revision: '3' }],
  ['/v3/kv/range', { key: b64('foo'), revision: '2' }],
  ['/v3/kv/compaction', { revision: '2' }],
  ['/v3/kv/compaction', { revision: '100' }],
  ['/v3/kv/txn', { success: [{ request_put: { key: '', value: b64('x') } }] }],
  ['/v3/cluster/member/list', {}],
  ['/v3/maintenance/hash', {}],
  ['/v3/kv/txn', 'not json'],
  ['/v3/kv/put', { key: b64('leased'), value: b64('v'), lease: '12345' }],
];

test('the HTTP/JSON gateway answers txn, compaction, members, hash and watch as etcd does', { timeout: 60_000 }, async () => {
  const cluster = await createCluster({ size: 1, seed: 13 });
  let etcd: RealEtcd | null = null;
  let grpcGateway: GrpcGateway | null = null;
  let httpGateway: HttpGateway | null = null;
  try {
    etcd = await startEtcd(async (endpoint) => (await post(endpoint, '/v3/kv/range', { key: b64('x') }).catch(() => ({ status: 0 }))).status === 200);
    const kv = await cluster.waitForLeader();
    await kv.put('0pad', 'etcd starts at revision 1');
    grpcGateway = await GrpcGateway.start(kv, { listen: '127.0.0.1:0', describeMember: () => ({ name: 'raftkv-1', peerURLs: [etcd?.peerUrl ?? ''] }) });
    const api = new EtcdJsonApi(grpcGateway);
    httpGateway = await HttpGateway.start(kv, { listen: '127.0.0.1:0', fallback: (incoming, response) => api.handle(incoming, response) });
    const raftkv = httpGateway.address;
    for (const [path, body] of REQUESTS) {
      const expected = await post(etcd.endpoint, path, body);
      const actual = await post(raftkv, path, body);
      const what = `POST ${path} ${typeof body === 'string' ? body : JSON.stringify(body)}`;
      assert.equal(actual.status, expected.status, `${what}: status (raftkv said ${actual.text})`);
      if (expected.status === 200) assert.deepEqual(normalize(actual.text), normalize(expected.text), `${what}: body`);
      else assert.equal((JSON.parse(actual.text) as { code: number }).code, (JSON.parse(expected.text) as { code: number }).code, `${what}: gRPC code`);
    }
    const watched: string[][] = [];
    for (const address of [etcd.endpoint, raftkv]) {
      const lines = await watchLines(address, { create_request: { key: b64('w'), range_end: b64('x'), prev_kv: true } }, 3, async () => {
        await post(address, '/v3/kv/put', { key: b64('w/1'), value: b64('a') });
        await post(address, '/v3/kv/put', { key: b64('w/1'), value: b64('b') });
      });
      watched.push(lines);
    }
    assert.deepEqual(watched[1]?.map(normalize), watched[0]?.map(normalize), 'the /v3/watch stream');
  } finally {
    await httpGateway?.close();
    await grpcGateway?.close();
    await cluster.close();
    await etcd?.stop();
  }
});
