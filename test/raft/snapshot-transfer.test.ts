// Snapshots and leadership transfer as scenarios: a follower far behind a
// compacted log catches up by snapshot (also after a lost snapshot, and as a
// brand-new member), Figure 13 rule 7, transfer to a lagging node, proposals
// refused during a transfer, a transfer abandoned after an election timeout,
// and reads across a change of leader.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfChangeTransition, ConfChangeType, MessageType, Role } from '../../src/raft/types.ts';
import type { Message, NodeId } from '../../src/raft/types.ts';
import { decodeConfChange } from '../../src/raft/raw-node.ts';
import { bytes, confChange, TestNetwork } from './network.ts';

function status(net: TestNetwork, id: NodeId) {
  return net.get(id).node.status();
}

function proposeAt(net: TestNetwork, leader: NodeId, value: string): number {
  const result = net.get(leader).node.propose(bytes(value));
  assert.ok(result.ok, `proposal ${value} refused`);
  net.settle();
  return status(net, leader).lastIndex;
}

function heartbeat(net: TestNetwork, leader: NodeId): void {
  net.tick(leader);
  net.settle();
}

/** Leader 1 commits `count` entries while node 3 is cut off, then hosts 1 and 2 compact their logs. */
function leaveNodeThreeBehind(net: TestNetwork, count: number): number {
  net.elect(1);
  net.isolate(3);
  for (let i = 0; i < count; i++) proposeAt(net, 1, `e${i}`);
  heartbeat(net, 1);
  const snapshotIndex = net.compact(1);
  net.compact(2);
  assert.equal(snapshotIndex, status(net, 1).commit);
  assert.ok(net.get(1).storage.firstIndex() > net.get(3).storage.lastIndex() + 1, "the entries node 3 needs are gone from the leader's log");
  return snapshotIndex;
}

function assertSameLog(net: TestNetwork, a: NodeId, b: NodeId, from: number): void {
  const last = net.get(a).storage.lastIndex();
  assert.equal(net.get(b).storage.lastIndex(), last);
  for (let index = from; index <= last; index++) assert.equal(net.get(b).storage.term(index), net.get(a).storage.term(index), `term at ${index}`);
}

test('a follower far behind a compacted log catches up by snapshot, then by appends', () => {
  const net = new TestNetwork([1, 2, 3]);
  const snapshotIndex = leaveNodeThreeBehind(net, 20);
  net.record = true;
  net.heal();
  heartbeat(net, 1);
  const snaps = net.delivered.filter((m) => m.type === MessageType.Snap && m.to === 3);
  assert.equal(snaps.length, 1, 'exactly one snapshot sent');
  assert.equal(snaps[0]!.snapshot!.index, snapshotIndex);
  assert.deepEqual(net.get(3).installedSnapshots.map((s) => s.index), [snapshotIndex]);
  assert.equal(net.get(3).storage.firstIndex(), snapshotIndex + 1, 'node 3 log now starts after the snapshot');
  assert.equal(status(net, 1).progress.get(3)!.state, 'replicate', 'back to streaming appends');
  proposeAt(net, 1, 'after');
  heartbeat(net, 1);
  assert.deepEqual(net.appliedData(3), ['after'], 'entries after the snapshot are applied');
  assertSameLog(net, 1, 3, snapshotIndex);
  assert.equal(status(net, 3).commit, status(net, 1).commit);
});

