// Runs history scenarios outside the test runner and prints one line per
// seed (and the full report of any that fails):
//   node --import tsx test/history/run-seeds.ts FROM TO        seeds FROM..TO, every profile
//   node --import tsx test/history/run-seeds.ts --ci N --part i/P
//                                                            part i of P of the first N CI seeds
// Options: --concurrency C (scenarios at once, default 1). Environment:
// HISTORY_OPERATIONS (default 5,000), HISTORY_OBSERVERS=0 (no watchers, lease
// or mutex clients, no watch / lease / mutex checks), HISTORY_VERBOSE=1 (the
// lease and mutex clients' error codes), HISTORY_SERIALIZABLE_READS=1 (the
// self-test: stale reads the checker must catch), HISTORY_DUMP=dir (keep a
// failing history as JSON). The long run (scripts/history-long.mjs) starts
// several of these side by side.

import { writeFileSync } from 'node:fs';
import { ciSeeds, profileOf, runScenario, type ScenarioProgress, type ScenarioResult } from './scenario.ts';

function usage(): never {
  console.error('usage: run-seeds.ts FROM TO | --ci N --part i/P  [--concurrency C]');
  process.exit(2);
}

function parse(argv: readonly string[]): { seeds: number[]; concurrency: number } {
  let concurrency = 1;
  let ci: number | undefined;
  let part: [number, number] = [0, 1];
  const positional: number[] = [];
  for (let position = 0; position < argv.length; position++) {
    const argument = argv[position] as string;
    const next = (): string => argv[++position] ?? usage();
    if (argument === '--concurrency') concurrency = Number(next());
    else if (argument === '--ci') ci = Number(next());
    else if (argument === '--part') {
      const [index, count] = next().split('/').map(Number);
      part = [index ?? NaN, count ?? NaN];
    } else positional.push(Number(argument));
  }
  const integers = [concurrency, ...part, ...(ci === undefined ? [] : [ci]), ...positional];
  if (!integers.every((value) => Number.isSafeInteger(value) && value >= 0) || concurrency < 1 || part[1] < 1 || part[0] >= part[1]) usage();
  if (ci !== undefined) return { seeds: ciSeeds(ci).filter((_, index) => index % part[1] === part[0]), concurrency };
  const [from, to] = positional;
  if (from === undefined || positional.length > 2) usage();
  const last = to ?? from;
  if (last < from) usage();
  return { seeds: Array.from({ length: last - from + 1 }, (_, index) => from + index), concurrency };
}

const { seeds, concurrency } = parse(process.argv.slice(2));
const operations = Number(process.env['HISTORY_OPERATIONS'] ?? 5_000);
const serializableReads = process.env['HISTORY_SERIALIZABLE_READS'] === '1';
const dump = process.env['HISTORY_DUMP'];
// A seed whose run and check take longer than this is reported as hung (a
// FAILURE) instead of stalling the whole run; HISTORY_WATCHDOG_MS changes it.
const watchdogMs = Number(process.env['HISTORY_WATCHDOG_MS'] ?? 600_000);
let failed = 0;
let hung = 0;
let next = 0;

function hungReport(seed: number, progress: ScenarioProgress): string {
  const pending = progress.pending?.() ?? [];
  return (
    `seed ${seed} ${profileOf(seed).padEnd(19)} FAIL (hung: no result after ${watchdogMs} ms, phase "${progress.phase}", ${pending.length} client operations pending` +
    (pending.length === 0 ? ')' : `: ${pending.slice(0, 20).join('; ')}${pending.length > 20 ? '; …' : ''})`) +
    `\nreplay: node --import tsx test/history/run-seeds.ts ${seed} ${seed}   (or SEED=${seed} npm test -- history)`
  );
}

async function worker(): Promise<void> {
  while (next < seeds.length) {
    const seed = seeds[next++] as number;
    const progress: ScenarioProgress = { phase: 'starting' };
    let timer: NodeJS.Timeout | undefined;
    const watchdog = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), watchdogMs);
    });
    const result: ScenarioResult | undefined = await Promise.race([
      runScenario({ seed, operations, serializableReads, observers: process.env['HISTORY_OBSERVERS'] !== '0', wallClockMaxMs: 300_000, progress }),
      watchdog,
    ]);
    clearTimeout(timer);
    if (result === undefined) {
      // The hung scenario keeps its cluster; the run goes on and ends non-zero.
      failed += 1;
      hung += 1;
      console.log(hungReport(seed, progress));
      continue;
    }
    const { stats } = result;
    console.log(
      `seed ${seed} ${result.profile.padEnd(19)} ${result.problems.length === 0 ? 'PASS' : 'FAIL'} ops ${result.operations.length} ok ${stats.ok} failed ${stats.failed} unknown ${stats.unknown} keys ${stats.keys} nemesis ${stats.nemesisActions} run ${stats.durationMs} ms check ${stats.checkMs} ms steps ${result.linearizability.steps}` +
        ` | watch ${stats.watch.segments} streams ${stats.watch.comparedRevisions} revisions compared ${stats.watch.writesMatched} writes matched` +
        ` | leases ${stats.lease.leases} expiries seen ${stats.lease.expiriesObserved} | mutex ${stats.mutex.acquisitions} acquisitions ${stats.mutex.fencedWrites} fenced writes`,
    );
    if (process.env['HISTORY_VERBOSE'] === '1') console.log(`  lease errors ${JSON.stringify(stats.lease.errors)} mutex errors ${JSON.stringify(stats.mutex.errors)}`);
    if (result.problems.length > 0) {
      failed += 1;
      console.log(result.report);
      // Unknown completions are Infinity, which JSON writes as null.
      if (dump !== undefined) writeFileSync(`${dump}/history-seed-${seed}.json`, JSON.stringify({ seed, operations: result.operations, notes: result.notes }));
    }
  }
}

await Promise.all(Array.from({ length: concurrency }, () => worker()));
console.log(`done: ${seeds.length} seeds, ${failed} failed${hung > 0 ? ` (${hung} hung)` : ''}`);
process.exit(failed === 0 ? 0 : 1);
