// Real etcdctl (v3 API) against raftkv's gRPC gateway and against a real
// etcd, the same command sequence on both: every output must be the same
// once what legitimately differs is masked — endpoints, member and cluster
// ids, raft terms and indexes, database sizes, versions and hash values.
// Revisions are NOT masked: etcd's store starts at revision 1 and raftkv's
// at 0, so raftkv gets one write to a key no command reads ("0pad") first,
// and from then on every revision must match exactly.
// Needs `etcd` and `etcdctl` (Debian: apt-get install -y etcd-server etcd-client);
// the test installs them if it can and fails clearly if not.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createCluster } from '../../src/server/cluster.ts';
import { GrpcGateway } from '../../src/server/grpc-gateway.ts';
import { etcdctl, startEtcd, type Outcome, type RealEtcd } from './grpc-etcd.ts';

/** A long-running `etcdctl watch`: its stdout so far, and a way to stop it. */
function startWatch(endpoint: string, args: readonly string[]): { output: () => string; stop: (interrupt?: boolean) => Promise<Outcome> } {
  const child = spawn('etcdctl', ['--dial-timeout=3s', `--endpoints=${endpoint}`, 'watch', ...args], { env: { ...process.env, ETCDCTL_API: '3' } });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout.on('data', (piece: Buffer) => stdout.push(piece));
  child.stderr.on('data', (piece: Buffer) => stderr.push(piece));
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  const output = (): string => Buffer.concat(stdout).toString('utf8');
  return {
    output,
    stop: async (interrupt = true) => {
      if (interrupt) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const status = await closed;
      clearTimeout(timer);
      const errors = Buffer.concat(stderr).toString('utf8').split('\n').filter((line) => /^(Error|watch was canceled)/.test(line)).join('\n');
      return { stdout: output(), errors, status };
    },
  };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let attempt = 0; !condition(); attempt++) {
    assert.ok(attempt < 100, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Watches on both servers, then the same writes through etcdctl: a watch
 * replaying history from revision 5 with previous key-values, a JSON watch
 * (headers, created and canceled flags), and a watch from a compacted revision.
 */
async function watchScenario(endpoints: readonly [string, string]): Promise<Outcome[][]> {
  const watches = endpoints.map((endpoint) => [
    startWatch(endpoint, ['foo', '--prefix', '--rev', '5', '--prev-kv']),
    startWatch(endpoint, ['-w', 'json', 'foo/j']),
  ]);
  // Both watches must be registered (the history one has printed its replay) before the writes.
  for (const [history] of watches) await until(() => (history?.output() ?? '').includes('PUT'), 'the replay from revision 5');
  await new Promise((resolve) => setTimeout(resolve, 500));
  for (const endpoint of endpoints) {
    for (const args of [['put', 'foo/w', '1'], ['put', 'foo/w', '2'], ['put', 'foo/j', 'j'], ['del', 'foo/w']]) {
      assert.equal((await etcdctl(endpoint, args)).status, 0, `etcdctl ${args.join(' ')}`);
    }
  }
  const results: Outcome[][] = [];
  for (const [index, endpoint] of endpoints.entries()) {
    const [history, json] = watches[index] ?? [];
    await until(() => (history?.output() ?? '').includes('DELETE\nfoo/w\n'), 'the delete event');
    await until(() => (json?.output() ?? '').includes('"Events"'), 'the JSON event');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const compacted = startWatch(endpoint, ['a', '--rev', '2']);
    results.push([await stopNow(history), await stopNow(json), await compacted.stop(false)]);
  }
  return results;
}

async function stopNow(watch: { stop: () => Promise<Outcome> } | undefined): Promise<Outcome> {
  assert.ok(watch !== undefined);
  return watch.stop();
}

/** Masks what legitimately differs between two servers; everything else must be equal. */
function normalize(text: string, endpoint: string): string {
  return text
    .split(endpoint)
    .join('<endpoint>')
    .replace(/"(cluster_id|member_id|ID|raft_term)":\d+/g, '"$1":<$1>')
    .replace(/^[0-9a-f]+, started, /gm, '<id>, started, ')
    .replace(/^<endpoint>, [0-9a-f]+, [^,]+, [^,]+, (true|false), (true|false), \d+, \d+, \d+, /gm, '<endpoint>, <id>, <version>, <size>, $1, $2, <term>, <index>, <applied>, ')
    .replace(/^<endpoint>, \d+$/gm, '<endpoint>, <hash>')
    .replace(/took = [\d.]+[µmn]?s/g, 'took = <duration>');
}

/** The same sequence for both servers; `[args, stdin?]`. */
const SCRIPT: readonly (readonly [readonly string[], string?])[] = [
  [['put', 'foo', 'bar']],
  [['put', 'foo2', 'baz']],
  [['put', 'foo/a', '1']],
  [['put', 'fop', 'x']],
  [['put', 'foo', 'bar2', '--prev-kv']],
  [['get', 'foo']],
  [['get', 'foo', '--prefix']],
  [['get', 'foo', '--prefix', '--limit', '1']],
  [['get', 'foo', '--prefix', '--keys-only']],
  [['get', 'foo', '--print-value-only']],
  [['get', 'foo', '--rev', '2']],
  [['get', 'foo', '--prefix', '-w', 'json']],
  [['get', 'foo', '--prefix', '--sort-by', 'MODIFY', '--order', 'DESCEND']],
  [['get', 'foo', '--from-key', '--keys-only']],
  [['get', 'foo', '--prefix', '--count-only', '-w', 'json']],
  [['get', 'missing']],
  [['put', 'missing', '--ignore-value']],
  [['txn'], 'value("foo") = "bar2"\n\nput foo bar3\nget foo2\n\nput foo nope\n\n'],
  [['txn'], 'mod("foo") < "3"\nversion("foo2") = "1"\n\nput foo nope\n\ndel foo2\nget foo\n\n'],
  [['txn', '-w', 'json'], 'create("fop") > "0"\n\nget fop\n\n\n'],
  [['txn', '-w', 'json'], 'value("fop") = "x"\n\nput fop y --prev-kv\nget fop\ndel fop2\n\n\n'],
  [['del', 'foo2']],
  [['del', 'foo', '--prefix', '--prev-kv']],
  [['del', 'nothing']],
  [['put', 'a', '1']],
  [['compaction', '5']],
  [['get', 'a', '--rev', '3']],
  [['get', 'a', '--rev', '100']],
  [['compaction', '3']],
  [['get', 'a', '--rev', '5', '-w', 'json']],
  [['member', 'list']],
  [['member', 'list', '-w', 'json']],
  [['endpoint', 'status']],
  [['endpoint', 'hashkv']],
  [['endpoint', 'health']],
];

test('etcdctl prints the same for raftkv as for etcd', { timeout: 120_000 }, async () => {
  const cluster = await createCluster({ size: 1, seed: 11 });
  let etcd: RealEtcd | null = null;
  let gateway: GrpcGateway | null = null;
  try {
    etcd = await startEtcd(async (endpoint) => (await etcdctl(endpoint, ['endpoint', 'health'])).status === 0);
    const { endpoint: etcdEndpoint, peerUrl } = etcd;
    const kv = await cluster.waitForLeader();
    await kv.put('0pad', 'etcd starts at revision 1');
    gateway = await GrpcGateway.start(kv, {
      listen: '127.0.0.1:0',
      describeMember: () => ({ name: 'raftkv-1', peerURLs: [peerUrl], clientURLs: [`http://${gateway?.address ?? ''}`] }),
    });
    const raftkvEndpoint = gateway.address;
    for (const [args, input] of SCRIPT) {
      const expected = await etcdctl(etcdEndpoint, args, input);
      const actual = await etcdctl(raftkvEndpoint, args, input);
      const command = `etcdctl ${args.join(' ')}`;
      assert.equal(actual.status, expected.status, `${command}: exit status (raftkv stderr: ${actual.errors})`);
      assert.equal(normalize(actual.stdout, raftkvEndpoint), normalize(expected.stdout, etcdEndpoint), `${command}: stdout`);
      assert.equal(normalize(actual.errors, raftkvEndpoint), normalize(expected.errors, etcdEndpoint), `${command}: errors`);
    }
    const [expectedWatches, actualWatches] = await watchScenario([etcdEndpoint, raftkvEndpoint]);
    for (const [index, name] of ['watch foo --prefix --rev 5 --prev-kv', 'watch -w json foo/j', 'watch a --rev 2 (compacted)'].entries()) {
      const expected = expectedWatches?.[index];
      const actual = actualWatches?.[index];
      assert.ok(expected !== undefined && actual !== undefined);
      assert.equal(normalize(actual.stdout, raftkvEndpoint), normalize(expected.stdout, etcdEndpoint), `etcdctl ${name}: stdout`);
      assert.equal(normalize(actual.errors, raftkvEndpoint), normalize(expected.errors, etcdEndpoint), `etcdctl ${name}: errors`);
      assert.equal(actual.status, expected.status, `etcdctl ${name}: exit status`);
    }
  } finally {
    await gateway?.close();
    await cluster.close();
    await etcd?.stop();
  }
});
