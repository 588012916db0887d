// One seeded multi-process nemesis run (issue 8, part 5): three `raftkv
// serve` processes on 127.0.0.1 over the TCP transport (process-cluster.ts),
// a proxy on every directed peer link (process-proxy.ts), concurrent
// clients doing put / get / delete / compare-and-swap (and a few reads at a
// past revision) over HTTP/JSON on a small key set (process-client.ts), and
// a nemesis that, one disturbance at a time with a heal after each, SIGKILLs
// a process and restarts it on its data directory, SIGKILLs two or all
// three at once, SIGSTOPs one (often the leader) and later SIGCONTs it,
// resets every TCP connection of a member, blackholes links (a member isolated, a bridge, one direction only), or
// two of these at once. The history goes to the same recorder, the same
// linearizability checker and the same revision rules as the in-process
// scenarios. At the end everything heals, a final read of every key joins
// the history, the members must converge (same revision and HashKV hash),
// no process may have exited on its own, and each closes cleanly on SIGTERM.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRandom } from '../../src/raft/random.ts';
import type { RandomSource } from '../../src/raft/random.ts';
import { checkLinearizability } from './checker.ts';
import type { LinearizabilityResult } from './checker.ts';
import { formatReport } from './format.ts';
import { HistoryRecorder } from './history.ts';
import type { Note, Operation, OperationInput, OperationOutput, Value } from './history.ts';
import { MemberClient, READ_ERRORS, RequestFailed, WRITE_FAILED_FOR_SURE, WRITE_UNKNOWN } from './process-client.ts';
import { NemesisCluster } from './process-cluster.ts';
import { checkRevisions } from './revisions.ts';
import type { RevisionViolation } from './revisions.ts';

export const DISTURBANCES = ['kill', 'kill-majority', 'pause', 'reset-connections', 'isolate', 'bridge', 'one-way', 'combined'] as const;
export type Disturbance = (typeof DISTURBANCES)[number];

export interface ProcessNemesisOptions {
  readonly seed: number;
  /** How long the clients run under the nemesis (default 20 s). */
  readonly durationMs?: number;
  /** Concurrent clients (default 12). */
  readonly clients?: number;
  /** Replay command printed on failure. */
  readonly replay?: string;
  /** Progress lines (nemesis actions) as they happen. */
  readonly log?: (line: string) => void;
}

export interface ProcessNemesisResult {
  readonly seed: number;
  readonly operations: readonly Operation[];
  readonly notes: readonly Note[];
  readonly linearizability: LinearizabilityResult;
  readonly revisionViolations: readonly RevisionViolation[];
  readonly stats: { ok: number; failed: number; unknown: number; byKind: Record<string, number>; actions: Record<string, number>; starts: number; durationMs: number; checkMs: number };
  readonly problems: readonly string[];
  readonly report: string;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Member timing: 25 ms ticks (elections after 250–500 ms), a 1.5 s request deadline, a 3 s client timeout. */
const TICK_MS = 25;
const ELECTION_TICKS = 10;
const REQUEST_TIMEOUT_MS = 1_500;
const CLIENT_TIMEOUT_MS = 3_000;

class Workload {
  readonly recorder = new HistoryRecorder(200_000);
  readonly unexpected: string[] = [];
  readonly revisionsSeen: number[] = [];
  private stopped = false;

  constructor(
    private readonly cluster: NemesisCluster,
    private readonly seed: number,
    readonly keys: readonly string[],
  ) {}

  stop(): void {
    this.stopped = true;
  }

  async client(clientId: number): Promise<void> {
    const random = createRandom(this.seed * 1_009 + clientId * 7 + 1);
    const connection = new MemberClient((member) => this.cluster.clientPort(member), CLIENT_TIMEOUT_MS);
    const lastSeen = new Map<string, Value>();
    let sequence = 0;
    try {
      while (!this.stopped) {
        const member = this.cluster.ids[random(this.cluster.ids.length)] as number;
        const key = this.keys[random(this.keys.length)] as string;
        const value = `${this.seed}.${clientId}.${sequence++}`;
        const roll = random(100);
        const past = this.revisionsSeen.length === 0 ? undefined : this.revisionsSeen[this.revisionsSeen.length - 1 - random(Math.min(this.revisionsSeen.length, 64))];
        let input: OperationInput;
        if (roll < 5 && past !== undefined && past > 0) input = { kind: 'getAt', key, revision: Math.max(1, past - random(20)) };
        else if (roll < 40) input = { kind: 'get', key };
        else if (roll < 65) input = { kind: 'put', key, value };
        else if (roll < 93) input = { kind: 'cas', key, expected: random(4) === 0 ? null : (lastSeen.get(key) ?? null), value };
        else input = { kind: 'delete', key };
        const output = await this.perform(connection, clientId, member, input);
        if (output === undefined) {
          await sleep(10 + random(40)); // a member down or busy: do not spin on it
          continue;
        }
        if (output.revision !== undefined && input.kind !== 'getAt') {
          this.revisionsSeen.push(output.revision);
          if (this.revisionsSeen.length > 512) this.revisionsSeen.splice(0, 256);
        }
        if (input.kind === 'put' || (input.kind === 'cas' && output.succeeded === true)) lastSeen.set(key, input.value);
        else if (input.kind === 'delete') lastSeen.set(key, null);
        else if (input.kind === 'get' || input.kind === 'cas') lastSeen.set(key, output.value ?? null);
      }
    } finally {
      connection.close();
    }
  }

