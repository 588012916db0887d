// Raft §5.2 (leader election), pre-vote and check-quorum, as small scenarios.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Role } from '../../src/raft/types.ts';
import { TestNetwork } from './network.ts';

test('§5.2: a candidate that wins a majority becomes leader; the others follow it', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  assert.deepEqual(net.leaders(), [1]);
  for (const id of [2, 3]) {
    assert.equal(net.get(id).node.status().leader, 1);
    assert.equal(net.get(id).node.status().term, net.get(1).node.status().term);
  }
});

test('§5.2: a follower that hears nothing for an election timeout campaigns', () => {
  const net = new TestNetwork([1, 2, 3]);
  for (let i = 0; i < 25 && net.leaders().length === 0; i++) net.tickAll();
  assert.equal(net.leaders().length, 1);
});

test('§5.2: at most one vote per term, persisted before the answer leaves', () => {
  const net = new TestNetwork([1, 2, 3], { preVote: false });
  net.hold = true;
  net.get(1).node.campaign();
  net.get(2).node.campaign();
  net.settle();
  // Node 3 receives both vote requests for the same term: it grants only the first.
  const requests = net.held.filter((m) => m.to === 3);
  assert.equal(requests.length, 2);
  net.held = [];
  for (const m of requests) net.get(3).node.step(m);
  const ready = net.get(3).node.ready();
  const grants = ready.messages.filter((m) => m.type === 5 && !m.reject);
  assert.equal(grants.length, 1, 'exactly one vote granted');
  assert.ok(ready.hardState !== null && ready.hardState.vote === grants[0]!.to, 'the vote is in the hard state to persist');
  assert.ok(ready.mustSync);
  assert.equal(ready.messagesBeforePersist.filter((m) => m.type === 5).length, 0, 'vote responses never leave before persisting');
});

test('§5.4.1: a voter denies a candidate whose log is less up to date', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  net.isolate(3);
  net.get(1).node.propose(new Uint8Array([1]));
  net.settle();
  net.heal();
  // Node 3 missed an entry; nodes 1 and 2 must refuse it even after their leases pass.
  net.isolate(1);
  for (let i = 0; i < 30; i++) {
    net.tick(2);
    net.tick(3);
    net.settle();
  }
  const leaders = net.leaders().filter((id) => id !== 1);
  assert.deepEqual(leaders, [2], 'only the up-to-date node can win');
});

test('pre-vote: a partitioned node does not inflate its term and depose the leader on return', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  const term = net.get(1).node.status().term;
  net.isolate(3);
  for (let i = 0; i < 100; i++) {
    net.tickAll();
  }
  assert.equal(net.get(3).node.status().term, term, 'pre-candidate never raised its term');
  net.heal();
  net.tickAll(5);
  assert.deepEqual(net.leaders(), [1]);
  assert.equal(net.get(1).node.status().term, term);
});

test('check-quorum: a leader that hears from no quorum for an election timeout steps down', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  net.isolate(1);
  for (let i = 0; i < 25; i++) {
    net.tick(1);
    net.settle();
  }
  assert.notEqual(net.get(1).node.status().role, Role.Leader);
});

test('check-quorum lease: followers that heard from a leader ignore a disruptive candidate', () => {
  const net = new TestNetwork([1, 2, 3], { preVote: false });
  net.elect(1);
  const term = net.get(1).node.status().term;
  net.get(3).node.campaign(); // without pre-vote it raises its term
  net.settle();
  assert.deepEqual(net.leaders(), [1], 'node 1 keeps leading: votes were ignored inside the lease');
  assert.equal(net.get(2).node.status().term, term);
});

test('a stale leader learns the new term from a follower and steps down', () => {
  const net = new TestNetwork([1, 2, 3]);
  net.elect(1);
  net.isolate(1);
  for (let i = 0; i < 40 && net.leaders().filter((id) => id !== 1).length === 0; i++) {
    net.tick(2);
    net.tick(3);
    net.settle();
  }
  net.heal();
  net.get(1).node.tick(); // heartbeat to a follower with a higher term
  net.settle();
  assert.equal(net.leaders().length, 1);
  assert.notEqual(net.leaders()[0], 1);
});
