// Crash-test child: appends batches to a ClassicLogStorage in a loop, each
// synced, and reports on stdout (a pipe: synchronous on Linux) before and
// after every write, until it is killed with SIGKILL.
//   begin <firstIndex> <count> <term>
//   synced <firstIndex> <count> <term>
import { ClassicLogStorage } from '../../src/storage/log/classic.ts';
import { createRandom } from '../../src/raft/random.ts';

const [directory, seedText] = process.argv.slice(2);
const random = createRandom(Number(seedText));
const storage = await ClassicLogStorage.open(directory!);
if (storage.isEmpty()) await storage.bootstrap({ voters: [1], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false });
let term = Math.max(2, storage.initialState().hardState.term);
process.stdout.write('ready\n');
for (;;) {
  const last = storage.lastIndex();
  // Mostly append; sometimes overwrite a suffix with a higher term (as a new leader would).
  let first = last + 1;
  if (random(5) === 0 && last > 2) {
    term += 1;
    first = Math.max(2, last - random(10));
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
}
