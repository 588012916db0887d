// Checking a history recorded outside the tests (test/history/external.ts,
// scripts/check-history.ts): valid histories pass, a stale read and a
// revision going back fail with a report, unknown outcomes count as "maybe",
// and malformed input is refused with a typed error naming the operation.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkHistory, parseHistory } from './external.ts';

const put = (client: number, key: string, value: string, at: [number, number], revision?: number): object => ({
  client,
  input: { kind: 'put', key, value },
  invokedAt: at[0],
  completedAt: at[1],
  outcome: 'ok',
  ...(revision === undefined ? {} : { output: { revision } }),
});
const get = (client: number, key: string, value: string | null, at: [number, number], modRevision?: number): object => ({
  client,
  input: { kind: 'get', key },
  invokedAt: at[0],
  completedAt: at[1],
  outcome: 'ok',
  output: { value, ...(modRevision === undefined ? {} : { modRevision }) },
});

test('an external history: a good one passes; a stale read, or one only an unknown write explains, is judged as the scenarios judge', () => {
  const good = [put(1, 'x', 'a', [1, 2], 2), put(2, 'x', 'b', [3, 6], 3), get(3, 'x', 'a', [4, 5], 2), get(3, 'x', 'b', [7, 8], 3), get(4, 'y', null, [1, 9])];
  const passed = checkHistory(parseHistory({ operations: good }));
  assert.equal(passed.exitCode, 0, passed.report);
  assert.match(passed.summary, /5 operations on 2 keys: linearizable; 0 revision rule violations/);

  const stale = [...good, get(5, 'x', 'a', [10, 11], 2)];
  const failed = checkHistory(parseHistory(stale));
  assert.equal(failed.exitCode, 1);
  assert.match(failed.report, /key x: NOT LINEARIZABLE/);

  // A put that timed out may have applied: a later read of its value is fine, and so is never seeing it.
  const unknown = { client: 6, input: { kind: 'put', key: 'z', value: 'maybe' }, invokedAt: 1, completedAt: null, outcome: 'unknown', error: 'RAFTKV_OUTCOME_UNKNOWN' };
  assert.equal(checkHistory(parseHistory([unknown, get(7, 'z', 'maybe', [20, 21])])).exitCode, 0);
  assert.equal(checkHistory(parseHistory([unknown, get(7, 'z', null, [20, 21])])).exitCode, 0);
  // The same write failed for sure: reading its value is a violation.
  const failedForSure = { ...unknown, outcome: 'fail', completedAt: 2, error: 'RAFTKV_NO_LEADER' };
  assert.equal(checkHistory(parseHistory([failedForSure, get(7, 'z', 'maybe', [20, 21])])).exitCode, 1);

  // Revisions going back in real time break a revision rule even where each key alone is linearizable.
  const backwards = [put(1, 'p', 'one', [1, 2], 10), put(2, 'q', 'two', [3, 4], 9)];
  const revisions = checkHistory(parseHistory(backwards));
  assert.equal(revisions.exitCode, 1);
  assert.ok(revisions.revisionViolations.length > 0, revisions.report);
});

test('an external history that is malformed is refused with RAFTKV_INVALID_ARGUMENT naming the operation', () => {
  const refuse = (json: unknown, pattern: RegExp): void => assert.throws(() => parseHistory(json), (error: Error & { code?: string }) => error.code === 'RAFTKV_INVALID_ARGUMENT' && pattern.test(error.message));
  refuse({ ops: [] }, /an array of operations/);
  refuse([{ input: { kind: 'put', key: 'k', value: 'v' }, invokedAt: 1, completedAt: 2, outcome: 'done' }], /operation 0: outcome/);
  refuse([put(1, 'k', 'v', [1, 2]), { input: { kind: 'scan', key: 'k' }, invokedAt: 1, completedAt: 2, outcome: 'ok' }], /operation 1: input.kind/);
  refuse([{ input: { kind: 'get', key: 'k' }, invokedAt: 5, completedAt: 4, outcome: 'ok', output: { value: null } }], /operation 0: completedAt/);
  refuse([{ input: { kind: 'get', key: 'k' }, invokedAt: 1, completedAt: 2, outcome: 'ok' }], /an ok get needs its output/);
  refuse([put(1, 'k', 'v', [1, 2]), put(2, 'k', 'v', [3, 4])], /operation 1: .*written twice/);
  refuse([{ input: { kind: 'getAt', key: 'k', revision: 0 }, invokedAt: 1, completedAt: 2, outcome: 'ok', output: { value: null } }], /positive input.revision/);
});

test('scripts/check-history.ts: exit 0 for a linearizable file, 1 with the report for a violation, 3 for a bad file', { timeout: 60_000 }, () => {
  const directory = mkdtempSync(join(tmpdir(), 'raftkv-check-history-'));
  try {
    const run = (operations: unknown): { status: number | null; stdout: string; stderr: string } => {
      const file = join(directory, `h${Math.random().toString(36).slice(2)}.json`);
      writeFileSync(file, JSON.stringify(operations));
      const result = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/check-history.ts', file], { encoding: 'utf8' });
      return { status: result.status, stdout: result.stdout, stderr: result.stderr };
    };
    const good = [put(1, 'x', 'a', [1, 2]), get(2, 'x', 'a', [3, 4])];
    assert.equal(run({ operations: good }).status, 0);
    const stale = run({ operations: [...good, put(1, 'x', 'b', [5, 6]), get(2, 'x', 'a', [7, 8])], notes: [{ at: 6.5, text: 'partition' }] });
    assert.equal(stale.status, 1, stale.stderr);
    assert.match(stale.stdout, /NOT linearizable/);
    assert.match(stale.stdout, /smallest failing sub-history/);
    const broken = run([{ input: {}, outcome: 'ok' }]);
    assert.equal(broken.status, 3);
    assert.match(broken.stderr, /not a valid history: operation 0: input.kind .*RAFTKV_INVALID_ARGUMENT/);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});
