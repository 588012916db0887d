// An in-memory network for in-process clusters, tests, demos and
// benchmarks: every node gets a transport endpoint; messages are encoded to
// frames exactly as on a wire (so no object is shared between nodes) and
// delivered asynchronously. Faults can be switched on at any time:
// partitions, one-way cuts, loss, duplication and delay, drawn from a seeded
// random source so a test run can be replayed. Queues are bounded: a link
// with too many frames in flight drops new ones and lets Raft retry.

import createDebug from 'debug';
import { InvalidArgumentError, NodeStoppedError, RaftKVError } from '../raft/errors.ts';
import { createRandom } from '../raft/random.ts';
import type { RandomSource } from '../raft/random.ts';
import type { Message, NodeId } from '../raft/types.ts';
import type { TransportPort } from '../server/ports.ts';
import { decodeMessages, encodeMessages } from './codec.ts';

const log = createDebug('raftkv:transport:memory');

/** A message or snapshot could not reach its peer (partitioned, closed or unknown). */
export class UnreachableError extends RaftKVError {
  constructor(message: string) {
    super('RAFTKV_UNREACHABLE', message);
  }
}

export interface NetworkFaults {
  /** Probability in [0, 1] that a frame is lost. */
  readonly dropRate?: number;
  /** Probability in [0, 1] that a frame is delivered twice. */
  readonly duplicateRate?: number;
  /** Extra delivery delay, uniformly drawn in [min, max] milliseconds. */
  readonly delayMs?: readonly [number, number];
}

export interface MemoryNetworkOptions {
  /** Seed of the fault decisions. Default 1. */
  readonly seed?: number;
  /** Frames in flight per directed link before new ones are dropped. Default 4,096. */
  readonly framesInFlightMax?: number;
}

type Handlers = Parameters<TransportPort['start']>[0];

export class MemoryNetwork {
  private readonly endpoints = new Map<NodeId, MemoryTransport>();
  private readonly cuts = new Set<string>();
  private readonly inFlight = new Map<string, number>();
  private faults: Required<NetworkFaults> = { dropRate: 0, duplicateRate: 0, delayMs: [0, 0] };
  private readonly random: RandomSource;
  private readonly framesInFlightMax: number;
  /** Frames delivered and dropped so far (for tests and benchmarks). */
  readonly counters = { delivered: 0, dropped: 0 };

  constructor(options: MemoryNetworkOptions = {}) {
    this.random = createRandom(options.seed ?? 1);
    this.framesInFlightMax = options.framesInFlightMax ?? 4_096;
    if (!Number.isSafeInteger(this.framesInFlightMax) || this.framesInFlightMax < 1) {
      throw new InvalidArgumentError('framesInFlightMax must be a positive integer');
    }
  }

  /** The transport of one node (created on first use). */
  endpoint(id: NodeId): MemoryTransport {
    let endpoint = this.endpoints.get(id);
    if (endpoint === undefined || endpoint.isClosed) {
      endpoint = new MemoryTransport(this, id);
      this.endpoints.set(id, endpoint);
    }
    return endpoint;
  }

  setFaults(faults: NetworkFaults): void {
    const dropRate = faults.dropRate ?? 0;
    const duplicateRate = faults.duplicateRate ?? 0;
    const delayMs = faults.delayMs ?? [0, 0];
    if (!(dropRate >= 0 && dropRate <= 1) || !(duplicateRate >= 0 && duplicateRate <= 1)) {
      throw new InvalidArgumentError('dropRate and duplicateRate must be within [0, 1]');
    }
    if (!(delayMs[0] >= 0 && delayMs[1] >= delayMs[0])) throw new InvalidArgumentError('delayMs must be [min, max] with 0 <= min <= max');
    this.faults = { dropRate, duplicateRate, delayMs };
  }

  /** Only nodes within the same group can talk; nodes in no group are isolated. */
  partition(...groups: readonly (readonly NodeId[])[]): void {
    this.heal();
    const groupOf = new Map<NodeId, number>();
    groups.forEach((group, position) => group.forEach((id) => groupOf.set(id, position)));
    const all = [...new Set([...this.endpoints.keys(), ...groupOf.keys()])];
    for (const from of all) {
      for (const to of all) {
        if (from !== to && (groupOf.get(from) === undefined || groupOf.get(from) !== groupOf.get(to))) this.cut(from, to);
      }
    }
  }

  /** Cuts a node off from everyone, both ways. */
  isolate(id: NodeId): void {
    for (const other of this.endpoints.keys()) {
      if (other === id) continue;
      this.cut(id, other);
      this.cut(other, id);
    }
  }

  /** Cuts one direction of one link. */
  cut(from: NodeId, to: NodeId): void {
    this.cuts.add(`${from}>${to}`);
  }

