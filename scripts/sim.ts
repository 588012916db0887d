// Runs or replays simulator seeds from the command line.
//   node --import tsx scripts/sim.ts --seed 123 --nodes 5 --steps 2000 --trace   (one seed; --trace prints its whole trace)
//   node --import tsx scripts/sim.ts --seeds 10000 [--from 1] [--stats]           (seeds from..from+N-1, 3 and 5 nodes alternating)
//   --no-membership turns the random membership changes off (the fixed-cluster simulator).
import { runSeed, Simulation, traceOf } from '../test/sim/simulator.ts';

function option(name: string): number | undefined {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : undefined;
}

const steps = option('--steps') ?? 2_000;
const trace = process.argv.includes('--trace');
const membership = !process.argv.includes('--no-membership');
const single = option('--seed');
if (single !== undefined) {
  const nodes = option('--nodes') ?? (single % 2 === 0 ? 5 : 3);
  const failure = runSeed({ seed: single, nodes, steps, membership, trace: true });
  if (failure === null) {
    if (trace) console.log(traceOf({ seed: single, nodes, steps, membership }));
    console.log(`seed ${single} (${nodes} nodes, ${steps} steps) passed`);
  } else {
    if (trace) console.log(failure.trace);
    console.log(`seed ${single} FAILED: ${failure.error.message}`);
    process.exitCode = 1;
  }
} else {
  const seeds = option('--seeds') ?? 500;
  const first = option('--from') ?? 1;
  const stats = process.argv.includes('--stats');
  const totals = new Map<string, number>();
  const started = Date.now();
  let failed = 0;
  for (let seed = first; seed < first + seeds; seed++) {
    const nodes = seed % 2 === 0 ? 5 : 3;
    if (stats) {
      // Same run as runSeed, keeping the counters.
      const simulation = new Simulation({ seed, nodes, steps, membership });
      try {
        simulation.run();
      } catch (error) {
        failed += 1;
        console.log(`seed ${seed} (${nodes} nodes) FAILED: ${(error as Error).message}`);
      }
      for (const [name, value] of Object.entries(simulation.stats)) totals.set(name, (totals.get(name) ?? 0) + value);
    } else {
      const failure = runSeed({ seed, nodes, steps, membership });
      if (failure !== null) {
        failed += 1;
        console.log(`seed ${seed} (${nodes} nodes) FAILED: ${failure.error.message}\n  replay: node --import tsx scripts/sim.ts --seed ${seed} --nodes ${nodes} --steps ${steps}${membership ? '' : ' --no-membership'} --trace`);
      }
    }
    if ((seed - first + 1) % 500 === 0) console.error(`  ${seed - first + 1} seeds, ${failed} failed, ${((Date.now() - started) / 1000).toFixed(0)} s`);
  }
  if (stats) console.log([...totals].map(([name, value]) => `${name} ${value}`).join(', '));
  console.log(`${seeds - failed} passed, ${failed} failed (${seeds} seeds x ${steps} steps, ${((Date.now() - started) / 1000).toFixed(1)} s)`);
  if (failed > 0) process.exitCode = 1;
}
