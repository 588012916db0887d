// The proposal codec: every request comes back exactly as proposed (puts
// through their compact body, everything else through msgpack), the id can
// be read without the body, entries in the older layout still decode, and
// damaged entries are refused rather than misread.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeProposal, encodeLegacyProposal, encodeProposal, proposalId } from '../../src/server/codec.ts';

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);

function roundTrip(request: unknown, node = 2 ** 47 - 1, sequence = 123_456): void {
  const data = encodeProposal({ node, sequence, request });
  const decoded = decodeProposal<unknown>(data);
  assert.equal(decoded.node, node);
  assert.equal(decoded.sequence, sequence);
  assert.deepEqual(normalise(decoded.request), normalise(request));
  assert.deepEqual(proposalId(data), { node, sequence });
}

// deepEqual tells a Buffer from a Uint8Array; the store only reads bytes.
function normalise(value: unknown): unknown {
  if (value instanceof Uint8Array) return Array.from(value);
  if (Array.isArray(value)) return value.map(normalise);
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalise(v)]));
  return value;
}

test('a put comes back exactly, with each combination of its options', () => {
  for (let mask = 0; mask < 16; mask++) {
    const request: Record<string, unknown> = { type: 'put', key: bytes('k/1'), value: bytes('value') };
    if (mask & 1) request['lease'] = 7_000_000_001;
    if (mask & 2) request['prevKv'] = true;
    if (mask & 4) request['ignoreValue'] = true;
    if (mask & 8) request['ignoreLease'] = true;
    roundTrip(request);
  }
  roundTrip({ type: 'put', key: new Uint8Array(0), value: new Uint8Array(0) }, 0, 0);
  roundTrip({ type: 'put', key: bytes('k'), value: bytes('v'), lease: 0 });
});

test('a false flag means the same as none: it comes back absent', () => {
  const data = encodeProposal({ node: 1, sequence: 1, request: { type: 'put', key: bytes('k'), value: bytes('v'), prevKv: false, ignoreValue: false } });
  assert.equal(data[0], 1, 'the compact put body');
  assert.deepEqual(normalise(decodeProposal<unknown>(data).request), normalise({ type: 'put', key: bytes('k'), value: bytes('v') }));
});

test('a put the compact body cannot carry exactly goes through msgpack', () => {
  for (const request of [
    { type: 'put', key: bytes('k'), value: bytes('v'), extra: 1 },
    { type: 'put', key: bytes('k'), value: bytes('v'), lease: 1.5 },
    { type: 'put', key: 'k', value: bytes('v') },
  ]) {
    const data = encodeProposal({ node: 1, sequence: 1, request });
    assert.equal(data[0], 2, 'tagged as msgpack');
    roundTrip(request);
  }
});

test('other requests come back exactly', () => {
  roundTrip({ type: 'deleteRange', key: bytes('a'), rangeEnd: bytes('b'), prevKv: true });
  roundTrip({
    type: 'txn',
    compare: [{ key: bytes('a'), target: 'value', result: '=', value: bytes('1') }],
    success: [{ type: 'put', key: bytes('a'), value: bytes('2') }],
    failure: [{ type: 'range', key: bytes('a') }],
  });
  roundTrip({ type: 'compact', revision: 42 });
  roundTrip({ type: 'leaseGrant', id: 99, ttlSeconds: 10 });
  roundTrip(bytes('127.0.0.1:2380'));
});

test('entries in the older msgpack layout still decode', () => {
  const request = { type: 'put', key: bytes('old'), value: bytes('entry') };
  const data = encodeLegacyProposal({ node: 5, sequence: 9, request });
  assert.deepEqual(proposalId(data), { node: 5, sequence: 9 });
  assert.deepEqual(normalise(decodeProposal<unknown>(data).request), normalise(request));
});

test('damaged entries are refused, never misread', () => {
  const good = encodeProposal({ node: 3, sequence: 4, request: { type: 'put', key: bytes('key'), value: bytes('value'), lease: 5 } });
  assert.throws(() => decodeProposal(new Uint8Array(0)));
  assert.throws(() => decodeProposal(Uint8Array.of(9, 0, 0)), /not a proposal/);
  assert.throws(() => decodeProposal(good.subarray(0, 20)), /truncated/);
  const keyTooLong = good.slice();
  new DataView(keyTooLong.buffer).setUint32(18 + 8, 1_000);
  assert.throws(() => decodeProposal(keyTooLong), /truncated/);
  const badFlags = good.slice();
  badFlags[17] = 0x80;
  assert.throws(() => decodeProposal(badFlags), /unknown flags/);
  const badSequence = good.slice();
  new DataView(badSequence.buffer).setFloat64(9, 0.5);
  assert.throws(() => proposalId(badSequence), /pair of integers/);
});
