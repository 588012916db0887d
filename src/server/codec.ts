// How the node's requests travel inside Raft log entries: a proposal is the
// proposing node's id, a per-node sequence number (to find the waiting
// caller when the entry is applied, and to drop a forwarded copy seen twice)
// and the state-machine request. Decoding is strict: an entry that does not
// decode stops the node (it was written by a node of ours, so it is
// corruption, not input).
//
// Layout: tag u8 | node f64 | sequence f64 | body. Every member decodes
// every entry, and puts are most of them, so a plain put has its own body
// (flags u8 | lease f64 if flagged | key length u32 | key | value) instead
// of a msgpack map; any other request is msgpack (tag 2). The id can be read
// without decoding the body (`proposalId`). Entries written before this
// layout (a msgpack array [node, sequence, request]) still decode.

import { Packr } from 'msgpackr';
import { assert } from '../raft/errors.ts';
import { readFloat64, readUint32, writeFloat64, writeUint32 } from '../storage/big-endian.ts';

const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

export interface Proposal<Request> {
  readonly node: number;
  readonly sequence: number;
  readonly request: Request;
}

const TAG_PUT = 1;
const TAG_PACKED = 2;
const LEGACY_ARRAY = 0x93; // msgpack fixarray of 3
const HEADER_BYTES = 1 + 8 + 8;

const FLAG_LEASE = 1;
const FLAG_PREV_KV = 2;
const FLAG_IGNORE_VALUE = 4;
const FLAG_IGNORE_LEASE = 8;

interface PlainPut {
  type: 'put';
  key: Uint8Array;
  value: Uint8Array;
  lease?: number;
  prevKv?: boolean;
  ignoreValue?: boolean;
  ignoreLease?: boolean;
}

const PUT_FIELDS = new Set(['type', 'key', 'value', 'lease', 'prevKv', 'ignoreValue', 'ignoreLease']);

/** The request as a put the compact body can carry exactly, or null. */
function asPlainPut(request: unknown): PlainPut | null {
  if (typeof request !== 'object' || request === null) return null;
  const candidate = request as Record<string, unknown>;
  if (candidate['type'] !== 'put' || !(candidate['key'] instanceof Uint8Array) || !(candidate['value'] instanceof Uint8Array)) return null;
  for (const field in candidate) {
    if (!PUT_FIELDS.has(field)) return null;
    const value = candidate[field];
    if (field === 'lease' && value !== undefined && !Number.isSafeInteger(value)) return null;
    if ((field === 'prevKv' || field === 'ignoreValue' || field === 'ignoreLease') && value !== undefined && typeof value !== 'boolean') return null;
  }
  return candidate as unknown as PlainPut;
}

function writeHeader(out: Uint8Array, tag: number, node: number, sequence: number): void {
  assert(Number.isSafeInteger(node) && Number.isSafeInteger(sequence), 'proposal id is not a pair of integers');
  out[0] = tag;
  writeFloat64(out, 1, node);
  writeFloat64(out, 9, sequence);
}

export function encodeProposal<Request>(proposal: Proposal<Request>): Uint8Array {
  const put = asPlainPut(proposal.request);
  if (put === null) {
    const body = packr.pack(proposal.request);
    const out = new Uint8Array(HEADER_BYTES + body.length);
    writeHeader(out, TAG_PACKED, proposal.node, proposal.sequence);
    out.set(body, HEADER_BYTES);
    return out;
  }
  const hasLease = put.lease !== undefined;
  const flags =
    (hasLease ? FLAG_LEASE : 0) | (put.prevKv === true ? FLAG_PREV_KV : 0) | (put.ignoreValue === true ? FLAG_IGNORE_VALUE : 0) | (put.ignoreLease === true ? FLAG_IGNORE_LEASE : 0);
  const out = new Uint8Array(HEADER_BYTES + 1 + (hasLease ? 8 : 0) + 4 + put.key.length + put.value.length);
  writeHeader(out, TAG_PUT, proposal.node, proposal.sequence);
  let offset = HEADER_BYTES;
  out[offset++] = flags;
  if (hasLease) {
    writeFloat64(out, offset, put.lease as number);
    offset += 8;
  }
  writeUint32(out, offset, put.key.length);
  offset += 4;
  out.set(put.key, offset);
  out.set(put.value, offset + put.key.length);
  return out;
}

/** The proposer and sequence of an encoded proposal, without decoding its request. */
export function proposalId(data: Uint8Array): { node: number; sequence: number } {
  if (data[0] === LEGACY_ARRAY) {
    const { node, sequence } = decodeProposal<unknown>(data);
    return { node, sequence };
  }
  assert(data.length >= HEADER_BYTES && (data[0] === TAG_PUT || data[0] === TAG_PACKED), 'log entry is not a proposal');
  const node = readFloat64(data, 1);
  const sequence = readFloat64(data, 9);
  assert(Number.isSafeInteger(node) && Number.isSafeInteger(sequence), 'proposal id is not a pair of integers');
  return { node, sequence };
}

export function decodeProposal<Request>(data: Uint8Array): Proposal<Request> {
  if (data[0] === LEGACY_ARRAY) return decodeLegacy<Request>(data);
  const { node, sequence } = proposalId(data);
  if (data[0] === TAG_PACKED) return { node, sequence, request: packr.unpack(data.subarray(HEADER_BYTES)) as Request };
  let offset = HEADER_BYTES;
  assert(data.length >= offset + 5, 'put proposal is truncated');
  const flags = data[offset++] as number;
  assert((flags & ~(FLAG_LEASE | FLAG_PREV_KV | FLAG_IGNORE_VALUE | FLAG_IGNORE_LEASE)) === 0, 'put proposal has unknown flags');
  let lease: number | undefined;
  if ((flags & FLAG_LEASE) !== 0) {
    assert(data.length >= offset + 12, 'put proposal is truncated');
    lease = readFloat64(data, offset);
    assert(Number.isSafeInteger(lease), 'put proposal lease is not an integer');
    offset += 8;
  }
  const keyLength = readUint32(data, offset);
  offset += 4;
  assert(data.length >= offset + keyLength, 'put proposal is truncated');
  const request: PlainPut = { type: 'put', key: data.subarray(offset, offset + keyLength), value: data.subarray(offset + keyLength) };
  if (lease !== undefined) request.lease = lease;
  if ((flags & FLAG_PREV_KV) !== 0) request.prevKv = true;
  if ((flags & FLAG_IGNORE_VALUE) !== 0) request.ignoreValue = true;
  if ((flags & FLAG_IGNORE_LEASE) !== 0) request.ignoreLease = true;
  return { node, sequence, request: request as unknown as Request };
}

function decodeLegacy<Request>(data: Uint8Array): Proposal<Request> {
  const decoded: unknown = packr.unpack(data);
  assert(Array.isArray(decoded) && decoded.length === 3, 'log entry is not a proposal');
  const [node, sequence, request] = decoded as [unknown, unknown, Request];
  assert(Number.isSafeInteger(node) && Number.isSafeInteger(sequence), 'proposal id is not a pair of integers');
  return { node: node as number, sequence: sequence as number, request };
}

/** The legacy layout, kept so that the tests can show old entries still decode. */
export function encodeLegacyProposal<Request>(proposal: Proposal<Request>): Uint8Array {
  return packr.pack([proposal.node, proposal.sequence, proposal.request]);
}
