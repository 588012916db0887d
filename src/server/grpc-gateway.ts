// An optional gRPC server that speaks etcd's v3 API for one member, so
// etcdctl, clientv3 and the etcd3 npm client work against raftkv unchanged.
// It serves KV (Range, Put, DeleteRange, Txn, Compact), Watch, Lease
// (LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases),
// Cluster (MemberList, MemberAdd, MemberRemove, MemberPromote) and
// Maintenance (Status, Hash, HashKV) from the .proto files in proto/
// (etcd's own definitions, field for field). Every response carries etcd's
// header (cluster id, member id, revision, raft term); failures carry etcd's
// gRPC code and message. Writes sent to a follower are forwarded to the
// leader inside raftkv. Auth, Alarm, Defragment, Snapshot, MoveLeader and
// Downgrade answer UNIMPLEMENTED.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import createDebug from 'debug';
import { InvalidArgumentError, RaftKVError } from '../raft/errors.ts';
import type { NodeId } from '../raft/types.ts';
import type { RangeResponse, TxnResponse } from '../storage/mvcc/types.ts';
import { formatAddress, parseAddress } from '../transport/tcp-connection.ts';
import {
  GrpcCallError,
  MEMBER_NOT_FOUND,
  MEMBER_NOT_LEARNER,
  TOO_MANY_REQUESTS,
  deleteRequestOf,
  grpcErrorOf,
  hash32Of,
  int64Of,
  keyValueMessage,
  putRequestOf,
  rangeRequestOf,
  txnRequestOf,
  txnResponseMessage,
  type Header,
  type Message,
} from './grpc-codec.ts';
import { leaseMethods, serveLeaseKeepAliveStream } from './grpc-lease.ts';
import { serveWatchStream, type WatchStreamLimits } from './grpc-watch.ts';
import type { DeleteResult, Member, PutResult, RaftKV, RangeOptions, Status, TxnBuilder } from './raftkv.ts';

const log = createDebug('raftkv:grpc');

/** What the gRPC gateway needs of a member (RaftKV fits). */
export type GrpcStore = Pick<
  RaftKV,
  | 'id' | 'put' | 'range' | 'delete' | 'txn' | 'compact' | 'watch' | 'members' | 'addMember' | 'addLearner' | 'removeMember' | 'promoteMember' | 'status' | 'hash'
  | 'grant' | 'revoke' | 'keepAliveOnce' | 'timeToLive' | 'leases' | 'revision' | 'raftTerm'
>;

/** How MemberList describes a member. */
export interface GrpcMemberInfo {
  readonly name?: string;
  readonly peerURLs?: readonly string[];
  readonly clientURLs?: readonly string[];
}

export interface GrpcGatewayOptions {
  /** Where to listen, "host:port" (port 0 picks one). Without `tls` there is no authentication: keep it on loopback. */
  readonly listen: string;
  /** Reported as header.cluster_id. Default 0x7261667420 ("raft "), a constant: raftkv has no cluster id. */
  readonly clusterId?: number;
  /** Reported by Status as the server version. Default "3.5.0": etcd clients parse it as a version. */
  readonly version?: string;
  /** Name and URLs of a member for MemberList. Default: name "raftkv-<id>", no peer URLs, and this gateway's URL for this member. */
  readonly describeMember?: (id: NodeId) => GrpcMemberInfo;
  /** Largest request message. Default 2 MiB (raftkv refuses requests over its own limit, 1.5 MiB, with etcd's "request is too large"). */
  readonly messageBytesMax?: number;
  /** Unary requests served at once; beyond, RESOURCE_EXHAUSTED "etcdserver: too many requests". Default 1,024. */
  readonly requestsInFlightMax?: number;
  /** Watch streams open at once. Default 1,024. */
  readonly watchStreamsMax?: number;
  /** Watches on one stream. Default 1,000. */
  readonly watchesPerStreamMax?: number;
  /** LeaseKeepAlive streams open at once. Default 1,024. */
  readonly keepAliveStreamsMax?: number;
  /** Serve TLS (PEM). With `ca`, clients must present a certificate it signed (mutual TLS). */
  readonly tls?: GrpcTlsOptions;
}

