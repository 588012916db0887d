// Membership changes (ConfChangeV2 semantics) as scenarios: removing the
// leader itself, learners that neither vote nor count toward commit,
// promotion, joint configurations that need both majorities (to commit and to
// elect), automatic and explicit leave, and refused changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfChangeTransition, ConfChangeType, MessageType, Role } from '../../src/raft/types.ts';
import type { Message, NodeId } from '../../src/raft/types.ts';
import { bytes, confChange, TestNetwork } from './network.ts';

const { AddVoter, AddLearner, RemoveNode } = ConfChangeType;

function status(net: TestNetwork, id: NodeId) {
  return net.get(id).node.status();
}

function voteResponse(from: NodeId, to: NodeId, term: number): Message {
  return { type: MessageType.VoteResp, from, to, term, logTerm: 0, index: 0, entries: [], commit: 0, reject: false, rejectHint: 0, snapshot: null, context: new Uint8Array(0) };
}

/** Proposes `value` on the leader and returns the index it was appended at. */
function proposeAt(net: TestNetwork, leader: NodeId, value: string): number {
  const result = net.get(leader).node.propose(bytes(value));
  assert.ok(result.ok, `proposal ${value} refused`);
  net.settle();
  return status(net, leader).lastIndex;
}

/** One heartbeat round from the leader, so followers learn the commit index. */
function heartbeat(net: TestNetwork, leader: NodeId): void {
  net.tick(leader);
  net.settle();
}

test('removing the leader itself: it steps down once the change applies, the rest elect a new leader, it never campaigns again', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  assert.ok(net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.Auto, { type: RemoveNode, nodeId: 1 })).ok);
  net.settle();
  assert.deepEqual(net.get(1).confState.voters, [2, 3], 'node 1 applied its own removal');
  assert.equal(status(net, 1).role, Role.Follower, 'a removed leader steps down (etcd #11038)');
  assert.equal(status(net, 1).leader, 0);
  for (const id of [2, 3]) assert.deepEqual(net.get(id).confState.voters, [2, 3], `node ${id} applied the removal`);

  net.record = true;
  const term = status(net, 1).term;
  assert.ok(net.tickUntil([1, 2, 3], () => net.leaders().length === 1, 100), 'the remaining voters elect a leader');
  const leader = net.leaders()[0]!;
  assert.notEqual(leader, 1);
  // The new leader replicates only to the members of the new configuration.
  assert.deepEqual([...status(net, leader).progress.keys()].sort(), [2, 3]);
  const index = proposeAt(net, leader, 'after-removal');
  heartbeat(net, leader);
  for (const id of [2, 3]) assert.deepEqual(net.appliedData(id), ['after-removal']);

  // The removed node hears nothing more; however long it waits, it never campaigns.
  net.tickUntil([1], () => false, 200);
  assert.equal(status(net, 1).role, Role.Follower);
  assert.equal(status(net, 1).term, term, 'node 1 never raised its term');
  const campaigns = net.delivered.filter((m) => m.from === 1 && (m.type === MessageType.Vote || m.type === MessageType.PreVote));
  assert.equal(campaigns.length, 0, 'no (pre-)vote request ever left node 1');
  assert.ok(status(net, 1).lastIndex < index, 'node 1 no longer receives the log');
});

test('a learner receives the log but never counts toward commit: 2 voters + 1 learner, one voter down, nothing commits', () => {
  const net = new TestNetwork([1, 2], {}, [3]);
  net.elect(1);
  assert.deepEqual(status(net, 1).confState.learners, [3]);
  net.isolate(2);
  const index = proposeAt(net, 1, 'x');
  for (let i = 0; i < 5; i++) heartbeat(net, 1); // fewer ticks than an election timeout: node 1 keeps leading
  assert.equal(status(net, 1).role, Role.Leader);
  assert.equal(status(net, 1).progress.get(3)!.match, index, 'the learner acknowledged the entry');
  assert.equal(net.get(3).storage.lastIndex(), index, 'the learner stores the entry');
  assert.ok(status(net, 1).commit < index, `commit ${status(net, 1).commit} must stay below ${index}: leader + learner is no quorum`);
  for (const id of [1, 2, 3]) assert.deepEqual(net.appliedData(id), [], `nothing applied on node ${id}`);

  net.heal();
  heartbeat(net, 1);
  heartbeat(net, 1);
  for (const id of [1, 2, 3]) assert.deepEqual(net.appliedData(id), ['x'], `node ${id} applies once voter 2 acknowledges`);
});

