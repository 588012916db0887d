// Raft §5.3 (log replication) and §5.4 (safety), proposals and flow control, as scenarios.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EntryType, MessageType, Role } from '../../src/raft/types.ts';
import { bytes, TestNetwork } from './network.ts';

test('§5.3: a leader replicates and commits a proposal on every node', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  assert.ok(net.get(1).node.propose(bytes('a')).ok);
  net.settle();
  net.tickAll(); // a heartbeat carries the commit index
  for (const id of [1, 2, 3]) assert.deepEqual(net.appliedData(id), ['a']);
});

test('§5.3: a follower with a conflicting suffix is repaired by the leader (fast back-off)', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  net.isolate(1);
  for (let i = 0; i < 5; i++) net.get(1).node.propose(bytes(`lost-${i}`)); // never committed
  net.settle();
  net.heal();
  net.isolate(1);
  for (let i = 0; i < 40 && !net.leaders().some((id) => id !== 1); i++) {
    net.tick(2);
    net.tick(3);
    net.settle();
  }
  const leader = net.leaders().find((id) => id !== 1)!;
  net.get(leader).node.propose(bytes('kept'));
  net.settle();
  net.heal();
  net.tickAll(25);
  for (const id of [1, 2, 3]) assert.deepEqual(net.appliedData(id), ['kept'], `node ${id}`);
});

test('§5.4.2 (Figure 8): a leader never commits an older-term entry by counting replicas alone', () => {
  const net = new TestNetwork([1, 2, 3, 4, 5], { messageBytesMax: 1 });
  net.elect(1);
  // Node 1 (term 2) gets an entry only onto node 2, then loses leadership.
  net.isolate(1);
  assert.ok(net.get(1).node.propose(bytes('old')).ok);
  net.cut.delete('1->2');
  net.cut.delete('2->1');
  net.settle();
  const oldIndex = net.get(1).storage.lastIndex();
  assert.equal(net.get(2).storage.lastIndex(), oldIndex, 'node 2 has the old entry');
  assert.ok(net.get(1).node.status().commit < oldIndex, 'the old entry is not committed');
  // Node 1 restarts and comes back as leader of a later term with the old entry still uncommitted.
  net.restart(1);
  net.heal();
  net.hold = true;
  for (const id of [2, 3, 4, 5]) net.tick(id, 10); // their leader lease runs out
  net.settle();
  net.held = [];
  net.get(1).node.campaign();
  net.settle();
  // Deliver only vote traffic, then let node 3 acknowledge just the old entry.
  const status = () => net.get(1).node.status();
  for (let round = 0; round < 20 && status().role !== Role.Leader; round++) {
    const held = net.held;
    net.held = [];
    for (const m of held) if (m.type !== MessageType.App) net.get(m.to).node.step(m);
    net.settle();
  }
  assert.equal(status().role, Role.Leader);
  assert.ok(status().lastIndex > oldIndex, 'the new leader appended an entry of its own term');
  // Nodes 2 and 3 acknowledge the old entry: with node 1, a majority has it, but it is from an older term.
  for (const from of [2, 3]) {
    net.get(1).node.step({ type: MessageType.AppResp, from, to: 1, term: status().term, logTerm: 0, index: oldIndex, entries: [], commit: 0, reject: false, rejectHint: 0, snapshot: null, context: new Uint8Array(0) });
  }
  assert.ok(status().commit < oldIndex, `commit ${status().commit} must not reach the older-term entry ${oldIndex}`);
});

test('proposals: a follower forwards to the leader; with no leader the caller gets RAFTKV_NO_LEADER', () => {
  const lonely = new TestNetwork([1, 2, 3]);
  const result = lonely.get(2).node.propose(bytes('x'));
  assert.equal(result.ok, false);
  assert.equal(!result.ok && result.error.code, 'RAFTKV_NO_LEADER');

  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  assert.ok(net.get(3).node.propose(bytes('via-follower')).ok);
  net.settle();
  net.tickAll();
  assert.deepEqual(net.appliedData(1), ['via-follower']);
});

