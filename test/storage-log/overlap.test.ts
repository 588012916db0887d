// The node saves from its ready loop while its apply worker compacts after a
// snapshot; the two must not overlap inside the log. Found by the history
// long run (seeds 610 and 960: a restarted member could not open its log,
// "entry 1903 is missing"); this is its five-call reproduction, kept.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLogStorage } from '../../src/storage/log/classic.ts';
import { EntryType } from '../../src/raft/types.ts';

const confState = { voters: [1], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
const entries = (from: number, to: number, term: number) =>
  Array.from({ length: to - from + 1 }, (_, offset) => ({ term, index: from + offset, type: EntryType.Normal, data: new Uint8Array([offset]) }));

test('a save and a compaction that overlap both take effect; the log reopens whole', async () => {
  const directory = await mkdtemp(join(tmpdir(), 'raftkv-log-overlap-'));
  try {
    const log = await ClassicLogStorage.open(directory);
    await log.bootstrap(confState);
    await log.save({ snapshot: null, entries: entries(2, 10, 1), hardState: null, sync: true });
    await log.createSnapshot({ index: 5, term: 1, confState });
    await Promise.all([log.save({ snapshot: null, entries: entries(11, 20, 1), hardState: null, sync: true }), log.compact(3)]);
    // A conflicting suffix from a new leader overwrites the tail from 15.
    await log.save({ snapshot: null, entries: entries(15, 16, 2), hardState: { term: 2, vote: 0, commit: 5 }, sync: true });
    await log.close();
    const reopened = await ClassicLogStorage.open(directory);
    try {
      assert.equal(reopened.firstIndex(), 4);
      assert.equal(reopened.lastIndex(), 16);
      assert.deepEqual(
        reopened.entries(4, 17, Number.POSITIVE_INFINITY).map((entry) => [entry.index, entry.term]),
        [...Array.from({ length: 11 }, (_, offset) => [4 + offset, 1]), [15, 2], [16, 2]],
      );
    } finally {
      await reopened.close();
    }
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
});
