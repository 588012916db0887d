// The ready loop applies committed entries that are already durable in the
// local log while the next Ready's write is in flight (as etcd does), and
// never applies an entry before the local log holds it durably: a follower
// whose entries arrive already committed applies them only after its save.
// A snapshot's store sync runs beside the apply loop, and the log records the
// snapshot only once that sync covers it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplicatedNode } from '../../src/server/replicated-node.ts';
import type { StateMachinePort } from '../../src/server/ports.ts';
import { MemoryNetwork } from '../../src/transport/memory.ts';
import { MemoryLogStorage } from '../../src/storage/log/memory.ts';
import type { LogStorage, LogUpdate } from '../../src/storage/log/types.ts';
import { ConfChangeTransition, ConfChangeType, EntryType } from '../../src/raft/types.ts';
import type { ConfState, Entry, SnapshotMetadata } from '../../src/raft/types.ts';
import type { InitialState } from '../../src/raft/storage.ts';
import { createRandom } from '../../src/raft/random.ts';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** A log whose saves can be held at a gate; the read view changes when a save completes. */
class GatedLog implements LogStorage {
  private readonly disk = new MemoryLogStorage();
  private holds: ((update: LogUpdate) => boolean) | null = null;
  private waiting: (() => void)[] = [];
  /** Updates whose save is waiting at the gate. */
  readonly pending: LogUpdate[] = [];

  close(): Promise<void> {
    this.release();
    return this.disk.close();
  }
  /** Holds every later save (or those `which` picks) until released. */
  hold(which: (update: LogUpdate) => boolean = () => true): void {
    this.holds = which;
  }
  /** Lets the saves waiting now through; the gate stays as it is for later ones. */
  releaseWaiting(): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const resume of waiting) resume();
  }
  release(): void {
    this.holds = null;
    this.releaseWaiting();
  }
  async save(update: LogUpdate): Promise<void> {
    if (this.holds !== null && this.holds(update)) {
      this.pending.push(update);
      await new Promise<void>((resolve) => this.waiting.push(resolve));
      this.pending.splice(this.pending.indexOf(update), 1);
    }
    await this.disk.save(update);
  }
  bootstrap(confState: ConfState): Promise<void> {
    return this.disk.bootstrap(confState);
  }
  createSnapshot(metadata: SnapshotMetadata): Promise<void> {
    return this.disk.createSnapshot(metadata);
  }
  compact(compactIndex: number): Promise<void> {
    return this.disk.compact(compactIndex);
  }
  isEmpty(): boolean {
    return this.disk.isEmpty();
  }
  initialState(): InitialState {
    return this.disk.initialState();
  }
  entries(lo: number, hi: number, maxBytes: number): readonly Entry[] {
    return this.disk.entries(lo, hi, maxBytes);
  }
  term(index: number): number {
    return this.disk.term(index);
  }
  firstIndex(): number {
    return this.disk.firstIndex();
  }
  lastIndex(): number {
    return this.disk.lastIndex();
  }
  snapshot(): SnapshotMetadata {
    return this.disk.snapshot();
  }
}

/** Records each applied index and checks, at the moment of applying, that the local log held it. */
class RecordingMachine implements StateMachinePort<string, number> {
  readonly applied: number[] = [];
  readonly violations: string[] = [];
  constructor(private readonly log: GatedLog) {}
  appliedIndex(): number {
    return this.applied.length === 0 ? 0 : this.applied[this.applied.length - 1]!;
  }
  async applyBatch(items: readonly { readonly index: number; readonly request: string | undefined }[]): Promise<(number | undefined)[]> {
    return items.map(({ index }) => {
      if (index <= this.appliedIndex()) return undefined;
      if (index > this.log.lastIndex()) this.violations.push(`entry ${index} applied while the local log ends at ${this.log.lastIndex()}`);
      this.applied.push(index);
      return index;
    });
  }
  async flush(): Promise<void> {}
  async *snapshot(): AsyncIterable<Uint8Array> {
    yield new TextEncoder().encode(String(this.appliedIndex()));
  }
  async restore(): Promise<void> {
    throw new Error('not used here');
  }
  async close(): Promise<void> {}
}