test('a lost snapshot pauses the follower until the host reports it; then it is sent again', () => {
  const net = new TestNetwork([1, 2, 3]);
  const snapshotIndex = leaveNodeThreeBehind(net, 10);
  net.heal();
  net.record = true;
  // Deliver by hand, losing every snapshot sent to node 3 (its stream breaks).
  net.hold = true;
  net.tick(1);
  net.settle();
  let lost = 0;
  for (let round = 0; round < 10; round++) {
    const held = net.held;
    net.held = [];
    for (const m of held) {
      if (m.type === MessageType.Snap && m.to === 3) lost += 1;
      else net.get(m.to).node.step(m);
    }
    net.settle();
  }
  net.hold = false;
  assert.equal(lost, 1, 'one snapshot was sent (and lost)');
  assert.equal(status(net, 1).progress.get(3)!.state, 'snapshot');
  for (let i = 0; i < 3; i++) heartbeat(net, 1);
  assert.equal(status(net, 1).progress.get(3)!.state, 'snapshot', 'paused while a snapshot is in flight');
  assert.deepEqual(net.get(3).installedSnapshots, []);
  net.get(1).node.reportSnapshot(3, false);
  assert.equal(status(net, 1).progress.get(3)!.state, 'probe');
  net.heal();
  heartbeat(net, 1);
  heartbeat(net, 1);
  assert.deepEqual(net.get(3).installedSnapshots.map((s) => s.index), [snapshotIndex], 'installed on the second attempt');
  assert.equal(status(net, 1).progress.get(3)!.state, 'replicate');
  assert.equal(status(net, 3).commit, status(net, 1).commit);
});

test('Figure 13 rule 7: a follower whose log holds the snapshot’s last entry keeps its log (hashicorp #697)', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  net.isolate(3);
  net.cut.add('2->1'); // node 2 stores the entries; the leader never hears, so nothing commits
  for (let i = 0; i < 6; i++) proposeAt(net, 1, `e${i}`);
  const last = net.get(2).storage.lastIndex();
  const commitBefore = status(net, 2).commit;
  assert.ok(last >= commitBefore + 6);
  const snapshotIndex = last - 2;
  const snapshot = { index: snapshotIndex, term: net.get(2).storage.term(snapshotIndex), confState: net.get(2).confState };
  const message: Message = { type: MessageType.Snap, from: 1, to: 2, term: status(net, 1).term, logTerm: 0, index: 0, entries: [], commit: 0, reject: false, rejectHint: 0, snapshot, context: new Uint8Array(0) };
  net.get(2).node.step(message);
  net.settle();
  assert.deepEqual(net.get(2).installedSnapshots, [], 'no snapshot installed');
  assert.equal(net.get(2).storage.lastIndex(), last, 'the entries after the snapshot are kept');
  assert.equal(status(net, 2).commit, snapshotIndex, 'the snapshot index is committed');
});

test('a new member with an empty log joins as a learner and catches up from a compacted leader by snapshot', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  for (let i = 0; i < 8; i++) proposeAt(net, 1, `e${i}`);
  heartbeat(net, 1);
  const snapshotIndex = net.compact(1);
  net.addNode(4);
  assert.ok(net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.Auto, { type: ConfChangeType.AddLearner, nodeId: 4 })).ok);
  net.settle();
  assert.ok(net.tickUntil([1], () => status(net, 4).commit === status(net, 1).commit && status(net, 4).applied === status(net, 4).commit, 10));
  assert.deepEqual(net.get(4).installedSnapshots.map((s) => s.index), [snapshotIndex]);
  assert.deepEqual(net.get(4).confState.learners, [4], 'node 4 applied its own addition after the snapshot');
  proposeAt(net, 1, 'welcome');
  heartbeat(net, 1);
  assert.deepEqual(net.appliedData(4), ['welcome']);
});

test('leadership transfer to a lagging node: the leader catches it up first, then it wins (even inside the followers’ lease)', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  const term = status(net, 1).term;
  net.isolate(3);
  for (let i = 0; i < 5; i++) proposeAt(net, 1, `e${i}`);
  heartbeat(net, 1);
  const last = status(net, 1).lastIndex;
  assert.ok(status(net, 3).lastIndex < last, 'node 3 lags');
  net.heal();
  net.record = true;
  net.get(1).node.transferLeadership(3);
  assert.equal(status(net, 1).leadTransferee, 3);
  net.settle();
  assert.deepEqual(net.leaders(), [3]);
  assert.equal(status(net, 3).term, term + 1);
  const timeoutNowAt = net.delivered.findIndex((m) => m.type === MessageType.TimeoutNow && m.to === 3);
  const caughtUpAt = net.delivered.findIndex((m) => m.type === MessageType.AppResp && m.from === 3 && !m.reject && m.index >= last);
  assert.ok(caughtUpAt >= 0 && timeoutNowAt > caughtUpAt, `TimeoutNow (#${timeoutNowAt}) only after node 3 acknowledged ${last} (#${caughtUpAt})`);
  assert.equal(net.delivered.filter((m) => m.type === MessageType.TimeoutNow).length, 1);
  // The new leader has every committed entry and goes on committing.
  proposeAt(net, 3, 'under-3');
  heartbeat(net, 3);
  for (const id of [1, 2, 3]) assert.deepEqual(net.appliedData(id).slice(-1), ['under-3'], `node ${id}`);
});