  /** Records the invocation, performs it, records the outcome; returns the output when ok. */
  async perform(connection: MemberClient, clientId: number, member: number, input: OperationInput): Promise<OperationOutput | undefined> {
    const operation = this.recorder.invoke(clientId, member, input);
    try {
      const output = await connection.perform(member, input);
      this.recorder.ok(operation, output);
      return output;
    } catch (error) {
      const code = error instanceof RequestFailed ? error.code : 'UNTYPED';
      const isRead = input.kind === 'get' || input.kind === 'getAt';
      const known = isRead ? READ_ERRORS.has(code) : WRITE_FAILED_FOR_SURE.has(code) || WRITE_UNKNOWN.has(code);
      if (!known && this.unexpected.length < 20) this.unexpected.push(`${input.kind} on member ${member}: ${code}: ${(error as Error).message}`);
      if (isRead || WRITE_FAILED_FOR_SURE.has(code)) this.recorder.fail(operation, code);
      else this.recorder.unknown(operation, code);
      return undefined;
    }
  }
}

class Nemesis {
  readonly actions: Record<string, number> = {};
  private readonly killed = new Set<number>();
  private readonly paused = new Set<number>();

  constructor(
    private readonly cluster: NemesisCluster,
    private readonly random: RandomSource,
    private readonly recorder: HistoryRecorder,
    private readonly log: (line: string) => void,
  ) {}

  private note(kind: string, text: string): void {
    this.actions[kind] = (this.actions[kind] ?? 0) + 1;
    this.recorder.note(text);
    this.log(`  nemesis: ${text}`);
  }

  private pick<T>(items: readonly T[]): T {
    return items[this.random(items.length)] as T;
  }

  /** The leader as the running, unpaused members report it (0 when they do not agree or cannot say). */
  async leader(): Promise<number> {
    const live = this.cluster.ids.filter((id) => this.cluster.isRunning(id) && !this.cluster.isPaused(id));
    const connection = new MemberClient((member) => this.cluster.clientPort(member), 500);
    try {
      const leaders = await Promise.all(live.map((id) => connection.post(id, '/v3/maintenance/status', {}).then((reply) => Number(reply.leader ?? 0), () => 0)));
      const first = leaders[0] ?? 0;
      return first !== 0 && leaders.every((leader) => leader === first) ? first : 0;
    } finally {
      connection.close();
    }
  }

  /** A victim: the leader half the time (when there is one), else any member. */
  private async victim(): Promise<{ id: number; isLeader: boolean }> {
    const leader = this.random(2) === 0 ? await this.leader() : 0;
    const id = leader !== 0 ? leader : this.pick(this.cluster.ids);
    return { id, isLeader: leader !== 0 };
  }

  async run(until: number): Promise<void> {
    // Disturbances come from a shuffled deck of every kind, so a short run still meets each of them.
    let deck: Disturbance[] = [];
    while (Date.now() < until) {
      await sleep(200 + this.random(600));
      if (Date.now() >= until) break;
      if (deck.length === 0) deck = this.shuffled(DISTURBANCES);
      const kind = deck.pop() as Disturbance;
      if (kind === 'combined') {
        const single = DISTURBANCES.filter((other): other is Exclude<Disturbance, 'combined'> => other !== 'combined');
        const first = this.pick(single);
        const second = this.pick(single.filter((other) => other !== first));
        this.note('combined', `combined: ${first} + ${second}`);
        await Promise.all([this.disturb(first), this.disturb(second)]);
      } else await this.disturb(kind);
      await sleep(300 + this.random(1_500));
      await this.heal();
    }
  }

  private shuffled<T>(items: readonly T[]): T[] {
    const copy = [...items];
    for (let position = copy.length - 1; position > 0; position--) {
      const other = this.random(position + 1);
      [copy[position], copy[other]] = [copy[other] as T, copy[position] as T];
    }
    return copy;
  }

