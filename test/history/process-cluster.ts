// A cluster of `raftkv serve` processes on 127.0.0.1 for the multi-process
// nemesis: each member a real OS process (TCP transport, classic-level data
// directory under one temporary root, an HTTP/JSON client endpoint that also
// serves txn and hashkv through --grpc-listen), and a LinkProxy on every
// directed peer link, so member i's --peers entry for member j is the port of
// proxy i→j. The nemesis reaches the processes through signals (SIGKILL and
// restart from the same data directory, SIGSTOP / SIGCONT) and the links
// through the proxies. A process that exits when nobody signalled it is
// recorded as a problem. Every child is SIGKILLed when this process exits,
// whatever way it exits (short of SIGKILL itself).

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePorts } from '../process/harness.ts';
import { LinkProxy } from './process-proxy.ts';

const launcher = fileURLToPath(new URL('../../bin/raftkv.mjs', import.meta.url));
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Every child process started here and not yet exited, for the exit-time sweep. */
const liveChildren = new Set<ChildProcess>();
let sweepInstalled = false;

function installSweep(): void {
  if (sweepInstalled) return;
  sweepInstalled = true;
  const sweep = (): void => {
    for (const child of liveChildren) child.kill('SIGKILL');
  };
  process.on('exit', sweep);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      sweep();
      process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1));
    });
  }
}

export interface ProcessClusterOptions {
  readonly root: string;
  readonly ids: readonly number[];
  readonly tickMs: number;
  readonly electionTicks: number;
  readonly requestTimeoutMs: number;
  readonly snapshotEntries: number;
}

interface Member {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stdout: string;
  stderr: string;
  /** The nemesis (or the teardown) signalled it to end: its exit is expected. */
  ending: boolean;
  paused: boolean;
}

const OUTPUT_CHARS_MAX = 200_000;

export class NemesisCluster {
  private readonly members = new Map<number, Member>();
  private readonly peerPorts = new Map<number, number>();
  private readonly clientPorts = new Map<number, number>();
  private readonly grpcPorts = new Map<number, number>();
  /** `${from}>${to}` → the proxy member `from` reaches member `to` through. */
  private readonly proxies = new Map<string, LinkProxy>();
  /** Exits nobody asked for (a member that stopped on its own), with the end of its output. */
  readonly unexpectedExits: string[] = [];
  starts = 0;

  private constructor(readonly options: ProcessClusterOptions) {}

  static async create(options: ProcessClusterOptions): Promise<NemesisCluster> {
    installSweep();
    const cluster = new NemesisCluster(options);
    const ports = await freePorts(options.ids.length * 3);
    options.ids.forEach((id, position) => {
      cluster.peerPorts.set(id, ports[3 * position] as number);
      cluster.clientPorts.set(id, ports[3 * position + 1] as number);
      cluster.grpcPorts.set(id, ports[3 * position + 2] as number);
    });
    for (const from of options.ids) {
      for (const to of options.ids) {
        if (from !== to) cluster.proxies.set(`${from}>${to}`, await LinkProxy.start(0, cluster.peerPorts.get(to) as number));
      }
    }
    return cluster;
  }

  get ids(): readonly number[] {
    return this.options.ids;
  }

  clientPort(id: number): number {
    return this.clientPorts.get(id) as number;
  }

  isRunning(id: number): boolean {
    return this.members.has(id);
  }

  isPaused(id: number): boolean {
    return this.members.get(id)?.paused === true;
  }

  proxy(from: number, to: number): LinkProxy {
    const proxy = this.proxies.get(`${from}>${to}`);
    if (proxy === undefined) throw new RangeError(`no link ${from}>${to}`);
    return proxy;
  }

  /** The proxies of every link that starts or ends at `id`. */
  linksOf(id: number): LinkProxy[] {
    return this.ids.filter((other) => other !== id).flatMap((other) => [this.proxy(id, other), this.proxy(other, id)]);
  }

  allLinks(): LinkProxy[] {
    return [...this.proxies.values()];
  }

