// The MessagePort transport: messages cross as decoded copies, a message
// claiming another sender is dropped, snapshots stream in order under the
// credit window, and a receiver's failure reaches the sender.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MessageChannel } from 'node:worker_threads';
import { MessageType } from '../../src/raft/types.ts';
import type { Message } from '../../src/raft/types.ts';
import { MessagePortTransport } from '../../src/transport/message-port.ts';

function message(from: number, to: number, index: number): Message {
  return {
    type: MessageType.App,
    from,
    to,
    term: 3,
    logTerm: 2,
    index,
    entries: [{ term: 3, index: index + 1, type: 0, data: Uint8Array.of(index & 255) }],
    commit: index,
    reject: false,
    rejectHint: 0,
    snapshot: null,
    context: new Uint8Array(0),
  };
}

function pair(options: { window?: number } = {}): { a: MessagePortTransport; b: MessagePortTransport; close: () => Promise<void> } {
  const channel = new MessageChannel();
  const a = new MessagePortTransport(1, options.window === undefined ? {} : { snapshotWindowChunks: options.window });
  const b = new MessagePortTransport(2);
  a.connect(2, channel.port1);
  b.connect(1, channel.port2);
  return { a, b, close: async () => Promise.all([a.close(), b.close()]).then(() => undefined) };
}

test('messages arrive decoded and in order; a forged sender is dropped', async () => {
  const { a, b, close } = pair();
  const received: Message[] = [];
  let done: () => void = () => {};
  const all = new Promise<void>((resolve) => (done = resolve));
  b.start({
    onMessage: (m) => {
      received.push(m);
      if (received.length === 3) done();
    },
    onSnapshot: async () => {},
  });
  a.start({ onMessage: () => {}, onSnapshot: async () => {} });
  a.send([message(1, 2, 10), message(1, 2, 11)]);
  a.send([message(7, 2, 99)]); // claims to come from 7 on the port of 1
  a.send([message(1, 2, 12)]);
  await all;
  assert.deepEqual(received.map((m) => m.index), [10, 11, 12]);
  assert.deepEqual(received[0]?.entries[0]?.data, Uint8Array.of(10));
  await close();
});

test('a snapshot streams in order under a one-chunk window; a receiver failure rejects the send', async () => {
  const { a, b, close } = pair({ window: 1 });
  const chunks = Array.from({ length: 20 }, (_, i) => Uint8Array.from({ length: 1000 }, () => i));
  let seen: number[] = [];
  let fail = false;
  b.start({
    onMessage: () => {},
    onSnapshot: async (header, stream) => {
      assert.equal(header.snapshot?.index, 42);
      seen = [];
      for await (const chunk of stream) {
        seen.push(chunk[0] as number);
        if (fail && seen.length === 3) throw new Error('disk full');
      }
    },
  });
  a.start({ onMessage: () => {}, onSnapshot: async () => {} });
  const header: Message = { ...message(1, 2, 0), type: MessageType.Snap, entries: [], snapshot: { index: 42, term: 3, confState: { voters: [1, 2], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false } } };
  async function* source(): AsyncGenerator<Uint8Array> {
    for (const chunk of chunks) yield chunk;
  }
  await a.sendSnapshot(header, source());
  assert.deepEqual(seen, chunks.map((_, i) => i));
  fail = true;
  await assert.rejects(a.sendSnapshot(header, source()), { code: 'RAFTKV_UNREACHABLE' });
  await close();
});