test('proposals: a follower forwards what it proposed before its next Ready in one Prop message, up to messageBytesMax', () => {
  const net = new TestNetwork([1, 2, 3], { messageBytesMax: 10 });
  net.elect(1);
  net.hold = true;
  for (let i = 0; i < 5; i++) assert.ok(net.get(3).node.propose(bytes(`p${i}`.padEnd(4, '.'))).ok);
  net.settle();
  const sizes = (): number[][] => net.held.filter((m) => m.type === MessageType.Prop).map((m) => m.entries.map((e) => e.data.length));
  assert.deepEqual(sizes(), [[4, 4], [4, 4], [4]], 'joined up to 10 bytes of data, in order');
  // Proposed after the host took its messages: a new message, never one already handed over.
  const first = net.held.find((m) => m.type === MessageType.Prop)!;
  assert.ok(net.get(3).node.propose(bytes('late')).ok);
  net.settle();
  assert.deepEqual(sizes(), [[4, 4], [4, 4], [4], [4]]);
  assert.equal(first.entries.length, 2, 'a message handed over is not changed afterwards');
  net.hold = false;
  for (const m of net.held) net.deliver(m);
  net.held = [];
  net.settle();
  net.tickAll();
  assert.deepEqual(net.appliedData(1), ['p0..', 'p1..', 'p2..', 'p3..', 'p4..', 'late']);

  // A leader change in between: the next proposal goes to the new leader in a message of its own.
  const other = new TestNetwork([1, 2, 3]);
  other.elect(1);
  other.hold = true;
  assert.ok(other.get(3).node.propose(bytes('to-1')).ok);
  const term = other.get(3).node.status().term;
  other.get(3).node.step({ type: MessageType.Heartbeat, from: 2, to: 3, term: term + 1, logTerm: 0, index: 0, entries: [], commit: 0, reject: false, rejectHint: 0, snapshot: null, context: new Uint8Array(0) });
  assert.ok(other.get(3).node.propose(bytes('to-2')).ok);
  other.settle();
  const props = other.held.filter((m) => m.type === MessageType.Prop).map((m) => [m.to, m.entries.map((e) => new TextDecoder().decode(e.data))]);
  assert.deepEqual(props, [[1, ['to-1']], [2, ['to-2']]]);
});

test('bounded uncommitted log: a leader refuses proposals past uncommittedBytesMax with RAFTKV_PROPOSAL_DROPPED', () => {
  const net = new TestNetwork([1, 2, 3], { uncommittedBytesMax: 100 });
  net.elect(1);
  net.isolate(1); // nothing commits
  const results = Array.from({ length: 5 }, () => net.get(1).node.propose(new Uint8Array(40)));
  assert.ok(results[0]!.ok && results[1]!.ok);
  const refused = results.filter((r) => !r.ok);
  assert.ok(refused.length >= 1);
  assert.equal(!refused[0]!.ok && refused[0]!.error.code, 'RAFTKV_PROPOSAL_DROPPED');
});

test('flow control: a replicating follower never has more appends in flight than the window', () => {
  const net = new TestNetwork([1, 2, 3], { inflightMessagesMax: 4, messageBytesMax: 1 });
  net.elect(1);
  net.hold = true;
  for (let i = 0; i < 50; i++) net.get(1).node.propose(bytes(`e${i}`));
  net.settle();
  const appendsTo2 = net.held.filter((m) => m.type === MessageType.App && m.to === 2 && m.entries.length > 0);
  assert.ok(appendsTo2.length <= 4, `${appendsTo2.length} appends in flight`);
  net.hold = false;
  for (const m of net.held) net.deliver(m);
  net.held = [];
  net.settle();
  net.tickAll(3);
  assert.equal(net.appliedData(2).length, 50);
});

test('ReadIndex: a partitioned old leader cannot confirm a read; the majority side can', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  net.get(1).node.propose(bytes('a'));
  net.settle();
  net.isolate(1);
  net.get(1).node.readIndex(bytes('stale?'));
  net.settle();
  let served = false;
  for (let i = 0; i < 5; i++) {
    net.tick(1);
    if (net.get(1).node.hasReady()) served ||= net.get(1).node.ready().readStates.length > 0, net.get(1).node.advance();
  }
  assert.equal(served, false, 'no read state without a quorum');
});

test('while a Ready is being persisted, appends of new entries may leave at once; acknowledgements may not', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  const leader = net.get(1);
  const follower = net.get(2);
  // The leader's host has taken a Ready for entry "a" and is persisting it.
  assert.ok(leader.node.propose(bytes('a')).ok);
  const first = leader.node.ready();
  const firstIndex = first.entries[0]!.index;
  assert.equal(first.entries.length, 1);
  // Meanwhile "b" is proposed: its append to each follower may go before either write is durable.
  assert.ok(leader.node.propose(bytes('b')).ok);
  const early = leader.node.takeMessagesBeforePersist();
  const appends = early.filter((m) => m.type === MessageType.App && m.entries.some((entry) => entry.index === firstIndex + 1));
  assert.deepEqual(appends.map((m) => m.to).sort(), [2, 3], 'the append of the new entry leaves for both followers now');
  assert.deepEqual(leader.node.takeMessagesBeforePersist(), [], 'taken once');
  // A follower that receives them while its own write is in flight must not acknowledge early.
  for (const message of [...first.messagesBeforePersist, ...appends].filter((m) => m.to === 2)) follower.node.step(message);
  const followerReady = follower.node.ready();
  for (const message of appends.filter((m) => m.to === 2)) follower.node.step(message);
  assert.ok(
    follower.node.takeMessagesBeforePersist().every((m) => m.type !== MessageType.AppResp),
    'an acknowledgement waits for the write that makes its entries durable',
  );
  assert.ok(followerReady.messages.some((m) => m.type === MessageType.AppResp), 'it leaves with the Ready that persists the entries');
  // Both hosts finish: everything still commits and applies everywhere, once.
  leader.storage.saveSync({ snapshot: null, entries: first.entries, hardState: first.hardState, sync: first.mustSync });
  leader.node.advance();
  follower.storage.saveSync({ snapshot: null, entries: followerReady.entries, hardState: followerReady.hardState, sync: followerReady.mustSync });
  follower.node.advance();
  for (const message of followerReady.messages) net.deliver(message);
  net.settle();
  net.tickAll();
  for (const id of [1, 2, 3]) assert.deepEqual(net.appliedData(id).slice(-2), ['a', 'b'], `node ${id} applied a then b`);
});