/** A machine with a gate that its subclasses wait at while held. */
class GatedMachine extends RecordingMachine {
  protected gate: Promise<void> | null = null;
  private open: (() => void) | null = null;
  hold(): void {
    this.gate = new Promise((resolve) => (this.open = resolve));
  }
  release(): void {
    this.open?.();
    this.gate = null;
  }
}

interface Member {
  readonly node: ReplicatedNode<string, number>;
  readonly log: GatedLog;
  readonly machine: RecordingMachine;
}

async function start(
  ids: number[],
  network: MemoryNetwork,
  seed: number,
  electionTimeoutTicks = 10,
  makeMachine: (log: GatedLog) => RecordingMachine = (log) => new RecordingMachine(log),
): Promise<Map<number, Member>> {
  const members = new Map<number, Member>();
  for (const id of ids) {
    const log = new GatedLog();
    const machine = makeMachine(log);
    const node = await ReplicatedNode.start<string, number>({
      id,
      log,
      stateMachine: machine,
      transport: network.endpoint(id),
      initialMembers: ids,
      tickMs: 10,
      electionTimeoutTicks,
      requestTimeoutMs: 5_000,
      random: createRandom(seed * 10 + id),
    });
    members.set(id, { node, log, machine });
  }
  return members;
}

/** The index the member's Raft core counts as applied (advance() moves it), read from its private core. */
function coreAppliedOf(member: Member): number {
  return (member.node as unknown as { raw: { status(): { applied: number } } }).raw.status().applied;
}

async function leaderOf(members: Map<number, Member>): Promise<Member> {
  let leader: Member | undefined;
  await until(() => (leader = [...members.values()].find((member) => member.node.isLeader)) !== undefined, 'a leader');
  return leader!;
}

test('a committed entry already in the durable log is applied while the next save is held', async () => {
  const members = await start([1], new MemoryNetwork({ seed: 1 }), 1);
  const only = members.get(1)!;
  try {
    await leaderOf(members);
    await only.node.propose('a');
    only.log.hold();
    const b = only.node.propose('b');
    await until(() => only.log.pending.some((update) => update.entries.length > 0), "the save of b's entry");
    const index = only.log.pending.find((update) => update.entries.length > 0)!.entries[0]!.index;
    // Let b's entry become durable; the save after it (b's commit, in the next Ready) is held.
    only.log.releaseWaiting();
    await until(() => only.log.pending.some((update) => (update.hardState?.commit ?? 0) >= index), 'the save that records the commit of b');
    const answer = await Promise.race([b, sleep(2_000).then(() => 'not applied')]);
    assert.equal(answer, index, 'b was applied while the save after it was still in flight');
    assert.ok(only.log.pending.length > 0, 'the later save is still held');
    assert.deepEqual(only.machine.violations, []);
  } finally {
    only.log.release();
    await only.node.close();
  }
});

test("a commit the leader learns while its next save is in flight is applied before that save completes", async () => {
  // Elections slow enough that followers whose saves are held (and who therefore answer no heartbeat) keep the leader.
  const members = await start([1, 2, 3], new MemoryNetwork({ seed: 4 }), 4, 200);
  try {
    const leader = await leaderOf(members);
    const followers = [...members.values()].filter((member) => member !== leader);
    await leader.node.propose('warm');
    // The followers' saves of new entries are held, so "a" is durable on the leader alone: not committed.
    for (const follower of followers) follower.log.hold((update) => update.entries.length > 0);
    const a = leader.node.propose('a');
    await until(() => followers.every((follower) => follower.log.pending.length > 0), "both followers saving a's entry");
    const indexA = followers[0]!.log.pending[0]!.entries[0]!.index;
    await until(() => leader.log.lastIndex() >= indexA && leader.log.pending.length === 0, "the leader's save of a");
    // The leader's next save (of "b") is held; then the followers' saves complete and their acknowledgements commit a.
    leader.log.hold();
    const b = leader.node.propose('b');
    await until(() => leader.log.pending.some((update) => update.entries.length > 0), "the leader's save of b");
    for (const follower of followers) follower.log.release();
    const answer = await Promise.race([a, sleep(2_000).then(() => 'not applied')]);
    assert.equal(answer, indexA, 'a was applied while the leader was still writing b');
    assert.ok(leader.log.pending.some((update) => update.entries.length > 0), "the leader's save of b is still held");
    assert.ok(!leader.machine.applied.includes(indexA + 1), 'b is not applied before the leader holds it durably');
    leader.log.release();
    assert.equal(await b, indexA + 1);
    for (const member of members.values()) assert.deepEqual(member.machine.violations, []);
  } finally {
    for (const member of members.values()) member.log.release();
    await Promise.all([...members.values()].map((member) => member.node.close()));
  }
});

