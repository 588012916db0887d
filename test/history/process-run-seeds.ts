// Runs multi-process nemesis seeds outside the test runner, one after
// another, and prints a line per seed (and the full report of a failure):
//   node --import tsx test/history/process-run-seeds.ts FROM TO [--duration-ms MS] [--clients N]
// PROCESS_NEMESIS_VERBOSE=1 prints each nemesis action as it happens.
// Each seed starts three `raftkv serve` processes; run one of these at a time.

import { runProcessNemesis } from './process-nemesis.ts';

function usage(): never {
  console.error('usage: process-run-seeds.ts FROM [TO] [--duration-ms MS] [--clients N]');
  process.exit(2);
}

const positional: number[] = [];
let durationMs = 20_000;
let clients = 12;
const argv = process.argv.slice(2);
for (let position = 0; position < argv.length; position++) {
  const argument = argv[position] as string;
  if (argument === '--duration-ms') durationMs = Number(argv[++position] ?? usage());
  else if (argument === '--clients') clients = Number(argv[++position] ?? usage());
  else positional.push(Number(argument));
}
const from = positional[0] ?? usage();
const to = positional[1] ?? from;
if (positional.length > 2 || ![from, to, durationMs, clients].every((value) => Number.isSafeInteger(value) && value >= 0) || to < from || clients < 1) usage();

const verbose = process.env['PROCESS_NEMESIS_VERBOSE'] === '1';
let failed = 0;
for (let seed = from; seed <= to; seed++) {
  const result = await runProcessNemesis({
    seed, durationMs, clients, replay: `node --import tsx test/history/process-run-seeds.ts ${seed} --duration-ms ${durationMs} --clients ${clients}`,
    ...(verbose ? { log: (line: string) => console.log(line) } : {}),
  });
  const { stats } = result;
  console.log(
    `seed ${seed} ${result.problems.length === 0 ? 'PASS' : 'FAIL'} ops ${result.operations.length} ok ${stats.ok} failed ${stats.failed} unknown ${stats.unknown} nemesis ${JSON.stringify(stats.actions)} starts ${stats.starts} run ${stats.durationMs} ms check ${stats.checkMs} ms`,
  );
  if (result.problems.length > 0) {
    failed += 1;
    console.log(result.report);
  }
}
console.log(`done: ${to - from + 1} seeds, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