export interface GrpcTlsOptions {
  readonly cert: Buffer | string;
  readonly key: Buffer | string;
  /** CA certificates that client certificates must chain to; omitted: no client certificate asked for. */
  readonly ca?: Buffer | string;
}

function serverCredentials(tls: GrpcTlsOptions | undefined): grpc.ServerCredentials {
  if (tls === undefined) return grpc.ServerCredentials.createInsecure();
  const pem = (value: unknown, name: string): Buffer => {
    if (typeof value === 'string') return Buffer.from(value);
    if (Buffer.isBuffer(value)) return value;
    throw new InvalidArgumentError(`tls.${name} must be PEM text or a Buffer`);
  };
  const ca = tls.ca === undefined ? null : pem(tls.ca, 'ca');
  return grpc.ServerCredentials.createSsl(ca, [{ private_key: pem(tls.key, 'key'), cert_chain: pem(tls.cert, 'cert') }], ca !== null);
}

export const PROTO_FILE = 'etcd/api/etcdserverpb/rpc.proto';

/** proto/ sits at the repository (and package) root: two levels up from src/server, three from dist/src/server. */
export function protoDirectory(): string {
  for (const relative of ['../../proto', '../../../proto']) {
    const directory = fileURLToPath(new URL(relative, import.meta.url));
    if (existsSync(`${directory}/${PROTO_FILE}`)) return directory;
  }
  throw new RaftKVError('RAFTKV_INTERNAL', `cannot find ${PROTO_FILE} beside the package`);
}

let loaded: grpc.GrpcObject | null = null;

/** etcd's services, loaded once: snake_case names kept, int64 as strings, enums as names, defaults filled, oneofs named. */
function etcdServices(): grpc.GrpcObject {
  loaded ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(PROTO_FILE, { includeDirs: [protoDirectory()], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true }),
  );
  return loaded;
}

function serviceOf(name: string): grpc.ServiceDefinition {
  const pkg = etcdServices().etcdserverpb as grpc.GrpcObject;
  const constructor = pkg[name] as grpc.ServiceClientConstructor;
  return constructor.service;
}

type Unary = (request: Message) => Promise<unknown>;

export class GrpcGateway {
  private inFlight = 0;
  private statusInFlight: Promise<Status> | null = null;
  private closing: Promise<void> | null = null;
  private readonly watchStreams = new Set<grpc.ServerDuplexStream<Message, unknown>>();
  private readonly keepAliveStreams = new Set<grpc.ServerDuplexStream<Message, unknown>>();
  private port = 0;
  private host = '';

  private constructor(
    private readonly store: GrpcStore,
    private readonly server: grpc.Server,
    private readonly options: Required<Omit<GrpcGatewayOptions, 'describeMember' | 'tls'>> & Pick<GrpcGatewayOptions, 'describeMember' | 'tls'>,
  ) {}

