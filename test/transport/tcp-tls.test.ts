// The TCP transport over mutual TLS, with certificates made by the openssl
// CLI: the conformance suite passes; a client whose certificate another CA
// signed, or that has none, is refused at the handshake; a client whose
// certificate names another member is refused at its hello; a server whose
// certificate names another member is never talked to; a transport whose
// own certificate does not name it refuses to start.

import { test as nodeTest } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { transportSuite } from '../../src/testing.ts';
import { MessageType } from '../../src/raft/types.ts';
import type { Message } from '../../src/raft/types.ts';
import { encodeHello, FrameKind, frameHeader, FrameReader, Purpose } from '../../src/transport/tcp-frame.ts';
import type { Frame } from '../../src/transport/tcp-frame.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import type { TcpTransportOptions } from '../../src/transport/tcp.ts';
import { makeCa, makeMemberCertificate } from './tcp-certs.ts';
import type { MemberCertificate } from './tcp-certs.ts';

/** Closed after each test, passed or failed, so that a failure never leaves the run hanging. */
const cleanups: (() => unknown)[] = [];

/** Every test here has a deadline and a cleanup: a hang is a failure, not a stuck run. */
const test = (name: string, body: () => Promise<void> | void): void => {
  void nodeTest(name, { timeout: 60_000 }, async () => {
    try {
      await body();
    } finally {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    }
  });
};

const directory = mkdtempSync(join(tmpdir(), 'raftkv-tls-'));
nodeTest.after(() => rmSync(directory, { recursive: true, force: true }));
const ca = makeCa(directory, 'cluster-ca');
const rogueCa = makeCa(directory, 'rogue-ca');
const certificates = new Map<number, MemberCertificate>([1, 2, 3].map((id) => [id, makeMemberCertificate(directory, ca, `member-${id}`)]));
const rogue = makeMemberCertificate(directory, rogueCa, 'member-3', 'rogue-member-3');

function tlsOf(id: number, certificate = certificates.get(id)!): NonNullable<TcpTransportOptions['tls']> {
  return { ca: ca.cert, cert: certificate.cert, key: certificate.key };
}

transportSuite({
  test,
  name: 'TcpTransport over TLS',
  harness: () => ({
    create: async (id, address) => {
      const transport = await TcpTransport.listen({ id, listen: address ?? '127.0.0.1:0', tls: tlsOf(id), snapshotWindowChunks: 4, reconnectDelayMs: 10, reconnectDelayMaxMs: 100 });
      return { transport, address: transport.address };
    },
  }),
  supports: { refusesUnknownSenders: true },
  snapshotLeadChunksMax: 6,
});

function message(from: number, to: number, index: number): Message {
  return {
    type: MessageType.Heartbeat,
    from,
    to,
    term: 1,
    logTerm: 0,
    index,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    snapshot: null,
    context: new Uint8Array(0),
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what: string, done: () => boolean, poke?: () => void): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(`gave up waiting for ${what}`);
    poke?.();
    await sleep(10);
  }
}

async function member(id: number, tls = tlsOf(id)): Promise<{ transport: TcpTransport; received: Message[] }> {
  const transport = await TcpTransport.listen({ id, listen: '127.0.0.1:0', tls, reconnectDelayMs: 10, reconnectDelayMaxMs: 50 });
  cleanups.push(() => transport.close());
  const received: Message[] = [];
  transport.start({ onMessage: (m) => received.push(m), onSnapshot: async () => {} });
  return { transport, received };
}

test('a member whose certificate another CA signed can neither send nor be sent to', async () => {
  const one = await member(1);
  const two = await member(2);
  const impostor = await member(3, { ca: rogueCa.cert, cert: rogue.cert, key: rogue.key });
  for (const [a, b] of [[one, two], [two, one], [impostor, one], [one, impostor], [two, impostor], [impostor, two]] as const) {
    a.transport.addPeer(b.transport.id, b.transport.address);
  }
  await until('1 and 2 to talk', () => two.received.length > 0 && one.received.length > 0, () => {
    one.transport.send([message(1, 2, 1)]);
    two.transport.send([message(2, 1, 2)]);
  });
  for (let round = 0; round < 20; round++) {
    impostor.transport.send([message(3, 1, 3), message(3, 2, 3)]);
    one.transport.send([message(1, 3, 4)]);
    await sleep(20);
  }
  assert.ok(one.received.every((m) => m.from === 2), 'nothing from the impostor reached member 1');
  assert.ok(two.received.every((m) => m.from === 1), 'nothing from the impostor reached member 2');
  assert.equal(impostor.received.length, 0, 'member 1 never talked to a server the CA did not sign');
  assert.ok(one.transport.stats().connectionsRefused > 0, 'the handshake was refused and counted');
  await Promise.all([one, two, impostor].map((m) => m.transport.close()));
});

