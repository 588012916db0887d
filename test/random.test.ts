import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRandom } from '../src/raft/random.ts';

test('createRandom: same seed gives the same sequence, different seeds differ', () => {
  const a = createRandom(42), b = createRandom(42), c = createRandom(43);
  const sa = Array.from({ length: 100 }, () => a(1000));
  const sb = Array.from({ length: 100 }, () => b(1000));
  const sc = Array.from({ length: 100 }, () => c(1000));
  assert.deepEqual(sa, sb);
  assert.notDeepEqual(sa, sc);
  assert.ok(sa.every((x) => Number.isInteger(x) && x >= 0 && x < 1000));
});

test('createRandom: roughly uniform and rejects bad bounds', () => {
  const r = createRandom(7);
  const counts = new Array<number>(10).fill(0);
  for (let i = 0; i < 100_000; i++) counts[r(10)]! += 1;
  for (const n of counts) assert.ok(n > 9_000 && n < 11_000, `bucket count ${n}`);
  assert.throws(() => r(0), RangeError);
  assert.throws(() => r(1.5), RangeError);
});
