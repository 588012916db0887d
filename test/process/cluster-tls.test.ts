// Three raftkv processes on 127.0.0.1 over mutual TLS, with certificates
// made by the openssl CLI: the kill -9 / restart scenario of
// cluster-tcp.test.ts, then a member started with a certificate from
// another CA, which cannot join (it learns nothing, and the others log the
// refused handshakes) until it restarts with its real certificate.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeCa, makeMemberCertificate } from '../transport/tcp-certs.ts';
import { killAndRestartScenario, ProcessCluster, waitFor } from './harness.ts';
import type { TlsFiles } from './harness.ts';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

test('3 processes over TLS: kill -9 and restart lose nothing; a wrong certificate cannot join', { timeout: 150_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'raftkv-processes-tls-'));
  const certificates = join(root, 'certs');
  mkdirSync(certificates);
  const ca = makeCa(certificates, 'cluster-ca');
  const files = new Map<number, TlsFiles>();
  for (const id of [1, 2, 3]) {
    const member = makeMemberCertificate(certificates, ca, `member-${id}`);
    files.set(id, { ca: ca.certPath, cert: member.certPath, key: member.keyPath });
  }
  const rogueCa = makeCa(certificates, 'rogue-ca');
  const rogue = makeMemberCertificate(certificates, rogueCa, 'member-3', 'rogue-member-3');
  const rogueFiles: TlsFiles = { ca: ca.certPath, cert: rogue.certPath, key: rogue.keyPath };

  const cluster = await ProcessCluster.create(root, [1, 2, 3], (id) => files.get(id)!);
  try {
    await Promise.all(cluster.ids.map((id) => cluster.start(id)));
    await killAndRestartScenario(cluster);

    // Member 3 comes back with a certificate the cluster's CA did not sign.
    await Promise.all([cluster.start(1), cluster.start(2), cluster.start(3, rogueFiles)]);
    await cluster.leader([1, 2]);
    for (let index = 0; index < 5; index++) assert.ok(await cluster.put(1 + (index % 2), `r/${index}`, `r${index}`), `put r/${index}`);
    assert.equal((await cluster.read(1, 'r/')).size, 5);
    await sleep(1_000); // twenty heartbeat intervals: ample time for a member that could connect
    assert.equal((await cluster.read(3, 'r/', true)).size, 0, 'the member with the wrong certificate learned nothing');
    const status = await cluster.call(3, '/v3/maintenance/status', {});
    assert.equal(status.body.leader, undefined, 'and knows no leader');
    await waitFor(() => /refused a TLS connection/.test(cluster.stderrOf(1) + cluster.stderrOf(2)), 'the refusal in the members\' logs');

    // With its real certificate it joins and catches up.
    await cluster.stop(3, 'SIGKILL');
    await cluster.start(3);
    await waitFor(async () => (await cluster.read(3, 'r/', true)).size === 5, 'member 3 to catch up');
    for (const id of cluster.ids) assert.equal((await cluster.stop(id, 'SIGTERM')).code, 0);
  } finally {
    await cluster.killAll();
    rmSync(root, { recursive: true, force: true });
  }
});
