// Key-values leave the public API with Buffers (`kv.value.toString()` reads a
// string value) without copying the bytes the store holds.

import type { KeyValue } from '../storage/mvcc/types.ts';

export function buffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function withBuffers(kv: KeyValue): KeyValue {
  return { ...kv, key: buffer(kv.key), value: buffer(kv.value) };
}
