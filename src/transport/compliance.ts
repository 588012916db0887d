// The Transport conformance suite (as abstract-level's): any implementation
// runs it with one call, `transportSuite({ test, harness })`, passing
// node:test's `test`. A harness makes transports for member ids and says how
// to reach them; the suite wires them up with addPeer and checks what every
// transport must do: deliver to the right member's handler, drop (never
// throw on) messages to unknown peers, stop at removePeer, reconnect to a
// restarted peer, stay bounded under a dead one, stream snapshots in order
// within a window and fail them cleanly, and close idempotently. Delivery
// order is not checked: a transport may reorder, lose or duplicate.

import assert from 'node:assert/strict';
import { MessageType } from '../raft/types.ts';
import type { Message, NodeId } from '../raft/types.ts';
import type { TransportHandlers, TransportPort } from '../server/ports.ts';

type TestFunction = (name: string, fn: () => Promise<void>) => unknown;

export interface TransportSuiteHarness {
  /**
   * A new, unstarted transport for member `id` and the address peers reach
   * it at. With `address` (one this harness returned before, for a member
   * whose transport the suite closed) the member restarts at that address.
   */
  create(id: NodeId, address?: string): Promise<{ transport: TransportPort; address: string }>;
  /** Messages queued in `transport` for `peer`, if the transport can tell (checked against queueMessagesMax). */
  queuedMessages?(transport: TransportPort, peer: NodeId): number;
  /** Releases what the harness shares (a network, channels); the suite has closed every transport. */
  dispose?(): Promise<void>;
}

export interface TransportSuiteOptions {
  readonly test: TestFunction;
  /** A fresh harness for each test. */
  readonly harness: () => TransportSuiteHarness | Promise<TransportSuiteHarness>;
  /** A label for the test names. */
  readonly name?: string;
  readonly supports?: {
    /** Messages from a member that is not a peer (never added, or removed) are refused. */
    readonly refusesUnknownSenders?: boolean;
  };
  /** The per-peer queue bound the harness configured (checked with queuedMessages). */
  readonly queueMessagesMax?: number;
  /** How many chunks a snapshot's source may be read ahead of the receiver's consumption. Default 16. */
  readonly snapshotLeadChunksMax?: number;
  /** How long to wait for something that must happen. Default 10,000 ms. */
  readonly waitMs?: number;
}

const conf = { voters: [1, 2, 3], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };

function appMessage(from: NodeId, to: NodeId, index: number, payloadBytes = 8): Message {
  const data = new Uint8Array(payloadBytes);
  for (let position = 0; position < payloadBytes; position++) data[position] = (index + position) & 255;
  return {
    type: MessageType.App,
    from,
    to,
    term: 7,
    logTerm: 6,
    index,
    entries: [{ term: 7, index: index + 1, type: 0, data }],
    commit: index,
    reject: false,
    rejectHint: 0,
    snapshot: null,
    context: Uint8Array.of(index & 255, 1, 2),
  };
}

function snapMessage(from: NodeId, to: NodeId, index: number): Message {
  return { ...appMessage(from, to, index), type: MessageType.Snap, entries: [], snapshot: { index, term: 7, confState: conf } };
}

/** A message with every byte field as a plain Uint8Array (a transport may hand out Buffers). */
function plain(message: Message | undefined): unknown {
  if (message === undefined) return undefined;
  return {
    ...message,
    entries: message.entries.map((entry) => ({ ...entry, data: Uint8Array.from(entry.data) })),
    context: Uint8Array.from(message.context),
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A member's handlers that record what arrives and let a test wait for it. */
class Inbox implements TransportHandlers {
  readonly messages: Message[] = [];
  private waiters: (() => void)[] = [];
  snapshotHandler: TransportHandlers['onSnapshot'] = async () => {};

  constructor(private readonly waitMs: number) {}

  onMessage(message: Message): void {
    this.messages.push(message);
    this.notify();
  }

  onSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    return this.snapshotHandler(message, chunks);
  }

  indexes(): Set<number> {
    return new Set(this.messages.map((message) => message.index));
  }

  notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const resume of waiters) resume();
  }

  /** Waits until `done()` holds, while `poke` (e.g. a retrying send) runs every 20 ms. */
  async until(what: string, done: () => boolean, poke?: () => void): Promise<void> {
    const deadline = Date.now() + this.waitMs;
    while (!done()) {
      if (Date.now() > deadline) assert.fail(`gave up waiting for ${what} after ${this.waitMs} ms`);
      poke?.();
      await Promise.race([new Promise<void>((resolve) => this.waiters.push(resolve)), sleep(20)]);
    }
  }
}

interface Member {
  readonly id: NodeId;
  transport: TransportPort;
  address: string;
  inbox: Inbox;
}