/** Opens a raw TLS connection with the given material and says hello as `from`. */
function helloOver(port: number, material: { cert?: Buffer; key?: Buffer }, from: number): { frames: Frame[]; closed: Promise<void> } {
  const frames: Frame[] = [];
  const socket = tlsConnect({ host: '127.0.0.1', port, ca: ca.cert, ...material, checkServerIdentity: () => undefined });
  cleanups.push(() => socket.destroy());
  const reader = new FrameReader(1 << 16);
  socket.on('data', (data: Buffer) => frames.push(...reader.push(data)));
  socket.on('error', () => {});
  socket.on('secureConnect', () => {
    const body = encodeHello({ from, to: 1, purpose: Purpose.Messages });
    socket.write(Buffer.concat([frameHeader(FrameKind.Hello, body.length), body]));
  });
  return { frames, closed: new Promise<void>((resolve) => socket.on('close', () => resolve())) };
}

test('a client certificate naming another member is refused at the hello; no certificate fails the handshake', async () => {
  const one = await member(1);
  one.transport.addPeer(2, '127.0.0.1:1');
  one.transport.addPeer(3, '127.0.0.1:1');
  const port = Number(one.transport.address.split(':').pop());
  const two = certificates.get(2)!;
  const mismatch = helloOver(port, { cert: two.cert, key: two.key }, 3);
  await Promise.race([mismatch.closed, sleep(5_000)]);
  assert.equal(mismatch.frames[0]?.kind, FrameKind.Refused);
  assert.match(mismatch.frames[0]!.body.toString('utf8'), /member-3/);
  const none = helloOver(port, {}, 2);
  await Promise.race([none.closed, sleep(5_000)]);
  assert.equal(none.frames.length, 0, 'no certificate, no answer at all');
  assert.equal(one.transport.stats().connectionsRefused, 2);
  const good = helloOver(port, { cert: two.cert, key: two.key }, 2);
  await until('the right certificate to be accepted', () => good.frames.some((f) => f.kind === FrameKind.HelloOk));
  await one.transport.close();
  await good.closed;
});

test('a server whose certificate names another member is never talked to', async () => {
  const one = await member(1);
  const three = await member(3);
  three.transport.addPeer(1, one.transport.address);
  one.transport.addPeer(2, three.transport.address); // 2's address points at member 3
  for (let round = 0; round < 10; round++) {
    one.transport.send([message(1, 2, round)]);
    await sleep(20);
  }
  assert.equal(three.received.length, 0);
  assert.ok(one.transport.stats().peers[0]!.connectFailures > 0, 'the identity check failed the connection');
  await Promise.all([one.transport.close(), three.transport.close()]);
});

test('a transport whose own certificate does not name it refuses to start', async () => {
  await assert.rejects(TcpTransport.listen({ id: 2, listen: '127.0.0.1:0', tls: tlsOf(1) }), { code: 'RAFTKV_INVALID_ARGUMENT' });
  await assert.rejects(TcpTransport.listen({ id: 2, listen: '127.0.0.1:0', tls: { ca: ca.cert, cert: 'not a certificate', key: 'x' } }), { code: 'RAFTKV_INVALID_ARGUMENT' });
});

test('close() also closes a connection whose TLS handshake has not finished', async () => {
  const transport = await TcpTransport.listen({ id: 1, listen: '127.0.0.1:0', tls: tlsOf(1), connectTimeoutMs: 60_000 });
  cleanups.push(() => transport.close());
  const raw = netConnect({ host: '127.0.0.1', port: Number(transport.address.split(':').pop()) });
  raw.on('error', () => {});
  raw.resume();
  cleanups.push(() => raw.destroy());
  await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
  const rawClosed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
  const closing = transport.close();
  const done = await Promise.race([Promise.all([closing, rawClosed]).then(() => true), sleep(5_000).then(() => false)]);
  assert.ok(done, 'close() did not wait for the handshake timeout');
});
