// The Lease service through the gateways, compared with a real etcd:
// (1) real etcdctl (v3 API) runs the same lease commands against both —
// grant, put --lease, keep-alive --once, timetolive [--keys], list, revoke,
// and the errors for a lease that is gone — and must print the same once
// lease ids (each server picks its own) are replaced by names and the
// remaining seconds (a clock reading) are masked; (2) plain HTTP requests to
// etcd's JSON lease paths, with ids the client chooses, must get the same
// status and body from both, and raftkv's JSON answers must match its own
// gRPC answers. Revisions are compared exactly: raftkv gets one write first
// ("0pad") because etcd's store starts at revision 1 and raftkv's at 0.
// Needs etcd and etcdctl (Debian: apt-get install -y etcd-server etcd-client).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createCluster, type Cluster } from '../../src/server/cluster.ts';
import { GrpcGateway } from '../../src/server/grpc-gateway.ts';
import { EtcdJsonApi } from '../../src/server/grpc-json.ts';
import { HttpGateway } from '../../src/server/http-gateway.ts';
import { b64, etcdctl, post, startEtcd, type Outcome, type RealEtcd } from './grpc-etcd.ts';

let cluster: Cluster | null = null;
let etcd: RealEtcd | null = null;
let grpcGateway: GrpcGateway | null = null;
let httpGateway: HttpGateway | null = null;
/** EtcdJsonApi alone: every path etcd's gateway serves, with etcd's errors (HttpGateway's own put has its own). */
let jsonServer: Server | null = null;
let jsonAddress = '';

before(async () => {
  cluster = await createCluster({ size: 1, seed: 29 });
  etcd = await startEtcd(async (endpoint) => (await etcdctl(endpoint, ['endpoint', 'health'])).status === 0);
  const kv = await cluster.waitForLeader();
  await kv.put('0pad', 'etcd starts at revision 1');
  grpcGateway = await GrpcGateway.start(kv, { listen: '127.0.0.1:0' });
  const api = new EtcdJsonApi(grpcGateway);
  httpGateway = await HttpGateway.start(kv, { listen: '127.0.0.1:0', fallback: (incoming, response) => api.handle(incoming, response) });
  jsonServer = createServer((incoming, response) => {
    if (!api.handle(incoming, response)) response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => jsonServer?.listen(0, '127.0.0.1', resolve));
  jsonAddress = `127.0.0.1:${(jsonServer.address() as { port: number }).port}`;
});

after(async () => {
  jsonServer?.closeAllConnections();
  await new Promise((resolve) => (jsonServer === null ? resolve(null) : jsonServer.close(resolve)));
  await httpGateway?.close();
  await grpcGateway?.close();
  await cluster?.close();
  await etcd?.stop();
});

/** A lease id as etcdctl prints it (16 hex digits) and as JSON carries it (decimal); etcd's ids may pass 2^53. */
function idForms(id: bigint): [string, string] {
  return [id.toString(16).padStart(16, '0'), id.toString()];
}

/** Replaces each lease id with its name, masks remaining seconds, sorts attached keys and listed ids. */
function normalize(text: string, ids: ReadonlyMap<bigint, string>): string {
  let result = text;
  for (const [id, name] of ids) {
    for (const form of idForms(id)) result = result.replace(new RegExp(`\\b${form}\\b`, 'g'), `<${name}>`);
  }
  return result
    .replace(/"(cluster_id|member_id|raft_term)":\d+/g, '"$1":<$1>')
    .replace(/remaining\(-?\d+s\)/g, 'remaining(<s>)')
    .replace(/"ttl":\d+/g, '"ttl":<s>')
    .replace(/attached keys\(\[([^\]]*)\]\)/g, (_, keys: string) => `attached keys([${keys.split(' ').sort().join(' ')}])`)
    .replace(/^(found \d+ leases\n)((?:<lease\d>\n)*)/m, (_, head: string, lines: string) => head + lines.split('\n').filter(Boolean).sort().map((line) => `${line}\n`).join(''));
}

