// Every error class raftkv exposes, in one place. Codes are stable API;
// docs/api.md lists them. The base classes live in the pure core.
export {
  RaftKVError,
  InvalidArgumentError,
  LogCompactedError,
  LogUnavailableError,
  AssertionFailedError,
  NoLeaderError,
  ProposalDroppedError,
  OutcomeUnknownError,
  TimeoutError,
  NodeStoppedError,
  RequestTooLargeError,
} from './raft/errors.ts';
export { StorageFailedError, LogCorruptError } from './storage/log/errors.ts';
export {
  CompactedError,
  FutureRevisionError,
  EmptyKeyError,
  KeyNotFoundError,
  DuplicateKeyError,
  TooManyOperationsError,
  NoSpaceError,
  LeaseNotFoundError,
  LeaseExistsError,
  TooManyLeasesError,
  LeaseRenewedError,
} from './storage/mvcc/errors.ts';
export { LeaseLostError } from './server/lease.ts';
export { SessionClosedError, LockedError, NotElectionLeaderError } from './server/concurrency.ts';
export { MalformedFrameError } from './transport/codec.ts';
export { UnreachableError } from './transport/memory.ts';
export { ListenFailedError } from './transport/tcp.ts';
