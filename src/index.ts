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