test('while a Ready is being persisted, entries committed meanwhile are handed out at once if durable here, once, in order', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  const leader = net.get(1);
  net.paused.add(1); // this test drives the leader's host by hand
  assert.deepEqual(leader.node.takeCommittedEntries(), [], 'nothing without an outstanding Ready');
  // "a" is written by the leader; the followers' acknowledgements are held back.
  net.hold = true;
  assert.ok(leader.node.propose(bytes('a')).ok);
  const first = leader.node.ready();
  const indexA = first.entries[0]!.index;
  for (const message of first.messagesBeforePersist) net.deliver(message);
  leader.storage.saveSync({ snapshot: null, entries: first.entries, hardState: first.hardState, sync: first.mustSync });
  for (const message of first.messages) net.deliver(message);
  leader.node.advance();
  // The write of "b" is in flight when the acknowledgements of "a" (and of "b") arrive.
  assert.ok(leader.node.propose(bytes('b')).ok);
  const second = leader.node.ready();
  assert.equal(second.entries[0]!.index, indexA + 1);
  assert.deepEqual(second.committedEntries, []);
  for (const message of second.messagesBeforePersist) net.deliver(message);
  assert.deepEqual(leader.node.takeCommittedEntries(), [], 'nothing is committed yet');
  net.hold = false;
  const held = net.held;
  net.held = [];
  for (const message of held) net.deliver(message);
  net.settle(); // the followers persist and acknowledge both entries; the leader's Ready stays outstanding
  assert.ok(leader.node.status().commit >= indexA + 1, 'both entries are committed by the followers');
  const taken = leader.node.takeCommittedEntries();
  assert.deepEqual(
    taken.map((entry) => entry.index),
    [indexA],
    'only "a" is handed out: "b" is not yet durable in the leader\'s own log',
  );
  assert.deepEqual(leader.node.takeCommittedEntries(), [], 'handed out once');
  leader.storage.saveSync({ snapshot: null, entries: second.entries, hardState: second.hardState, sync: second.mustSync });
  leader.node.advance();
  assert.equal(leader.node.status().applied, indexA, 'advance() counts the entries taken as applied');
  const third = leader.node.ready();
  assert.deepEqual(
    third.committedEntries.map((entry) => entry.index),
    [indexA + 1],
    'the next Ready hands out "b", not "a" again',
  );
  leader.node.advance();
});

test('read states confirmed while a Ready is being persisted are taken at once, and only once', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  const leader = net.get(1);
  net.paused.add(1);
  assert.ok(leader.node.propose(bytes('a')).ok);
  const ready = leader.node.ready();
  for (const message of ready.messagesBeforePersist) net.deliver(message);
  assert.ok(leader.node.readIndex(bytes('r1')).ok);
  for (const message of leader.node.takeMessagesBeforePersist()) net.deliver(message); // the heartbeats asking
  net.settle(); // the followers answer
  const states = leader.node.takeReadStates();
  assert.deepEqual(
    states.map((state) => new TextDecoder().decode(state.context)),
    ['r1'],
  );
  assert.deepEqual(leader.node.takeReadStates(), []);
  leader.storage.saveSync({ snapshot: null, entries: ready.entries, hardState: ready.hardState, sync: ready.mustSync });
  leader.node.advance();
  net.paused.delete(1);
  net.settle();
  assert.deepEqual(leader.readStates, [], 'not handed out again in a Ready');
});

test('a restart whose snapshot is ahead of its durable commit index counts the snapshot as committed and applied', () => {
  // The host applied entries committed while the Ready recording the commit was in flight, snapshotted
  // them, and crashed before that write: the snapshot is at 4, the durable commit index at 2.
  const net = new TestNetwork([1, 2, 3]);
  const storage = net.get(1).storage;
  const entries = [2, 3, 4, 5].map((index) => ({ index, term: 2, type: EntryType.Normal, data: bytes(`e${index}`) }));
  storage.saveSync({ snapshot: null, entries, hardState: { term: 2, vote: 1, commit: 2 }, sync: true });
  storage.createSnapshotSync({ index: 4, term: 2, confState: storage.snapshot().confState });
  storage.compactSync(3); // entry 4 stays for followers catching up
  net.restart(1);
  const status = net.get(1).node.status();
  assert.equal(status.commit, 4);
  assert.equal(status.applied, 4);
});
