// The raftkv side of `npm run bench -- --threads`: a 3-member cluster with one
// member per worker thread (as one member per app process in production),
// connected by MessagePort transports, each with durable storage and
// every write synced on a quorum. The bench's clients talk to the members
// over ports, round-robin, as etcd clients talk to endpoints.

import { MessageChannel, Worker } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { join } from 'node:path';
import type { BenchTarget } from '../load.ts';
import { decodeReplies, encodeRequests } from '../member-protocol.ts';
import type { Operation, Request } from '../member-protocol.ts';
import { ProposalTracker } from '../../src/server/proposals.ts';

const MEMBER_WORKER = new URL('../member-worker.ts', import.meta.url).href;

/**
 * The bench's end of one member's client port. Requests made in one turn of
 * the event loop go as one message, and replies come back batched the same
 * way (as writes coalesce on a client connection): a message per request each
 * way cost the members more than some of the work they measure, which an app
 * calling its embedded member directly never pays. Each batch is one
 * msgpack frame, transferred (see member-protocol.ts), not a structured
 * clone of one object and one value buffer per request. Requests wait in
 * the same slot table a member's proposals wait in (a Map churning an entry
 * per request kept its promoted, obsolete tables' young waiters alive, and
 * promoted about 1.3 MB per scavenge on this thread; see proposals.ts).
 */
class MemberClient {
  private readonly pending = new ProposalTracker<unknown>(1 << 20);
  private outgoing: Request[] = [];
  constructor(
    readonly worker: Worker,
    private readonly port: MessagePort,
  ) {
    port.on('message', (frame: Uint8Array) => {
      for (const reply of decodeReplies(frame)) {
        if (reply.ok) this.pending.resolve(reply.id, reply.result);
        else this.pending.reject(reply.id, Object.assign(new Error(reply.message), { code: reply.code }));
      }
    });
  }
  call(operation: Operation): Promise<unknown> {
    const { sequence: id, promise } = this.pending.register(Infinity);
    if (this.outgoing.length === 0) setImmediate(() => this.flush());
    this.outgoing.push({ ...operation, id });
    return promise;
  }
  private flush(): void {
    const frame = encodeRequests(this.outgoing);
    this.outgoing = [];
    this.port.postMessage(frame, [frame.buffer as ArrayBuffer]);
  }
}

export async function startRaftkvThreadsTarget(directory: string, size = 3, logEngine: 'wal' | 'classic' = 'wal'): Promise<BenchTarget> {
  const ids = Array.from({ length: size }, (_, position) => position + 1);
  const peerPorts = new Map<number, [number, MessagePort][]>(ids.map((id) => [id, []]));
  for (const a of ids) {
    for (const b of ids) {
      if (a >= b) continue;
      const channel = new MessageChannel();
      peerPorts.get(a)!.push([b, channel.port1]);
      peerPorts.get(b)!.push([a, channel.port2]);
    }
  }
  const clients = await Promise.all(
    ids.map(async (id) => {
      const channel = new MessageChannel();
      const peers = peerPorts.get(id)!;
      // The worker registers tsx itself (loader hooks are per thread), then loads the member.
      const bootstrap = `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(MEMBER_WORKER)}); })`;
      const worker = new Worker(bootstrap, {
        eval: true,
        workerData: { id, dataDir: join(directory, `member-${id}`), members: ids, peers, client: channel.port2, logEngine },
        transferList: [...peers.map(([, port]) => port), channel.port2],
      });
      await new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
      });
      return new MemberClient(worker, channel.port1);
    }),
  );
  // Wait for a leader.
  for (let attempt = 0; ; attempt++) {
    const statuses = (await Promise.all(clients.map((client) => client.call({ op: 'status' })))) as { isLeader: boolean }[];
    if (statuses.some((status) => status.isLeader)) break;
    if (attempt > 200) throw new Error('no leader elected');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  let next = 0;
  const pick = (): MemberClient => clients[next++ % clients.length]!;
  return {
    name: 'raftkv',
    async put(key, value) {
      await pick().call({ op: 'put', key, value });
    },
    async get(key, serializable) {
      await pick().call({ op: 'get', key, serializable });
    },
    async compareAndSwap(key, expected, value) {
      return (await pick().call({ op: 'cas', key, expected, value })) as boolean;
    },
    async close() {
      if (process.env['RAFTKV_BENCH_DEBUG'] !== undefined) {
        for (const client of clients) console.error(JSON.stringify(await client.call({ op: 'status' })));
      }
      await Promise.all(clients.map((client) => client.call({ op: 'close' })));
      await Promise.all(clients.map((client) => client.worker.terminate()));
    },
  };
}
