// `npm run bench:gateway`: raftkv's etcd gRPC gateway against a real etcd,
// side by side, with the same client and load: the `etcd3` npm client given
// the three members' endpoints (it spreads calls over them), closed-loop
// callers putting 256-byte values and then reading them back (linearizable
// gets, the client's default). raftkv runs three members, one per worker
// thread (as one per process in production; etcd runs three processes),
// over MessagePort transports with durable storage (every write synced
// on a quorum), each member serving its own GrpcGateway. etcd is started as
// bench/targets/etcd.ts starts it (three members on loopback). A third
// target, "grpc-js floor", is three worker threads whose gRPC servers answer
// Put and Range at once with an empty response (no store at all): the most
// any Node.js gRPC server reaches with this client on this machine, so the
// table shows how much of raftkv's gap to etcd is grpc-js itself. Prints a
// progress line per case and a table with the ratios at the end.
//
// Options: --seconds N (per case, default 10) --warmup N (default 2)
//          --warmup-target N (seconds of unmeasured puts and gets before a
//          target's first case, default 10: the JIT compiles the client's and
//          the members' hot code, which otherwise lands in the first case)
//          --callers 16,256 --only raftkv|etcd|floor

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir, loadavg, cpus } from 'node:os';
import { join } from 'node:path';
import { MessageChannel, Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { Etcd3 } from 'etcd3';
import { closedLoop, sleep } from './load.ts';
import type { BenchTarget, LoadResult } from './load.ts';
import { etcdAvailable, startEtcdTarget } from './targets/etcd.ts';

// ---- A member in a worker thread: RaftKV plus its gRPC gateway ----

interface MemberSetup {
  readonly gatewayBenchMember: true;
  /** A grpc-js server with no store behind it instead of a member. */
  readonly floor?: boolean;
  readonly id: number;
  readonly dataDir: string;
  readonly members: number[];
  readonly peers: [number, MessagePort][];
}

/** The floor: KV.Put and KV.Range answered at once, through the same .proto files and grpc-js server as the gateway. */
async function runFloor(): Promise<void> {
  const grpc = await import('@grpc/grpc-js');
  const protoLoader = await import('@grpc/proto-loader');
  const { PROTO_FILE, protoDirectory } = await import('../src/server/grpc-gateway.ts');
  const definition = protoLoader.loadSync(PROTO_FILE, { includeDirs: [protoDirectory()], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const kvService = (grpc.loadPackageDefinition(definition).etcdserverpb as import('@grpc/grpc-js').GrpcObject).KV as import('@grpc/grpc-js').ServiceClientConstructor;
  const server = new grpc.Server();
  const header = { cluster_id: '1', member_id: '1', revision: 1, raft_term: 1 };
  const answer = (response: object) => (_call: unknown, callback: (error: null, value: object) => void): void => callback(null, response);
  server.addService(kvService.service, { Put: answer({ header }), Range: answer({ header, kvs: [], count: 0 }) });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error))),
  );
  parentPort?.on('message', (message: string) => {
    if (message === 'status') parentPort?.postMessage({ isLeader: true });
    if (message === 'close') {
      server.forceShutdown();
      parentPort?.postMessage('closed');
    }
  });
  parentPort?.postMessage({ address: `127.0.0.1:${port}` });
}

async function runMember(setup: MemberSetup): Promise<void> {
  const { RaftKV } = await import('../src/index.ts');
  const { MessagePortTransport } = await import('../src/transport/message-port.ts');
  const { GrpcGateway } = await import('../src/server/grpc-gateway.ts');
  const transport = new MessagePortTransport(setup.id);
  for (const [peer, port] of setup.peers) transport.connect(peer, port);
  const member = await RaftKV.open({ id: setup.id, dataDir: setup.dataDir, transport, initialMembers: setup.members, requestTimeoutMs: 30_000 });
  const gateway = await GrpcGateway.start(member, { listen: '127.0.0.1:0', requestsInFlightMax: 4_096 });
  parentPort?.on('message', (message: string) => {
    if (message === 'status') parentPort?.postMessage({ isLeader: member.isLeader });
    if (message === 'close') {
      void gateway
        .close()
        .then(() => member.close())
        .then(() => parentPort?.postMessage('closed'));
    }
  });
  parentPort?.postMessage({ address: gateway.address });
}