/** Runs the lease commands on one server; `ids` collects the ids it granted, named in order. */
async function leaseScript(endpoint: string, ids: Map<bigint, string>): Promise<[string, Outcome][]> {
  const outcomes: [string, Outcome][] = [];
  const run = async (args: readonly string[]): Promise<Outcome> => {
    const outcome = await etcdctl(endpoint, args);
    outcomes.push([`etcdctl ${args.join(' ')}`, outcome]);
    return outcome;
  };
  const granted = await run(['lease', 'grant', '60']);
  const first = /^lease ([0-9a-f]+) granted with TTL\(60s\)$/m.exec(granted.stdout)?.[1];
  assert.ok(first !== undefined, `lease grant printed ${granted.stdout} ${granted.errors}`);
  ids.set(BigInt(`0x${first}`), 'lease1');
  const json = await run(['lease', 'grant', '90', '-w', 'json']);
  const second = /"ID":(\d+)/.exec(json.stdout)?.[1];
  assert.ok(second !== undefined, `lease grant -w json printed ${json.stdout} ${json.errors}`);
  ids.set(BigInt(second), 'lease2');
  const [lease1, lease2] = [first, BigInt(second).toString(16)];
  await run(['put', `--lease=${lease1}`, 'lk/1', 'one']);
  await run(['put', `--lease=${lease1}`, 'lk/2', 'two']);
  await run(['put', `--lease=${lease2}`, 'lk/3', 'three']);
  await run(['get', 'lk/1', '-w', 'json']);
  await run(['lease', 'keep-alive', '--once', lease1]);
  await run(['lease', 'timetolive', lease1]);
  await run(['lease', 'timetolive', '--keys', lease1]);
  await run(['lease', 'timetolive', '--keys', lease2, '-w', 'json']);
  await run(['lease', 'list']);
  await run(['lease', 'revoke', lease1]);
  await run(['get', 'lk', '--prefix']);
  await run(['lease', 'timetolive', lease1]);
  await run(['lease', 'keep-alive', '--once', lease1]);
  await run(['lease', 'revoke', lease1]);
  await run(['lease', 'list']);
  await run(['lease', 'revoke', lease2]);
  await run(['lease', 'list']);
  await run(['get', 'lk', '--prefix', '-w', 'json']);
  return outcomes;
}

test('etcdctl lease commands print the same for raftkv as for etcd', { timeout: 120_000 }, async () => {
  assert.ok(etcd !== null && grpcGateway !== null);
  const etcdIds = new Map<bigint, string>();
  const raftkvIds = new Map<bigint, string>();
  const expected = await leaseScript(etcd.endpoint, etcdIds);
  const actual = await leaseScript(grpcGateway.address, raftkvIds);
  assert.equal(actual.length, expected.length);
  for (const [index, [command, want]] of expected.entries()) {
    const got = actual[index]?.[1];
    assert.ok(got !== undefined);
    assert.equal(got.status, want.status, `${command}: exit status (raftkv stderr: ${got.errors})`);
    assert.equal(normalize(got.stdout, raftkvIds), normalize(want.stdout, etcdIds), `${command}: stdout`);
    assert.equal(normalize(got.errors, raftkvIds), normalize(want.errors, etcdIds), `${command}: errors`);
  }
  // What the mask hides is still checked: right after a renewal, the remaining time is within the TTL.
  const remaining = actual.map(([, outcome]) => /remaining\((\d+)s\)/.exec(outcome.stdout)?.[1]).filter((value) => value !== undefined);
  assert.ok(remaining.length >= 2);
  for (const seconds of remaining) assert.ok(Number(seconds) >= 1 && Number(seconds) <= 60, `remaining ${seconds}s`);
});

// ---- The HTTP/JSON lease paths ----