  /** Restores every link (faults set with setFaults stay). */
  heal(): void {
    this.cuts.clear();
  }

  isLinked(from: NodeId, to: NodeId): boolean {
    return !this.cuts.has(`${from}>${to}`);
  }

  /** @internal */
  deliver(from: NodeId, to: NodeId, messages: readonly Message[]): void {
    const link = `${from}>${to}`;
    if (!this.isLinked(from, to) || this.random(1_000_000) < this.faults.dropRate * 1_000_000) {
      this.counters.dropped++;
      return;
    }
    const pending = this.inFlight.get(link) ?? 0;
    if (pending >= this.framesInFlightMax) {
      this.counters.dropped++;
      return;
    }
    const frame = encodeMessages(messages);
    const copies = this.random(1_000_000) < this.faults.duplicateRate * 1_000_000 ? 2 : 1;
    for (let copy = 0; copy < copies; copy++) {
      this.inFlight.set(link, (this.inFlight.get(link) ?? 0) + 1);
      const arrive = (): void => {
        this.inFlight.set(link, (this.inFlight.get(link) ?? 1) - 1);
        const target = this.endpoints.get(to);
        if (target === undefined || !this.isLinked(from, to)) {
          this.counters.dropped++;
          return;
        }
        this.counters.delivered++;
        target.receive(decodeMessages(frame));
      };
      const [low, high] = this.faults.delayMs;
      if (high === 0) setImmediate(arrive);
      else setTimeout(arrive, low + this.random(high - low + 1));
    }
  }

  /** @internal Streams a snapshot to a peer; fails if the link breaks meanwhile. */
  async deliverSnapshot(from: NodeId, to: NodeId, message: Message, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    const target = this.endpoints.get(to);
    if (target === undefined || target.isClosed || !this.isLinked(from, to)) {
      throw new UnreachableError(`node ${to} is unreachable from ${from}`);
    }
    const network = this;
    const receiver = target;
    async function* copied(): AsyncGenerator<Uint8Array> {
      for await (const chunk of chunks) {
        if (!network.isLinked(from, to) || receiver.isClosed) throw new UnreachableError(`the link ${from} -> ${to} broke during a snapshot`);
        yield Uint8Array.from(chunk);
      }
    }
    try {
      await target.receiveSnapshot(decodeMessages(encodeMessages([message]))[0] as Message, copied());
    } catch (error) {
      if (error instanceof RaftKVError) throw error;
      throw new UnreachableError(`node ${to} refused the snapshot: ${(error as Error).message}`);
    }
  }

  /** @internal */
  forget(id: NodeId, endpoint: MemoryTransport): void {
    if (this.endpoints.get(id) === endpoint) this.endpoints.delete(id);
  }
}

export class MemoryTransport implements TransportPort {
  private handlers: Handlers | null = null;
  private closed = false;
  /** Peers removed with removePeer: nothing is sent to them until addPeer or updatePeer names them again. */
  private readonly removed = new Set<NodeId>();

  constructor(
    private readonly network: MemoryNetwork,
    readonly id: NodeId,
  ) {}

  get isClosed(): boolean {
    return this.closed;
  }

  start(handlers: Handlers): void {
    this.handlers = handlers;
  }

  send(messages: readonly Message[]): void {
    if (this.closed) return;
    const byPeer = new Map<NodeId, Message[]>();
    for (const message of messages) {
      if (this.removed.has(message.to)) continue;
      let list = byPeer.get(message.to);
      if (list === undefined) byPeer.set(message.to, (list = []));
      list.push(message);
    }
    for (const [to, list] of byPeer) this.network.deliver(this.id, to, list);
  }

  async sendSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    if (this.closed) throw new NodeStoppedError('the transport is closed');
    if (this.removed.has(message.to)) throw new UnreachableError(`node ${message.to} was removed`);
    await this.network.deliverSnapshot(this.id, message.to, message, chunks);
  }

  addPeer(id: NodeId, _address: string): void {
    // Every endpoint of the network is reachable by id; only a removal is undone.
    this.removed.delete(id);
  }

  updatePeer(id: NodeId, address: string): void {
    this.addPeer(id, address);
  }

  removePeer(id: NodeId): void {
    this.removed.add(id);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.handlers = null;
    this.network.forget(this.id, this);
  }

  /** @internal */
  receive(messages: readonly Message[]): void {
    if (this.closed || this.handlers === null) return;
    for (const message of messages) this.handlers.onMessage(message);
  }

  /** @internal */
  async receiveSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    if (this.closed || this.handlers === null) throw new UnreachableError(`node ${this.id} is not running`);
    log('node %d receives a snapshot at %d', this.id, message.snapshot?.index ?? 0);
    await this.handlers.onSnapshot(message, chunks);
  }
}