if (!isMainThread && (workerData as Partial<MemberSetup> | null)?.gatewayBenchMember === true) {
  if ((workerData as MemberSetup).floor === true) await runFloor();
  else await runMember(workerData as MemberSetup);
} else if (isMainThread) {
  await main();
}

// ---- The driver ----

function option(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : undefined;
}

function request(worker: Worker, message: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const onMessage = (reply: unknown): void => {
      worker.off('error', onError);
      resolve(reply);
    };
    const onError = (error: Error): void => {
      worker.off('message', onMessage);
      reject(error);
    };
    worker.once('message', onMessage);
    worker.once('error', onError);
    worker.postMessage(message);
  });
}

/** The etcd3 client's put and get, exactly as bench/targets/etcd.ts calls them. */
function etcd3Target(name: string, client: Etcd3, close: () => Promise<void>): BenchTarget {
  return {
    name,
    async put(key, value) {
      await client.put(key).value(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
    },
    async get(key) {
      await client.get(key).buffer();
    },
    compareAndSwap() {
      return Promise.reject(new Error('not measured here'));
    },
    close,
  };
}

async function startRaftkvGateways(directory: string, floor = false): Promise<BenchTarget> {
  const ids = [1, 2, 3];
  const peerPorts = new Map<number, [number, MessagePort][]>(ids.map((id) => [id, []]));
  for (const a of ids) {
    for (const b of ids) {
      if (a >= b) continue;
      const channel = new MessageChannel();
      peerPorts.get(a)?.push([b, channel.port1]);
      peerPorts.get(b)?.push([a, channel.port2]);
    }
  }
  const self = new URL(import.meta.url).href;
  // The worker registers tsx itself (loader hooks are per thread), then loads this file as a member.
  const bootstrap = `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(self)}); })`;
  const members = await Promise.all(
    ids.map(async (id) => {
      const peers = peerPorts.get(id) ?? [];
      const setup: MemberSetup = { gatewayBenchMember: true, id, dataDir: join(directory, `member-${id}`), members: ids, peers, floor };
      const worker = new Worker(bootstrap, { eval: true, workerData: setup, transferList: peers.map(([, port]) => port) });
      const { address } = (await new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      })) as { address: string };
      return { worker, address };
    }),
  );
  for (let attempt = 0; ; attempt++) {
    const statuses = (await Promise.all(members.map(({ worker }) => request(worker, 'status')))) as { isLeader: boolean }[];
    if (statuses.some((status) => status.isLeader)) break;
    if (attempt > 200) throw new Error('no leader elected');
    await sleep(50);
  }
  const client = new Etcd3({ hosts: members.map(({ address }) => `http://${address}`) });
  return etcd3Target(floor ? 'floor' : 'raftkv', client, async () => {
    client.close();
    for (const { worker } of members) await request(worker, 'close');
    await Promise.all(members.map(({ worker }) => worker.terminate()));
  });
}

interface Row {
  readonly workload: string;
  readonly callers: number;
  readonly results: Map<string, LoadResult>;
}

async function runCases(target: BenchTarget, callerCounts: readonly number[], rows: Row[], seconds: number, warmupSeconds: number, targetWarmupSeconds: number): Promise<void> {
  const value = new Uint8Array(256).fill(0x61);
  const keySpace = 10_000;
  const key = (n: number): string => `bench/gw/${String(n % keySpace).padStart(5, '0')}`;
  let counter = 0;
  const record = (workload: string, callers: number, result: LoadResult): void => {
    let row = rows.find((each) => each.workload === workload && each.callers === callers);
    if (row === undefined) {
      row = { workload, callers, results: new Map() };
      rows.push(row);
    }
    row.results.set(target.name, result);
    console.error(`  ${target.name} ${workload} x${callers}: ${Math.round(result.perSecond).toLocaleString('en-US')} ops/s, p99 ${result.p99Ms.toFixed(2)} ms, errors ${result.errors}`);
  };
  if (targetWarmupSeconds > 0) {
    const label = `${target.name} warm-up`;
    await closedLoop({
      workers: 64,
      warmupSeconds: 0,
      seconds: targetWarmupSeconds,
      label,
      operation: (_worker, sequence) => (sequence % 2 === 0 ? target.put(key(counter++ * 7919), value) : target.get(key(counter++ * 7919), false)),
    });
    console.error(`  ${label}: ${targetWarmupSeconds} s of puts and gets, not measured`);
  }
  for (const callers of callerCounts) {
    const label = `${target.name} put x${callers}`;
    record('put 256 B', callers, await closedLoop({ workers: callers, warmupSeconds, seconds, label, operation: () => target.put(key(counter++ * 7919), value) }));
  }
  for (const callers of callerCounts) {
    const label = `${target.name} get x${callers}`;
    record('get', callers, await closedLoop({ workers: callers, warmupSeconds, seconds, label, operation: () => target.get(key(counter++ * 7919), false) }));
  }
}