test('a learner never campaigns, is never asked for a vote, and a vote it sends does not count', () => {
  const net = new TestNetwork([1, 2], { preVote: false }, [3]);
  net.record = true;
  net.tickUntil([3], () => false, 60); // six election timeouts on the learner alone
  assert.equal(status(net, 3).role, Role.Follower);
  assert.equal(status(net, 3).term, 1);
  assert.equal(net.delivered.filter((m) => m.from === 3).length, 0, 'the learner sent nothing');

  net.isolate(2);
  net.get(1).node.campaign();
  net.settle();
  const term = status(net, 1).term;
  assert.equal(status(net, 1).role, Role.Candidate);
  assert.equal(net.delivered.filter((m) => m.type === MessageType.Vote && m.to === 3).length, 0, 'no vote request to a learner');
  net.get(1).node.step(voteResponse(3, 1, term));
  assert.equal(status(net, 1).role, Role.Candidate, "the learner's grant is not counted");
  net.get(1).node.step(voteResponse(2, 1, term));
  assert.equal(status(net, 1).role, Role.Leader, "voter 2's grant wins the election");
});

test('promoting a learner makes it count: afterwards voters 1 and 3 commit while voter 2 is down', () => {
  const net = new TestNetwork([1, 2], {}, [3]);
  net.elect(1);
  assert.ok(net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.Auto, { type: AddVoter, nodeId: 3 })).ok);
  net.settle();
  heartbeat(net, 1);
  for (const id of [1, 2, 3]) {
    assert.deepEqual(net.get(id).confState.voters, [1, 2, 3], `node ${id} applied the promotion`);
    assert.deepEqual(net.get(id).confState.learners, []);
  }
  net.isolate(2);
  const index = proposeAt(net, 1, 'y');
  assert.ok(status(net, 1).commit >= index, 'voters 1 and 3 are a majority of {1,2,3}');
  heartbeat(net, 1);
  assert.deepEqual(net.appliedData(3), ['y']);
});

/** 1,2,3 voters, 4,5 learners → joint ({1,4,5}, {1,2,3}), left only explicitly. */
function enterJoint(net: TestNetwork, transition: ConfChangeTransition = ConfChangeTransition.JointExplicit): void {
  const change = confChange(
    transition,
    { type: AddVoter, nodeId: 4 },
    { type: AddVoter, nodeId: 5 },
    { type: RemoveNode, nodeId: 2 },
    { type: RemoveNode, nodeId: 3 },
  );
  assert.ok(net.get(1).node.proposeConfChange(change).ok);
  net.settle();
  heartbeat(net, 1);
}

test('a joint configuration commits only with a majority of both the incoming and the outgoing voters', () => {
  const net = new TestNetwork([1, 2, 3], {}, [4, 5]);
  net.elect(1);
  enterJoint(net);
  for (const id of [1, 2, 3, 4, 5]) {
    const conf = net.get(id).confState;
    assert.deepEqual([conf.voters, conf.votersOutgoing, conf.autoLeave], [[1, 4, 5], [1, 2, 3], false], `node ${id} is joint`);
  }

  // Only the outgoing majority {1,2,3} acknowledges.
  net.isolate(4);
  net.isolate(5);
  const outgoingOnly = proposeAt(net, 1, 'outgoing-only');
  assert.ok(status(net, 1).progress.get(2)!.match >= outgoingOnly && status(net, 1).progress.get(3)!.match >= outgoingOnly);
  assert.ok(status(net, 1).commit < outgoingOnly, 'the incoming half has only node 1: no commit');
  net.heal();
  heartbeat(net, 1);
  assert.ok(status(net, 1).commit >= outgoingOnly, 'commits once 4 and 5 acknowledge');

  // Only the incoming majority {1,4,5} acknowledges.
  net.isolate(2);
  net.isolate(3);
  const incomingOnly = proposeAt(net, 1, 'incoming-only');
  assert.ok(status(net, 1).progress.get(4)!.match >= incomingOnly && status(net, 1).progress.get(5)!.match >= incomingOnly);
  assert.ok(status(net, 1).commit < incomingOnly, 'the outgoing half has only node 1: no commit');
  net.heal();
  heartbeat(net, 1);
  assert.ok(status(net, 1).commit >= incomingOnly, 'commits once 2 and 3 acknowledge');

  // Leave explicitly; from then on the new voters alone decide and 2, 3 are gone.
  assert.ok(net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.Auto)).ok);
  net.settle();
  heartbeat(net, 1);
  for (const id of [1, 4, 5]) assert.deepEqual([net.get(id).confState.voters, net.get(id).confState.votersOutgoing], [[1, 4, 5], []]);
  net.isolate(2);
  net.isolate(3);
  const afterLeave = proposeAt(net, 1, 'after-leave');
  assert.ok(status(net, 1).commit >= afterLeave);
  assert.deepEqual([...status(net, 1).progress.keys()].sort(), [1, 4, 5]);
});

