// A real 3-member etcd cluster on loopback, driven by the etcd3 npm client,
// for side-by-side numbers. Needs the `etcd` binary (Debian: etcd-server).

import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { Etcd3 } from 'etcd3';
import type { BenchTarget } from '../load.ts';
import { sleep } from '../load.ts';

export function etcdBinary(): string | undefined {
  for (const candidate of [process.env['ETCD_BINARY'], 'etcd', '/usr/bin/etcd']) {
    if (candidate === undefined) continue;
    const probe = spawnSync(candidate, ['--version'], { encoding: 'utf8' });
    if (probe.status === 0) return candidate;
  }
  return undefined;
}

export async function etcdAvailable(): Promise<boolean> {
  return etcdBinary() !== undefined;
}

export async function startEtcdTarget(directory: string, basePort = 23_790): Promise<BenchTarget> {
  const binary = etcdBinary();
  if (binary === undefined) throw new Error('etcd is not installed');
  const members = [1, 2, 3].map((n) => ({
    name: `e${n}`,
    client: `http://127.0.0.1:${basePort + n * 10}`,
    peer: `http://127.0.0.1:${basePort + n * 10 + 1}`,
  }));
  const initialCluster = members.map((m) => `${m.name}=${m.peer}`).join(',');
  const processes: ChildProcess[] = members.map((member) =>
    spawn(
      binary,
      [
        '--name', member.name,
        '--data-dir', `${directory}/${member.name}`,
        '--listen-client-urls', member.client,
        '--advertise-client-urls', member.client,
        '--listen-peer-urls', member.peer,
        '--initial-advertise-peer-urls', member.peer,
        '--initial-cluster', initialCluster,
        '--initial-cluster-state', 'new',
        '--initial-cluster-token', 'raftkv-bench',
        '--log-level', 'error',
      ],
      { stdio: 'ignore' },
    ),
  );
  const client = new Etcd3({ hosts: members.map((m) => m.client) });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await client.put('bench/ready').value('1');
      break;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(200);
    }
  }
  return {
    name: 'etcd',
    async put(key, value) {
      await client.put(key).value(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
    },
    async get(key, serializable) {
      const request = client.get(key);
      // etcd3's default is linearizable; serializable reads need the raw range call.
      if (serializable) await client.kv.range({ key: Buffer.from(key), serializable: true });
      else await request.buffer();
    },
    async compareAndSwap(key, expected, value) {
      const buffer = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
      const txn = expected === null ? client.if(key, 'Create', '==', 0) : client.if(key, 'Value', '==', Buffer.from(expected));
      const result = await txn.then(client.put(key).value(buffer)).commit();
      return result.succeeded;
    },
    async close() {
      client.close();
      for (const child of processes) child.kill('SIGTERM');
      await Promise.all(processes.map((child) => new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('exit', resolve)))));
    },
  };
}