/** A machine whose applies can wait at a gate. */
class ApplyGatedMachine extends GatedMachine {
  /** Applies that reached the gate. */
  waiting = 0;
  override async applyBatch(items: readonly { readonly index: number; readonly request: string | undefined }[]): Promise<(number | undefined)[]> {
    if (this.gate !== null) {
      this.waiting += 1;
      await this.gate;
    }
    return super.applyBatch(items);
  }
}

test('a membership change applied while a write is in flight is applied before the core counts it applied', async () => {
  const members = await start([1, 2, 3], new MemoryNetwork({ seed: 5 }), 5, 200, (log) => new ApplyGatedMachine(log));
  const leader = await leaderOf(members);
  const machine = leader.machine as ApplyGatedMachine;
  const coreApplied = (): number => coreAppliedOf(leader);
  try {
    const followers = [...members.values()].filter((member) => member !== leader);
    await leader.node.propose('warm');
    // As in the test above: the change is durable on the leader alone, then its next save is held
    // and the followers' acknowledgements commit the change meanwhile.
    for (const follower of followers) follower.log.hold((update) => update.entries.length > 0);
    const changed = leader.node.changeMembership({
      transition: ConfChangeTransition.Auto,
      changes: [{ type: ConfChangeType.AddLearner, nodeId: 4 }],
      context: new Uint8Array(0),
    });
    await until(() => followers.every((follower) => follower.log.pending.length > 0), 'both followers saving the change');
    const indexC = followers[0]!.log.pending[0]!.entries.find((entry) => entry.type === EntryType.ConfChange)!.index;
    await until(() => leader.log.lastIndex() >= indexC && leader.log.pending.length === 0, "the leader's save of the change");
    leader.log.hold();
    const b = leader.node.propose('b');
    await until(() => leader.log.pending.some((update) => update.entries.length > 0), "the leader's save of b");
    machine.hold();
    for (const follower of followers) follower.log.release();
    await until(() => machine.waiting > 0, 'the change taken and its apply waiting at the gate');
    // The leader's write completes while the change's apply still waits: the core must not count it applied.
    leader.log.release();
    await sleep(100);
    assert.ok(coreApplied() < indexC, `the core counted ${coreApplied()} applied before the change at ${indexC} was applied`);
    machine.release();
    const confState = await changed;
    assert.deepEqual(confState.learners, [4]);
    assert.equal(await b, indexC + 1);
    assert.ok(coreApplied() >= indexC);
  } finally {
    machine.release();
    for (const member of members.values()) member.log.release();
    await Promise.all([...members.values()].map((member) => member.node.close()));
  }
});

test("a membership change among a Ready's own committed entries is applied before the core counts it applied", async () => {
  // No save is held: the change commits in a Ready of its own (not taken while a write was in flight), and
  // its apply waits at the gate. advance() would count it applied; the loop must wait for the apply first.
  const members = await start([1, 2, 3], new MemoryNetwork({ seed: 6 }), 6, 200, (log) => new ApplyGatedMachine(log));
  const leader = await leaderOf(members);
  const machine = leader.machine as ApplyGatedMachine;
  const coreApplied = (): number => coreAppliedOf(leader);
  try {
    await leader.node.propose('warm');
    const before = leader.log.lastIndex();
    machine.hold();
    const changed = leader.node.changeMembership({
      transition: ConfChangeTransition.Auto,
      changes: [{ type: ConfChangeType.AddLearner, nodeId: 4 }],
      context: new Uint8Array(0),
    });
    await until(() => machine.waiting > 0, "the change's apply waiting at the gate");
    const indexC = before + 1;
    assert.equal(leader.log.entries(indexC, indexC + 1, Number.POSITIVE_INFINITY)[0]?.type, EntryType.ConfChange);
    await sleep(100);
    assert.ok(coreApplied() < indexC, `the core counted ${coreApplied()} applied before the change at ${indexC} was applied`);
    machine.release();
    assert.deepEqual((await changed).learners, [4]);
    await until(() => coreApplied() >= indexC, 'the core counting the change applied');
  } finally {
    machine.release();
    await Promise.all([...members.values()].map((member) => member.node.close()));
  }
});

