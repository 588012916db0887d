import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFloat64, readUint32, writeFloat64, writeUint32 } from '../../src/storage/big-endian.ts';
import { createRandom } from '../../src/raft/random.ts';

const SEED = Number(process.env['BIG_ENDIAN_SEED'] ?? 1);

test('big-endian helpers write and read the bytes a DataView does, at any offset', () => {
  const random = createRandom(SEED);
  const fixed = [0, 1, -1, 0.5, 2 ** 32, 2 ** 53 - 1, -(2 ** 53), Number.MAX_VALUE, Number.MIN_VALUE, Infinity, -Infinity];
  const bytes = new Uint8Array(64);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < 2_000; i++) {
    const offset = random(40);
    const float = i < fixed.length ? fixed[i]! : (random(2 ** 30) * 2 ** 23 + random(2 ** 23)) * (random(2) === 0 ? 1 : -1) / 2 ** random(40);
    const u32 = i < fixed.length ? [0, 1, 0xff, 0x100, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 0xdeadbeef, 42][i]! : random(2 ** 30) * 4 + random(4);
    writeFloat64(bytes, offset, float);
    assert.equal(view.getFloat64(offset), float, `seed ${SEED}: writeFloat64(${float}) at ${offset} (replay: BIG_ENDIAN_SEED=${SEED} npm test -- test/storage-mvcc/big-endian.test.ts)`);
    view.setFloat64(offset + 8, -float);
    assert.equal(readFloat64(bytes, offset + 8), -float);
    writeUint32(bytes, offset + 16, u32);
    assert.equal(view.getUint32(offset + 16), u32, `seed ${SEED}: writeUint32(${u32}) at ${offset}`);
    view.setUint32(offset + 20, u32 ^ 0x5a5a5a5a);
    assert.equal(readUint32(bytes, offset + 20), (u32 ^ 0x5a5a5a5a) >>> 0);
  }
  // A NaN reads back as a NaN (its payload bits are not promised).
  writeFloat64(bytes, 3, Number.NaN);
  assert.ok(Number.isNaN(readFloat64(bytes, 3)));
});