  /** Starts serving `store` on `options.listen`. */
  static async start(store: GrpcStore, options: GrpcGatewayOptions): Promise<GrpcGateway> {
    if (typeof store !== 'object' || store === null || typeof store.put !== 'function') throw new InvalidArgumentError('a store to serve is required');
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('gateway options are required');
    const listen = parseAddress(options.listen, 'listen', { allowPortZero: true });
    const credentials = serverCredentials(options.tls);
    const settings = {
      listen: options.listen,
      clusterId: options.clusterId ?? 0x7261667420,
      version: options.version ?? '3.5.0',
      messageBytesMax: options.messageBytesMax ?? 2 * 1024 * 1024,
      requestsInFlightMax: options.requestsInFlightMax ?? 1_024,
      watchStreamsMax: options.watchStreamsMax ?? 1_024,
      watchesPerStreamMax: options.watchesPerStreamMax ?? 1_000,
      keepAliveStreamsMax: options.keepAliveStreamsMax ?? 1_024,
      ...(options.describeMember !== undefined ? { describeMember: options.describeMember } : {}),
      ...(options.tls !== undefined ? { tls: options.tls } : {}),
    };
    for (const name of ['clusterId', 'messageBytesMax', 'requestsInFlightMax', 'watchStreamsMax', 'watchesPerStreamMax', 'keepAliveStreamsMax'] as const) {
      if (!Number.isSafeInteger(settings[name]) || settings[name] <= 0) throw new InvalidArgumentError(`${name} must be a positive integer`);
    }
    if (typeof settings.version !== 'string') throw new InvalidArgumentError('version must be a string');
    if (settings.describeMember !== undefined && typeof settings.describeMember !== 'function') throw new InvalidArgumentError('describeMember must be a function');
    const server = new grpc.Server({
      'grpc.max_receive_message_length': settings.messageBytesMax,
      'grpc.max_concurrent_streams': settings.requestsInFlightMax + settings.watchStreamsMax + settings.keepAliveStreamsMax,
    });
    const gateway = new GrpcGateway(store, server, settings);
    gateway.addServices();
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(formatAddress(listen), credentials, (error, bound) => (error === null ? resolve(bound) : reject(error)));
    }).catch((error: Error) => {
      throw new RaftKVError('RAFTKV_LISTEN_FAILED', `cannot listen on ${options.listen}: ${error.message}`, { cause: error });
    });
    gateway.host = listen.host;
    gateway.port = port;
    return gateway;
  }

  /** "host:port" actually bound. */
  get address(): string {
    return formatAddress({ host: this.host, port: this.port });
  }

  /** Stops accepting, ends every watch stream and closes every connection; idempotent. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      for (const stream of [...this.watchStreams, ...this.keepAliveStreams]) stream.end();
      this.server.forceShutdown();
      resolve();
    });
    return this.closing;
  }

  /** The unary methods served, by service and method name. */
  private unaryMethods(): Readonly<Record<string, Readonly<Record<string, Unary>>>> {
    return {
      KV: {
        Range: (request) => this.range(request),
        Put: (request) => this.put(request),
        DeleteRange: (request) => this.deleteRange(request),
        Txn: (request) => this.txn(request),
        Compact: (request) => this.compact(request),
      },
      Lease: leaseMethods(this.store, (revision) => this.header(revision)),
      Cluster: {
        MemberList: async () => ({ header: await this.clusterHeader(), members: this.memberList() }),
        MemberAdd: (request) => this.memberAdd(request),
        MemberRemove: (request) => this.memberRemove(request),
        MemberPromote: (request) => this.memberPromote(request),
      },
      Maintenance: {
        Status: () => this.statusResponse(),
        Hash: () => this.hashResponse(0),
        HashKV: (request) => this.hashResponse(int64Of(request, 'revision')),
      },
    };
  }

  /**
   * Calls a unary method as a gRPC client would, for the HTTP/JSON gateway
   * (grpc-json.ts): same bound on requests in flight, same errors.
   */
  callUnary(service: string, method: string, request: Message): Promise<unknown> {
    const handler = this.unaryMethods()[service]?.[method];
    if (handler === undefined) return Promise.reject(new GrpcCallError(grpc.status.UNIMPLEMENTED, `unknown method ${service}.${method}`));
    if (this.inFlight >= this.options.requestsInFlightMax) return Promise.reject(TOO_MANY_REQUESTS());
    this.inFlight++;
    return handler(request).finally(() => {
      this.inFlight--;
    });
  }

  /** Serves one Watch stream for the HTTP/JSON gateway's /v3/watch. */
  serveWatch(stream: grpc.ServerDuplexStream<Message, unknown>): void {
    this.watch(stream);
  }

  /** Serves one LeaseKeepAlive stream for the HTTP/JSON gateway's /v3/lease/keepalive. */
  serveLeaseKeepAlive(stream: grpc.ServerDuplexStream<Message, unknown>): void {
    this.keepAlive(stream);
  }

  private addServices(): void {
    for (const [service, methods] of Object.entries(this.unaryMethods())) {
      const handlers: grpc.UntypedServiceImplementation = {};
      for (const [method, handler] of Object.entries(methods)) handlers[method] = this.unary(handler);
      if (service === 'Lease') Object.assign(handlers, this.leaseHandlers());
      this.server.addService(serviceOf(service), handlers);
    }
    this.server.addService(serviceOf('Watch'), {
      Watch: (stream: grpc.ServerDuplexStream<Message, unknown>) => this.watch(stream),
    });
  }

  /** Lease's service: its unary methods plus the keep-alive stream. */
  private leaseHandlers(): grpc.UntypedServiceImplementation {
    return { LeaseKeepAlive: (stream: grpc.ServerDuplexStream<Message, unknown>) => this.keepAlive(stream) };
  }

  /** A unary handler: bounded in flight, every failure as etcd's status. */
  private unary(handler: Unary): grpc.handleUnaryCall<Message, unknown> {
    return (call, callback) => {
      if (this.inFlight >= this.options.requestsInFlightMax) {
        callback(TOO_MANY_REQUESTS().toStatus());
        return;
      }
      this.inFlight++;
      handler(call.request)
        .then(
          (response) => callback(null, response),
          (error: unknown) => {
            const failure = grpcErrorOf(error);
            if (failure.grpcCode === grpc.status.INTERNAL) log('internal error: %O', error);
            callback(failure.toStatus());
          },
        )
        .finally(() => {
          this.inFlight--;
        });
    };
  }

  private watch(stream: grpc.ServerDuplexStream<Message, unknown>): void {
    if (this.watchStreams.size >= this.options.watchStreamsMax || this.closing !== null) {
      stream.emit('error', TOO_MANY_REQUESTS().toStatus());
      return;
    }
    this.watchStreams.add(stream);
    const limits: WatchStreamLimits = { watchesMax: this.options.watchesPerStreamMax };
    void serveWatchStream(stream, this.store, (revision) => this.header(revision), limits).finally(() => this.watchStreams.delete(stream));
  }

  private keepAlive(stream: grpc.ServerDuplexStream<Message, unknown>): void {
    if (this.keepAliveStreams.size >= this.options.keepAliveStreamsMax || this.closing !== null) {
      stream.emit('error', TOO_MANY_REQUESTS().toStatus());
      return;
    }
    this.keepAliveStreams.add(stream);
    void serveLeaseKeepAliveStream(stream, this.store, (revision) => this.header(revision)).finally(() => this.keepAliveStreams.delete(stream));
  }

  /** The member's status (it sizes the store on disk), one request at a time however many callers ask. */
  private memberStatus(): Promise<Status> {
    this.statusInFlight ??= this.store.status().finally(() => {
      this.statusInFlight = null;
    });
    return this.statusInFlight;
  }

  /** etcd's header for a call that does not touch the key-value store (membership): no revision. */
  private async clusterHeader(): Promise<Header> {
    return { ...(await this.header(0)), revision: 0 };
  }

  /** etcd's response header; `revision` 0 means the member's current revision. Read without I/O: every call needs one. */
  private async header(revision: number): Promise<Header> {
    return {
      cluster_id: String(this.options.clusterId),
      member_id: String(this.store.id),
      revision: revision !== 0 ? revision : this.store.revision,
      raft_term: this.store.raftTerm,
    };
  }

  private async range(request: Message): Promise<unknown> {
    const { serializable, key, rangeEnd, sortOrder, sortTarget, ...rest } = rangeRequestOf(request);
    const options: RangeOptions = {
      ...rest,
      key,
      ...(rangeEnd !== undefined ? { rangeEnd } : {}),
      ...(sortOrder !== undefined || sortTarget !== undefined
        ? { sort: { ...(sortOrder !== undefined ? { order: sortOrder } : {}), ...(sortTarget !== undefined ? { target: sortTarget } : {}) } }
        : {}),
      ...(serializable ? { serializable: true } : {}),
    };
    const result: RangeResponse = await this.store.range(options);
    // etcd's header carries the store's revision, also for a read of a past revision.
    const headerRevision = options.revision === undefined ? result.revision : 0;
    return { header: await this.header(headerRevision), kvs: result.kvs.map(keyValueMessage), more: result.more, count: result.count };
  }

  private async put(request: Message): Promise<unknown> {
    const { key, value, type: _type, ...options } = putRequestOf(request);
    const result: PutResult = await this.store.put(key, value, options);
    return { header: await this.header(result.revision), ...(result.prevKv !== undefined ? { prev_kv: keyValueMessage(result.prevKv) } : {}) };
  }

  private async deleteRange(request: Message): Promise<unknown> {
    const { type: _type, ...selector } = deleteRequestOf(request);
    const result: DeleteResult = await this.store.delete(selector);
    return { header: await this.header(result.revision), deleted: result.deleted, prev_kvs: result.prevKvs.map(keyValueMessage) };
  }

  private async txn(request: Message): Promise<unknown> {
    const { compare, success, failure } = txnRequestOf(request);
    let builder: TxnBuilder = this.store.txn();
    for (const condition of compare) {
      const selector = { key: condition.key, ...(condition.rangeEnd !== undefined ? { rangeEnd: condition.rangeEnd } : {}) };
      builder = builder.if(selector, condition.target, condition.result, condition.target === 'value' ? (condition.value ?? new Uint8Array(0)) : (condition.number ?? 0));
    }
    const response: TxnResponse = await builder.then(...success).else(...failure).commit();
    return txnResponseMessage(response, await this.header(response.revision));
  }

  private async compact(request: Message): Promise<unknown> {
    const result = await this.store.compact(int64Of(request, 'revision'));
    return { header: await this.header(result.revision) };
  }

  private memberList(): unknown[] {
    return this.store.members().map((member) => this.memberMessage(member));
  }

  private memberMessage(member: Member): Record<string, unknown> {
    const described = this.options.describeMember?.(member.id) ?? {};
    const self = member.id === this.store.id;
    return {
      ID: String(member.id),
      name: described.name ?? `raftkv-${member.id}`,
      peerURLs: described.peerURLs ?? [],
      clientURLs: described.clientURLs ?? (self ? [`${this.options.tls === undefined ? 'http' : 'https'}://${this.address}`] : []),
      isLearner: member.isLearner,
    };
  }

  /** etcd picks the new member's id; raftkv takes the next unused one, which the new process must be started with. */
  private async memberAdd(request: Message): Promise<unknown> {
    const peerURLs = Array.isArray(request.peerURLs) ? (request.peerURLs as string[]) : [];
    const id = Math.max(0, ...this.store.members().map((member) => member.id)) + 1;
    const address = peerURLs[0] === undefined ? '' : peerURLs[0].replace(/^[a-z]+:\/\//, '');
    const members = request.isLearner === true ? await this.store.addLearner(id, address) : await this.store.addMember(id, address);
    const added = members.find((member) => member.id === id) ?? { id, isLearner: request.isLearner === true };
    return {
      header: await this.clusterHeader(),
      member: { ...this.memberMessage(added), peerURLs, name: '', clientURLs: [] },
      members: members.map((member) => this.memberMessage(member)),
    };
  }

  private async memberRemove(request: Message): Promise<unknown> {
    const id = int64Of(request, 'ID');
    if (!this.store.members().some((member) => member.id === id)) throw MEMBER_NOT_FOUND();
    const members = await this.store.removeMember(id);
    return { header: await this.clusterHeader(), members: members.map((member) => this.memberMessage(member)) };
  }

  private async memberPromote(request: Message): Promise<unknown> {
    const id = int64Of(request, 'ID');
    const member = this.store.members().find((candidate) => candidate.id === id);
    if (member === undefined) throw MEMBER_NOT_FOUND();
    if (!member.isLearner) throw MEMBER_NOT_LEARNER();
    const members = await this.store.promoteMember(id);
    return { header: await this.clusterHeader(), members: members.map((each) => this.memberMessage(each)) };
  }

  private async statusResponse(): Promise<unknown> {
    const status = await this.memberStatus();
    return {
      header: { cluster_id: String(this.options.clusterId), member_id: String(this.store.id), revision: status.revision, raft_term: status.term },
      version: this.options.version,
      dbSize: status.dbSizeBytes,
      leader: String(status.leader),
      raftIndex: status.commitIndex,
      raftTerm: status.term,
      raftAppliedIndex: status.appliedIndex,
      errors: [],
      dbSizeInUse: status.dbSizeBytes,
      isLearner: status.confState.learners.includes(this.store.id),
    };
  }

  private async hashResponse(revision: number): Promise<unknown> {
    const result = await this.store.hash(revision > 0 ? revision : undefined);
    return {
      header: await this.header(0),
      hash: hash32Of(result.hash),
      compact_revision: result.compactRevision,
      hash_revision: result.revision,
    };
  }
}