function printTable(rows: readonly Row[]): void {
  const number = (value: number | undefined, digits = 0): string =>
    value === undefined ? '—' : value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const header = ['workload', 'callers', 'raftkv ops/s', 'p50 ms', 'p99 ms', 'etcd ops/s', 'p50 ms', 'p99 ms', 'raftkv/etcd', 'grpc-js floor ops/s', 'raftkv/floor'];
  const ratio = (a: LoadResult | undefined, b: LoadResult | undefined): string =>
    a !== undefined && b !== undefined && b.perSecond > 0 ? `${(a.perSecond / b.perSecond).toFixed(2)}×` : '—';
  const lines = rows.map((row) => {
    const [raftkv, etcd, floor] = [row.results.get('raftkv'), row.results.get('etcd'), row.results.get('floor')];
    return [
      row.workload, String(row.callers),
      number(raftkv?.perSecond), number(raftkv?.p50Ms, 2), number(raftkv?.p99Ms, 2),
      number(etcd?.perSecond), number(etcd?.p50Ms, 2), number(etcd?.p99Ms, 2), ratio(raftkv, etcd),
      number(floor?.perSecond), ratio(raftkv, floor),
    ];
  });
  const widths = header.map((title, column) => Math.max(title.length, ...lines.map((line) => line[column]?.length ?? 0)));
  const format = (line: readonly string[]): string => line.map((cell, column) => cell.padStart(widths[column] ?? 0)).join('  ');
  console.log(format(header));
  console.log(widths.map((width) => '-'.repeat(width)).join('  '));
  for (const line of lines) console.log(format(line));
}

async function main(): Promise<void> {
  const seconds = Number(option('--seconds') ?? 10);
  const warmupSeconds = Number(option('--warmup') ?? 2);
  const targetWarmupSeconds = Number(option('--warmup-target') ?? 10);
  const callerCounts = (option('--callers') ?? '16,256').split(',').map(Number);
  const only = option('--only');
  for (const [name, value] of [['--seconds', seconds], ['--warmup', warmupSeconds], ['--warmup-target', targetWarmupSeconds]] as const) {
    if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a non-negative number`);
  }
  if (callerCounts.some((count) => !Number.isSafeInteger(count) || count < 1 || count > 10_000)) throw new Error('--callers takes counts from 1 to 10,000');
  console.error(`gateway bench: ${cpus().length} CPUs, load average ${loadavg().map((each) => each.toFixed(2)).join(' ')}, ${new Date().toISOString()}`);
  const rows: Row[] = [];
  const directory = await mkdtemp(join(tmpdir(), 'raftkv-bench-gateway-'));
  try {
    if (only === undefined || only === 'raftkv') {
      const target = await startRaftkvGateways(join(directory, 'raftkv'));
      try {
        await runCases(target, callerCounts, rows, seconds, warmupSeconds, targetWarmupSeconds);
      } finally {
        await target.close();
      }
    }
    if ((only === undefined || only === 'etcd') && (await etcdAvailable())) {
      const target = await startEtcdTarget(join(directory, 'etcd'));
      try {
        await runCases(target, callerCounts, rows, seconds, warmupSeconds, targetWarmupSeconds);
      } finally {
        await target.close();
      }
    } else if (only === undefined) console.error('etcd is not installed: raftkv only (Debian: apt-get install etcd-server)');
    if (only === undefined || only === 'floor') {
      const target = await startRaftkvGateways(join(directory, 'floor'), true);
      try {
        await runCases(target, callerCounts, rows, seconds, warmupSeconds, targetWarmupSeconds);
      } finally {
        await target.close();
      }
    }
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
  console.error(`load average at the end: ${loadavg().map((each) => each.toFixed(2)).join(' ')}`);
  printTable(rows);
}
