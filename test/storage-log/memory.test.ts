import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryLogStorage } from '../../src/storage/log/memory.ts';
import { createRandom } from '../../src/raft/random.ts';
import type { Entry } from '../../src/raft/types.ts';

// MemoryLogStorage keeps entries in a ring of columns that doubles, halves and wraps; this drives it
// through thousands of appends, overwrites, compactions and clones against a plain array of entries.
const SEEDS = process.env['MEMORY_LOG_SEED'] === undefined ? [1, 2, 3] : [Number(process.env['MEMORY_LOG_SEED'])];
const conf = { voters: [1], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };

function text(entry: Entry): string {
  return `${entry.index}/${entry.term}/${entry.type}/${new TextDecoder().decode(entry.data)}`;
}

test('memory log: matches an array of entries through growth, wrap-around, overwrites, compaction and clones (seeded)', async () => {
  for (const seed of SEEDS) {
    const replay = `seed ${seed} (replay: MEMORY_LOG_SEED=${seed} npm test -- storage-log/memory)`;
    const random = createRandom(seed);
    const log = new MemoryLogStorage();
    await log.bootstrap(conf);
    let model: Entry[] = []; // model[i] has index first + i
    let first = 2;
    let term = 1;
    let clone: { log: MemoryLogStorage; first: number; entries: string[] } | undefined;
    for (let step = 0; step < 3_000; step++) {
      const choice = random(100);
      const last = first + model.length - 1;
      if (choice < 70) {
        // Append a batch, sometimes replacing a suffix (a new leader's conflicting entries).
        const from = random(5) === 0 && model.length > 0 ? first + random(model.length) : last + 1;
        if (from < last + 1) term += 1;
        const count = 1 + random(random(4) === 0 ? 400 : 12);
        const frame = new Uint8Array(count * 3).map((_, i) => 97 + ((i + step) % 26));
        const entries: Entry[] = [];
        for (let i = 0; i < count; i++) {
          const size = random(4);
          entries.push({ index: from + i, term, type: random(10) === 0 ? 1 : 0, data: frame.subarray(i * 3, i * 3 + size) });
        }
        log.saveSync({ snapshot: null, entries, hardState: null, sync: true });
        model = model.slice(0, from - first).concat(entries.map((entry) => ({ ...entry, data: entry.data.slice() })));
        frame.fill(0); // the log must have copied what it keeps
      } else if (choice < 85 && model.length > 1) {
        // Snapshot somewhere in the log and compact through some index at or below it.
        const snapshotIndex = first + random(model.length);
        if (snapshotIndex > log.snapshot().index) {
          log.createSnapshotSync({ index: snapshotIndex, term: log.term(snapshotIndex), confState: conf });
          const through = first - 1 + random(snapshotIndex - first + 2);
          log.compactSync(through);
          if (through >= first) {
            model = model.slice(through - first + 1);
            first = through + 1;
          }
        }
      } else if (choice < 92) {
        if (clone !== undefined) {
          // An older clone still reads what the log held when it was taken.
          const { log: copy, first: cloneFirst, entries } = clone;
          assert.deepEqual(entries.length === 0 ? [] : copy.entries(cloneFirst, cloneFirst + entries.length, Infinity).map(text), entries, replay);
        }
        clone = { log: log.clone(), first, entries: model.map(text) };
      }
      assert.equal(log.firstIndex(), first, replay);
      assert.equal(log.lastIndex(), first + model.length - 1, replay);
      if (model.length > 0) {
        const lo = first + random(model.length);
        const hi = lo + 1 + random(first + model.length - lo);
        assert.deepEqual(log.entries(lo, hi, Infinity).map(text), model.slice(lo - first, hi - first).map(text), `${replay}: step ${step}, [${lo}, ${hi})`);
        const probe = first + random(model.length);
        assert.equal(log.term(probe), model[probe - first]!.term, replay);
      }
    }
    assert.deepEqual(model.length === 0 ? [] : log.entries(first, first + model.length, Infinity).map(text), model.map(text), replay);
  }
});
