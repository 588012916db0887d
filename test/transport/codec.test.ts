// The transport frame codec: random messages of every kind come back equal;
// every truncation and many corruptions of a valid frame are refused with
// MalformedFrameError (never another error, never a crash), and whatever
// a corrupted frame does decode to is a well-typed message.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MalformedFrameError, decodeMessages, encodeMessages } from '../../src/transport/codec.ts';
import { EntryType, MessageType } from '../../src/raft/types.ts';
import type { Message } from '../../src/raft/types.ts';

const SEED = Number(process.env.SEED ?? 1);
const REPLAY = `replay: SEED=${SEED} npm test -- transport/codec`;

function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 0x1_0000_0000;
  };
}

function randomMessage(next: () => number): Message {
  const int = (max: number): number => Math.floor(next() * max);
  const big = (): number => (next() < 0.2 ? Number.MAX_SAFE_INTEGER - int(10) : int(1_000_000));
  const bytes = (max: number): Uint8Array => Uint8Array.from({ length: int(max) }, () => int(256));
  const ids = (): number[] => Array.from({ length: int(4) }, () => int(2 ** 47));
  const types = Object.values(MessageType);
  return {
    type: types[int(types.length)]!,
    from: int(2 ** 47),
    to: int(2 ** 47),
    term: big(),
    logTerm: big(),
    index: big(),
    entries: Array.from({ length: int(5) }, () => ({ term: big(), index: big(), type: next() < 0.8 ? EntryType.Normal : EntryType.ConfChange, data: bytes(300) })),
    commit: big(),
    reject: next() < 0.5,
    rejectHint: big(),
    snapshot: next() < 0.7 ? null : { index: big(), term: big(), confState: { voters: ids(), learners: ids(), votersOutgoing: ids(), learnersNext: ids(), autoLeave: next() < 0.5 } },
    context: bytes(20),
  };
}

test('random messages of every kind come back equal', () => {
  const next = random(SEED);
  for (let round = 0; round < 300; round++) {
    const messages = Array.from({ length: Math.floor(next() * 4) }, () => randomMessage(next));
    const decoded = decodeMessages(encodeMessages(messages));
    assert.deepEqual(
      decoded.map((message) => ({ ...message, context: Array.from(message.context), entries: message.entries.map((entry) => ({ ...entry, data: Array.from(entry.data) })) })),
      messages.map((message) => ({ ...message, context: Array.from(message.context), entries: message.entries.map((entry) => ({ ...entry, data: Array.from(entry.data) })) })),
      `round ${round}; ${REPLAY}`,
    );
  }
});

function decodesOrRefuses(frame: Uint8Array, what: string): void {
  try {
    for (const message of decodeMessages(frame)) {
      assert.ok(Object.values(MessageType).includes(message.type), `${what}: a decoded message has a known type`);
      for (const field of [message.from, message.to, message.term, message.index, message.commit]) assert.ok(Number.isSafeInteger(field) && field >= 0, `${what}: ids and indexes are non-negative integers`);
      for (const entry of message.entries) assert.ok(entry.data instanceof Uint8Array && Number.isSafeInteger(entry.index), what);
    }
  } catch (error) {
    assert.ok(error instanceof MalformedFrameError, `${what}: threw ${String(error)}; ${REPLAY}`);
    assert.equal(error.code, 'RAFTKV_MALFORMED_FRAME');
  }
}

test('every truncation of a frame is refused with MalformedFrameError', () => {
  const next = random(SEED + 1);
  const frame = encodeMessages([randomMessage(next), { ...randomMessage(next), snapshot: { index: 5, term: 2, confState: { voters: [1, 2], learners: [3], votersOutgoing: [], learnersNext: [], autoLeave: false } } }]);
  for (let length = 0; length < frame.length; length++) {
    assert.throws(() => decodeMessages(frame.subarray(0, length)), MalformedFrameError, `length ${length}`);
  }
  assert.throws(() => decodeMessages(Uint8Array.of(...frame, 0)), /after the last message/);
  assert.throws(() => decodeMessages(Uint8Array.of(1, ...frame.subarray(1))), /unsupported frame version 1/);
});

test('corrupted frames decode to well-typed messages or are refused with MalformedFrameError', () => {
  const next = random(SEED + 2);
  for (let round = 0; round < 2_000; round++) {
    const frame = encodeMessages(Array.from({ length: 1 + Math.floor(next() * 2) }, () => randomMessage(next))).slice();
    for (let flips = 1 + Math.floor(next() * 3); flips > 0; flips--) frame[1 + Math.floor(next() * (frame.length - 1))] = Math.floor(next() * 256);
    decodesOrRefuses(frame, `round ${round}`);
  }
  // A huge count must be refused before anything is allocated for it.
  assert.throws(() => decodeMessages(Uint8Array.of(2, 0xff, 0xff, 0xff, 0xff)), MalformedFrameError);
});
