// The threaded bench's client protocol: every request and reply comes back
// from its frame exactly as sent (values byte for byte, null and false kept
// apart), the frame owns its buffer so it can be transferred, and a frame
// naming an unknown request kind is refused rather than misread.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Packr } from 'msgpackr';
import { decodeReplies, decodeRequests, encodeReplies, encodeRequests } from '../../bench/member-protocol.ts';
import type { Reply, Request } from '../../bench/member-protocol.ts';

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);

test('requests of every kind come back from one frame as sent', () => {
  const requests: Request[] = [
    { id: 1, op: 'put', key: 'bench/key/000001', value: new Uint8Array(256).fill(0x61) },
    { id: 2, op: 'get', key: 'bench/key/000002', serializable: true },
    { id: 3, op: 'get', key: 'bench/key/000003', serializable: false },
    { id: 4, op: 'cas', key: 'bench/cas/4', expected: null, value: bytes('4:0') },
    { id: 5, op: 'cas', key: 'bench/cas/5', expected: bytes('5:0'), value: bytes('5:1') },
    { id: 6, op: 'status' },
    { id: 2 ** 40, op: 'close' },
  ];
  const frame = encodeRequests(requests);
  const decoded = decodeRequests(frame);
  assert.equal(decoded.length, requests.length);
  decoded.forEach((request, i) => {
    const sent = requests[i]!;
    assert.equal(request.id, sent.id);
    assert.equal(request.op, sent.op);
    for (const field of ['key', 'serializable'] as const) assert.equal((request as Record<string, unknown>)[field], (sent as Record<string, unknown>)[field]);
    for (const field of ['value', 'expected'] as const) {
      const got = (request as Record<string, unknown>)[field];
      const want = (sent as Record<string, unknown>)[field];
      if (want === null || want === undefined) assert.equal(got, want);
      else assert.deepEqual(Uint8Array.from(got as Uint8Array), want);
    }
  });
});

test('a frame has a buffer of its own, so sending it can transfer it', () => {
  const first = encodeRequests([{ id: 1, op: 'status' }]);
  const second = encodeRequests([{ id: 2, op: 'status' }]);
  for (const frame of [first, second]) {
    assert.equal(frame.byteOffset, 0);
    assert.equal(frame.buffer.byteLength, frame.length);
  }
  assert.notEqual(first.buffer, second.buffer);
  // Transferring the first (detaching its buffer) leaves the second readable.
  structuredClone(first, { transfer: [first.buffer as ArrayBuffer] });
  assert.equal(first.length, 0);
  assert.equal(decodeRequests(second)[0]!.id, 2);
});

test('replies, answered and failed, come back as sent', () => {
  const replies: Reply[] = [
    { id: 1, ok: true, result: null },
    { id: 2, ok: true, result: false },
    { id: 3, ok: true, result: true },
    { id: 4, ok: true, result: { isLeader: true, term: 3, revision: 17 } },
    { id: 5, ok: false, code: 'RAFTKV_TIMEOUT', message: 'the request timed out' },
  ];
  assert.deepEqual(decodeReplies(encodeReplies(replies)), replies);
});

test('an unknown request kind is refused', () => {
  const frame = new Packr({ useRecords: false }).pack([[7, 99, 'bench/key/000007']]);
  assert.throws(() => decodeRequests(frame), /unknown bench request kind 99/);
});