  private async disturb(kind: Exclude<Disturbance, 'combined'>): Promise<void> {
    const ids = this.cluster.ids;
    switch (kind) {
      case 'kill': {
        const { id, isLeader } = await this.victim();
        if (this.killed.has(id)) return;
        this.note(kind, `SIGKILL member ${id}${isLeader ? ' (the leader)' : ''}`);
        this.killed.add(id);
        this.paused.delete(id);
        await this.cluster.kill(id);
        return;
      }
      case 'kill-majority': {
        // The leader (when known) and one other member at once, or all three (a power cut): every copy of a
        // just-acknowledged write may go, unless it is on disk.
        const leader = await this.leader();
        const first = leader !== 0 ? leader : this.pick(ids);
        const others = this.shuffled(ids.filter((id) => id !== first));
        const victims = [first, ...others.slice(0, this.random(2) === 0 ? 1 : others.length)].filter((id) => !this.killed.has(id));
        if (victims.length === 0) return;
        this.note(kind, `SIGKILL members ${victims.join(' and ')} together${leader !== 0 ? ` (the leader is ${leader})` : ''}`);
        for (const id of victims) {
          this.killed.add(id);
          this.paused.delete(id);
        }
        await Promise.all(victims.map((id) => this.cluster.kill(id)));
        return;
      }
      case 'pause': {
        const { id, isLeader } = await this.victim();
        if (this.killed.has(id) || this.paused.has(id)) return;
        this.note(kind, `SIGSTOP member ${id}${isLeader ? ' (the leader)' : ''}`);
        this.paused.add(id);
        this.cluster.pause(id);
        return;
      }
      case 'reset-connections': {
        const { id } = await this.victim();
        const times = 1 + this.random(3);
        this.note(kind, `reset every TCP connection of member ${id}, ${times} time(s)`);
        for (let round = 0; round < times; round++) {
          for (const link of this.cluster.linksOf(id)) link.resetAll();
          if (round + 1 < times) await sleep(50 + this.random(250));
        }
        return;
      }
      case 'isolate': {
        const { id, isLeader } = await this.victim();
        this.note(kind, `blackhole every link of member ${id}${isLeader ? ' (the leader)' : ''}`);
        for (const link of this.cluster.linksOf(id)) link.blackhole();
        return;
      }
      case 'bridge': {
        const bridge = this.pick(ids);
        const [left, right] = ids.filter((id) => id !== bridge) as [number, number];
        this.note(kind, `blackhole ${left} <-> ${right}; ${bridge} talks to both`);
        this.cluster.proxy(left, right).blackhole();
        this.cluster.proxy(right, left).blackhole();
        return;
      }
      case 'one-way': {
        const from = this.pick(ids);
        const to = this.pick(ids.filter((id) => id !== from));
        this.note(kind, `blackhole ${from} -> ${to} only`);
        this.cluster.proxy(from, to).blackhole();
        return;
      }
    }
  }

