import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProposalTracker, RecentIds } from '../../src/server/proposals.ts';
import { ReadIndexBatcher } from '../../src/server/read-index.ts';
import { decodeProposal, encodeProposal } from '../../src/server/codec.ts';
import { createRandom } from '../../src/raft/random.ts';

test('proposal tracker: resolves by sequence, expires as outcome unknown, bounded', async () => {
  const tracker = new ProposalTracker<string>(2);
  const a = tracker.register(1_000);
  const b = tracker.register(500);
  assert.throws(() => tracker.register(1_000), { code: 'RAFTKV_PROPOSAL_DROPPED' });
  tracker.resolve(a.sequence, 'done');
  assert.equal(await a.promise, 'done');
  tracker.expire(600);
  await assert.rejects(b.promise, { code: 'RAFTKV_OUTCOME_UNKNOWN' });
  assert.equal(tracker.size, 0);
  tracker.resolve(b.sequence, 'late'); // ignored: already expired
});

const TRACKER_SEEDS = process.env['TRACKER_SEED'] === undefined ? [1, 2, 3, 4, 5] : [Number(process.env['TRACKER_SEED'])];

test('proposal tracker: matches a map of waiters through growth, skipped slots, stale sequences and expiry (seeded)', async () => {
  for (const seed of TRACKER_SEEDS) {
    const replay = `seed ${seed} (replay: TRACKER_SEED=${seed} npm test -- server/batching)`;
    const random = createRandom(seed);
    const tracker = new ProposalTracker<number>(300);
    const model = new Map<number, { deadlineMs: number; outcome: { settled: 'resolved' | 'rejected' | undefined; value: unknown } }>();
    const finished: number[] = []; // sequences resolved, rejected or expired: later calls on them must do nothing
    const expected = new Map<number, { outcome: { settled: string | undefined; value: unknown }; settled: string; value: unknown }>();
    const sequencesSeen = new Set<number>();
    let nowMs = 0;
    for (let step = 0; step < 20_000; step++) {
      const choice = random(100);
      // Phases: mostly registering (the table grows past 256 slots), then mostly settling.
      const registering = step % 4_000 < 2_500 ? 60 : 25;
      if (choice < registering) {
        if (model.size >= 300) {
          assert.throws(() => tracker.register(nowMs + 1), { code: 'RAFTKV_PROPOSAL_DROPPED' }, replay);
          continue;
        }
        const deadlineMs = nowMs + 1 + random(500);
        const { sequence, promise } = tracker.register(deadlineMs);
        assert.ok(Number.isSafeInteger(sequence) && sequence > 0 && !sequencesSeen.has(sequence), `${replay}: sequence ${sequence} is new`);
        sequencesSeen.add(sequence);
        const outcome: { settled: 'resolved' | 'rejected' | undefined; value: unknown } = { settled: undefined, value: undefined };
        promise.then(
          (value) => Object.assign(outcome, { settled: 'resolved', value }),
          (error: { code?: string }) => Object.assign(outcome, { settled: 'rejected', value: error.code }),
        );
        model.set(sequence, { deadlineMs, outcome });
      } else if (choice < 85 && model.size > 0) {
        const sequences = [...model.keys()];
        const sequence = sequences[random(sequences.length)]!;
        const outcome = model.get(sequence)!.outcome;
        if (random(2) === 0) {
          tracker.resolve(sequence, step);
          expected.set(sequence, { outcome, settled: 'resolved', value: step });
        } else {
          tracker.reject(sequence, Object.assign(new Error('refused'), { code: 'REFUSED' }));
          expected.set(sequence, { outcome, settled: 'rejected', value: 'REFUSED' });
        }
        finished.push(sequence);
        model.delete(sequence);
      } else if (choice < 92 && finished.length > 0) {
        // A late answer for a settled sequence (or one never issued) must not touch any waiter.
        const stale = random(3) === 0 ? random(2 ** 40) + 2 ** 41 : finished[random(finished.length)]!;
        if (random(2) === 0) tracker.resolve(stale, -1);
        else tracker.reject(stale, new Error('stale'));
      } else {
        nowMs += random(120);
        tracker.expire(nowMs);
        for (const [sequence, entry] of model) {
          if (entry.deadlineMs <= nowMs) {
            expected.set(sequence, { outcome: entry.outcome, settled: 'rejected', value: 'RAFTKV_OUTCOME_UNKNOWN' });
            model.delete(sequence);
            finished.push(sequence);
          }
        }
      }
      assert.equal(tracker.size, model.size, replay);
    }
    await new Promise((resolve) => setImmediate(resolve));
    for (const [sequence, entry] of model) assert.equal(entry.outcome.settled, undefined, `${replay}: ${sequence} still waits`);
    for (const [sequence, { outcome, settled, value }] of expected) assert.deepEqual(outcome, { settled, value }, `${replay}: ${sequence}`);
    tracker.rejectAll(() => Object.assign(new Error('closed'), { code: 'CLOSED' }));
    assert.equal(tracker.size, 0, replay);
    await new Promise((resolve) => setImmediate(resolve));
    for (const [sequence, entry] of model) assert.deepEqual(entry.outcome, { settled: 'rejected', value: 'CLOSED' }, `${replay}: ${sequence}`);
  }
});

