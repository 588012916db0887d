// The simulator's CI budget: SEEDS (default 2,000) seeds x 2,000 steps,
// alternating 3- and 5-node clusters. A failure names its seed and the one
// command that replays it with a full trace. SEEDS=10000 for a longer run;
// SEED=n runs one seed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSeed, traceOf } from './simulator.ts';

const steps = Number(process.env['STEPS'] ?? 2_000);
const only = process.env['SEED'];
const seeds = only !== undefined ? [Number(only)] : Array.from({ length: Number(process.env['SEEDS'] ?? 2_000) }, (_, i) => i + 1);

test(`simulator: ${seeds.length} seeds x ${steps} steps keep Raft's invariants and make progress after faults heal`, () => {
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

test('simulator: one seed is one exact run', () => {
  const a = traceOf({ seed: 4242, nodes: 5, steps: 1_000 });
  const b = traceOf({ seed: 4242, nodes: 5, steps: 1_000 });
  const c = traceOf({ seed: 4243, nodes: 5, steps: 1_000 });
  assert.ok(a.split('\n').length > 100, 'the run did something');
  assert.equal(a, b);
  assert.notEqual(a, c);
});