  /** Opens every link (resetting its connections half the time), SIGCONTs paused members, restarts killed ones. */
  async heal(): Promise<void> {
    const reset = this.random(2) === 0;
    const blackholed = this.cluster.allLinks().filter((link) => link.linkMode === 'blackhole');
    if (blackholed.length > 0) this.recorder.note(`heal links${reset ? ' (their connections reset)' : ''}`);
    for (const link of blackholed) link.open(reset);
    for (const id of this.paused) {
      this.recorder.note(`SIGCONT member ${id}`);
      this.cluster.resume(id);
    }
    this.paused.clear();
    for (const id of [...this.killed]) {
      this.recorder.note(`restart member ${id}`);
      await this.cluster.start(id);
      this.killed.delete(id);
    }
  }
}

/** Final reads: every key once more, through any member, retried until one answers. */
async function finalReads(cluster: NemesisCluster, workload: Workload): Promise<void> {
  const connection = new MemberClient((member) => cluster.clientPort(member), CLIENT_TIMEOUT_MS);
  try {
    for (const key of workload.keys) {
      for (let attempt = 0; attempt < 20; attempt++) {
        const member = cluster.ids[attempt % cluster.ids.length] as number;
        if ((await workload.perform(connection, 99, member, { kind: 'get', key })) !== undefined) break;
        await sleep(100);
      }
    }
  } finally {
    connection.close();
  }
}

/** Waits until every member reports the same revision and HashKV hash; returns a problem, or null. */
async function converge(cluster: NemesisCluster, timeoutMs: number): Promise<string | null> {
  const connection = new MemberClient((member) => cluster.clientPort(member), CLIENT_TIMEOUT_MS);
  const deadline = Date.now() + timeoutMs;
  let last = '';
  try {
    for (;;) {
      const replies = await Promise.all(
        cluster.ids.map((id) => connection.post(id, '/v3/maintenance/hashkv', {}).then(
          (reply) => ({ id, revision: Number(reply.hash_revision ?? 0), hash: Number(reply.hash ?? 0) }),
          (error: Error) => ({ id, revision: -1, hash: -1, error: error.message }),
        )),
      );
      last = replies.map((reply) => `member ${reply.id}: revision ${reply.revision} hash ${reply.hash}`).join(', ');
      const first = replies[0];
      if (first !== undefined && first.revision >= 0 && replies.every((reply) => reply.revision === first.revision)) {
        return replies.every((reply) => reply.hash === first.hash) ? null : `the members' HashKV differ at the same revision: ${last}`;
      }
      if (Date.now() > deadline) return `the members did not converge within ${timeoutMs} ms: ${last}`;
      await sleep(200);
    }
  } finally {
    connection.close();
  }
}

export async function runProcessNemesis(options: ProcessNemesisOptions): Promise<ProcessNemesisResult> {
  const seed = options.seed;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative integer, got ${seed}`);
  const durationMs = options.durationMs ?? 20_000;
  const log = options.log ?? (() => {});
  const random = createRandom(seed);
  const keys = Array.from({ length: 4 + random(5) }, (_, position) => `k${position}`);
  const root = mkdtempSync(join(tmpdir(), `raftkv-nemesis-${seed}-`));
  const started = Date.now();
  const problems: string[] = [];
  const cluster = await NemesisCluster.create({
    root, ids: [1, 2, 3], tickMs: TICK_MS, electionTicks: ELECTION_TICKS, requestTimeoutMs: REQUEST_TIMEOUT_MS, snapshotEntries: 300 + random(500),
  });
  const workload = new Workload(cluster, seed, keys);
  const nemesis = new Nemesis(cluster, createRandom(seed * 7 + 3), workload.recorder, log);
  try {
    await Promise.all(cluster.ids.map((id) => cluster.start(id)));
    const until = Date.now() + durationMs;
    const clients = Array.from({ length: options.clients ?? 12 }, (_, id) => workload.client(id));
    await nemesis.run(until);
    workload.stop();
    await Promise.all(clients);
    await nemesis.heal();
    await finalReads(cluster, workload);
    const divergence = await converge(cluster, 30_000);
    if (divergence !== null) problems.push(divergence);
    for (const id of cluster.ids) {
      const ended = await cluster.terminate(id);
      if (ended.code !== 0) problems.push(`member ${id} did not close cleanly on SIGTERM (code ${ended.code}, signal ${ended.signal}):\n${ended.output}`);
    }
  } catch (error) {
    problems.push(`the run failed: ${(error as Error).stack ?? String(error)}`);
  } finally {
    workload.stop();
    await cluster.destroy();
    rmSync(root, { recursive: true, force: true });
  }
  // Every exit the nemesis or the teardown asked for is marked: any other is a member that stopped on its own.
  problems.push(...cluster.unexpectedExits.map((exit) => `a process died on its own: ${exit}`));
  const runMs = Date.now() - started;
  const operations = workload.recorder.operations;
  const checkStarted = Date.now();
  const linearizability = checkLinearizability(operations);
  const revisionViolations = checkRevisions(operations);
  const checkMs = Date.now() - checkStarted;
  if (linearizability.verdict !== 'linearizable') problems.push(`the history is ${linearizability.verdict === 'violation' ? 'NOT linearizable' : 'too hard for the checker (unknown)'}`);
  if (revisionViolations.length > 0) problems.push(`${revisionViolations.length} revision rule violations`);
  if (workload.unexpected.length > 0) problems.push(`unexpected errors:\n  ${workload.unexpected.join('\n  ')}`);
  const byKind: Record<string, number> = {};
  for (const operation of operations) byKind[`${operation.input.kind}:${operation.outcome}`] = (byKind[`${operation.input.kind}:${operation.outcome}`] ?? 0) + 1;
  const count = (outcome: string): number => operations.filter((operation) => operation.outcome === outcome).length;
  const stats = { ok: count('ok'), failed: count('fail'), unknown: count('unknown'), byKind, actions: nemesis.actions, starts: cluster.starts, durationMs: runMs, checkMs };
  const replay = options.replay ?? `SEED=${seed} npm test -- process-nemesis`;
  const report = problems.length === 0
    ? ''
    : [
        `process nemesis seed ${seed}: ${problems.join('; ')}`,
        `  ${operations.length} operations (${stats.ok} ok, ${stats.failed} failed for sure, ${stats.unknown} unknown), ${keys.length} keys, nemesis ${JSON.stringify(nemesis.actions)}`,
        formatReport(linearizability, revisionViolations, workload.recorder.notes),
        `replay: ${replay}`,
      ].filter((part) => part.length > 0).join('\n');
  return { seed, operations, notes: workload.recorder.notes, linearizability, revisionViolations, stats, problems, report };
}
