// Every error class raftkv exposes, in one place. Codes are stable API;
// docs/errors.md lists them. The base classes live in the pure core.
export {
  RaftKVError,
  InvalidArgumentError,
  LogCompactedError,
  LogUnavailableError,
  AssertionFailedError,
} from './raft/errors.ts';
