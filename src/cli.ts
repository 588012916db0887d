// raftkv's command line. `raftkv serve` runs one member as its own process:
// its Raft log and store under --data-dir, its peers reached over TCP (TLS
// when --tls-* are given), and optionally a small etcd-style HTTP/JSON
// endpoint for clients on --client-listen (and etcd's gRPC API on
// --grpc-listen). SIGTERM or SIGINT closes the
// member cleanly. A member's name is `n<id>` (or just its id): the positive
// integer in it is its Raft member id. Bad flags get a one-line reason and
// exit code 2. See docs/transport.md.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import createDebug from 'debug';
import { RaftKVError } from './raft/errors.ts';
import type { NodeId } from './raft/types.ts';
import type { GrpcGateway } from './server/grpc-gateway.ts';
import type { HttpGateway } from './server/http-gateway.ts';
import type { RaftKV } from './server/raftkv.ts';
import { parseAddress } from './transport/tcp-connection.ts';
import type { TcpTlsOptions, TcpTransport } from './transport/tcp.ts';

const log = createDebug('raftkv:cli');

export const USAGE = `Usage: raftkv serve --name n<id> --data-dir <dir> --listen <host:port> [options]

Runs one raftkv member as its own process.

  --name <n1>                 this member's name, n<id> (or --id <id>)
  --id <id>                   this member's id, a positive integer
  --data-dir <dir>            where the Raft log and the store live (created if missing)
  --listen <host:port>        where peers connect to this member
  --peers <n2=host:port,...>  the other members and their --listen addresses
  --join                      join an existing cluster (the member was added with addMember)
                              instead of founding one with --peers as the first members
  --client-listen <host:port> serve etcd's HTTP/JSON gateway (a subset) here; keep it on loopback
  --grpc-listen <host:port>   serve etcd's gRPC API here (no TLS: keep it on loopback); with
                              --client-listen, the HTTP/JSON endpoint then also serves the rest of
                              etcd's gateway (txn, compaction, hash, hashkv, members, watch, leases)
  --tls-ca <file>             CA certificate (PEM) that signs every member's certificate
  --tls-cert <file>           this member's certificate (PEM); must name member-<id>
  --tls-key <file>            its private key (PEM)
  --allow-plain-tcp           allow plain TCP on an address other than loopback (no authentication)
  --tick-ms <ms>              milliseconds per Raft tick (default 100)
  --election-ticks <n>        ticks without a leader before an election (default 10)
  --request-timeout-ms <ms>   deadline of a client request (default 5000)
  --snapshot-entries <n>      applied entries between snapshots (default 10000)
  -h, --help                  show this help

Logs: DEBUG=raftkv:* raftkv serve ...`;

/** A bad command line; printed as one line, exit code 2. */
export class UsageError extends RaftKVError {
  constructor(message: string) {
    super('RAFTKV_USAGE', message);
  }
}

export interface ServeConfig {
  readonly id: NodeId;
  readonly dataDir: string;
  readonly listen: string;
  readonly peers: ReadonlyMap<NodeId, string>;
  readonly join: boolean;
  readonly clientListen: string | undefined;
  readonly grpcListen: string | undefined;
  readonly tlsFiles: { readonly ca: string; readonly cert: string; readonly key: string } | undefined;
  readonly allowPlainTcp: boolean;
  readonly tickMs: number | undefined;
  readonly electionTimeoutTicks: number | undefined;
  readonly requestTimeoutMs: number | undefined;
  readonly snapshotEntries: number | undefined;
}

/** The member id in a name: `n1`, `member-1` or `1` → 1. */
export function memberIdOf(name: string, what: string): NodeId {
  const match = /^(?:n|member-)?(\d{1,15})$/.exec(name);
  const id = match === null ? NaN : Number(match[1]);
  if (!Number.isSafeInteger(id) || id <= 0) throw new UsageError(`${what} must be n<id> with a positive integer id (e.g. n1), got ${JSON.stringify(name)}`);
  return id;
}

function checkAddress(text: string, flag: string, allowPortZero = false): string {
  try {
    parseAddress(text, flag, { allowPortZero });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  return text;
}

function positive(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const value = /^\d{1,15}$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || value <= 0) throw new UsageError(`${flag} must be a positive integer, got ${JSON.stringify(text)}`);
  return value;
}