/** Members of one test, their wiring and their teardown. */
class Mesh {
  readonly members = new Map<NodeId, Member>();

  constructor(
    readonly harness: TransportSuiteHarness,
    private readonly waitMs: number,
  ) {}

  member(id: NodeId): Member {
    const member = this.members.get(id);
    assert.ok(member !== undefined, `member ${id} exists`);
    return member;
  }

  /** Creates members and makes each a peer of every other (unless `introduce` is false). */
  async start(ids: readonly NodeId[], introduce = true): Promise<Member[]> {
    const created: Member[] = [];
    for (const id of ids) {
      const { transport, address } = await this.harness.create(id);
      const member: Member = { id, transport, address, inbox: new Inbox(this.waitMs) };
      this.members.set(id, member);
      created.push(member);
    }
    for (const member of created) {
      if (introduce) for (const other of this.members.values()) if (other.id !== member.id) member.transport.addPeer(other.id, other.address);
      await member.transport.start(member.inbox);
    }
    return created;
  }

  /** Closes a member's transport and opens a new one at the same address, knowing the same peers. */
  async restart(id: NodeId): Promise<Member> {
    const old = this.member(id);
    await old.transport.close();
    const { transport, address } = await this.harness.create(id, old.address);
    const member: Member = { id, transport, address, inbox: new Inbox(this.waitMs) };
    this.members.set(id, member);
    for (const other of this.members.values()) if (other.id !== id) transport.addPeer(other.id, other.address);
    await transport.start(member.inbox);
    return member;
  }

  async close(): Promise<void> {
    for (const member of this.members.values()) await member.transport.close();
    await this.harness.dispose?.();
  }
}

async function* generate(chunks: readonly Uint8Array[], onYield: (position: number) => void, failAt = -1): AsyncGenerator<Uint8Array> {
  for (let position = 0; position < chunks.length; position++) {
    if (position === failAt) throw new Error('the snapshot source failed');
    onYield(position);
    yield chunks[position] as Uint8Array;
  }
}

function snapshotChunks(count: number): Uint8Array[] {
  return Array.from({ length: count }, (_, position) => {
    const chunk = new Uint8Array(1 + ((position * 7919) % 65_536));
    chunk.fill(position & 255);
    chunk[0] = position;
    return chunk;
  });
}