test('a joint configuration elects a leader only with a majority of both halves', () => {
  const net = new TestNetwork([1, 2, 3], { preVote: false, checkQuorum: false }, [4, 5]);
  net.elect(1);
  enterJoint(net);
  net.isolate(1);
  // Node 4 reaches 5 (incoming majority {4,5}) but neither 2 nor 3 (outgoing needs two of {1,2,3}).
  for (const other of [2, 3]) {
    net.cut.add(`4->${other}`);
    net.cut.add(`${other}->4`);
  }
  net.get(4).node.campaign();
  net.settle();
  assert.notEqual(status(net, 4).role, Role.Leader, 'an incoming majority alone does not elect');
  net.heal();
  net.isolate(1);
  net.get(4).node.campaign();
  net.settle();
  assert.equal(status(net, 4).role, Role.Leader, 'votes from 5 and from 2, 3 elect node 4');
});

test('a joint configuration with auto leave is left by the leader once the joint entry applies', () => {
  const net = new TestNetwork([1, 2, 3], {}, [4, 5]);
  net.elect(1);
  enterJoint(net, ConfChangeTransition.JointImplicit);
  net.settle();
  heartbeat(net, 1);
  for (const id of [1, 4, 5]) {
    const conf = net.get(id).confState;
    assert.deepEqual([conf.voters, conf.votersOutgoing, conf.learners], [[1, 4, 5], [], []], `node ${id} left the joint configuration`);
  }
  const confEntries = net.get(1).applied.filter((e) => e.type === 1);
  assert.equal(confEntries.length, 2, 'the joint entry, then the leave the leader proposed itself');
});

test('demoting a voter to learner through a joint configuration takes effect on leave (learnersNext)', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  const change = confChange(ConfChangeTransition.JointExplicit, { type: AddLearner, nodeId: 3 });
  assert.ok(net.get(1).node.proposeConfChange(change).ok);
  net.settle();
  heartbeat(net, 1);
  let conf = net.get(1).confState;
  assert.deepEqual([conf.voters, conf.votersOutgoing, conf.learners, conf.learnersNext], [[1, 2], [1, 2, 3], [], [3]]);
  assert.ok(net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.Auto)).ok);
  net.settle();
  heartbeat(net, 1);
  conf = net.get(1).confState;
  assert.deepEqual([conf.voters, conf.votersOutgoing, conf.learners, conf.learnersNext], [[1, 2], [], [3], []]);
  assert.equal(status(net, 1).progress.get(3)!.isLearner, true);
});

test('demoting the leader itself to learner: it steps down like a removed leader, and never campaigns', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  assert.ok(net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.Auto, { type: AddLearner, nodeId: 1 })).ok);
  net.settle();
  assert.deepEqual([net.get(1).confState.voters, net.get(1).confState.learners], [[2, 3], [1]]);
  assert.equal(status(net, 1).role, Role.Follower, 'a leader that is no longer a voter steps down');
  assert.ok(net.tickUntil([1, 2, 3], () => net.leaders().length === 1, 100));
  const leader = net.leaders()[0]!;
  assert.notEqual(leader, 1);
  // As a learner, node 1 still receives and applies the log.
  proposeAt(net, leader, 'z');
  heartbeat(net, leader);
  assert.deepEqual(net.appliedData(1), ['z']);
});

