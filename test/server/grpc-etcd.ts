// Shared by the tests that compare raftkv with a real etcd: make sure etcd
// and etcdctl are installed (or fail saying how to install them), run a
// throwaway one-member etcd on free loopback ports, and run etcdctl.

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function ensureEtcd(): void {
  const have = (command: string): boolean => spawnSync(command, [command === 'etcd' ? '--version' : 'version'], { stdio: 'ignore' }).status === 0;
  if (have('etcd') && have('etcdctl')) return;
  const install = spawnSync('apt-get', ['install', '-y', 'etcd-server', 'etcd-client'], { stdio: 'inherit', timeout: 240_000 });
  assert.ok(
    have('etcd') && have('etcdctl'),
    `this test needs etcd and etcdctl on PATH; installing them failed (apt-get exit ${String(install.status)}): apt-get install -y etcd-server etcd-client`,
  );
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface RealEtcd {
  /** "127.0.0.1:port" of its client endpoint (gRPC and the HTTP/JSON gateway). */
  readonly endpoint: string;
  readonly peerUrl: string;
  stop(): Promise<void>;
}

/**
 * Starts etcd named "raftkv-1" (so member names match) in a temporary
 * directory; `isReady` polls it. A free port can be taken by another test
 * between freePort() and etcd's bind, and etcd then exits at once: that start
 * is retried on fresh ports (3 tries). A start gets 30 s, for the machine
 * may be busy with every other test file.
 */
export async function startEtcd(isReady: (endpoint: string) => Promise<boolean>): Promise<RealEtcd> {
  ensureEtcd();
  const failures: string[] = [];
  for (let attempt = 1; attempt <= 3; attempt++) {
    const started = await tryStartEtcd(isReady);
    if ('endpoint' in started) return started;
    failures.push(`try ${attempt}: ${started.failure}`);
  }
  assert.fail(`etcd did not become ready:\n${failures.join('\n')}`);
}

async function tryStartEtcd(isReady: (endpoint: string) => Promise<boolean>): Promise<RealEtcd | { failure: string }> {
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const endpoint = `127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const directory = await mkdtemp(join(tmpdir(), 'raftkv-etcd-'));
  const child: ChildProcess = spawn('etcd', [
    '--name', 'raftkv-1', '--data-dir', join(directory, 'etcd'),
    '--listen-client-urls', `http://${endpoint}`, '--advertise-client-urls', `http://${endpoint}`,
    '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl, '--initial-cluster', `raftkv-1=${peerUrl}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderrTail = '';
  child.stderr?.on('data', (piece: Buffer) => {
    stderrTail = (stderrTail + piece.toString()).slice(-1_000);
  });
  let exited: string | null = null;
  child.once('exit', (code, signal) => {
    exited = `etcd exited (code ${String(code)}, signal ${String(signal)})`;
  });
  const stop = async (): Promise<void> => {
    child.kill('SIGKILL');
    await rm(directory, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  try {
    while (!(await isReady(endpoint))) {
      if (exited !== null || Date.now() > deadline) {
        await stop();
        return { failure: `${exited ?? 'not ready after 30 s'}; its last output: ${stderrTail.trim().split('\n').slice(-2).join(' | ')}` };
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { endpoint, peerUrl, stop };
}

export interface Outcome {
  readonly stdout: string;
  /** Only etcdctl's "Error: …" lines: its other stderr lines are timestamped logs. */
  readonly errors: string;
  readonly status: number | null;
}

/** Runs etcdctl without blocking: the raftkv member under test lives in this process. */
export function etcdctl(endpoint: string, args: readonly string[], input = ''): Promise<Outcome> {
  const child = spawn('etcdctl', ['--dial-timeout=3s', '--command-timeout=5s', `--endpoints=${endpoint}`, ...args], {
    env: { ...process.env, ETCDCTL_API: '3' },
  });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout.on('data', (piece: Buffer) => stdout.push(piece));
  child.stderr.on('data', (piece: Buffer) => stderr.push(piece));
  // etcdctl may exit without reading its stdin (most commands do): a write that then fails with EPIPE is not an error.
  child.stdin.on('error', () => undefined);
  child.stdin.end(input);
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      const errors = Buffer.concat(stderr)
        .toString('utf8')
        .split('\n')
        .filter((line) => line.startsWith('Error:') || line.startsWith('Failed'))
        .join('\n');
      resolve({ stdout: Buffer.concat(stdout).toString('utf8'), errors, status });
    });
  });
}

export const b64 = (text: string): string => Buffer.from(text).toString('base64');

/** POSTs `body` (an object as JSON, or a string as is: several requests, one per line). */
export function post(address: string, path: string, body: object | string): Promise<{ status: number; text: string }> {
  const [host, port] = address.split(':') as [string, string];
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const outgoing = request({ host, port: Number(port), path, method: 'POST', agent: false, headers: { 'content-length': Buffer.byteLength(text) } }, (response) => {
      const pieces: Buffer[] = [];
      response.on('data', (piece: Buffer) => pieces.push(piece));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(pieces).toString('utf8') }));
    });
    outgoing.on('error', reject);
    outgoing.setTimeout(10_000, () => outgoing.destroy(new Error(`POST ${path} timed out`)));
    outgoing.end(text);
  });
}