test('a follower whose entries arrive already committed applies them only once its save completed', async () => {
  const network = new MemoryNetwork({ seed: 2 });
  const members = await start([1, 2, 3], network, 2);
  try {
    const leader = await leaderOf(members);
    const [lagging, other] = [...members.values()].filter((member) => member !== leader);
    await leader.node.propose('before');
    await until(() => lagging!.machine.applied.length > 0 && other!.machine.applied.length > 0, 'both followers applying');
    // Cut the lagging follower off; the leader commits entries with the other follower alone.
    network.isolate(lagging!.node.id);
    const committed = await Promise.all(['x', 'y', 'z'].map((request) => leader.node.propose(request)));
    const last = Math.max(...committed);
    lagging!.log.hold((update) => update.entries.length > 0);
    network.heal();
    // The leader's append carries the entries and a commit index covering them.
    await until(() => lagging!.log.pending.some((update) => update.entries.length > 0), 'the lagging follower saving the entries');
    const held = lagging!.log.pending.find((update) => update.entries.length > 0)!;
    const first = held.entries[0]!.index;
    assert.ok((held.hardState?.commit ?? 0) >= first, `the held save records entry ${first} as committed (commit ${held.hardState?.commit})`);
    await sleep(100);
    assert.ok(!lagging!.machine.applied.includes(first), `entry ${first} was applied before the follower's save of it completed`);
    assert.deepEqual(lagging!.machine.violations, []);
    lagging!.log.release();
    await until(() => lagging!.machine.applied.includes(last), `the follower applying ${last} after its save`);
    assert.deepEqual(lagging!.machine.violations, []);
  } finally {
    for (const member of members.values()) member.log.release();
    await Promise.all([...members.values()].map((member) => member.node.close()));
  }
});

/** A machine whose flush waits at a gate and records what it made durable. */
class FlushGatedMachine extends GatedMachine {
  durable = 0;
  flushes = 0;
  override async flush(): Promise<void> {
    this.flushes += 1;
    const covered = this.appliedIndex(); // every apply finished so far
    if (this.gate !== null) await this.gate;
    this.durable = Math.max(this.durable, covered);
  }
}

test('a snapshot syncs the store beside the apply loop, and the log records it only at an index the sync covered', async () => {
  const log = new GatedLog();
  const machine = new FlushGatedMachine(log);
  const recorded: string[] = [];
  const createSnapshot = log.createSnapshot.bind(log);
  log.createSnapshot = async (metadata) => {
    recorded.push(metadata.index <= machine.durable ? 'ok' : `snapshot at ${metadata.index} recorded while the store was durable through ${machine.durable}`);
    return createSnapshot(metadata);
  };
  const network = new MemoryNetwork({ seed: 3 });
  const node = await ReplicatedNode.start<string, number>({
    id: 1,
    log,
    stateMachine: machine,
    transport: network.endpoint(1),
    initialMembers: [1],
    tickMs: 10,
    requestTimeoutMs: 5_000,
    snapshotEntries: 5,
    snapshotCatchUpEntries: 2,
    random: createRandom(3),
  });
  try {
    await until(() => node.isLeader, 'a leader');
    const initial = node.status().snapshotIndex;
    machine.hold();
    for (let i = 0; i < 6; i++) await node.propose(`a${i}`);
    await until(() => machine.flushes === 1, 'the snapshot flush');
    // The flush is held: writes still apply and answer.
    const answers = await Promise.race([Promise.all(['b0', 'b1', 'b2'].map((request) => node.propose(request))), sleep(2_000).then(() => null)]);
    assert.notEqual(answers, null, 'writes waited for the snapshot flush');
    assert.deepEqual(recorded, [], 'the log recorded a snapshot before the flush finished');
    assert.equal(node.status().snapshotIndex, initial);
    machine.release();
    await until(() => node.status().snapshotIndex > initial, 'the snapshot recorded');
    assert.deepEqual(recorded, ['ok']);
    assert.ok(node.status().snapshotIndex <= machine.durable);
    assert.deepEqual(machine.violations, []);
  } finally {
    machine.release();
    log.release();
    await node.close();
  }
});
