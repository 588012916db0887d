// Hand-made records for the watch, lease and mutex checks: each bug they
// exist to catch must be rejected, and the legal cases that look alike
// (a compacted gap, an early delete after a revoke, a holder coming back
// with a new key) accepted.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Operation } from './history.ts';
import { checkLeases } from './lease-check.ts';
import type { LeaseRecord } from './lease-check.ts';
import { checkMutex } from './mutex-check.ts';
import { checkWatches } from './watch-check.ts';
import type { WatchedEvent, WatchSegment, WatchTruth } from './watch-check.ts';

const put = (revision: number, key: string, value: string, createRevision = revision, version = 1): WatchedEvent => ({
  revision,
  type: 'put',
  key,
  value,
  createRevision,
  version,
  lease: 0,
  receivedAtMs: 0,
});
const del = (revision: number, key: string): WatchedEvent => ({ revision, type: 'delete', key, value: '', createRevision: 0, version: 0, lease: 0, receivedAtMs: 0 });

const committed: WatchedEvent[] = [put(2, 'k0', 'a'), put(3, 'k1', 'b'), put(4, 'k0', 'c', 2, 2), del(5, 'k1'), put(6, 'k1', 'd')];
const truth: WatchTruth = { member: 1, from: 1, to: 6, events: committed };

function segment(watcher: number, startRevision: number, coveredTo: number, events: WatchedEvent[], end = 'cancelled', compactRevision?: number): WatchSegment {
  return { watcher, member: 1, startRevision, coveredTo, events, end, ...(compactRevision === undefined ? {} : { compactRevision }) };
}

function okPut(id: number, key: string, value: string, revision: number): Operation {
  return { id, client: 0, member: 1, input: { kind: 'put', key, value }, invokedAt: id * 2 + 1, completedAt: id * 2 + 2, outcome: 'ok', output: { revision } };
}

const writes: Operation[] = [okPut(0, 'k0', 'a', 2), okPut(1, 'k1', 'b', 3), okPut(2, 'k0', 'c', 4), okPut(3, 'k1', 'd', 6)];
const rules = (result: ReturnType<typeof checkWatches>): string[] => result.violations.map((violation) => violation.rule);

test('watch check: watchers that agree with the committed history pass, across a restart', () => {
  const result = checkWatches([segment(0, 1, 6, committed), segment(1, 1, 3, committed.slice(0, 2), 'RAFTKV_STOPPED'), segment(1, 4, 6, committed.slice(2))], truth, writes);
  assert.deepEqual(result.violations, []);
  assert.equal(result.comparedRevisions, 12);
  assert.equal(result.writesMatched, 4);
});

test('watch check: a dropped event, a duplicate, a changed value and a resume gap are each caught', () => {
  const dropped = committed.filter((event) => event.revision !== 4);
  assert.ok(rules(checkWatches([segment(0, 1, 6, dropped)], truth, writes)).includes('watch-events'));
  const twice = [...committed.slice(0, 3), committed[2] as WatchedEvent, ...committed.slice(3)];
  assert.ok(rules(checkWatches([segment(0, 1, 6, twice)], truth, writes)).includes('watch-duplicate'));
  const changed = committed.map((event) => (event.revision === 3 ? put(3, 'k1', 'x') : event));
  assert.ok(rules(checkWatches([segment(0, 1, 6, changed)], truth, writes)).includes('watch-events'));
  const gap = [segment(0, 1, 3, committed.slice(0, 2), 'RAFTKV_STOPPED'), segment(0, 5, 6, committed.slice(3))];
  assert.deepEqual(rules(checkWatches(gap, truth, writes)), ['watch-resume']);
  const replayed = [segment(0, 1, 3, committed.slice(0, 2), 'RAFTKV_STOPPED'), segment(0, 4, 6, committed.slice(1))];
  assert.deepEqual(rules(checkWatches(replayed, truth, writes)), ['watch-order']);
  const backwards = [committed[1] as WatchedEvent, committed[0] as WatchedEvent, ...committed.slice(2)];
  assert.ok(rules(checkWatches([segment(0, 1, 6, backwards)], truth, writes)).includes('watch-order'));
});