export function transportSuite(options: TransportSuiteOptions): void {
  const { test } = options;
  const label = options.name ?? 'transport';
  const waitMs = options.waitMs ?? 10_000;
  const leadMax = options.snapshotLeadChunksMax ?? 16;
  const withMesh = (body: (mesh: Mesh) => Promise<void>) => async (): Promise<void> => {
    const mesh = new Mesh(await options.harness(), waitMs);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new assert.AssertionError({ message: `the test did not finish within ${3 * waitMs} ms` })), 3 * waitMs);
    });
    try {
      await Promise.race([body(mesh), deadline]);
    } finally {
      clearTimeout(timer);
      await mesh.close();
    }
  };

  test(`${label}: messages reach the handler of the member they are addressed to, intact`, withMesh(async (mesh) => {
    const [one, two, three] = await mesh.start([1, 2, 3]) as [Member, Member, Member];
    const sent = [appMessage(1, 2, 10), appMessage(1, 3, 20, 3000), appMessage(1, 2, 11, 0)];
    one.transport.send(sent);
    two.transport.send([appMessage(2, 1, 30)]);
    await two.inbox.until('two messages at member 2', () => two.inbox.indexes().has(10) && two.inbox.indexes().has(11));
    await three.inbox.until('a message at member 3', () => three.inbox.indexes().has(20));
    await one.inbox.until('a message at member 1', () => one.inbox.indexes().has(30));
    for (const member of [one, two, three]) {
      for (const message of member.inbox.messages) assert.equal(message.to, member.id, 'delivered to the member it names');
    }
    assert.deepEqual(new Set(two.inbox.messages.map((m) => m.index)), new Set([10, 11]));
    assert.deepEqual(plain(three.inbox.messages.find((m) => m.index === 20)), plain(sent[1]), 'every field and byte arrives as sent');
    assert.deepEqual(plain(two.inbox.messages.find((m) => m.index === 11)), plain(sent[2]));
  }));

  test(`${label}: a burst of batches arrives complete`, withMesh(async (mesh) => {
    const [one, two] = await mesh.start([1, 2]) as [Member, Member];
    for (let batch = 0; batch < 10; batch++) {
      one.transport.send(Array.from({ length: 50 }, (_, position) => appMessage(1, 2, batch * 50 + position, 100)));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await two.inbox.until('500 messages', () => two.inbox.indexes().size === 500);
    assert.ok([...two.inbox.indexes()].every((index) => index >= 0 && index < 500));
  }));

  test(`${label}: messages to an unknown peer are dropped, not thrown; snapshots to it reject`, withMesh(async (mesh) => {
    const [one, two] = await mesh.start([1, 2]) as [Member, Member];
    one.transport.send([appMessage(1, 99, 1), appMessage(1, 2, 2)]);
    await two.inbox.until('the message to a known peer', () => two.inbox.indexes().has(2));
    assert.ok(!two.inbox.indexes().has(1), 'the message for 99 went nowhere');
    await assert.rejects(one.transport.sendSnapshot(snapMessage(1, 99, 5), generate(snapshotChunks(2), () => {})), (error: Error & { code?: string }) => {
      assert.equal(typeof error.code, 'string', 'a typed error');
      return true;
    });
  }));

  test(`${label}: removePeer stops delivery to that peer`, withMesh(async (mesh) => {
    const [one, two, three] = await mesh.start([1, 2, 3]) as [Member, Member, Member];
    one.transport.send([appMessage(1, 2, 1)]);
    await two.inbox.until('the first message', () => two.inbox.indexes().has(1));
    one.transport.removePeer(2);
    one.transport.send([appMessage(1, 2, 2), appMessage(1, 3, 3)]);
    await three.inbox.until('the message to a remaining peer', () => three.inbox.indexes().has(3));
    await sleep(200);
    one.transport.send([appMessage(1, 2, 4)]);
    await sleep(100);
    assert.deepEqual([...two.inbox.indexes()], [1], 'nothing reached the removed peer');
    await assert.rejects(one.transport.sendSnapshot(snapMessage(1, 2, 5), generate(snapshotChunks(2), () => {})));
  }));

  if (options.supports?.refusesUnknownSenders === true) {
    test(`${label}: messages from a member that is not a peer are refused`, withMesh(async (mesh) => {
      const [one, two, three] = await mesh.start([1, 2, 3], false) as [Member, Member, Member];
      one.transport.addPeer(2, two.address); // 2 does not know 1
      one.transport.addPeer(3, three.address);
      three.transport.addPeer(1, one.address);
      three.transport.addPeer(2, two.address);
      two.transport.addPeer(3, three.address);
      one.transport.send([appMessage(1, 2, 1), appMessage(1, 3, 2)]);
      await three.inbox.until('the message to a peer that knows the sender', () => three.inbox.indexes().has(2));
      three.transport.send([appMessage(3, 2, 3)]);
      await two.inbox.until('a message from a known peer', () => two.inbox.indexes().has(3));
      two.transport.removePeer(3);
      three.transport.send([appMessage(3, 2, 4)]);
      one.transport.send([appMessage(1, 2, 5)]);
      await sleep(300);
      three.transport.send([appMessage(3, 2, 6)]);
      one.transport.send([appMessage(1, 2, 7)]);
      await sleep(200);
      assert.deepEqual([...two.inbox.indexes()], [3], 'only the message from a peer arrived');
    }));
  }

  test(`${label}: a restarted peer is reached again`, withMesh(async (mesh) => {
    const [one, two] = await mesh.start([1, 2]) as [Member, Member];
    one.transport.send([appMessage(1, 2, 1)]);
    await two.inbox.until('the first message', () => two.inbox.indexes().has(1));
    await two.transport.close();
    for (let index = 2; index < 12; index++) one.transport.send([appMessage(1, 2, index)]);
    await sleep(50);
    const again = await mesh.restart(2);
    let index = 100;
    await again.inbox.until('a message at the restarted peer', () => again.inbox.messages.some((m) => m.index >= 100), () => {
      one.transport.send([appMessage(1, 2, index++)]);
    });
    await one.inbox.until('a message from the restarted peer', () => one.inbox.indexes().has(7), () => {
      again.transport.send([appMessage(2, 1, 7)]);
    });
  }));

  test(`${label}: a dead peer neither blocks the sender nor grows its queue without bound`, withMesh(async (mesh) => {
    const [one, two, three] = await mesh.start([1, 2, 3]) as [Member, Member, Member];
    await two.transport.close();
    for (let batch = 0; batch < 20; batch++) {
      one.transport.send(Array.from({ length: 1000 }, (_, position) => appMessage(1, 2, batch * 1000 + position, 1024)));
      if (options.queueMessagesMax !== undefined && mesh.harness.queuedMessages !== undefined) {
        const queued = mesh.harness.queuedMessages(one.transport, 2);
        assert.ok(queued <= options.queueMessagesMax, `${queued} messages queued for a dead peer (bound ${options.queueMessagesMax})`);
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    one.transport.send([appMessage(1, 3, 1)]);
    await three.inbox.until('a message to a live peer', () => three.inbox.indexes().has(1));
  }));

  test(`${label}: a snapshot streams its chunks in order, within a flow-control window`, withMesh(async (mesh) => {
    const [one, two] = await mesh.start([1, 2]) as [Member, Member];
    const chunks = snapshotChunks(40);
    let produced = 0;
    let consumed = 0;
    let leadSeen = 0;
    let handlerDone = false;
    const received: Uint8Array[] = [];
    two.inbox.snapshotHandler = async (message, stream) => {
      assert.equal(message.type, MessageType.Snap);
      assert.equal(message.from, 1);
      assert.deepEqual(message.snapshot, { index: 42, term: 7, confState: conf });
      for await (const chunk of stream) {
        received.push(Uint8Array.from(chunk));
        consumed++;
        await sleep(2);
      }
      handlerDone = true;
    };
    await one.transport.sendSnapshot(snapMessage(1, 2, 42), generate(chunks, () => {
      produced++;
      leadSeen = Math.max(leadSeen, produced - consumed);
    }));
    assert.equal(handlerDone, true, 'sendSnapshot resolves after the receiver took the snapshot');
    assert.equal(received.length, chunks.length, 'every chunk, with its boundaries');
    received.forEach((chunk, position) => assert.deepEqual(chunk, chunks[position], `chunk ${position}`));
    assert.ok(leadSeen <= leadMax, `the source ran ${leadSeen} chunks ahead of the receiver (at most ${leadMax})`);
  }));

  test(`${label}: a snapshot the receiver fails rejects at the sender`, withMesh(async (mesh) => {
    const [one, two] = await mesh.start([1, 2]) as [Member, Member];
    two.inbox.snapshotHandler = async (_message, stream) => {
      let count = 0;
      for await (const _chunk of stream) if (++count === 3) throw new Error('disk full');
    };
    await assert.rejects(one.transport.sendSnapshot(snapMessage(1, 2, 42), generate(snapshotChunks(30), () => {})), (error: Error & { code?: string }) => {
      assert.equal(typeof error.code, 'string', 'a typed error');
      return true;
    });
    // The link still works afterwards.
    one.transport.send([appMessage(1, 2, 1)]);
    await two.inbox.until('a message after the failed snapshot', () => two.inbox.indexes().has(1));
  }));

  test(`${label}: a snapshot whose source fails rejects, and the receiver sees a failure, not an end`, withMesh(async (mesh) => {
    const [one, two] = await mesh.start([1, 2]) as [Member, Member];
    let outcome: 'ended' | 'threw' | 'pending' = 'pending';
    let chunksSeen = 0;
    two.inbox.snapshotHandler = async (_message, stream) => {
      try {
        for await (const _chunk of stream) chunksSeen++;
        outcome = 'ended';
      } catch (error) {
        outcome = 'threw';
        throw error;
      } finally {
        two.inbox.notify();
      }
    };
    await assert.rejects(one.transport.sendSnapshot(snapMessage(1, 2, 42), generate(snapshotChunks(10), () => {}, 4)));
    await two.inbox.until('the receiver to finish', () => outcome !== 'pending');
    assert.equal(outcome, 'threw', 'a cut-short stream must not look complete');
    assert.ok(chunksSeen <= 4);
  }));

  test(`${label}: a snapshot rejects when the receiver closes mid-stream`, withMesh(async (mesh) => {
    const [one, two] = await mesh.start([1, 2]) as [Member, Member];
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => (open = resolve));
    let started: () => void = () => {};
    const twoChunksIn = new Promise<void>((resolve) => (started = resolve));
    two.inbox.snapshotHandler = async (_message, stream) => {
      let count = 0;
      for await (const _chunk of stream) {
        if (++count === 2) {
          started();
          await gate;
        }
      }
    };
    const sending = one.transport.sendSnapshot(snapMessage(1, 2, 42), generate(snapshotChunks(40), () => {}));
    const outcome = sending.then(() => 'resolved', () => 'rejected');
    await twoChunksIn;
    await two.transport.close();
    open();
    assert.equal(await outcome, 'rejected');
  }));

  test(`${label}: close is idempotent; a closed transport sends nothing and refuses snapshots`, withMesh(async (mesh) => {
    const [one, two] = await mesh.start([1, 2]) as [Member, Member];
    await one.transport.close();
    await one.transport.close();
    one.transport.send([appMessage(1, 2, 1)]);
    await assert.rejects(one.transport.sendSnapshot(snapMessage(1, 2, 5), generate(snapshotChunks(2), () => {})), { code: 'RAFTKV_STOPPED' });
    two.transport.send([appMessage(2, 1, 2)]);
    await sleep(200);
    assert.equal(two.inbox.messages.length, 0, 'a closed transport sent nothing');
    assert.equal(one.inbox.messages.length, 0, 'a closed transport delivered nothing');
  }));
}
