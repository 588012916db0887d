// The Transport conformance suite against every transport raftkv ships: the
// in-memory network, MessagePorts between threads' ends, and TCP on
// 127.0.0.1.

import { test } from 'node:test';
import { MessageChannel } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { transportSuite } from '../../src/testing.ts';
import type { TransportPort } from '../../src/server/ports.ts';
import { MemoryNetwork } from '../../src/transport/memory.ts';
import { MessagePortTransport } from '../../src/transport/message-port.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';

transportSuite({
  test,
  name: 'MemoryTransport',
  harness: () => {
    const network = new MemoryNetwork({ seed: 1 });
    return { create: async (id) => ({ transport: network.endpoint(id), address: `memory:${id}` }) };
  },
});

transportSuite({
  test,
  name: 'MessagePortTransport',
  harness: () => {
    // A hub that connects every new endpoint to every endpoint made before it.
    const endpoints = new Map<number, MessagePortTransport>();
    const ports: MessagePort[] = [];
    return {
      create: async (id) => {
        const transport = new MessagePortTransport(id, { snapshotWindowChunks: 4 });
        for (const [other, endpoint] of endpoints) {
          if (other === id) continue;
          const channel = new MessageChannel();
          ports.push(channel.port1, channel.port2);
          transport.connect(other, channel.port1);
          endpoint.connect(id, channel.port2);
        }
        endpoints.set(id, transport);
        return { transport, address: `port:${id}` };
      },
      dispose: async () => {
        for (const port of ports) port.close();
      },
    };
  },
  snapshotLeadChunksMax: 6,
});

const queueMessagesMax = 256;

transportSuite({
  test,
  name: 'TcpTransport',
  harness: () => ({
    create: async (id, address) => {
      const transport = await TcpTransport.listen({
        id,
        listen: address ?? '127.0.0.1:0',
        queueMessagesMax,
        snapshotWindowChunks: 4,
        reconnectDelayMs: 10,
        reconnectDelayMaxMs: 100,
      });
      return { transport, address: transport.address };
    },
    queuedMessages: (transport: TransportPort, peer: number) =>
      (transport as TcpTransport).stats().peers.find((stats) => stats.id === peer)?.queuedMessages ?? 0,
  }),
  supports: { refusesUnknownSenders: true },
  queueMessagesMax,
  snapshotLeadChunksMax: 6,
});
