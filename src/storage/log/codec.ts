// On-disk encoding of the Raft log (ClassicLogStorage): keys, entry records
// with their own CRC-32C, and the small metadata records. LevelDB may skip a
// corrupt record silently on recovery; our checksums and index continuity
// checks make sure we notice.
//
// Entry record: crc32 u32 | index f64 | term f64 | type u8 | data
// (the checksum covers everything after itself; f64 holds any safe integer).
// Entries are stored in runs: one LevelDB record per save, keyed by the
// run's first index, holding count u32 then (length u32, entry record) per
// entry — one write operation per Ready instead of one per entry.

import * as zlib from 'node:zlib';
import { assert } from '../../raft/errors.ts';
import type { ConfState, Entry, EntryType, HardState, SnapshotMetadata } from '../../raft/types.ts';

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE 802.3, zlib's) of bytes [start, end) in JavaScript: the fallback and the reference. */
export function crc32Portable(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let crc = 0xffffffff;
  for (let i = start; i < end; i++) crc = CRC_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// zlib's native CRC-32 (Node.js >= 20.15) is about twenty times faster than
// the table loop, and the checksum of every log entry is on the write path.
const nativeCrc32 = (zlib as { crc32?: (data: Uint8Array) => number }).crc32;

/** CRC-32 (IEEE 802.3, zlib's) of bytes [start, end). */
export function crc32(bytes: Uint8Array, start = 0, end = bytes.length): number {
  if (nativeCrc32 === undefined) return crc32Portable(bytes, start, end);
  return nativeCrc32(start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end)) >>> 0;
}

const ENTRY_PREFIX = 0x65; // 'e'
export const HARD_STATE_KEY = Uint8Array.of(0x6d, 0x68); // 'mh'
export const SNAPSHOT_KEY = Uint8Array.of(0x6d, 0x73); // 'ms'
export const LOG_START_KEY = Uint8Array.of(0x6d, 0x6c); // 'ml': the index and term just before the first entry

export function entryKey(index: number): Uint8Array {
  const key = new Uint8Array(9);
  key[0] = ENTRY_PREFIX;
  const view = new DataView(key.buffer);
  view.setUint32(1, Math.floor(index / 0x1_0000_0000));
  view.setUint32(5, index >>> 0);
  return key;
}

export const ENTRY_KEY_LOW = entryKey(0);
export const ENTRY_KEY_HIGH = Uint8Array.of(ENTRY_PREFIX + 1);

export function indexOfEntryKey(key: Uint8Array): number {
  assert(key.length === 9 && key[0] === ENTRY_PREFIX, 'not an entry key');
  const view = new DataView(key.buffer, key.byteOffset, key.byteLength);
  return view.getUint32(1) * 0x1_0000_0000 + view.getUint32(5);
}

const HEADER_BYTES = 4 + 8 + 8 + 1;

export function encodeEntry(entry: Entry): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + entry.data.length);
  writeEntry(out, new DataView(out.buffer), 0, entry);
  return out;
}

/** Writes an entry record at offset of out (view is out's DataView); returns its length. */
function writeEntry(out: Uint8Array, view: DataView, offset: number, entry: Entry): number {
  const length = HEADER_BYTES + entry.data.length;
  view.setFloat64(offset + 4, entry.index);
  view.setFloat64(offset + 12, entry.term);
  out[offset + 20] = entry.type;
  out.set(entry.data, offset + HEADER_BYTES);
  view.setUint32(offset, crc32(out, offset + 4, offset + length));
  return length;
}

/** Decodes an entry record; returns null if its checksum or shape is wrong. */
export function decodeEntry(record: Uint8Array): Entry | null {
  if (record.length < HEADER_BYTES) return null;
  const view = new DataView(record.buffer, record.byteOffset, record.byteLength);
  if (view.getUint32(0) !== crc32(record, 4)) return null;
  const index = view.getFloat64(4);
  const term = view.getFloat64(12);
  const type = record[20]!;
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(term) || (type !== 0 && type !== 1)) return null;
  return { index, term, type: type as EntryType, data: record.slice(HEADER_BYTES) };
}