test('proposals are refused while a transfer is in progress; the transfer is abandoned after an election timeout', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  net.isolate(3); // the transferee never answers
  net.get(1).node.transferLeadership(3);
  assert.equal(status(net, 1).leadTransferee, 3);
  const refused = net.get(1).node.propose(bytes('during'));
  assert.equal(refused.ok, false);
  assert.equal(!refused.ok && refused.error.code, 'RAFTKV_PROPOSAL_DROPPED');
  const lastBefore = status(net, 1).lastIndex;
  assert.ok(net.get(2).node.propose(bytes('forwarded')).ok, 'the follower forwards');
  net.settle();
  assert.equal(status(net, 1).lastIndex, lastBefore, 'a forwarded proposal is dropped as well');

  for (let i = 0; i < 9; i++) heartbeat(net, 1);
  assert.equal(status(net, 1).leadTransferee, 3, 'still transferring before the election timeout');
  assert.equal(net.get(1).node.propose(bytes('still-during')).ok, false);
  heartbeat(net, 1); // the tenth tick: one election timeout since the transfer began
  assert.equal(status(net, 1).leadTransferee, 0, 'abandoned');
  assert.equal(status(net, 1).role, Role.Leader, 'node 1 keeps leading');
  proposeAt(net, 1, 'after-abort');
  net.heal();
  net.record = true;
  for (let i = 0; i < 5; i++) heartbeat(net, 1);
  assert.deepEqual(net.leaders(), [1]);
  assert.equal(net.delivered.filter((m) => m.type === MessageType.TimeoutNow).length, 0, 'no late TimeoutNow');
  for (const id of [1, 2, 3]) assert.deepEqual(net.appliedData(id), ['after-abort']);
});

test('transfers to a learner, to a non-member or to the leader itself are ignored', () => {
  const net = new TestNetwork([1, 2, 3], {}, [4]);
  net.elect(1);
  for (const target of [4, 9, 1]) {
    net.get(1).node.transferLeadership(target);
    net.settle();
    assert.equal(status(net, 1).leadTransferee, 0, `transfer to ${target}`);
    assert.deepEqual(net.leaders(), [1]);
    assert.ok(net.get(1).node.propose(bytes(`after-${target}`)).ok);
  }
});

test('a follower can ask for a transfer: it is forwarded to the leader', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  net.get(2).node.transferLeadership(3);
  net.settle();
  assert.deepEqual(net.leaders(), [3]);
});

test('ReadIndex across a leader change: the partitioned old leader serves nothing, the new leader serves at an index covering the new writes', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  proposeAt(net, 1, 'a');
  heartbeat(net, 1);
  net.isolate(1);
  assert.ok(net.get(1).node.readIndex(bytes('old')).ok);
  net.settle();
  assert.ok(net.tickUntil([1, 2, 3], () => net.leaders().some((id) => id !== 1), 100));
  const leader = net.leaders().find((id) => id !== 1)!;
  const written = proposeAt(net, leader, 'b');
  assert.ok(status(net, leader).commit >= written);
  assert.ok(net.get(leader).node.readIndex(bytes('new')).ok);
  net.settle();
  const served = net.get(leader).readStates;
  assert.equal(served.length, 1);
  assert.ok(served[0]!.index >= written, `read index ${served[0]!.index} covers the write at ${written}`);
  // A follower's read is forwarded and answered at a covering index too.
  const follower = [2, 3].find((id) => id !== leader)!;
  assert.ok(net.get(follower).node.readIndex(bytes('via-follower')).ok);
  net.settle();
  assert.ok(net.get(follower).readStates.some((r) => new TextDecoder().decode(r.context) === 'via-follower' && r.index >= written));
  assert.deepEqual(net.get(1).readStates, [], 'the old leader never confirmed its read');
});

