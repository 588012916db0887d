// The gRPC gateway with mutual TLS, driven by real etcdctl: a client with a
// certificate from the trusted CA reads and writes; one without a client
// certificate, or with one from another CA, is refused.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCluster } from '../../src/server/cluster.ts';
import { GrpcGateway } from '../../src/server/grpc-gateway.ts';
import { makeCa, makeMemberCertificate } from '../transport/tcp-certs.ts';
import { ensureEtcd } from './grpc-etcd.ts';

function etcdctl(args: readonly string[]): Promise<{ stdout: string; status: number | null }> {
  const child = spawn('etcdctl', ['--dial-timeout=2s', '--command-timeout=3s', ...args], { env: { ...process.env, ETCDCTL_API: '3' } });
  const stdout: Buffer[] = [];
  child.stdout.on('data', (piece: Buffer) => stdout.push(piece));
  child.stderr.resume();
  return new Promise((resolve) => child.on('close', (status) => resolve({ stdout: Buffer.concat(stdout).toString('utf8'), status })));
}

test('gRPC gateway over mutual TLS: etcdctl with a trusted client certificate works, others are refused', { timeout: 60_000 }, async () => {
  ensureEtcd();
  const directory = await mkdtemp(join(tmpdir(), 'raftkv-grpc-tls-'));
  const cluster = await createCluster({ size: 1, seed: 29 });
  let gateway: GrpcGateway | null = null;
  try {
    const ca = makeCa(directory, 'ca');
    const other = makeCa(directory, 'other-ca');
    const server = makeMemberCertificate(directory, ca, 'localhost');
    const client = makeMemberCertificate(directory, ca, 'client');
    const stranger = makeMemberCertificate(directory, other, 'client', 'stranger');
    const kv = await cluster.waitForLeader();
    gateway = await GrpcGateway.start(kv, { listen: '127.0.0.1:0', tls: { cert: server.cert, key: server.key, ca: ca.cert } });
    const endpoint = `--endpoints=https://localhost:${gateway.address.split(':')[1] ?? ''}`;
    const trusted = [endpoint, `--cacert=${ca.certPath}`, `--cert=${client.certPath}`, `--key=${client.keyPath}`];
    assert.equal((await etcdctl([...trusted, 'put', 'secure', 'yes'])).stdout, 'OK\n');
    assert.equal((await etcdctl([...trusted, 'get', 'secure', '--print-value-only'])).stdout, 'yes\n');
    const anonymous = await etcdctl([endpoint, `--cacert=${ca.certPath}`, 'get', 'secure']);
    assert.notEqual(anonymous.status, 0, 'no client certificate: refused');
    const untrusted = await etcdctl([endpoint, `--cacert=${ca.certPath}`, `--cert=${stranger.certPath}`, `--key=${stranger.keyPath}`, 'get', 'secure']);
    assert.notEqual(untrusted.status, 0, 'a client certificate from another CA: refused');
    assert.equal(untrusted.stdout, '');
  } finally {
    await gateway?.close();
    await cluster.close();
    await rm(directory, { recursive: true, force: true });
  }
});