/** A JSON body (or, for keepalive, its lines) with what legitimately differs masked. */
function normalizeJson(text: string): unknown {
  const masked = text
    .replace(/"(cluster_id|member_id|raft_term)":"\d+"/g, '"$1":"<$1>"')
    // The remaining seconds of a time-to-live (never -1: a missing lease's -1 is compared).
    .replace(/"TTL":"(\d+)","grantedTTL"/g, '"TTL":"<remaining>","grantedTTL"');
  return masked.split('\n').filter((line) => line.trim() !== '').map((line) => JSON.parse(line) as unknown);
}

/** Requests with ids the client picks, so both servers' answers compare without renaming. */
const REQUESTS: readonly (readonly [string, object])[] = [
  ['/v3/lease/grant', { TTL: '60', ID: '4660' }],
  ['/v3/lease/grant', { TTL: '60', ID: '4660' }],
  ['/v3/lease/grant', { TTL: '9000000001', ID: '4661' }],
  ['/v3/lease/grant', { TTL: '120', ID: '4662' }],
  ['/v3/kv/put', { key: b64('hl/1'), value: b64('one'), lease: '4660' }],
  ['/v3/kv/put', { key: b64('hl/2'), value: b64('two'), lease: '4662' }],
  ['/v3/kv/put', { key: b64('hl/3'), value: b64('three'), lease: '999' }],
  ['/v3/lease/keepalive', { ID: '4660' }],
  ['/v3/lease/keepalive', { ID: '999' }],
  ['/v3/lease/timetolive', { ID: '4660', keys: true }],
  ['/v3/kv/lease/timetolive', { ID: '4662' }],
  ['/v3/lease/timetolive', { ID: '999' }],
  ['/v3/lease/leases', {}],
  ['/v3/lease/revoke', { ID: '4660' }],
  ['/v3/kv/lease/revoke', { ID: '4660' }],
  ['/v3/kv/range', { key: b64('hl/'), range_end: b64('hl0') }],
  ['/v3/kv/lease/revoke', { ID: '4662' }],
  ['/v3/kv/lease/leases', {}],
];

test('the HTTP/JSON lease paths answer as etcd does', { timeout: 60_000 }, async () => {
  assert.ok(etcd !== null);
  for (const [path, body] of REQUESTS) {
    const expected = await post(etcd.endpoint, path, body);
    const actual = await post(jsonAddress, path, body);
    const what = `POST ${path} ${JSON.stringify(body)}`;
    assert.equal(actual.status, expected.status, `${what}: status (raftkv said ${actual.text}, etcd ${expected.text})`);
    if (expected.status === 200) assert.deepEqual(normalizeJson(actual.text), normalizeJson(expected.text), `${what}: body`);
    else {
      const [want, got] = [JSON.parse(expected.text) as { code: number; message: string }, JSON.parse(actual.text) as { code: number; message: string }];
      assert.deepEqual([got.code, got.message], [want.code, want.message], `${what}: error`);
    }
  }
});

// ---- raftkv's JSON answers against its own gRPC answers ----

type Call = (request: object) => Promise<Record<string, unknown>>;

