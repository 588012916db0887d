// Byte-level helpers of the MVCC store: comparing keys, the index's string
// form of a key, range bounds (single key, prefix, interval, "every key from
// here"), and the on-disk row key of a revision (sorted by revision) and of
// the meta row that sorts among them.

import { assert } from '../../raft/errors.ts';
import { readUint32, writeUint32 } from '../big-endian.ts';

/** A revision: `main` numbers the write transaction, `sub` the change within it. */
export interface Revision {
  readonly main: number;
  readonly sub: number;
}

export const ROW_PREFIX = 0x72; // 'r'
export const ROW_KEY_BYTES = 17;
const TWO_TO_32 = 2 ** 32;

/** The row key of a revision: 'r', main and sub as 8-byte big-endian integers. */
export function rowKey(main: number, sub: number): Uint8Array {
  return writeRowKey(new Uint8Array(ROW_KEY_BYTES), 0, main, sub);
}

/** Writes the row key of a revision at `offset` of `out` (ROW_KEY_BYTES long); returns a view of it. */
export function writeRowKey(out: Uint8Array, offset: number, main: number, sub: number): Uint8Array {
  assert(Number.isSafeInteger(main) && main >= 0, 'row main revision must be a safe non-negative integer');
  assert(Number.isSafeInteger(sub) && sub >= 0, 'row sub revision must be a safe non-negative integer');
  assert(offset + ROW_KEY_BYTES <= out.length, 'no room for a row key');
  out[offset] = ROW_PREFIX;
  writeUint32(out, offset + 1, Math.floor(main / TWO_TO_32));
  writeUint32(out, offset + 5, main >>> 0);
  writeUint32(out, offset + 9, Math.floor(sub / TWO_TO_32));
  writeUint32(out, offset + 13, sub >>> 0);
  return out.subarray(offset, offset + ROW_KEY_BYTES);
}

/**
 * The key of the store's meta row written with the rows up to revision
 * `main`: a row key whose sub is all ones. A real sub is a safe integer
 * (below 2^53, so its first byte is at most 0x1f), so the meta row sorts
 * after every row of its revision and before the next revision's rows.
 */
export function metaRowKey(main: number): Uint8Array {
  const out = rowKey(main, 0);
  out.fill(0xff, 9);
  return out;
}

export function isMetaRowKey(bytes: Uint8Array): boolean {
  return bytes.length === ROW_KEY_BYTES && bytes[0] === ROW_PREFIX && bytes[9] === 0xff;
}

/** The main revision of a row key or a meta row key. */
export function mainOfRowKey(bytes: Uint8Array): number {
  assert(bytes.length === ROW_KEY_BYTES && bytes[0] === ROW_PREFIX, 'not a row key');
  return readUint32(bytes, 1) * TWO_TO_32 + readUint32(bytes, 5);
}

export function revisionOfRowKey(bytes: Uint8Array): Revision {
  const main = mainOfRowKey(bytes);
  const sub = readUint32(bytes, 9) * TWO_TO_32 + readUint32(bytes, 13);
  return { main, sub };
}

/**
 * The index's form of a key: one UTF-16 code unit per byte, so that string
 * comparison orders keys exactly as bytewise comparison does.
 */
export function indexKey(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');
}

export function compareBytes(left: Uint8Array, right: Uint8Array): number {
  return Buffer.compare(
    Buffer.from(left.buffer, left.byteOffset, left.byteLength),
    Buffer.from(right.buffer, right.byteOffset, right.byteLength),
  );
}

export function bytesEqual(left: Uint8Array, right: Uint8Array): boolean {
  return compareBytes(left, right) === 0;
}

/**
 * The range end that selects every key starting with `prefix` (etcd's
 * GetPrefixRangeEnd): the prefix with its last non-0xff byte incremented,
 * or [0] ("every key from here") when the prefix is all 0xff bytes.
 */
export function prefixEnd(prefix: Uint8Array): Uint8Array {
  for (let position = prefix.length - 1; position >= 0; position--) {
    const byte = prefix[position] as number;
    if (byte < 0xff) {
      // A copy, never a view: Buffer#slice would share (and let us change) the caller's bytes.
      const end = Uint8Array.prototype.slice.call(prefix, 0, position + 1);
      end[position] = byte + 1;
      return end;
    }
  }
  return new Uint8Array([0]);
}

/** Index-form bounds of a range: `end` undefined means unbounded above. */
export interface IndexBounds {
  readonly start: string;
  readonly end: string | undefined;
  readonly single: boolean;
}

/**
 * etcd's range conventions: no range end selects the key alone; a range end
 * of one zero byte selects every key >= key; otherwise [key, rangeEnd).
 */
export function indexBounds(key: Uint8Array, rangeEnd: Uint8Array | undefined): IndexBounds {
  if (rangeEnd === undefined || rangeEnd.length === 0) {
    return { start: indexKey(key), end: undefined, single: true };
  }
  if (rangeEnd.length === 1 && rangeEnd[0] === 0) {
    return { start: indexKey(key), end: undefined, single: false };
  }
  return { start: indexKey(key), end: indexKey(rangeEnd), single: false };
}

export function inBounds(bounds: IndexBounds, key: string): boolean {
  if (bounds.single) return key === bounds.start;
  return key >= bounds.start && (bounds.end === undefined || key < bounds.end);
}
