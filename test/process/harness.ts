// Runs raftkv members as real OS processes (`bin/raftkv.mjs serve`) on
// 127.0.0.1 and talks to them through their HTTP/JSON client endpoint:
// start, SIGKILL, restart, SIGTERM, put / range / status, and a scenario
// that checks no acknowledged write is lost across a kill -9 and restart.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const launcher = fileURLToPath(new URL('../../bin/raftkv.mjs', import.meta.url));

export interface TlsFiles {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface Reply {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

interface Running {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stdout: string;
  stderr: string;
}

/** The first port the kernel hands out for a bind to port 0 or an outgoing connection (Linux; 32768 elsewhere). */
function ephemeralLow(): number {
  try {
    const low = Number.parseInt(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0] ?? '', 10);
    return Number.isSafeInteger(low) && low > PORTS_LOW + PORT_BLOCKS ? low : 32768;
  } catch {
    return 32768;
  }
}

const PORTS_LOW = 20000;
const PORT_BLOCKS = 64;
/** Where this process's next port is tried, within its block: from a random start, so two processes sharing a block rarely meet. */
let portsTaken = Math.floor(Math.random() * 1_000_000);

/** Whether 127.0.0.1:port can be listened on now. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * Ports on 127.0.0.1 for member processes to listen on later. Not ports
 * the kernel picked (bound to 0, read and released): until the member binds
 * one, any bind to port 0 or outgoing connection on the machine may be given
 * it, and a nemesis run failed with EADDRINUSE that way. These come from
 * below the ephemeral range, which the kernel never hands out, in a block of
 * this process's own (test files run as processes side by side), each one
 * checked free by listening on it.
 */
export async function freePorts(count: number): Promise<number[]> {
  const blockSize = Math.floor((ephemeralLow() - PORTS_LOW) / PORT_BLOCKS);
  const blockStart = PORTS_LOW + (process.pid % PORT_BLOCKS) * blockSize;
  const ports: number[] = [];
  for (let tried = 0; ports.length < count; tried++) {
    assert.ok(tried < blockSize, `no ${count} free ports in ${blockStart}-${blockStart + blockSize - 1}`);
    const port = blockStart + (portsTaken++ % blockSize);
    if (await portFree(port)) ports.push(port);
  }
  return ports;
}

export const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');
export const unb64 = (text: unknown): string => Buffer.from(String(text ?? ''), 'base64').toString('utf8');
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class ProcessCluster {
  private readonly running = new Map<number, Running>();
  private readonly peerPorts = new Map<number, number>();
  private readonly clientPorts = new Map<number, number>();

  private constructor(
    private readonly root: string,
    readonly ids: readonly number[],
    private readonly tls: ((id: number) => TlsFiles) | undefined,
  ) {}

  static async create(root: string, ids: readonly number[], tls?: (id: number) => TlsFiles): Promise<ProcessCluster> {
    const cluster = new ProcessCluster(root, ids, tls);
    const ports = await freePorts(ids.length * 2);
    ids.forEach((id, position) => {
      cluster.peerPorts.set(id, ports[2 * position] as number);
      cluster.clientPorts.set(id, ports[2 * position + 1] as number);
    });
    return cluster;
  }

  isRunning(id: number): boolean {
    return this.running.has(id);
  }

  /** What a member wrote on stderr so far (its DEBUG=raftkv:transport* log). */
  stderrOf(id: number): string {
    return this.running.get(id)?.stderr ?? '';
  }

  /** Starts member `id` (its data directory survives restarts) and waits for its ready line. */
  async start(id: number, tls: TlsFiles | undefined = this.tls?.(id)): Promise<void> {
    assert.ok(!this.running.has(id), `member ${id} is already running`);
    const peers = this.ids.filter((other) => other !== id).map((other) => `n${other}=127.0.0.1:${this.peerPorts.get(other)}`);
    const args = [
      launcher, 'serve', '--name', `n${id}`, '--data-dir', join(this.root, `n${id}`),
      '--listen', `127.0.0.1:${this.peerPorts.get(id)}`, '--peers', peers.join(','),
      '--client-listen', `127.0.0.1:${this.clientPorts.get(id)}`,
      '--tick-ms', '50', '--election-ticks', '10', '--request-timeout-ms', '3000',
    ];
    if (tls !== undefined) args.push('--tls-ca', tls.ca, '--tls-cert', tls.cert, '--tls-key', tls.key);
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DEBUG: 'raftkv:transport*' } });
    const member: Running = {
      child,
      exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
      stdout: '',
      stderr: '',
    };
    child.stdout?.on('data', (data: Buffer) => (member.stdout += data.toString('utf8')));
    child.stderr?.on('data', (data: Buffer) => {
      member.stderr += data.toString('utf8');
      if (member.stderr.length > 1_000_000) member.stderr = member.stderr.slice(-500_000);
    });
    this.running.set(id, member);
    let exited = false;
    void member.exited.then(() => (exited = true));
    const deadline = Date.now() + 30_000;
    while (!member.stdout.includes('ready') && !exited && Date.now() < deadline) await sleep(20);
    const ready = member.stdout.includes('ready');
    assert.ok(ready, `member ${id} did not start:\n${member.stdout}\n${member.stderr.slice(-3000)}`);
  }

  /** Sends a signal and waits for the process to end; resolves with how it ended. */
  async stop(id: number, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }> {
    const member = this.running.get(id);
    assert.ok(member !== undefined, `member ${id} is running`);
    member.child.kill(signal);
    const ended = await member.exited;
    this.running.delete(id);
    return { ...ended, stdout: member.stdout };
  }

  /** Kills whatever is still running (test teardown). */
  async killAll(): Promise<void> {
    for (const id of [...this.running.keys()]) await this.stop(id, 'SIGKILL');
  }

  /** POSTs JSON to a member's client endpoint; a connection failure rejects. */
  call(id: number, path: string, body: unknown, timeoutMs = 8_000): Promise<Reply> {
    const text = JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const outgoing = request(
        { host: '127.0.0.1', port: this.clientPorts.get(id), path, method: 'POST', agent: false, timeout: timeoutMs, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } },
        (response) => {
          const pieces: Buffer[] = [];
          response.on('data', (piece: Buffer) => pieces.push(piece));
          response.on('end', () => {
            try {
              resolve({ status: response.statusCode ?? 0, body: JSON.parse(Buffer.concat(pieces).toString('utf8')) as Record<string, unknown> });
            } catch (error) {
              reject(error as Error);
            }
          });
          response.on('error', reject);
        },
      );
      outgoing.on('timeout', () => outgoing.destroy(new Error('request timed out')));
      outgoing.on('error', reject);
      outgoing.end(text);
    });
  }

  async put(id: number, key: string, value: string): Promise<boolean> {
    const reply = await this.call(id, '/v3/kv/put', { key: b64(key), value: b64(value) }).catch(() => null);
    return reply?.status === 200;
  }

  /** Every key-value under `prefix` as member `id` reads it. */
  async read(id: number, prefix: string, serializable = false): Promise<Map<string, string>> {
    const end = Buffer.from(prefix, 'utf8');
    end[end.length - 1] = (end[end.length - 1] as number) + 1;
    const reply = await this.call(id, '/v3/kv/range', { key: b64(prefix), range_end: end.toString('base64'), ...(serializable ? { serializable: true } : {}) });
    assert.equal(reply.status, 200, `range through member ${id}: ${JSON.stringify(reply.body)}`);
    const kvs = (reply.body.kvs ?? []) as { key: string; value?: string }[];
    return new Map(kvs.map((kv) => [unb64(kv.key), unb64(kv.value)]));
  }

  /** Waits until every running member (or each of `among`) reports the same leader; returns it. */
  async leader(among: readonly number[] = [...this.running.keys()]): Promise<number> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const leaders = await Promise.all(among.map((id) => this.call(id, '/v3/maintenance/status', {}).then((reply) => Number(reply.body.leader ?? 0), () => 0)));
      const first = leaders[0] ?? 0;
      if (first !== 0 && leaders.every((leader) => leader === first) && this.running.has(first)) return first;
      assert.ok(Date.now() < deadline, `no common leader: ${leaders.join(', ')}`);
      await sleep(100);
    }
  }
}