function leaseClient(address: string): { call: (method: string) => Call; keepAlive: (ids: readonly string[]) => Promise<Record<string, unknown>[]>; close: () => void } {
  const definition = protoLoader.loadSync('etcd/api/etcdserverpb/rpc.proto', {
    includeDirs: [fileURLToPath(new URL('../../proto', import.meta.url))],
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition).etcdserverpb as grpc.GrpcObject;
  const client = new (pkg.Lease as grpc.ServiceClientConstructor)(address, grpc.credentials.createInsecure());
  const methods = client as unknown as Record<string, (r: object, o: object, c: (e: Error | null, v: Record<string, unknown>) => void) => void>;
  return {
    call: (method) => (body) =>
      new Promise((resolve, reject) => {
        methods[method]?.call(client, body, { deadline: new Date(Date.now() + 10_000) }, (error, value) => (error === null ? resolve(value) : reject(error)));
      }),
    keepAlive: (ids) =>
      new Promise((resolve, reject) => {
        const stream = (client as unknown as { LeaseKeepAlive: () => grpc.ClientDuplexStream<object, Record<string, unknown>> }).LeaseKeepAlive();
        const responses: Record<string, unknown>[] = [];
        stream.on('data', (response: Record<string, unknown>) => responses.push(response));
        stream.on('error', reject);
        stream.on('end', () => resolve(responses));
        for (const ID of ids) stream.write({ ID });
        stream.end();
      }),
    close: () => client.close(),
  };
}

test('raftkv answers the JSON lease paths as it answers gRPC', { timeout: 60_000 }, async () => {
  assert.ok(grpcGateway !== null && httpGateway !== null);
  const http = httpGateway.address;
  const lease = leaseClient(grpcGateway.address);
  try {
    const viaGrpc = await lease.call('LeaseGrant')({ TTL: '45', ID: '0' });
    const viaJson = JSON.parse((await post(http, '/v3/lease/grant', { TTL: '45' })).text) as Record<string, string>;
    assert.equal(viaJson.TTL, viaGrpc.TTL, 'grant: TTL');
    assert.notEqual(viaJson.ID, viaGrpc.ID, 'the server picks a fresh id each time');
    await post(http, '/v3/kv/put', { key: b64('g/1'), value: b64('x'), lease: viaGrpc.ID });

    const grpcRenewals = await lease.keepAlive([String(viaGrpc.ID), '999']);
    const jsonRenewals = normalizeJson((await post(http, '/v3/lease/keepalive', `${JSON.stringify({ ID: viaGrpc.ID })}\n${JSON.stringify({ ID: '999' })}`)).text);
    assert.deepEqual(grpcRenewals.map((response) => [response.ID, response.TTL]), [[viaGrpc.ID, '45'], ['999', '0']], 'gRPC keep-alives');
    assert.deepEqual((jsonRenewals as { result: Record<string, string> }[]).map(({ result }) => [result.ID, result.TTL ?? '0']), [[viaGrpc.ID, '45'], ['999', '0']], 'JSON keep-alives');

    const ttlGrpc = await lease.call('LeaseTimeToLive')({ ID: viaGrpc.ID, keys: true });
    const ttlJson = JSON.parse((await post(http, '/v3/lease/timetolive', { ID: viaGrpc.ID, keys: true })).text) as Record<string, unknown>;
    assert.deepEqual([ttlJson.ID, ttlJson.grantedTTL, ttlJson.keys], [ttlGrpc.ID, ttlGrpc.grantedTTL, (ttlGrpc.keys as Buffer[]).map((key) => key.toString('base64'))]);
    assert.deepEqual(ttlJson.keys, [b64('g/1')]);

    const listed = (await lease.call('LeaseLeases')({})).leases as { ID: string }[];
    const listedJson = (JSON.parse((await post(http, '/v3/lease/leases', {})).text) as { leases: { ID: string }[] }).leases;
    assert.deepEqual(listedJson.map((each) => each.ID).sort(), listed.map((each) => each.ID).sort());
    for (const id of [viaGrpc.ID, viaJson.ID]) assert.ok(listed.some((each) => each.ID === id), `lease ${String(id)} is listed`);

    const revokedJson = await post(http, '/v3/lease/revoke', { ID: viaJson.ID });
    assert.equal(revokedJson.status, 200);
    await lease.call('LeaseRevoke')({ ID: viaGrpc.ID });
    await assert.rejects(lease.call('LeaseRevoke')({ ID: viaGrpc.ID }), { code: grpc.status.NOT_FOUND, details: 'etcdserver: requested lease not found' });
    const again = await post(http, '/v3/lease/revoke', { ID: viaGrpc.ID });
    assert.deepEqual([again.status, (JSON.parse(again.text) as { message: string }).message], [404, 'etcdserver: requested lease not found']);
    assert.equal((await lease.call('LeaseTimeToLive')({ ID: viaGrpc.ID })).TTL, '-1');
  } finally {
    lease.close();
  }
});

test('lease ids beyond 2^53: a grant is refused, anything else finds no lease', { timeout: 30_000 }, async () => {
  assert.ok(grpcGateway !== null && httpGateway !== null);
  const lease = leaseClient(grpcGateway.address);
  try {
    const big = '9007199254740993'; // 2^53 + 1
    await assert.rejects(lease.call('LeaseGrant')({ TTL: '10', ID: big }), (error: grpc.ServiceError) => {
      assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
      assert.match(error.details, /raftkv lease ids are from 1 to 9007199254740991; 9007199254740993 is not/);
      return true;
    });
    await assert.rejects(lease.call('LeaseGrant')({ TTL: '10', ID: '-5' }), { code: grpc.status.INVALID_ARGUMENT });
    const refused = await post(httpGateway.address, '/v3/lease/grant', { TTL: '10', ID: big });
    assert.equal(refused.status, 400);
    await assert.rejects(lease.call('LeaseRevoke')({ ID: big }), { code: grpc.status.NOT_FOUND });
    const gone = await lease.call('LeaseTimeToLive')({ ID: big });
    assert.deepEqual([gone.ID, gone.TTL], [big, '-1'], 'the id is echoed exactly');
    const renewals = await lease.keepAlive([big]);
    assert.deepEqual(renewals.map((response) => [response.ID, response.TTL]), [[big, '0']]);
    const tooLong = await lease.call('LeaseGrant')({ TTL: '9000000001' }).catch((error: grpc.ServiceError) => error);
    assert.deepEqual([(tooLong as grpc.ServiceError).code, (tooLong as grpc.ServiceError).details], [grpc.status.OUT_OF_RANGE, 'etcdserver: too large lease TTL']);
  } finally {
    lease.close();
  }
});

test('one keep-alive stream renews many leases, answering in request order', { timeout: 30_000 }, async () => {
  assert.ok(grpcGateway !== null);
  const lease = leaseClient(grpcGateway.address);
  try {
    const granted: string[] = [];
    for (const ttl of [30, 31, 32, 33, 34]) granted.push(String((await lease.call('LeaseGrant')({ TTL: String(ttl) })).ID));
    // More requests than the renewals a stream runs at once, live and missing leases interleaved: missing ones
    // raftkv may hold (renewed through Raft, refused there) and ids beyond 2^53 (answered at once, so early).
    const missing = (index: number): string => (index % 2 === 0 ? String(900_000 + index) : String(2n ** 53n + BigInt(index)));
    const requests = Array.from({ length: 80 }, (_, index) => (index % 3 === 2 ? missing(index) : granted[index % granted.length] ?? ''));
    const responses = await lease.keepAlive(requests);
    const expected = requests.map((id) => [id, granted.includes(id) ? String(30 + granted.indexOf(id)) : '0']);
    assert.deepEqual(responses.map((response) => [response.ID, response.TTL]), expected);
    for (const id of granted) await lease.call('LeaseRevoke')({ ID: id });
  } finally {
    lease.close();
  }
});

test('a grant beyond leasesMax is RESOURCE_EXHAUSTED', { timeout: 30_000 }, async () => {
  const small = await createCluster({ size: 1, seed: 37, memberOptions: { leasesMax: 2 } });
  const gateway = await GrpcGateway.start(await small.waitForLeader(), { listen: '127.0.0.1:0' });
  const lease = leaseClient(gateway.address);
  try {
    for (const id of ['1', '2']) await lease.call('LeaseGrant')({ TTL: '30', ID: id });
    await assert.rejects(lease.call('LeaseGrant')({ TTL: '30', ID: '3' }), (error: grpc.ServiceError) => {
      assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.match(error.details, /^etcdserver: .*2 leases/);
      return true;
    });
  } finally {
    lease.close();
    await gateway.close();
    await small.close();
  }
});