test('a snapshot arriving while the host applies a committed membership change is dropped, then installed on resend', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  net.paused.add(3); // node 3's host is slow: a test drives its Readies
  const enterJoint = confChange(ConfChangeTransition.JointExplicit, { type: ConfChangeType.RemoveNode, nodeId: 3 });
  assert.ok(net.get(1).node.proposeConfChange(enterJoint).ok);
  net.settle();
  net.cut.add('1->3');
  const later = proposeAt(net, 1, 'later');
  heartbeat(net, 1);
  assert.equal(status(net, 1).commit, later);
  // Node 3's host takes a Ready that hands it the committed membership change...
  const ready = net.get(3).node.ready();
  const change = ready.committedEntries.find((e) => e.type === 1);
  assert.ok(change !== undefined, 'the Ready hands out the committed conf change');
  // ...and while it works, a snapshot covering that change (and more) arrives.
  const snapshotIndex = net.compact(1);
  assert.ok(snapshotIndex > change.index);
  const snapshot = net.get(1).storage.snapshot();
  assert.deepEqual(snapshot.confState.votersOutgoing, [1, 2, 3], 'the snapshot is taken in the joint configuration');
  net.get(3).node.step({ type: MessageType.Snap, from: 1, to: 3, term: status(net, 1).term, logTerm: 0, index: 0, entries: [], commit: 0, reject: false, rejectHint: 0, snapshot, context: new Uint8Array(0) });
  // The host finishes its Ready: applying the change must still work, exactly once.
  net.get(3).storage.saveSync({ snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState, sync: ready.mustSync });
  const conf = net.get(3).node.applyConfChange(decodeConfChange(change.data));
  assert.deepEqual([conf.voters, conf.votersOutgoing], [[1, 2], [1, 2, 3]]);
  net.get(3).node.advance();
  net.paused.delete(3);
  net.heal();
  net.settle();
  for (let i = 0; i < 3; i++) heartbeat(net, 1);
  assert.deepEqual(net.get(3).installedSnapshots.map((s) => s.index), [snapshotIndex], 'installed when the leader sends it again');
  assert.equal(status(net, 3).commit, status(net, 1).commit);
  assert.deepEqual(status(net, 3).confState.votersOutgoing, [1, 2, 3]);
});

test('pendingSnapshotIndex names an accepted snapshot until the host persists it, so the host keeps its data (long-run seed 908)', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  net.isolate(3);
  for (let i = 0; i < 6; i++) proposeAt(net, 1, `e${i}`);
  heartbeat(net, 1);
  const snapshotIndex = net.compact(1);
  const follower = net.get(3).node;
  assert.equal(follower.pendingSnapshotIndex(), 0, 'nothing pending before a snapshot arrives');
  const snapshot = { index: snapshotIndex, term: net.get(1).storage.term(snapshotIndex), confState: net.get(1).confState };
  follower.step({ type: MessageType.Snap, from: 1, to: 3, term: status(net, 1).term, logTerm: 0, index: 0, entries: [], commit: 0, reject: false, rejectHint: 0, snapshot, context: new Uint8Array(0) });
  assert.equal(follower.pendingSnapshotIndex(), snapshotIndex, 'accepted, not yet handed out');
  const ready = follower.ready();
  assert.equal(ready.snapshot?.index, snapshotIndex);
  assert.equal(follower.pendingSnapshotIndex(), snapshotIndex, 'handed out in a Ready, not yet persisted');
  net.get(3).storage.saveSync({ snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState, sync: ready.mustSync });
  follower.advance();
  assert.equal(follower.pendingSnapshotIndex(), 0, 'persisted: nothing pending');
});
