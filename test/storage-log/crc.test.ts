// The log's checksum: zlib's native CRC-32 (used when Node.js has it) and
// the JavaScript table loop (used otherwise) must agree, or a log written by
// one Node.js version would read as corrupt on another.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32, crc32Portable } from '../../src/storage/log/codec.ts';

test('CRC-32 of known inputs (the standard check value)', () => {
  const ascii = new TextEncoder().encode('123456789');
  assert.equal(crc32Portable(ascii), 0xcbf43926);
  assert.equal(crc32(ascii), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
});

test('native and portable CRC-32 agree on random buffers and sub-ranges', () => {
  const seed = Number(process.env.SEED ?? 1);
  let state = seed >>> 0 || 1;
  const next = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 0x1_0000_0000;
  };
  for (let round = 0; round < 500; round++) {
    const bytes = new Uint8Array(Math.floor(next() * 2048));
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(next() * 256);
    const start = Math.floor(next() * (bytes.length + 1));
    const end = start + Math.floor(next() * (bytes.length - start + 1));
    assert.equal(crc32(bytes, start, end), crc32Portable(bytes, start, end), `seed ${seed} round ${round}; replay: SEED=${seed} npm test -- storage-log/crc`);
  }
});
