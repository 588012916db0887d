// The simulator's CI budget: SEEDS (default 1,500) seeds x 2,000 steps,
// alternating 3- and 5-node clusters, with random membership changes,
// compaction, snapshots, transfers and reads. A failure names its seed and
// the one command that replays it with a full trace. SEEDS=10000 for a
// longer run; SEED=n runs one seed; STEPS=n changes the run length.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSeed, traceOf } from './simulator.ts';

const steps = Number(process.env['STEPS'] ?? 2_000);
const only = process.env['SEED'];
const seeds = only !== undefined ? [Number(only)] : Array.from({ length: Number(process.env['SEEDS'] ?? 1_500) }, (_, i) => i + 1);

test(`simulator: ${seeds.length} seeds x ${steps} steps keep Raft's invariants (with membership changes) and make progress after faults heal`, () => {
  const failures: string[] = [];
  for (const seed of seeds) {
    const nodes = seed % 2 === 0 ? 5 : 3;
    const failure = runSeed({ seed, nodes, steps });
    if (failure === null) continue;
    failures.push(
      `seed ${seed} (${nodes} nodes): ${failure.error.message}\n` +
        `  last trace lines:\n${failure.trace.split('\n').slice(-25).map((l) => `    ${l}`).join('\n')}\n` +
        `  replay: node --import tsx scripts/sim.ts --seed ${seed} --nodes ${nodes} --steps ${steps} --trace   (or SEED=${seed} npm test -- sim)`,
    );
    if (failures.length >= 3) break;
  }
  assert.equal(failures.length, 0, failures.join('\n\n'));
});

test('simulator: membership changes really happen (learners added and promoted, voters removed, joint configurations)', () => {
  // Guard against a driver that silently stops changing anything: the first 100 seeds must exercise it.
  const totals = { confChangesApplied: 0, joined: 0, stopped: 0, appliedWhileWriting: 0 };
  const kinds = new Set<string>();
  for (let seed = 1; seed <= 100; seed++) {
    const trace = traceOf({ seed, nodes: seed % 2 === 0 ? 5 : 3, steps: 2_000 });
    for (const line of trace.split('\n')) {
      if (!line.includes('applied conf change')) continue;
      for (const kind of ['add-voter', 'remove', 'add-learner', 'leave joint']) if (line.includes(`: ${kind}`) || line.includes(`, ${kind}`)) kinds.add(kind);
    }
    if (trace.includes('& {')) kinds.add('joint');
    totals.confChangesApplied += (trace.match(/applied conf change/g) ?? []).length;
    totals.joined += (trace.match(/STARTS \(joining/g) ?? []).length;
    totals.stopped += (trace.match(/stopped for good|stays down for good/g) ?? []).length;
    totals.appliedWhileWriting += (trace.match(/while its write is in flight/g) ?? []).length;
  }
  for (const kind of ['add-voter', 'remove', 'add-learner', 'leave joint', 'joint']) assert.ok(kinds.has(kind), `no ${kind} change applied in 100 seeds`);
  assert.ok(totals.joined >= 50, `${totals.joined} nodes joined`);
  assert.ok(totals.stopped >= 30, `${totals.stopped} removed nodes stopped`);
  assert.ok(totals.confChangesApplied >= 300, `${totals.confChangesApplied} conf change applications`);
  // And commits learned while a write is in flight are applied in that window (RawNode.takeCommittedEntries).
  assert.ok(totals.appliedWhileWriting >= 100, `${totals.appliedWhileWriting} applications while a write was in flight`);
});

test('simulator: one seed is one exact run', () => {
  const a = traceOf({ seed: 4242, nodes: 5, steps: 1_000 });
  const b = traceOf({ seed: 4242, nodes: 5, steps: 1_000 });
  const c = traceOf({ seed: 4243, nodes: 5, steps: 1_000 });
  assert.ok(a.split('\n').length > 100, 'the run did something');
  assert.equal(a, b);
  assert.notEqual(a, c);
});
