// An in-process cluster in one call, for tests, demos and benchmarks:
// `createCluster({ size: 3 })` starts three members on one in-memory
// network (faults switchable through `cluster.network`), each with its own
// data directory, and can stop, restart, add and remove members.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError, NoLeaderError } from '../raft/errors.ts';
import { createRandom } from '../raft/random.ts';
import type { NodeId } from '../raft/types.ts';
import { MemoryNetwork } from '../transport/memory.ts';
import { RaftKV } from './raftkv.ts';
import type { RaftKVOptions } from './raftkv.ts';

export interface ClusterOptions {
  /** Voting members to start with. Default 3. */
  readonly size?: number;
  /** Parent directory of the members' data; a temporary one (removed on close) when omitted. */
  readonly dataDir?: string;
  /** Seed of the network's faults and the members' election timers. Default: random. */
  readonly seed?: number;
  /** Options every member gets (tickMs, snapshotEntries, ...). */
  readonly memberOptions?: Partial<Omit<RaftKVOptions, 'id' | 'dataDir' | 'transport' | 'initialMembers'>>;
}

export class Cluster {
  private readonly members = new Map<NodeId, RaftKV>();
  private nextId: NodeId;
  private readonly seed: number;

  private constructor(
    readonly network: MemoryNetwork,
    readonly dataDir: string,
    private readonly ownsDataDir: boolean,
    private readonly memberOptions: ClusterOptions['memberOptions'],
    size: number,
    seed: number,
  ) {
    this.nextId = size + 1;
    this.seed = seed;
  }

  static async create(options: ClusterOptions = {}): Promise<Cluster> {
    const size = options.size ?? 3;
    if (!Number.isSafeInteger(size) || size < 1 || size > 15) throw new InvalidArgumentError('size must be an integer from 1 to 15');
    const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
    const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'raftkv-cluster-')));
    const cluster = new Cluster(new MemoryNetwork({ seed }), dataDir, options.dataDir === undefined, options.memberOptions, size, seed);
    const ids = Array.from({ length: size }, (_, position) => position + 1);
    try {
      await Promise.all(ids.map((id) => cluster.open(id, ids)));
    } catch (error) {
      await cluster.close();
      throw error;
    }
    return cluster;
  }

  /** Ids of the running members. */
  get ids(): NodeId[] {
    return [...this.members.keys()].sort((left, right) => left - right);
  }

  /** The running members. */
  nodes(): RaftKV[] {
    return this.ids.map((id) => this.node(id));
  }

  node(id: NodeId): RaftKV {
    const member = this.members.get(id);
    if (member === undefined) throw new InvalidArgumentError(`member ${id} is not running`);
    return member;
  }

  /** The running member that currently leads, if any. */
  leader(): RaftKV | undefined {
    return this.nodes().find((node) => node.isLeader);
  }

  /** Resolves with the leader once one is elected and known to every running member. */
  async waitForLeader(timeoutMs = 10_000): Promise<RaftKV> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const leader = this.leader();
      if (leader !== undefined) {
        const statuses = await Promise.all(this.nodes().map((node) => node.status()));
        if (statuses.every((status) => status.leader === leader.id)) return leader;
      }
      if (Date.now() > deadline) throw new NoLeaderError(`no leader within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Closes a member; its data stays for restart(). */
  async stop(id: NodeId): Promise<void> {
    const member = this.node(id);
    this.members.delete(id);
    await member.close();
  }

  /** Starts a stopped member again from its data directory. */
  async restart(id: NodeId): Promise<RaftKV> {
    if (this.members.has(id)) throw new InvalidArgumentError(`member ${id} is running`);
    return this.open(id, undefined);
  }

  /** Adds a new voting member through the leader; it catches up by snapshot. */
  async addMember(options: { learner?: boolean } = {}): Promise<RaftKV> {
    const id = this.nextId++;
    const leader = await this.waitForLeader();
    if (options.learner === true) await leader.addLearner(id);
    else await leader.addMember(id);
    return this.open(id, undefined);
  }

  /** Removes a member through the leader and closes it. */
  async removeMember(id: NodeId): Promise<void> {
    const leader = await this.waitForLeader();
    await leader.removeMember(id);
    if (this.members.has(id)) await this.stop(id);
  }

  /**
   * Waits until every running member applied the same log, then returns
   * each member's store hash at the common revision.
   */
  async hashes(timeoutMs = 10_000): Promise<Map<NodeId, string>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const statuses = await Promise.all(this.nodes().map((node) => node.status()));
      const revisions = new Set(statuses.map((status) => status.revision));
      const applied = new Set(statuses.map((status) => status.appliedIndex));
      if (revisions.size === 1 && applied.size === 1) {
        const revision = statuses[0]?.revision ?? 0;
        const hashes = await Promise.all(this.nodes().map(async (node) => [node.id, (await node.hash(revision)).hash] as const));
        return new Map(hashes);
      }
      if (Date.now() > deadline) {
        throw new NoLeaderError(`members did not converge within ${timeoutMs} ms: ${JSON.stringify(statuses.map((s) => [s.id, s.appliedIndex, s.revision]))}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async close(): Promise<void> {
    const members = [...this.members.values()];
    this.members.clear();
    await Promise.allSettled(members.map((member) => member.close()));
    if (this.ownsDataDir) await rm(this.dataDir, { recursive: true, force: true });
  }

  private async open(id: NodeId, initialMembers: readonly NodeId[] | undefined): Promise<RaftKV> {
    const member = await RaftKV.open({
      tickMs: 20,
      ...this.memberOptions,
      id,
      dataDir: join(this.dataDir, `member-${id}`),
      transport: this.network.endpoint(id),
      random: createRandom(this.seed * 31 + id),
      ...(initialMembers === undefined ? {} : { initialMembers }),
    });
    this.members.set(id, member);
    return member;
  }
}

/** Starts an in-process cluster (see ClusterOptions). */
export function createCluster(options: ClusterOptions = {}): Promise<Cluster> {
  return Cluster.create(options);
}
