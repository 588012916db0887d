// One raftkv member in a worker thread, for the threaded benchmark target:
// it opens RaftKV over a MessagePortTransport to its peers and serves the
// bench's put / get / compare-and-swap requests arriving on a client port.

import { parentPort, workerData } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { op, RaftKV } from '../src/index.ts';
import { MessagePortTransport } from '../src/transport/message-port.ts';
import { decodeRequests, encodeReplies } from './member-protocol.ts';
import type { Reply, Request } from './member-protocol.ts';

interface Setup {
  readonly id: number;
  readonly dataDir: string;
  readonly members: number[];
  readonly peers: [number, MessagePort][];
  readonly client: MessagePort;
  readonly logEngine?: 'wal' | 'classic';
}

const setup = workerData as Setup;
const transport = new MessagePortTransport(setup.id);
for (const [peer, port] of setup.peers) transport.connect(peer, port);
const member = await RaftKV.open({ id: setup.id, dataDir: setup.dataDir, transport, initialMembers: setup.members, requestTimeoutMs: 30_000, ...(setup.logEngine === undefined ? {} : { logEngine: setup.logEngine }) });

async function serve(request: Request): Promise<unknown> {
  switch (request.op) {
    case 'put':
      await member.put(request.key, request.value);
      return null;
    case 'get':
      await member.get(request.key, { serializable: request.serializable });
      return null;
    case 'cas': {
      const txn = member.txn();
      if (request.expected === null) txn.if(request.key, 'version', '=', 0);
      else txn.if(request.key, 'value', '=', request.expected);
      return (await txn.then(op.put(request.key, request.value)).commit()).succeeded;
    }
    case 'status':
      return { isLeader: member.isLeader, ...(await member.status()), confState: undefined, eventLoopUtilization: performance.eventLoopUtilization().utilization };
    case 'close':
      await member.close();
      return null;
  }
}

// Requests arrive in batches (all the client sent in one turn of its event loop), and replies
// leave the same way: one message per turn each way, as a client connection's writes coalesce
// (one msgpack frame each, see member-protocol.ts).
let replies: Reply[] = [];
function reply(message: Reply): void {
  if (replies.length === 0) setImmediate(flushReplies);
  replies.push(message);
}
function flushReplies(): void {
  const batch = replies;
  replies = [];
  const frame = encodeReplies(batch);
  setup.client.postMessage(frame, [frame.buffer as ArrayBuffer]);
}
setup.client.on('message', (frame: Uint8Array) => {
  for (const request of decodeRequests(frame)) {
    serve(request).then(
      (result) => reply({ id: request.id, ok: true, result }),
      (error: { code?: string; message?: string }) => reply({ id: request.id, ok: false, code: error.code ?? 'ERROR', message: error.message ?? String(error) }),
    );
  }
});
parentPort?.postMessage('ready');
