// The bench's open loop: it offers its rate whatever the answers do, counts
// a request over the in-flight bound as an error rather than waiting for
// room, and returns only once every request it sent has settled, each
// counted once, as done or as failed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openLoop } from '../../bench/load.ts';

/** Runs the loop at 400/s for 0.5 s; every request answers 100 ms late (about 40 in flight), failing if `fails` says so. */
async function run(inflightMax: number, fails: (sequence: number) => boolean) {
  const counts = { started: 0, resolved: 0, rejected: 0 };
  const result = await openLoop({
    ratePerSecond: 400,
    seconds: 0.5,
    inflightMax,
    label: 'test',
    operation: (sequence) => {
      counts.started += 1;
      return new Promise<void>((resolve, reject) =>
        setTimeout(() => {
          if (fails(sequence)) {
            counts.rejected += 1;
            reject(new Error('refused'));
          } else {
            counts.resolved += 1;
            resolve();
          }
        }, 100),
      );
    },
  });
  return { result, counts };
}

test('the open loop waits for every request it sent and counts each once, done or failed', async () => {
  const { result, counts } = await run(1_000, (sequence) => sequence % 5 === 0);
  assert.equal(counts.resolved + counts.rejected, counts.started, 'every request sent had settled when the loop returned');
  assert.ok(counts.started >= 150 && counts.started <= 210, `about 200 requests were offered in 0.5 s at 400/s (${counts.started})`);
  assert.equal(result.operations, counts.resolved);
  assert.equal(result.errors, counts.rejected);
  assert.ok(result.p50Ms >= 100, `latency counts from the intended send time (${result.p50Ms} ms)`);
});

test('the open loop counts a request over the in-flight bound as an error and does not send it', async () => {
  const { result, counts } = await run(20, () => false);
  assert.equal(counts.resolved, counts.started, 'every request sent had settled when the loop returned');
  assert.equal(result.operations, counts.started);
  assert.ok(result.errors >= 50, `requests over the bound of 20 are errors (${result.errors})`);
  assert.ok(result.operations + result.errors >= 150, 'the rate was offered whatever the answers did');
});