test('recent ids: remembers the latest, forgets the oldest first, never grows past its capacity', () => {
  const recent = new RecentIds(3);
  assert.equal(recent.add(1, 1), true);
  assert.equal(recent.add(2, 1), true, 'the same sequence from another proposer is another id');
  assert.equal(recent.add(1, 1), false, 'a duplicate is refused');
  assert.equal(recent.add(1, 2), true);
  assert.equal(recent.add(2 ** 47 - 1, 2 ** 53 - 1), true, 'the fourth id evicts the oldest');
  assert.deepEqual(
    [
      [1, 1],
      [2, 1],
      [1, 2],
      [2 ** 47 - 1, 2 ** 53 - 1],
    ].map(([node, sequence]) => recent.has(node!, sequence!)),
    [false, true, true, true],
  );
  assert.equal(recent.size, 3);
  // Many times round the ring, ids from three proposers interleaved: the window slides exactly, and a
  // refused duplicate does not move it.
  for (let i = 0; i < 10_000; i++) {
    assert.equal(recent.add(i % 3, i), true);
    if (i >= 1) assert.equal(recent.add((i - 1) % 3, i - 1), false);
  }
  assert.deepEqual(
    [9996, 9997, 9998, 9999].map((i) => recent.has(i % 3, i)),
    [false, true, true, true],
  );
  assert.equal(recent.has(9999 % 3 === 0 ? 1 : 0, 9999), false, 'a sequence is remembered for its proposer only');
  assert.equal(recent.size, 3);
  assert.throws(() => new RecentIds(0), { name: 'AssertionFailedError' });
});

test('read batcher: reads that arrive after a round is sent wait for the next round', async () => {
  const batcher = new ReadIndexBatcher(1, 100);
  const order: string[] = [];
  const first = batcher.wait(10_000).then(() => order.push('first'));
  const round1 = batcher.takeRound(0);
  assert.ok(round1);
  const second = batcher.wait(10_000).then(() => order.push('second'));
  assert.equal(batcher.takeRound(0), undefined, 'one round in flight at a time');
  batcher.confirm(round1, 5);
  batcher.release(4);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, [], 'not released before the state machine applied the read index');
  batcher.release(5);
  await first;
  const round2 = batcher.takeRound(0);
  assert.ok(round2);
  assert.notDeepEqual(round2, round1);
  batcher.confirm(round1, 9); // duplicate ReadState for an old round: ignored
  batcher.release(100);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, ['first']);
  batcher.confirm(round2, 6);
  batcher.release(6);
  await second;
  assert.deepEqual(order, ['first', 'second']);
});

test('read batcher: lost rounds are retried, deadlines fail as timeouts', async () => {
  const batcher = new ReadIndexBatcher(1, 100);
  const late = batcher.wait(50);
  const patient = batcher.wait(10_000);
  const round = batcher.takeRound(0);
  assert.ok(round);
  batcher.expire(100, 1_000);
  await assert.rejects(late, { code: 'RAFTKV_TIMEOUT' });
  batcher.expire(2_000, 1_000); // the round is older than the retry interval: re-queued
  const retry = batcher.takeRound(2_000);
  assert.ok(retry);
  batcher.confirm(retry, 1);
  batcher.release(1);
  await patient;
  assert.equal(batcher.waiting, 0);
});

test('proposal codec round-trips and rejects garbage', () => {
  const data = encodeProposal({ node: 3, sequence: 99, request: { type: 'put', key: new Uint8Array([1]) } });
  const decoded = decodeProposal<{ type: string; key: Uint8Array }>(data);
  assert.equal(decoded.node, 3);
  assert.equal(decoded.sequence, 99);
  assert.deepEqual([...decoded.request.key], [1]);
  assert.throws(() => decodeProposal(new Uint8Array([0x93, 0xa1, 0x78, 1, 2])), /assertion failed/);
});