function parsePeers(text: string | undefined, self: NodeId): Map<NodeId, string> {
  const peers = new Map<NodeId, string>();
  if (text === undefined || text.trim() === '') return peers;
  for (const item of text.split(',')) {
    const separator = item.indexOf('=');
    if (separator <= 0) throw new UsageError(`--peers takes name=host:port pairs separated by commas, got ${JSON.stringify(item)}`);
    const id = memberIdOf(item.slice(0, separator).trim(), 'a --peers name');
    if (id === self) throw new UsageError(`--peers names this member (${id}) itself`);
    if (peers.has(id)) throw new UsageError(`--peers names member ${id} twice`);
    peers.set(id, checkAddress(item.slice(separator + 1).trim(), `--peers address of n${id}`));
  }
  return peers;
}

/** Parses `serve`'s flags; throws UsageError with a reason a person can act on. */
export function parseServeFlags(args: readonly string[]): ServeConfig | 'help' {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: {
        name: { type: 'string' }, id: { type: 'string' }, 'data-dir': { type: 'string' }, listen: { type: 'string' },
        peers: { type: 'string' }, join: { type: 'boolean' }, 'client-listen': { type: 'string' }, 'grpc-listen': { type: 'string' },
        'tls-ca': { type: 'string' }, 'tls-cert': { type: 'string' }, 'tls-key': { type: 'string' },
        'allow-plain-tcp': { type: 'boolean' }, 'tick-ms': { type: 'string' }, 'election-ticks': { type: 'string' },
        'request-timeout-ms': { type: 'string' }, 'snapshot-entries': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help === true) return 'help';
  const text = (flag: string): string | undefined => values[flag] as string | undefined;
  const nameId = text('name') === undefined ? undefined : memberIdOf(text('name') as string, '--name');
  const flagId = text('id') === undefined ? undefined : memberIdOf(text('id') as string, '--id');
  if (nameId !== undefined && flagId !== undefined && nameId !== flagId) throw new UsageError(`--name says member ${nameId} but --id says ${flagId}`);
  const id = nameId ?? flagId;
  if (id === undefined) throw new UsageError('--name (or --id) is required');
  const dataDir = text('data-dir');
  if (dataDir === undefined || dataDir === '') throw new UsageError('--data-dir is required');
  const listen = text('listen');
  if (listen === undefined) throw new UsageError('--listen is required');
  const tls = [text('tls-ca'), text('tls-cert'), text('tls-key')];
  if (tls.some((file) => file !== undefined) && !tls.every((file) => file !== undefined)) {
    throw new UsageError('--tls-ca, --tls-cert and --tls-key go together');
  }
  const clientListen = text('client-listen');
  const grpcListen = text('grpc-listen');
  const join = values.join === true;
  const peers = parsePeers(text('peers'), id);
  if (join && peers.size === 0) throw new UsageError('--join needs --peers: the members to reach');
  return {
    id,
    dataDir,
    listen: checkAddress(listen, '--listen', true),
    peers,
    join,
    clientListen: clientListen === undefined ? undefined : checkAddress(clientListen, '--client-listen', true),
    grpcListen: grpcListen === undefined ? undefined : checkAddress(grpcListen, '--grpc-listen', true),
    tlsFiles: tls[0] === undefined ? undefined : { ca: tls[0], cert: tls[1] as string, key: tls[2] as string },
    allowPlainTcp: values['allow-plain-tcp'] === true,
    tickMs: positive(text('tick-ms'), '--tick-ms'),
    electionTimeoutTicks: positive(text('election-ticks'), '--election-ticks'),
    requestTimeoutMs: positive(text('request-timeout-ms'), '--request-timeout-ms'),
    snapshotEntries: positive(text('snapshot-entries'), '--snapshot-entries'),
  };
}

