// The multi-process nemesis in CI (issue 8, part 5): a few seeds of three
// `raftkv serve` processes under SIGKILL / SIGSTOP, reset TCP connections
// and blackholed links, the client history checked for linearizability and
// the revision rules, the members' HashKV compared after healing (see
// process-nemesis.ts). SEED=n runs only seed n; PROCESS_NEMESIS_MS sets the
// time under the nemesis per seed (default 15 s). Longer runs of more seeds:
// test/history/process-run-seeds.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runProcessNemesis } from './process-nemesis.ts';

const CI_SEEDS = [1, 2];
const only = process.env['SEED'];
const seeds = only === undefined ? CI_SEEDS : [Number(only)];
const durationMs = Number(process.env['PROCESS_NEMESIS_MS'] ?? 12_000);

// Node 20 sometimes spins at 100% CPU in its exit-time handle cleanup after this file's tests (seen twice: no
// handle or request left in libuv, the main thread looping in Environment::CleanupHandles; cf. nodejs/node#47748),
// which would hang CI. Once the event loop is empty, give the runner half a second to report, then exit.
process.once('beforeExit', () => {
  setTimeout(() => process.exit(), 500);
});

for (const seed of seeds) {
  test(`process nemesis seed ${seed}: 3 raftkv processes, SIGKILL / SIGSTOP / dropped and blackholed TCP, linearizable, converged`, { timeout: durationMs + 120_000 }, async () => {
    const replay = `SEED=${seed} npm test -- process-nemesis`;
    const result = await runProcessNemesis({ seed, durationMs, replay });
    assert.deepEqual(result.problems, [], result.report);
    const actions = Object.values(result.stats.actions).reduce((sum, count) => sum + count, 0);
    assert.ok(actions >= 3, `only ${actions} nemesis actions\n  replay: ${replay}`);
    // Every kind of operation got through at least once (how many depends on the machine's load).
    for (const kind of ['put', 'get', 'cas', 'delete']) {
      assert.ok((result.stats.byKind[`${kind}:ok`] ?? 0) > 0, `no ${kind} succeeded\n  replay: ${replay}`);
    }
  });
}