test('refused membership changes are errors, never silent no-ops', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  const leave = net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.Auto));
  assert.equal(!leave.ok && leave.error.code, 'RAFTKV_INVALID_ARGUMENT', 'leaving a joint configuration when not in one');
  const removeAll = net.get(1).node.proposeConfChange(
    confChange(ConfChangeTransition.Auto, { type: RemoveNode, nodeId: 1 }, { type: RemoveNode, nodeId: 2 }, { type: RemoveNode, nodeId: 3 }),
  );
  assert.equal(!removeAll.ok && removeAll.error.code, 'RAFTKV_INVALID_ARGUMENT', 'removing every voter');
  const onFollower = net.get(2).node.proposeConfChange(confChange(ConfChangeTransition.Auto, { type: AddLearner, nodeId: 4 }));
  assert.equal(!onFollower.ok && onFollower.error.code, 'RAFTKV_PROPOSAL_DROPPED', 'membership changes only on the leader');
  net.isolate(1); // the first change cannot commit, so it stays pending
  assert.ok(net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.Auto, { type: AddLearner, nodeId: 4 })).ok);
  const second = net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.Auto, { type: AddLearner, nodeId: 5 }));
  assert.equal(!second.ok && second.error.code, 'RAFTKV_PROPOSAL_DROPPED', 'one membership change at a time');
});

test('no campaign while a committed membership change is unapplied (etcd #12133)', () => {
  const net = new TestNetwork([1, 2, 3], { preVote: false });
  net.elect(1);
  net.hold = true; // node 2 learns that the change committed, but its host has not applied it
  assert.ok(net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.Auto, { type: AddLearner, nodeId: 4 })).ok);
  net.settle();
  // Deliver appends and answers by hand until node 2 knows the commit index; do not run node 2's Ready.
  for (let round = 0; round < 10; round++) {
    const held = net.held;
    net.held = [];
    for (const m of held) net.get(m.to).node.step(m);
    for (const id of [1, 3]) {
      const member = net.get(id);
      if (!member.node.hasReady()) continue;
      const ready = member.node.ready();
      member.storage.saveSync({ snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState, sync: ready.mustSync });
      for (const m of [...ready.messagesBeforePersist, ...ready.messages]) net.deliver(m);
      member.node.advance();
    }
    if (net.get(1).node.status().commit === net.get(1).node.status().lastIndex) net.get(1).node.tick();
  }
  const confIndex = status(net, 1).lastIndex;
  assert.ok(status(net, 2).commit >= confIndex, 'node 2 knows the change is committed');
  assert.ok(status(net, 2).applied < confIndex, 'but has not applied it');
  net.get(2).node.campaign();
  assert.equal(status(net, 2).role, Role.Follower, 'it refuses to campaign');
  assert.equal(status(net, 2).term, status(net, 1).term);
});

test('etcd #12359: voters that missed the commit of a leave still elect a leader (a rejecting voter shares its commit index)', () => {
  // Voters {1,2} + learner 3 → joint ({1,3}, {1,2}) → leave: node 2 leaves. Leader 1 commits the leave,
  // tells only node 2 (with a new entry that only node 2 stores), and crashes before persisting either.
  const net = new TestNetwork([1, 2], {}, [3]);
  net.elect(1);
  assert.ok(net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.JointExplicit, { type: AddVoter, nodeId: 3 }, { type: RemoveNode, nodeId: 2 })).ok);
  net.settle();
  heartbeat(net, 1);
  for (const id of [1, 2, 3]) assert.deepEqual([net.get(id).confState.voters, net.get(id).confState.votersOutgoing], [[1, 3], [1, 2]]);

  net.paused.add(1); // node 1's host runs its Readies by hand from here on
  assert.ok(net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.Auto)).ok);
  const first = net.get(1).node.ready();
  net.get(1).storage.saveSync({ snapshot: null, entries: first.entries, hardState: first.hardState, sync: true });
  const leaveIndex = first.entries[0]!.index;
  for (const m of [...first.messagesBeforePersist, ...first.messages]) net.deliver(m);
  net.get(1).node.advance();
  net.settle(); // 2 and 3 store the leave and acknowledge: node 1 commits it in memory
  assert.equal(status(net, 1).commit, leaveIndex);
  assert.ok(net.get(1).node.propose(bytes('lost-on-1')).ok);
  const second = net.get(1).node.ready(); // commit + the new entry: never persisted, node 1 crashes
  for (const m of second.messagesBeforePersist) if (m.to === 2) net.deliver(m);
  net.restart(1);
  net.paused.delete(1);
  net.settle();
  assert.deepEqual(net.get(2).confState.voters, [1, 3], 'node 2 applied the leave: it is no longer a member');
  assert.equal(net.get(2).storage.lastIndex(), leaveIndex + 1, 'and its log is ahead of the voters');
  for (const id of [1, 3]) {
    assert.ok(status(net, id).commit < leaveIndex, `node ${id} does not know the leave committed`);
    assert.deepEqual(status(net, id).confState.votersOutgoing, [1, 2], `node ${id} still needs node 2's vote`);
  }
  // Node 2 rejects both (its log is ahead); its rejection tells them the leave is committed.
  assert.ok(net.tickUntil([1, 2, 3], () => net.leaders().length === 1, 200), 'a leader is elected');
  const leader = net.leaders()[0]!;
  assert.ok(leader === 1 || leader === 3);
  assert.deepEqual([status(net, leader).confState.voters, status(net, leader).confState.votersOutgoing], [[1, 3], []]);
  proposeAt(net, leader, 'progress');
  assert.ok(status(net, leader).commit === status(net, leader).lastIndex, 'and the new configuration commits');
});

