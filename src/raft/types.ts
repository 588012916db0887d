// The plain data records the Raft core consumes and produces: log entries,
// persistent state, configuration, messages, and the Ready batch handed to the
// host. All records are readonly; the core never mutates a record it has
// handed out, and the host must not mutate one it has handed in.

/** A member id: a positive safe integer, unique within the cluster. 0 means "none". */
export type NodeId = number;
export const NONE: NodeId = 0;

export const EntryType = {
  /** Application data (may be empty: a new leader's no-op). */
  Normal: 0,
  /** A membership change; `data` is encodeConfChange(ConfChange). */
  ConfChange: 1,
} as const;
export type EntryType = (typeof EntryType)[keyof typeof EntryType];

export interface Entry {
  readonly term: number;
  readonly index: number;
  readonly type: EntryType;
  readonly data: Uint8Array;
}

/** What must be durable before any message that depends on it leaves. */
export interface HardState {
  readonly term: number;
  /** Who this node voted for in `term` (NONE if nobody). */
  readonly vote: NodeId;
  /** Highest index known committed; persisted so restarts re-apply less. */
  readonly commit: number;
}

/**
 * Membership. With a joint configuration, `votersOutgoing` is non-empty and a
 * decision needs a majority of `voters` AND a majority of `votersOutgoing`.
 */
export interface ConfState {
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
  /** Voters of the outgoing configuration while joint; empty otherwise. */
  readonly votersOutgoing: readonly NodeId[];
  /** Learners that become learners once the joint configuration is left (voters demoted). */
  readonly learnersNext: readonly NodeId[];
  /** Leave the joint configuration automatically once it commits. */
  readonly autoLeave: boolean;
}

/** The core only names a snapshot; its data belongs to the host. */
export interface SnapshotMetadata {
  readonly index: number;
  readonly term: number;
  readonly confState: ConfState;
}

export const ConfChangeType = {
  AddVoter: 0,
  RemoveNode: 1,
  AddLearner: 2,
} as const;
export type ConfChangeType = (typeof ConfChangeType)[keyof typeof ConfChangeType];

export const ConfChangeTransition = {
  /** Simple change if possible (one voter change), else joint with auto leave. */
  Auto: 0,
  /** Joint consensus, left automatically once the joint config commits. */
  JointImplicit: 1,
  /** Joint consensus, left only by an explicit empty ConfChange. */
  JointExplicit: 2,
} as const;
export type ConfChangeTransition = (typeof ConfChangeTransition)[keyof typeof ConfChangeTransition];

export interface ConfChangeSingle {
  readonly type: ConfChangeType;
  readonly nodeId: NodeId;
}

/** etcd's ConfChangeV2. No changes + transition = leave the joint config. */
export interface ConfChange {
  readonly transition: ConfChangeTransition;
  readonly changes: readonly ConfChangeSingle[];
  /** Opaque to the core (the host puts e.g. the new member's address here). */
  readonly context: Uint8Array;
}

export const MessageType = {
  /** Local only: start an election (tick, or host request). */
  Hup: 0,
  /** Client proposal, forwarded follower → leader. */
  Prop: 1,
  App: 2,
  AppResp: 3,
  Vote: 4,
  VoteResp: 5,
  PreVote: 6,
  PreVoteResp: 7,
  Snap: 8,
  Heartbeat: 9,
  HeartbeatResp: 10,
  /** A follower's ReadIndex request forwarded to the leader. */
  ReadIndex: 11,
  ReadIndexResp: 12,
  /** Leader → transferee: campaign now, ignoring the election timer. */
  TimeoutNow: 13,
  /** Host → leader (or forwarded): transfer leadership to `from`... see raft.ts. */
  TransferLeader: 14,
  /** Local only: the host reports a snapshot send to `to` failed or finished. */
  SnapStatus: 15,
  /** Local only: the host reports `to` unreachable. */
  Unreachable: 16,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

/**
 * One flat message shape for every kind (as etcd's raftpb.Message): fields a
 * kind does not use are 0 / empty. Flat records encode compactly and cheaply.
 */
export interface Message {
  readonly type: MessageType;
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: number;
  /** App: term of the entry at `index` (the entry preceding `entries`). */
  readonly logTerm: number;
  readonly index: number;
  readonly entries: readonly Entry[];
  readonly commit: number;
  readonly reject: boolean;
  /** AppResp reject: the follower's hint of where to probe next. */
  readonly rejectHint: number;
  /** Snap: what to install (the host attaches the data). */
  readonly snapshot: SnapshotMetadata | null;
  /** ReadIndex / heartbeat context; empty when unused. */
  readonly context: Uint8Array;
}

/** A linearizable read is safe once the host has applied through `index`. */
export interface ReadState {
  readonly index: number;
  readonly context: Uint8Array;
}

export const Role = {
  Follower: 0,
  PreCandidate: 1,
  Candidate: 2,
  Leader: 3,
} as const;
export type Role = (typeof Role)[keyof typeof Role];

export interface SoftState {
  readonly leader: NodeId;
  readonly role: Role;
}

/**
 * What the host must do, returned by RawNode.ready(). Handle it in this order:
 *  1. Send `messagesBeforePersist` at any time (they depend on nothing
 *     unpersisted: a leader's appends, heartbeats and snapshots — Raft thesis
 *     §10.2.1 lets a leader write its log in parallel with replicating it).
 *     Those produced while this Ready's write is in flight can be taken
 *     early with RawNode.takeMessagesBeforePersist().
 *  2. If `snapshot` is set, first make its data durable in the state machine
 *     (a crash must never leave a log that starts at a snapshot whose data
 *     the state machine lacks). Then persist `snapshot` (if any), `entries`
 *     and `hardState` (if any) in ONE atomic write; when `mustSync` is true it
 *     must be synced (fsync) before step 3. Entries may overwrite a
 *     conflicting suffix of the stored log: everything at index >=
 *     entries[0].index is replaced.
 *  3. Only then send `messages` (votes, append responses: they promise that
 *     the state above is durable).
 *  4. Apply `committedEntries` in order to the state machine; serve
 *     `readStates` once applied through their index.
 *  5. Call advance(). No second ready() before that; step/tick/propose may be
 *     called in between (e.g. while the write of step 2 is in flight).
 * While the write of step 2 is in flight, RawNode.takeCommittedEntries()
 * hands out entries committed meanwhile that are already durable locally
 * (apply them after this Ready's committedEntries), and
 * RawNode.takeReadStates() the read states confirmed meanwhile.
 */
export interface Ready {
  /** Present only if it changed since the previous Ready. */
  readonly softState: SoftState | null;
  /** Present only if it changed since the previous Ready. */
  readonly hardState: HardState | null;
  readonly entries: readonly Entry[];
  readonly snapshot: SnapshotMetadata | null;
  readonly committedEntries: readonly Entry[];
  readonly messagesBeforePersist: readonly Message[];
  readonly messages: readonly Message[];
  readonly readStates: readonly ReadState[];
  readonly mustSync: boolean;
}