test('watch check: a gap left by compaction is allowed; watchers below the replay must agree with each other', () => {
  const compactedTruth: WatchTruth = { member: 1, from: 5, to: 6, events: committed.slice(3) };
  const resumed = [segment(0, 1, 2, committed.slice(0, 1), 'RAFTKV_COMPACTED', 5), segment(0, 5, 6, committed.slice(3))];
  assert.deepEqual(checkWatches([...resumed, segment(1, 1, 6, committed)], compactedTruth, writes).violations, []);
  const disagreeing = committed.map((event) => (event.revision === 3 ? put(3, 'k1', 'b2') : event));
  assert.ok(rules(checkWatches([segment(1, 1, 6, committed), segment(2, 1, 6, disagreeing)], compactedTruth, writes)).includes('watch-events'));
});

test('watch check: the history\'s writes must be what was committed, and every watched value must have been written', () => {
  const lostWrite = [...writes, okPut(4, 'k0', 'e', 5)];
  assert.ok(rules(checkWatches([segment(0, 1, 6, committed)], truth, lostWrite)).includes('watch-history'));
  const unwritten = writes.filter((operation) => operation.id !== 3);
  assert.ok(rules(checkWatches([segment(0, 1, 6, committed)], truth, unwritten)).includes('watch-value'));
  const badVersion: WatchTruth = { ...truth, events: committed.map((event) => (event.revision === 4 ? put(4, 'k0', 'c', 2, 3) : event)) };
  assert.ok(rules(checkWatches([], badVersion, writes)).includes('watch-generation'));
});

function lease(overrides: Partial<LeaseRecord> = {}): LeaseRecord {
  return { client: 0, id: 7, ttlSeconds: 1, acknowledgedInvokedAtMs: [1_000, 1_400], keys: [{ key: 'lease/0/0', putOk: true, putCompletedAtMs: 1_010 }], gets: [], ...overrides };
}

test('lease check: a key deleted before the last acknowledged renewal\'s call plus the TTL is an early expiry', () => {
  assert.equal(checkLeases([lease()], [{ key: 'lease/0/0', revision: 9, receivedAtMs: 2_400 }]).violations.length, 0);
  assert.equal(checkLeases([lease()], [{ key: 'lease/0/0', revision: 9, receivedAtMs: 2_399 }]).violations.length, 1);
  // The earliest receipt over all watchers counts.
  assert.equal(checkLeases([lease()], [{ key: 'lease/0/0', revision: 9, receivedAtMs: 3_000 }, { key: 'lease/0/0', revision: 9, receivedAtMs: 2_000 }]).violations.length, 1);
  // A revoke invoked before the deletion was seen may have caused it.
  assert.equal(checkLeases([lease({ revokeInvokedAtMs: 1_900 })], [{ key: 'lease/0/0', revision: 9, receivedAtMs: 2_000 }]).violations.length, 0);
});

test('lease check: a get that finds the key gone early is an early expiry, unless its put had not completed', () => {
  const early = lease({ gets: [{ key: 'lease/0/0', invokedAtMs: 2_000, completedAtMs: 2_100, present: false }] });
  assert.equal(checkLeases([early], []).violations.length, 1);
  const late = lease({ gets: [{ key: 'lease/0/0', invokedAtMs: 2_000, completedAtMs: 2_450, present: false }] });
  assert.equal(checkLeases([late], []).violations.length, 0);
  const putPending = lease({ keys: [{ key: 'lease/0/0', putOk: true, putCompletedAtMs: 2_050 }], gets: [{ key: 'lease/0/0', invokedAtMs: 2_000, completedAtMs: 2_100, present: false }] });
  assert.equal(checkLeases([putPending], []).violations.length, 0);
});

test('mutex check: guarded writes of two holdings must not interleave', () => {
  const a = 'lock/1@10';
  const b = 'lock/2@11';
  const again = 'lock/1@20';
  assert.deepEqual(checkMutex([{ client: 0, holder: a, revision: 12 }, { client: 0, holder: a, revision: 13 }, { client: 1, holder: b, revision: 15 }, { client: 0, holder: again, revision: 21 }]).violations, []);
  const interleaved = checkMutex([{ client: 0, holder: a, revision: 12 }, { client: 1, holder: b, revision: 13 }, { client: 0, holder: a, revision: 14 }]);
  assert.equal(interleaved.violations.length, 1);
  assert.match(interleaved.violations[0] as string, /two holders at once/);
  // Order of recording does not matter, revisions do.
  assert.equal(checkMutex([{ client: 0, holder: a, revision: 14 }, { client: 0, holder: a, revision: 12 }, { client: 1, holder: b, revision: 13 }]).violations.length, 1);
});