/** Packs consecutive entries into one run record. */
export function encodeRun(entries: readonly Entry[]): Uint8Array {
  assert(entries.length > 0, 'a run holds at least one entry');
  let size = 4;
  for (const entry of entries) size += 4 + HEADER_BYTES + entry.data.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, entries.length);
  let offset = 4;
  for (const entry of entries) {
    const length = writeEntry(out, view, offset + 4, entry);
    view.setUint32(offset, length);
    offset += 4 + length;
  }
  return out;
}

/**
 * Unpacks a run: each entry, or null where an entry record fails its
 * checksum; null for the whole run if its framing is broken.
 */
export function decodeRun(value: Uint8Array): (Entry | null)[] | null {
  if (value.length < 4) return null;
  const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
  const count = view.getUint32(0);
  const entries: (Entry | null)[] = [];
  let offset = 4;
  for (let i = 0; i < count; i++) {
    if (offset + 4 > value.length) return null;
    const length = view.getUint32(offset);
    if (offset + 4 + length > value.length) return null;
    entries.push(decodeEntry(value.subarray(offset + 4, offset + 4 + length)));
    offset += 4 + length;
  }
  return offset === value.length ? entries : null;
}

// Metadata records: JSON with a checksum (small, rare, human-inspectable).

function encodeJson(value: unknown): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify(value));
  const out = new Uint8Array(4 + body.length);
  out.set(body, 4);
  new DataView(out.buffer).setUint32(0, crc32(out, 4));
  return out;
}

function decodeJson(record: Uint8Array): unknown {
  if (record.length < 4) return null;
  const view = new DataView(record.buffer, record.byteOffset, record.byteLength);
  if (view.getUint32(0) !== crc32(record, 4)) return null;
  try {
    return JSON.parse(new TextDecoder().decode(record.subarray(4)));
  } catch {
    return null;
  }
}

export const encodeHardState = (state: HardState): Uint8Array => encodeJson(state);
export const encodeSnapshotMetadata = (metadata: SnapshotMetadata): Uint8Array => encodeJson(metadata);
export const encodeLogStart = (start: { index: number; term: number }): Uint8Array => encodeJson(start);

const isIndex = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isIdList = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => Number.isSafeInteger(x) && x > 0);

export function decodeHardState(record: Uint8Array): HardState | null {
  const v = decodeJson(record) as Partial<HardState> | null;
  if (v === null || !isIndex(v.term) || !isIndex(v.vote) || !isIndex(v.commit)) return null;
  return { term: v.term, vote: v.vote, commit: v.commit };
}

export function decodeSnapshotMetadata(record: Uint8Array): SnapshotMetadata | null {
  return snapshotMetadataFromJson(decodeJson(record));
}

/** Checks a parsed JSON value is snapshot metadata and copies its known fields; null if it is not. */
export function snapshotMetadataFromJson(value: unknown): SnapshotMetadata | null {
  const v = value as { index?: unknown; term?: unknown; confState?: Partial<ConfState> } | null;
  if (typeof v !== 'object' || v === null || !isIndex(v.index) || !isIndex(v.term) || typeof v.confState !== 'object' || v.confState === null) return null;
  const c = v.confState;
  if (!isIdList(c.voters) || !isIdList(c.learners) || !isIdList(c.votersOutgoing) || !isIdList(c.learnersNext) || typeof c.autoLeave !== 'boolean') return null;
  return { index: v.index, term: v.term, confState: { voters: c.voters, learners: c.learners, votersOutgoing: c.votersOutgoing, learnersNext: c.learnersNext, autoLeave: c.autoLeave } };
}

export function decodeLogStart(record: Uint8Array): { index: number; term: number } | null {
  const v = decodeJson(record) as { index?: unknown; term?: unknown } | null;
  if (v === null || !isIndex(v.index) || !isIndex(v.term)) return null;
  return { index: v.index, term: v.term };
}