  /** Starts member `id` from its data directory and waits for its ready line. */
  async start(id: number): Promise<void> {
    if (this.members.has(id)) throw new Error(`member ${id} is already running`);
    const peers = this.ids.filter((other) => other !== id).map((other) => `n${other}=127.0.0.1:${this.proxy(id, other).port}`);
    const options = this.options;
    const args = [
      launcher, 'serve', '--name', `n${id}`, '--data-dir', join(options.root, `n${id}`),
      '--listen', `127.0.0.1:${this.peerPorts.get(id)}`, '--peers', peers.join(','),
      '--client-listen', `127.0.0.1:${this.clientPorts.get(id)}`, '--grpc-listen', `127.0.0.1:${this.grpcPorts.get(id)}`,
      '--tick-ms', String(options.tickMs), '--election-ticks', String(options.electionTicks),
      '--request-timeout-ms', String(options.requestTimeoutMs), '--snapshot-entries', String(options.snapshotEntries),
    ];
    const env = { ...process.env };
    delete env['DEBUG'];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    liveChildren.add(child);
    const member: Member = {
      child,
      exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
      stdout: '',
      stderr: '',
      ending: false,
      paused: false,
    };
    const keep = (text: string): string => (text.length > OUTPUT_CHARS_MAX ? text.slice(-OUTPUT_CHARS_MAX / 2) : text);
    child.stdout?.on('data', (data: Buffer) => (member.stdout = keep(member.stdout + data.toString('utf8'))));
    child.stderr?.on('data', (data: Buffer) => (member.stderr = keep(member.stderr + data.toString('utf8'))));
    this.members.set(id, member);
    this.starts += 1;
    void member.exited.then(({ code, signal }) => {
      liveChildren.delete(child);
      if (this.members.get(id) === member) this.members.delete(id);
      if (!member.ending) {
        this.unexpectedExits.push(`member ${id} (pid ${child.pid}) exited on its own: code ${code}, signal ${signal}\n${member.stdout.slice(-1000)}\n${member.stderr.slice(-3000)}`);
      }
    });
    const deadline = Date.now() + 60_000;
    while (!member.stdout.includes('ready') && child.exitCode === null && child.signalCode === null && Date.now() < deadline) await sleep(20);
    if (!member.stdout.includes('ready')) {
      throw new Error(`member ${id} did not start:\n${member.stdout}\n${member.stderr.slice(-3000)}`);
    }
  }

  /** SIGKILL: the member dies at once, mid-write or not. Resolves when it is gone. */
  async kill(id: number): Promise<void> {
    const member = this.members.get(id);
    if (member === undefined) return;
    member.ending = true;
    member.child.kill('SIGKILL');
    await member.exited;
  }

  /** SIGSTOP: the process freezes (its sockets stay open, the kernel still accepts connections). */
  pause(id: number): void {
    const member = this.members.get(id);
    if (member === undefined || member.paused) return;
    member.paused = true;
    member.child.kill('SIGSTOP');
  }

  resume(id: number): void {
    const member = this.members.get(id);
    if (member === undefined || !member.paused) return;
    member.paused = false;
    member.child.kill('SIGCONT');
  }

  /** SIGTERM: a clean close; resolves with the exit code (0 when the member closed cleanly). */
  async terminate(id: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
    const member = this.members.get(id);
    if (member === undefined) throw new Error(`member ${id} is not running`);
    this.resume(id);
    member.ending = true;
    member.child.kill('SIGTERM');
    const timer = setTimeout(() => member.child.kill('SIGKILL'), 15_000);
    const ended = await member.exited;
    clearTimeout(timer);
    return { ...ended, output: `${member.stdout.slice(-1000)}\n${member.stderr.slice(-2000)}` };
  }

  /** Kills every process and closes every proxy (teardown; idempotent). */
  async destroy(): Promise<void> {
    await Promise.all([...this.members.keys()].map((id) => this.kill(id)));
    await Promise.all(this.allLinks().map((proxy) => proxy.close()));
  }
}
