// raftkv's public API: an explicit export list.
export * from './errors.ts';
export type {
  Entry,
  HardState,
  ConfState,
  SnapshotMetadata,
  Message,
  Ready,
  ReadState,
  ConfChange,
  ConfChangeSingle,
  NodeId,
} from './raft/types.ts';
export { EntryType, MessageType, Role, ConfChangeType, ConfChangeTransition } from './raft/types.ts';
export type { RaftLogReader, InitialState } from './raft/storage.ts';
export { createRandom } from './raft/random.ts';
export type { RandomSource } from './raft/random.ts';

// The embedded store.
export { RaftKV, TxnBuilder, op, toBytes } from './server/raftkv.ts';
export type {
  RaftKVOptions,
  Bytes,
  PutOptions,
  ReadOptions,
  KeySelector,
  RangeOptions,
  DeleteOptions,
  PutResult,
  DeleteResult,
  Member,
  Status,
  WatchOptions,
  LeaseGrant,
  LeaseTimeToLive,
} from './server/raftkv.ts';
export { Watch } from './server/watch.ts';
export { LeaseKeepAlive } from './server/lease.ts';
export type { KeepAliveEvent, KeepAliveOptions } from './server/lease.ts';
export { Session, Mutex, Election } from './server/concurrency.ts';
export type { SessionOptions, LockOptions, LockGrant, ElectionLeader } from './server/concurrency.ts';
export type { WatchResponse, WatchFilter, WatchHubOptions } from './server/watch.ts';
export { createCluster, Cluster } from './server/cluster.ts';
export type { ClusterOptions } from './server/cluster.ts';
export type { TransportPort, StateMachinePort } from './server/ports.ts';
export type { Transport, TransportHandlers } from './server/ports.ts';
export { HttpGateway } from './server/http-gateway.ts';
export type { HttpGatewayOptions, GatewayStore } from './server/http-gateway.ts';
export { GrpcGateway } from './server/grpc-gateway.ts';
export type { GrpcGatewayOptions, GrpcStore, GrpcMemberInfo, GrpcTlsOptions } from './server/grpc-gateway.ts';
export { EtcdJsonApi } from './server/grpc-json.ts';
export type { EtcdJsonApiOptions } from './server/grpc-json.ts';
export type {
  KeyValue,
  RangeResponse,
  TxnResponse,
  OpResponse,
  Event,
  SortOrder,
  SortTarget,
  CompareTarget,
  CompareResult,
  RequestOp,
} from './storage/mvcc/types.ts';
export { MvccStore } from './storage/mvcc/store.ts';
export type { MvccOptions } from './storage/mvcc/store.ts';
export { ClassicLogStorage } from './storage/log/classic.ts';
export { WalLogStorage } from './storage/log/wal.ts';
export type { WalOptions } from './storage/log/wal.ts';
export { MemoryNetwork, MemoryTransport } from './transport/memory.ts';
export type { NetworkFaults, MemoryNetworkOptions } from './transport/memory.ts';
export { TcpTransport } from './transport/tcp.ts';
export type { TcpTransportOptions, TcpTransportStats, TcpTlsOptions, PeerStats } from './transport/tcp.ts';
