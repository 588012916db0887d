// The smallest reproduction of a bug the history long run found (seed 610,
// profile 'mixed': a member stopped and restarted could not open its log,
// "LogCorruptError: entry 1903 is missing (next stored entry is 1887)").
// ClassicLogStorage.save() and compact() each read `this.runs` (which stored
// run of entries starts where), await their write, then assign `this.runs`.
// The replicated node calls them concurrently — save() from the ready loop,
// compact() from the apply worker after a snapshot — so the one finishing
// last overwrites the other's update. Here the run 11..20 saved meanwhile is
// forgotten; a later conflicting append from 15 then neither deletes nor
// trims it, both runs stay on disk, and the log no longer opens.
// Not a test file (it fails while the bug is there): run it with
//   node --import tsx test/history/repro-log-save-compact-race.ts
// It exits 1 and prints the error while the bug reproduces, 0 otherwise.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLogStorage, EntryType } from '../../src/index.ts';

const confState = { voters: [1], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
const entries = (from: number, to: number, term: number): { term: number; index: number; type: EntryType; data: Uint8Array }[] =>
  Array.from({ length: to - from + 1 }, (_, offset) => ({ term, index: from + offset, type: EntryType.Normal, data: new Uint8Array([1]) }));

const directory = await mkdtemp(join(tmpdir(), 'raftkv-repro-log-'));
let failure: Error | undefined;
try {
  const log = await ClassicLogStorage.open(directory);
  await log.bootstrap(confState);
  await log.save({ snapshot: null, entries: entries(2, 10, 1), hardState: null, sync: true });
  await log.createSnapshot({ index: 5, term: 1, confState });
  // The ready loop saves 11..20 while the apply worker compacts through 3; neither waits for the other.
  await Promise.all([log.save({ snapshot: null, entries: entries(11, 20, 1), hardState: null, sync: true }), log.compact(3)]);
  // A new leader's entries overwrite the tail from 15, as a follower's conflicting suffix is.
  await log.save({ snapshot: null, entries: entries(15, 16, 2), hardState: { term: 2, vote: 0, commit: 5 }, sync: true });
  await log.close();
  const reopened = await ClassicLogStorage.open(directory);
  await reopened.close();
} catch (error) {
  failure = error as Error;
} finally {
  await rm(directory, { recursive: true, force: true });
}
if (failure !== undefined) {
  console.log(`the log does not reopen after a save and a compaction overlapped: ${failure.name} ${(failure as { code?: string }).code ?? ''}: ${failure.message}`);
  process.exit(1);
}
console.log('the log reopened: no lost run');