/**
 * The scenario of the issue: write and read through all three processes,
 * SIGKILL the leader while a writer keeps going through the others,
 * restart it from its data directory, and check every acknowledged write
 * on every member; then SIGTERM closes each member cleanly.
 */
export async function killAndRestartScenario(cluster: ProcessCluster): Promise<void> {
  const acknowledged = new Map<string, string>();
  await cluster.leader();
  for (let index = 0; index < 15; index++) {
    const id = cluster.ids[index % cluster.ids.length] as number;
    const key = `k/${String(index).padStart(4, '0')}`;
    let done = false;
    for (let attempt = 0; attempt < 5 && !done; attempt++) done = await cluster.put(id, key, `v${index}@${id}`);
    assert.ok(done, `put ${key} through member ${id}`);
    acknowledged.set(key, `v${index}@${id}`);
  }
  for (const id of cluster.ids) assert.deepEqual(await cluster.read(id, 'k/'), acknowledged, `linearizable read through member ${id}`);

  // A writer keeps writing through whichever members are up.
  let writing = true;
  let written = 0;
  const writer = (async () => {
    for (let index = 1000; writing; index++) {
      const live = cluster.ids.filter((id) => cluster.isRunning(id));
      const id = live[index % live.length] as number;
      const key = `k/${index}`;
      if (await cluster.put(id, key, `w${index}`)) {
        acknowledged.set(key, `w${index}`);
        written++;
      } else {
        await sleep(20);
      }
    }
  })();
  const victim = await cluster.leader();
  await waitFor(() => written >= 5, 'writes before the kill');
  const killed = await cluster.stop(victim, 'SIGKILL');
  assert.equal(killed.signal, 'SIGKILL');
  const beforeRestart = written;
  await waitFor(() => written >= beforeRestart + 10, 'writes with one member down');
  await cluster.start(victim);
  const afterRestart = written;
  await waitFor(() => written >= afterRestart + 5, 'writes after the restart');
  writing = false;
  await writer;

  // No acknowledged write is lost, on any member; the restarted one catches up.
  for (const id of cluster.ids) {
    const seen = await cluster.read(id, 'k/');
    for (const [key, value] of acknowledged) assert.equal(seen.get(key), value, `member ${id} has acknowledged write ${key}`);
  }
  await waitFor(async () => {
    const local = await cluster.read(victim, 'k/', true);
    return [...acknowledged].every(([key, value]) => local.get(key) === value);
  }, `member ${victim}'s own (serializable) copy to catch up`);

  for (const id of cluster.ids) {
    const ended = await cluster.stop(id, 'SIGTERM');
    assert.equal(ended.code, 0, `member ${id} closes cleanly on SIGTERM`);
    assert.match(ended.stdout, /closed/);
  }
}

export async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    assert.ok(Date.now() < deadline, `gave up waiting for ${what}`);
    await sleep(50);
  }
}