test('a candidate that applies its own removal mid-campaign does not win with the new configuration’s votes', () => {
  const net = new TestNetwork([1, 2, 3], { preVote: false, checkQuorum: false });
  net.hold = true; // vote traffic is delivered by hand
  net.get(3).node.campaign();
  net.settle();
  const term = status(net, 3).term;
  assert.equal(status(net, 3).role, Role.Candidate);
  // The host of node 3 applies a committed change removing node 3 (e.g. learned from a voter's rejection).
  net.get(3).node.applyConfChange(confChange(ConfChangeTransition.Auto, { type: RemoveNode, nodeId: 3 }));
  assert.equal(status(net, 3).role, Role.Follower, 'the campaign ends');
  for (const from of [1, 2]) net.get(3).node.step(voteResponse(from, 3, term));
  assert.notEqual(status(net, 3).role, Role.Leader, 'grants from the remaining voters do not elect a non-member');
});

test('a candidate that learns from a rejection that a membership change committed stops campaigning until it applied it', () => {
  const net = new TestNetwork([1, 2, 3], { preVote: false, checkQuorum: false });
  net.elect(1);
  net.isolate(3);
  assert.ok(net.get(1).node.proposeConfChange(confChange(ConfChangeTransition.Auto, { type: RemoveNode, nodeId: 3 })).ok);
  net.settle();
  heartbeat(net, 1);
  // Node 3 stores the change but never learns that it committed.
  net.heal();
  net.hold = true;
  const leaderTerm = status(net, 1).term;
  const confIndex = status(net, 1).lastIndex;
  const entries = net.get(1).storage.entries(net.get(3).storage.lastIndex() + 1, confIndex + 1, Number.MAX_SAFE_INTEGER);
  net.get(3).node.step({ type: MessageType.App, from: 1, to: 3, term: leaderTerm, logTerm: net.get(3).storage.term(net.get(3).storage.lastIndex()), index: net.get(3).storage.lastIndex(), entries, commit: 0, reject: false, rejectHint: 0, snapshot: null, context: new Uint8Array(0) });
  net.settle();
  net.held = [];
  assert.ok(status(net, 3).lastIndex >= confIndex && status(net, 3).commit < confIndex, 'node 3 has the change, not its commit');
  net.get(3).node.campaign();
  net.settle();
  const term = status(net, 3).term;
  assert.equal(status(net, 3).role, Role.Candidate);
  // Voter 1 rejects (its log is ahead) and tells node 3 that the change is committed.
  const rejection: Message = { ...voteResponse(1, 3, term), reject: true, commit: confIndex, logTerm: net.get(1).storage.term(confIndex) };
  net.get(3).node.step(rejection);
  assert.equal(status(net, 3).commit, confIndex, 'node 3 learned the commit');
  assert.equal(status(net, 3).role, Role.Follower, 'and stopped campaigning with the stale configuration');
  net.get(3).node.step(voteResponse(2, 3, term));
  assert.notEqual(status(net, 3).role, Role.Leader);
});
