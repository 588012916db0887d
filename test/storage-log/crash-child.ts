// Crash-test child: appends batches to a log storage (classic or wal) in a
// loop, each synced, now and then snapshotting and compacting the log, and
// reports on stdout (a pipe: synchronous on Linux) before and after every
// write, until it is killed with SIGKILL.
//   begin <firstIndex> <count> <term>
//   synced <firstIndex> <count> <term>
import { ClassicLogStorage } from '../../src/storage/log/classic.ts';
import { WalLogStorage } from '../../src/storage/log/wal.ts';
import type { LogStorage } from '../../src/storage/log/types.ts';
import { createRandom } from '../../src/raft/random.ts';

const [directory, seedText, engine] = process.argv.slice(2);
const random = createRandom(Number(seedText));
// Small segments, so rollover and the deletion of compacted segments happen under the kills too.
const storage: LogStorage = engine === 'wal' ? await WalLogStorage.open(directory!, { segmentBytes: 16 * 1024 }) : await ClassicLogStorage.open(directory!);
if (storage.isEmpty()) await storage.bootstrap({ voters: [1], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false });
let term = Math.max(2, storage.initialState().hardState.term);
process.stdout.write('ready\n');
for (;;) {
  const last = storage.lastIndex();
  // Mostly append; sometimes overwrite a suffix with a higher term (as a new leader would).
  let first = last + 1;
  if (random(5) === 0 && last > 2) {
    term += 1;
    first = Math.max(storage.firstIndex(), 2, last - random(10));
  }
  const count = 1 + random(20);
  const entries = Array.from({ length: count }, (_, i) => ({
    index: first + i,
    term,
    type: 0 as const,
    data: new TextEncoder().encode(`i${first + i}t${term}`.padEnd(64 + random(200), '.')),
  }));
  process.stdout.write(`begin ${first} ${count} ${term}\n`);
  await storage.save({ snapshot: null, entries, hardState: { term, vote: 1, commit: 1 }, sync: true });
  process.stdout.write(`synced ${first} ${count} ${term}\n`);
  if (random(20) === 0 && storage.lastIndex() > 200) {
    // Keep the last 100 entries: the test checks everything from the first index on.
    const index = storage.lastIndex() - 100;
    if (index > storage.snapshot().index) await storage.createSnapshot({ index, term: storage.term(index), confState: storage.snapshot().confState });
    await storage.compact(index);
  }
}
