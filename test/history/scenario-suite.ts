// Registers the CI history scenarios, split across test files so the runner
// runs them side by side: `part` of `parts` takes every parts-th CI seed,
// and runs up to HISTORY_CONCURRENCY (default 3) of them at once (a
// scenario spends most of its time waiting on timers and fsync, so a few
// clusters share a process well). SEED=n runs only seed n (in the first
// part), whatever its profile.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ciSeeds, profileOf, runScenario } from './scenario.ts';

/** Seeds CI checks per run, over every part. */
export const CI_SEED_COUNT = 50;
const OPERATIONS = 5_000;
/** A seed runs 5–25 s here (60 s on a loaded machine); one still running after this has hung. */
const SEED_TIMEOUT_MS = 600_000;
const CLIENTS = 20;

export function registerScenarios(part: number, parts: number): void {
  const only = process.env['SEED'];
  const concurrency = Number(process.env['HISTORY_CONCURRENCY'] ?? 3);
  const seeds = only !== undefined ? (part === 0 ? [Number(only)] : []) : ciSeeds(CI_SEED_COUNT).filter((_, position) => position % parts === part);
  if (seeds.length === 0) return;
  test(`history scenarios, part ${part + 1} of ${parts}: ${seeds.length} seeds, ${CLIENTS} clients and ${OPERATIONS} operations each`, { concurrency }, async (context) => {
    await Promise.all(
      seeds.map((seed) =>
        // A seed that hangs fails at the timeout (and the run goes on: scripts/run-tests.mjs forces the exit).
        context.test(`seed ${seed} (${profileOf(seed)}): linearizable, consistent revisions, equal hashes, watch / lease / mutex checks`, { timeout: SEED_TIMEOUT_MS }, async () => {
          const result = await runScenario({ seed, operations: OPERATIONS, clients: CLIENTS, wallClockMaxMs: 300_000 });
          const replay = `\n  replay: SEED=${seed} npm test -- history`;
          assert.deepEqual(result.problems, [], result.report);
          assert.ok(result.operations.length >= OPERATIONS, `the history has ${result.operations.length} operations${replay}`);
          // Every kind of operation got through at least once (how many depends on the machine's load, so no more is asked).
          for (const kind of ['put', 'get', 'getAt', 'cas', 'delete']) {
            assert.ok((result.stats.byKind[`${kind}:ok`] ?? 0) > 0, `no ${kind} succeeded${replay}`);
          }
          // The watch and lease checks had something to judge (mutex acquisitions may all fail under kill-restart).
          assert.ok(result.stats.watch.writesMatched > 0, `the watchers saw none of the history's writes${replay}`);
          assert.ok(result.stats.lease.leases > 0, `no lease was granted${replay}`);
        }),
      ),
    );
  });
}