function readTls(files: NonNullable<ServeConfig['tlsFiles']>): TcpTlsOptions {
  const read = (path: string, flag: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (error) {
      throw new UsageError(`${flag}: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
  };
  return { ca: read(files.ca, '--tls-ca'), cert: read(files.cert, '--tls-cert'), key: read(files.key, '--tls-key') };
}

export interface RunningMember {
  readonly kv: RaftKV;
  readonly transport: TcpTransport;
  readonly gateway: HttpGateway | null;
  readonly grpcGateway: GrpcGateway | null;
  /** Closes the gateway, then the member (and with it the transport); idempotent. */
  stop(): Promise<void>;
}

/** Starts a member from a parsed configuration. */
export async function startMember(config: ServeConfig, onFatal: (error: Error) => void = () => {}): Promise<RunningMember> {
  // Loaded here, not at the top, so that --help and a bad flag answer at once.
  const [{ TcpTransport }, { RaftKV }, { HttpGateway }] = await Promise.all([
    import('./transport/tcp.ts'),
    import('./server/raftkv.ts'),
    import('./server/http-gateway.ts'),
  ]);
  const tls = config.tlsFiles === undefined ? undefined : readTls(config.tlsFiles);
  const transport = await TcpTransport.listen({
    id: config.id,
    listen: config.listen,
    peers: config.peers,
    allowPlainTcp: config.allowPlainTcp,
    ...(tls === undefined ? {} : { tls }),
  });
  let kv: RaftKV;
  try {
    kv = await RaftKV.open({
      id: config.id,
      dataDir: config.dataDir,
      transport,
      ...(config.join ? {} : { initialMembers: [config.id, ...config.peers.keys()] }),
      ...(config.tickMs === undefined ? {} : { tickMs: config.tickMs }),
      ...(config.electionTimeoutTicks === undefined ? {} : { electionTimeoutTicks: config.electionTimeoutTicks }),
      ...(config.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: config.requestTimeoutMs }),
      ...(config.snapshotEntries === undefined ? {} : { snapshotEntries: config.snapshotEntries }),
      onFatal,
    });
  } catch (error) {
    await transport.close();
    throw error;
  }
  let gateway: HttpGateway | null = null;
  let grpcGateway: GrpcGateway | null = null;
  try {
    if (config.grpcListen !== undefined) grpcGateway = await startGrpc(kv, config.grpcListen);
    if (config.clientListen !== undefined) {
      const { EtcdJsonApi } = await import('./server/grpc-json.ts');
      const api = grpcGateway === null ? null : new EtcdJsonApi(grpcGateway);
      gateway = await HttpGateway.start(kv, { listen: config.clientListen, ...(api === null ? {} : { fallback: (request, response) => api.handle(request, response) }) });
    }
  } catch (error) {
    await grpcGateway?.close();
    await kv.close();
    throw error;
  }
  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await gateway?.close();
      await grpcGateway?.close();
      await kv.close();
      await transport.close();
    })();
    return stopping;
  };
  return { kv, transport, gateway, grpcGateway, stop };
}

/** etcd's gRPC API for `kv` on `listen` (loaded only when asked for: it reads the .proto files). */
async function startGrpc(kv: RaftKV, listen: string): Promise<GrpcGateway> {
  const { GrpcGateway } = await import('./server/grpc-gateway.ts');
  return GrpcGateway.start(kv, { listen });
}

/** Runs `serve` until SIGTERM/SIGINT; resolves with the exit code. */
async function serve(config: ServeConfig): Promise<number> {
  let fatal: Error | null = null;
  let wake: () => void = () => {};
  const stopped = new Promise<void>((resolve) => (wake = resolve));
  const member = await startMember(config, (error) => {
    fatal = error;
    wake();
  });
  const grpcClients = member.grpcGateway === null ? '' : `, gRPC clients on ${member.grpcGateway.address}`;
  const clients = (member.gateway === null ? '' : `, clients on http://${member.gateway.address}`) + grpcClients;
  process.stdout.write(
    `raftkv: member ${config.id} ready (peers on ${member.transport.address} over ${config.tlsFiles === undefined ? 'TCP' : 'TLS'}${clients})\n`,
  );
  const onSignal = (signal: string): void => {
    log('member %d: %s, closing', config.id, signal);
    wake();
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  await stopped;
  // A second signal while closing ends the process at once.
  process.once('SIGTERM', () => process.exit(1));
  process.once('SIGINT', () => process.exit(1));
  await member.stop();
  if (fatal !== null) {
    process.stderr.write(`raftkv: member ${config.id} stopped on a fatal error: ${(fatal as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`raftkv: member ${config.id} closed\n`);
  return 0;
}

/** The command line: returns the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined ? 2 : 0;
  }
  try {
    if (command !== 'serve') throw new UsageError(`unknown command ${JSON.stringify(command)}; the command is "serve"`);
    const config = parseServeFlags(rest);
    if (config === 'help') {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    return await serve(config);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`raftkv: ${error.message}\nRun "raftkv serve --help" for the flags.\n`);
      return 2;
    }
    const code = error instanceof RaftKVError ? ` (${error.code})` : '';
    process.stderr.write(`raftkv: cannot start: ${(error as Error).message}${code}\n`);
    return 1;
  }
}
