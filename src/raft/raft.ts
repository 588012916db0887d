// The consensus state machine (etcd-io/raft's raft.go): roles, elections
// with pre-vote and check-quorum, replication and flow control, commitment,
// snapshots, ReadIndex, leadership transfer and membership. It only reacts to
// step() and tick() and records what the host must do (messages, entries to
// persist, a snapshot to install, read states) for RawNode to hand out.
// Everything here is synchronous and deterministic.

import { applyConfChange as nextConfState, emptyConfState, isJoint, isVoter } from './confchange.ts';
import { assert, InvalidArgumentError, NoLeaderError, ProposalDroppedError } from './errors.ts';
import { RaftLog } from './log.ts';
import { Progress, ProgressState } from './progress.ts';
import { jointCommitted, jointVote, VoteResult } from './quorum.ts';
import type { RandomSource } from './random.ts';
import type { RaftLogReader } from './storage.ts';
import { EntryType, MessageType, NONE, Role } from './types.ts';
import type { ConfChange, ConfState, Entry, Message, NodeId, ReadState, SnapshotMetadata } from './types.ts';

export interface RaftConfig {
  readonly id: NodeId;
  readonly random: RandomSource;
  /** Followers campaign after [T, 2T) ticks without a leader. Default 10. */
  readonly electionTimeoutTicks?: number;
  /** A leader sends heartbeats every this many ticks. Default 1. */
  readonly heartbeatTicks?: number;
  /** Ask for (non-binding) votes before raising the term. Default true. */
  readonly preVote?: boolean;
  /** A leader that hears from no quorum for an election timeout steps down. Default true. */
  readonly checkQuorum?: boolean;
  /** 'safe': ReadIndex confirmed by a heartbeat round; 'lease': by check-quorum's lease. Default 'safe'. */
  readonly readOnlyMode?: 'safe' | 'lease';
  /** Entry bytes per append message (at least one entry is always sent). Default 1 MiB. */
  readonly messageBytesMax?: number;
  /** Unacknowledged appends per follower. Default 256. */
  readonly inflightMessagesMax?: number;
  /** Unacknowledged entry bytes per follower. Default 32 MiB. */
  readonly inflightBytesMax?: number;
  /** Entry bytes appended by a leader and not yet committed. Default 64 MiB. */
  readonly uncommittedBytesMax?: number;
  /** Committed entry bytes handed out per Ready. Default 8 MiB. */
  readonly committedBytesMaxPerReady?: number;
  /** The host's applied index on restart. Default: the snapshot index. */
  readonly appliedIndex?: number;
  /** Refuse proposals on followers instead of forwarding them. Default false. */
  readonly disableProposalForwarding?: boolean;
}

export type ProposeResult = { readonly ok: true } | { readonly ok: false; readonly error: ProposalDroppedError | NoLeaderError | InvalidArgumentError };

const OK: ProposeResult = { ok: true };
const EMPTY = new Uint8Array(0);
/** Context marker of votes caused by a leadership transfer (they bypass the leader lease). */
const TRANSFER_CONTEXT = Uint8Array.of(0x54);

interface PendingRead {
  readonly index: number;
  readonly from: NodeId;
  readonly context: Uint8Array;
  readonly key: string;
  readonly acks: Set<NodeId>;
}

function positive(value: number | undefined, fallback: number, name: string): number {
  const result = value ?? fallback;
  if (!Number.isSafeInteger(result) || result <= 0) throw new InvalidArgumentError(`${name} must be a positive integer`);
  return result;
}

function contextKey(context: Uint8Array): string {
  let key = '';
  for (let i = 0; i < context.length; i++) key += String.fromCharCode(context[i]!);
  return key;
}

export function makeMessage(fields: Partial<Message> & Pick<Message, 'type' | 'to'>): Message {
  return {
    type: fields.type,
    from: fields.from ?? NONE,
    to: fields.to,
    term: fields.term ?? 0,
    logTerm: fields.logTerm ?? 0,
    index: fields.index ?? 0,
    entries: fields.entries ?? [],
    commit: fields.commit ?? 0,
    reject: fields.reject ?? false,
    rejectHint: fields.rejectHint ?? 0,
    snapshot: fields.snapshot ?? null,
    context: fields.context ?? EMPTY,
  };
}

/** Messages that promise nothing about this node's durable state may leave before it is persisted. */
function mayLeaveBeforePersist(type: number): boolean {
  return (
    type === MessageType.App ||
    type === MessageType.Heartbeat ||
    type === MessageType.Snap ||
    type === MessageType.TimeoutNow ||
    type === MessageType.ReadIndexResp ||
    type === MessageType.Prop ||
    type === MessageType.ReadIndex
  );
}

export class Raft {
  readonly id: NodeId;
  term = 0;
  vote: NodeId = NONE;
  leader: NodeId = NONE;
  role: Role = Role.Follower;
  readonly log: RaftLog;
  conf: ConfState = emptyConfState();
  readonly progress = new Map<NodeId, Progress>();
  private votes = new Map<NodeId, boolean>();

  /** Outgoing messages, split by whether they may leave before persisting. */
  messagesBeforePersist: Message[] = [];
  messagesAfterPersist: Message[] = [];
  readStates: ReadState[] = [];
  /** The Prop message this follower's next proposals may join while it is still queued (see forwardProposal). */
  private forwarding: { readonly message: Message; readonly entries: Entry[]; bytes: number } | null = null;

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private readonly electionTimeoutTicks: number;
  private readonly heartbeatTicks: number;
  private readonly random: RandomSource;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  private readonly readOnlyLease: boolean;
  private readonly messageBytesMax: number;
  private readonly inflightMessagesMax: number;
  private readonly inflightBytesMax: number;
  private readonly uncommittedBytesMax: number;
  readonly committedBytesMaxPerReady: number;
  private readonly disableProposalForwarding: boolean;

  private uncommittedBytes = 0;
  /** Index of the last conf change proposed by this leader (none may be proposed until it is applied). */
  pendingConfIndex = 0;
  leadTransferee: NodeId = NONE;
  /** New leader: appended entries wait to be broadcast in one batch at the next Ready. */
  broadcastPending = false;
  private pendingReads: PendingRead[] = [];
  /** ReadIndex requests received before this leader committed an entry of its term. */
  private readsBeforeFirstCommit: Message[] = [];

  constructor(config: RaftConfig, storage: RaftLogReader) {
    if (!Number.isSafeInteger(config.id) || config.id <= 0) throw new InvalidArgumentError('id must be a positive integer');
    if (typeof config.random !== 'function') throw new InvalidArgumentError('random must be a RandomSource');
    this.id = config.id;
    this.random = config.random;
    this.electionTimeoutTicks = positive(config.electionTimeoutTicks, 10, 'electionTimeoutTicks');
    this.heartbeatTicks = positive(config.heartbeatTicks, 1, 'heartbeatTicks');
    if (this.heartbeatTicks >= this.electionTimeoutTicks) throw new InvalidArgumentError('heartbeatTicks must be below electionTimeoutTicks');
    this.preVote = config.preVote ?? true;
    this.checkQuorum = config.checkQuorum ?? true;
    const mode = config.readOnlyMode ?? 'safe';
    if (mode !== 'safe' && mode !== 'lease') throw new InvalidArgumentError(`readOnlyMode must be 'safe' or 'lease'`);
    if (mode === 'lease' && !this.checkQuorum) throw new InvalidArgumentError(`readOnlyMode 'lease' requires checkQuorum`);
    this.readOnlyLease = mode === 'lease';
    this.messageBytesMax = positive(config.messageBytesMax, 1024 * 1024, 'messageBytesMax');
    this.inflightMessagesMax = positive(config.inflightMessagesMax, 256, 'inflightMessagesMax');
    this.inflightBytesMax = positive(config.inflightBytesMax, 32 * 1024 * 1024, 'inflightBytesMax');
    this.uncommittedBytesMax = positive(config.uncommittedBytesMax, 64 * 1024 * 1024, 'uncommittedBytesMax');
    this.committedBytesMaxPerReady = positive(config.committedBytesMaxPerReady, 8 * 1024 * 1024, 'committedBytesMaxPerReady');
    this.disableProposalForwarding = config.disableProposalForwarding ?? false;

    const { hardState, confState } = storage.initialState();
    // The host's state machine is at least at the latest snapshot (its data was installed or taken there).
    this.log = new RaftLog(storage, hardState.commit, Math.max(config.appliedIndex ?? 0, storage.snapshot().index));
    this.setConf(confState);
    this.term = hardState.term;
    this.vote = hardState.vote;
    this.becomeFollower(this.term, NONE);
  }

  // ---- Roles ----

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = NONE;
    }
    this.leader = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.electionTimeoutTicks + this.random(this.electionTimeoutTicks);
    this.votes = new Map();
    this.leadTransferee = NONE;
    this.pendingReads = [];
    this.readsBeforeFirstCommit = [];
    this.uncommittedBytes = 0;
    const last = this.log.lastIndex();
    for (const [id, progress] of this.progress) {
      const fresh = new Progress(last + 1, progress.isLearner, this.inflightMessagesMax, this.inflightBytesMax);
      if (id === this.id) fresh.match = this.stableLastIndex();
      this.progress.set(id, fresh);
    }
  }

  /** Highest index known durable locally (not in the unstable tail). */
  private stableLastIndex(): number {
    return this.log.unstableOffset - 1;
  }

  becomeFollower(term: number, leader: NodeId): void {
    this.reset(term);
    this.leader = leader;
    this.role = Role.Follower;
  }

  private becomePreCandidate(): void {
    assert(this.role !== Role.Leader, 'a leader cannot become pre-candidate');
    // Pre-vote changes neither term nor vote.
    this.votes = new Map();
    this.leader = NONE;
    this.role = Role.PreCandidate;
  }

  private becomeCandidate(): void {
    assert(this.role !== Role.Leader, 'a leader cannot become candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = Role.Candidate;
  }

  private becomeLeader(): void {
    assert(this.role !== Role.Follower, 'a follower cannot become leader directly');
    this.reset(this.term);
    this.leader = this.id;
    this.role = Role.Leader;
    const self = this.progress.get(this.id);
    if (self !== undefined) self.becomeReplicate();
    // Conservatively treat any conf change in the uncommitted tail as pending.
    this.pendingConfIndex = this.log.lastIndex();
    // Figure 8: commit an entry of our own term before anything older counts.
    this.appendEntries([{ term: this.term, index: 0, type: EntryType.Normal, data: EMPTY }]);
  }

  // ---- Ticks ----

  tick(): void {
    if (this.role === Role.Leader) this.tickLeader();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed += 1;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.step(makeMessage({ type: MessageType.Hup, from: this.id, to: this.id }));
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsed += 1;
    this.electionElapsed += 1;
    if (this.electionElapsed >= this.electionTimeoutTicks) {
      this.electionElapsed = 0;
      if (this.checkQuorum && !this.quorumActive()) {
        this.becomeFollower(this.term, NONE);
        return;
      }
      if (this.leadTransferee !== NONE) this.leadTransferee = NONE; // transfer timed out
    }
    if (this.heartbeatElapsed >= this.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.broadcastHeartbeat(this.lastPendingReadContext());
    }
  }

  /** Whether a quorum was heard from since the last check; resets the marks. */
  private quorumActive(): boolean {
    const active = new Map<NodeId, boolean>();
    for (const [id, progress] of this.progress) {
      if (id === this.id || progress.recentActive) active.set(id, true);
      if (id !== this.id) progress.recentActive = false;
    }
    return jointVote(this.conf.voters, this.conf.votersOutgoing, active) === VoteResult.Won;
  }

  /** A voter of the current configuration that is not a learner. */
  promotable(): boolean {
    const progress = this.progress.get(this.id);
    return progress !== undefined && !progress.isLearner && this.log.unstableSnapshot === null;
  }

  // ---- Step ----

  step(m: Message): void {
    if (m.term === 0) {
      // Local messages.
    } else if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const forced = m.context.length === 1 && m.context[0] === TRANSFER_CONTEXT[0];
        const inLease = this.checkQuorum && this.leader !== NONE && this.electionElapsed < this.electionTimeoutTicks;
        if (!forced && inLease) return; // we heard from a leader recently: ignore disruptive candidates
      }
      if (m.type === MessageType.PreVote) {
        // Never change the term on a pre-vote.
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // A granted pre-vote carries the future term; wait for a quorum.
      } else if (m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap) {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, NONE);
      }
    } else if (m.term < this.term) {
      if ((this.checkQuorum || this.preVote) && (m.type === MessageType.Heartbeat || m.type === MessageType.App)) {
        // A stale leader: tell it our term so it steps down.
        this.send(makeMessage({ type: MessageType.AppResp, to: m.from }));
      } else if (m.type === MessageType.PreVote) {
        this.send(makeMessage({ type: MessageType.PreVoteResp, to: m.from, term: this.term, reject: true, ...this.commitHint() }));
      }
      return;
    }

    if ((m.type === MessageType.VoteResp || m.type === MessageType.PreVoteResp) && m.reject) this.learnCommitFromVoter(m);
    switch (m.type) {
      case MessageType.Hup:
        this.hup(m.context.length === 1 && m.context[0] === TRANSFER_CONTEXT[0]);
        return;
      case MessageType.Vote:
      case MessageType.PreVote:
        this.handleVoteRequest(m);
        return;
      default:
        break;
    }
    if (this.role === Role.Leader) this.stepLeader(m);
    else if (this.role === Role.Follower) this.stepFollower(m);
    else this.stepCandidate(m);
  }

  private handleVoteRequest(m: Message): void {
    const canVote =
      this.vote === m.from ||
      (this.vote === NONE && this.leader === NONE) ||
      (m.type === MessageType.PreVote && m.term > this.term);
    const responseType = m.type === MessageType.Vote ? MessageType.VoteResp : MessageType.PreVoteResp;
    if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
      // A pre-vote is answered in the candidate's future term.
      this.send(makeMessage({ type: responseType, to: m.from, term: m.term }));
      if (m.type === MessageType.Vote) {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.send(makeMessage({ type: responseType, to: m.from, term: this.term, reject: true, ...this.commitHint() }));
    }
  }

  /** Our commit index and its term, carried by vote rejections (see learnCommitFromVoter). */
  private commitHint(): { commit: number; logTerm: number } {
    return { commit: this.log.committed, logTerm: this.log.termOrZero(this.log.committed) };
  }

  /**
   * etcd #12359: membership changes take effect when applied, so a voter
   * that does not know a change committed may campaign with the old
   * configuration and need the vote of a node that already left it (and
   * whose log is ahead): no leader could ever be elected. A rejection
   * carries the voter's commit index; if our log matches there, that prefix
   * is committed (log matching), so we commit it, apply the changes and
   * campaign with the configuration in force.
   */
  private learnCommitFromVoter(m: Message): void {
    if (m.commit > this.log.committed && m.commit <= this.log.lastIndex() && this.log.matchTerm(m.commit, m.logTerm)) {
      this.log.commitTo(m.commit);
      // A campaign run with a configuration that committed changes now supersede must not go on (etcd #12133).
      if (this.role !== Role.Leader && this.role !== Role.Follower && this.hasUnappliedConfChange()) this.becomeFollower(this.term, NONE);
    }
  }

  private hup(transfer: boolean): void {
    if (this.role === Role.Leader) return;
    if (!this.promotable()) return;
    if (this.hasUnappliedConfChange()) return; // etcd #12133
    if (this.preVote && !transfer) this.campaign(true, false);
    else this.campaign(false, transfer);
  }

  private hasUnappliedConfChange(): boolean {
    if (this.log.committed <= this.log.applied) return false;
    const lo = Math.max(this.log.applied + 1, this.log.firstIndex());
    let index = lo;
    while (index <= this.log.committed) {
      const entries = this.log.slice(index, this.log.committed + 1, 16 * 1024 * 1024);
      for (const entry of entries) if (entry.type === EntryType.ConfChange) return true;
      index += entries.length;
    }
    return false;
  }

  private campaign(pre: boolean, transfer: boolean): void {
    let term: number;
    let type: MessageType;
    if (pre) {
      this.becomePreCandidate();
      term = this.term + 1;
      type = MessageType.PreVote;
    } else {
      this.becomeCandidate();
      term = this.term;
      type = MessageType.Vote;
    }
    // Our own vote counts at once: the vote is persisted before any request leaves.
    this.votes.set(this.id, true);
    if (this.tallyVotes() === VoteResult.Won) {
      if (pre) this.campaign(false, transfer);
      else this.becomeLeader();
      return;
    }
    const lastIndex = this.log.lastIndex();
    const lastTerm = this.log.lastTerm();
    for (const id of this.voterIds()) {
      if (id === this.id) continue;
      this.send(makeMessage({ type, to: id, term, index: lastIndex, logTerm: lastTerm, context: transfer ? TRANSFER_CONTEXT : EMPTY }));
    }
  }

  private tallyVotes(): VoteResult {
    return jointVote(this.conf.voters, this.conf.votersOutgoing, this.votes);
  }

  private voterIds(): NodeId[] {
    if (this.conf.votersOutgoing.length === 0) return [...this.conf.voters];
    return [...new Set([...this.conf.voters, ...this.conf.votersOutgoing])];
  }

  private stepCandidate(m: Message): void {
    const responseType = this.role === Role.PreCandidate ? MessageType.PreVoteResp : MessageType.VoteResp;
    switch (m.type) {
      case MessageType.Prop:
        return; // no leader: dropped (a forwarded proposal is the sender's to time out)
      case MessageType.App:
        this.becomeFollower(m.term, m.from);
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      default:
        break;
    }
    if (m.type !== responseType) return;
    if (!this.isCurrentVoter(m.from)) return;
    this.votes.set(m.from, !m.reject);
    const result = this.tallyVotes();
    if (result === VoteResult.Won) {
      if (this.role === Role.PreCandidate) this.campaign(false, false);
      else {
        this.becomeLeader();
        this.broadcastAppend();
      }
    } else if (result === VoteResult.Lost) {
      this.becomeFollower(this.term, NONE);
    }
  }

  private isCurrentVoter(id: NodeId): boolean {
    return isVoter(this.conf, id);
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.Prop:
        if (this.leader === NONE || this.disableProposalForwarding) return;
        this.send(makeMessage({ ...m, to: this.leader, term: 0 }));
        return;
      case MessageType.App:
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleSnapshot(m);
        return;
      case MessageType.TransferLeader:
        if (this.leader !== NONE) this.send(makeMessage({ ...m, to: this.leader, term: 0 }));
        return;
      case MessageType.TimeoutNow:
        // The leader asks us to campaign at once, bypassing pre-vote and the lease.
        this.hup(true);
        return;
      case MessageType.ReadIndex:
        if (this.leader === NONE) return;
        this.send(makeMessage({ ...m, to: this.leader, term: 0 }));
        return;
      case MessageType.ReadIndexResp:
        this.readStates.push({ index: m.index, context: m.context });
        return;
      default:
        return;
    }
  }

  // ---- Follower handlers ----

  private handleAppend(m: Message): void {
    if (m.index < this.log.committed) {
      this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: this.log.committed }));
      return;
    }
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew >= 0) {
      this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: lastNew }));
      return;
    }
    // Reject with a hint: the last index whose term is <= the leader's term at m.index.
    const hint = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: m.index, reject: true, rejectHint: hint.index, logTerm: hint.term }));
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
    this.send(makeMessage({ type: MessageType.HeartbeatResp, to: m.from, context: m.context }));
  }

  private handleSnapshot(m: Message): void {
    const snapshot = m.snapshot;
    if (snapshot === null) return;
    if (this.restore(snapshot)) {
      this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: this.log.lastIndex() }));
    } else {
      this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: this.log.committed }));
    }
  }

  /** Installs a snapshot unless the log already covers it (Figure 13 rule 7). */
  private restore(snapshot: SnapshotMetadata): boolean {
    if (snapshot.index <= this.log.committed) return false;
    if (this.log.matchTerm(snapshot.index, snapshot.term)) {
      // Our log already has the snapshot's last entry: keep the log, just commit (hashicorp #697).
      this.log.commitTo(snapshot.index);
      return false;
    }
    this.log.restore(snapshot);
    this.setConf(snapshot.confState);
    return true;
  }

  // ---- Leader ----

  private stepLeader(m: Message): void {
    switch (m.type) {
      case MessageType.Prop:
        this.proposeForwarded(m);
        return;
      case MessageType.ReadIndex:
        this.handleReadIndexRequest(m);
        return;
      case MessageType.TransferLeader:
        this.handleTransferLeader(m.from);
        return;
      default:
        break;
    }
    const progress = this.progress.get(m.from);
    if (progress === undefined) return;
    switch (m.type) {
      case MessageType.AppResp:
        progress.recentActive = true;
        this.handleAppendResponse(m, progress);
        return;
      case MessageType.HeartbeatResp:
        progress.recentActive = true;
        progress.probeSent = false;
        // A full window whose appends were lost (the peer restarted) would never drain: make room for one probe.
        if (progress.state === ProgressState.Replicate && progress.inflights.full()) progress.inflights.freeFirstOne();
        if (progress.match < this.log.lastIndex()) this.sendAppend(m.from, progress, true);
        if (m.context.length > 0) this.acknowledgeRead(m.context, m.from);
        return;
      case MessageType.SnapStatus:
        if (progress.state !== ProgressState.Snapshot) return;
        if (m.reject) progress.pendingSnapshot = 0;
        progress.becomeProbe();
        // Wait for a heartbeat response before probing again.
        progress.probeSent = true;
        return;
      case MessageType.Unreachable:
        if (progress.state === ProgressState.Replicate) progress.becomeProbe();
        return;
      default:
        return;
    }
  }

  private handleAppendResponse(m: Message, progress: Progress): void {
    if (m.reject) {
      let hint = m.rejectHint;
      if (m.logTerm > 0) hint = this.log.findConflictByTerm(m.rejectHint, m.logTerm).index;
      if (progress.maybeDecreaseTo(m.index, hint)) {
        if (progress.state === ProgressState.Replicate) progress.becomeProbe();
        this.sendAppend(m.from, progress, true);
      }
      return;
    }
    const wasPaused = progress.isPaused();
    if (!progress.maybeUpdate(m.index)) return;
    if (progress.state === ProgressState.Probe) {
      progress.becomeReplicate();
    } else if (progress.state === ProgressState.Snapshot && progress.match >= progress.pendingSnapshot) {
      progress.becomeProbe();
      progress.becomeReplicate();
    } else if (progress.state === ProgressState.Replicate) {
      progress.inflights.freeLE(m.index);
    }
    if (this.maybeCommit()) {
      this.broadcastAppend();
    } else if (wasPaused) {
      this.sendAppend(m.from, progress, true);
    }
    while (this.sendAppend(m.from, progress, false)) {
      // Pipeline as much as the in-flight window allows.
    }
    if (m.from === this.leadTransferee && progress.match === this.log.lastIndex()) {
      this.send(makeMessage({ type: MessageType.TimeoutNow, to: m.from }));
    }
  }

  /** Leader: appends entries of its term at the end of its log. */
  appendEntries(entries: { term: number; index: number; type: EntryType; data: Uint8Array }[]): void {
    let index = this.log.lastIndex();
    const stamped: Entry[] = entries.map((entry) => ({ term: this.term, index: ++index, type: entry.type, data: entry.data }));
    this.log.append(stamped);
    for (const entry of stamped) this.uncommittedBytes += entry.data.length;
    this.broadcastPending = true;
    // A single-voter group commits as soon as its own log is durable (on advance).
  }

  propose(data: Uint8Array, type: EntryType = EntryType.Normal): ProposeResult {
    if (this.role !== Role.Leader) {
      if (this.leader === NONE) return { ok: false, error: new NoLeaderError('no leader is known; the proposal was not sent') };
      if (this.disableProposalForwarding) return { ok: false, error: new ProposalDroppedError('not the leader and forwarding is disabled') };
      if (type === EntryType.ConfChange) return { ok: false, error: new ProposalDroppedError('membership changes must be proposed on the leader') };
      this.forwardProposal({ term: 0, index: 0, type, data });
      return OK;
    }
    const refused = this.refuseProposal(data.length, type);
    if (refused !== null) return { ok: false, error: refused };
    if (type === EntryType.ConfChange) this.pendingConfIndex = this.log.lastIndex() + 1;
    this.appendEntries([{ term: this.term, index: 0, type, data }]);
    return OK;
  }

  /**
   * Sends a proposal to the leader. Proposals made before the host takes the
   * queued messages join one Prop message, up to messageBytesMax of data: a
   * message per proposal cost the leader a decode and a step each.
   */
  private forwardProposal(entry: Entry): void {
    const queued = this.messagesBeforePersist;
    const open = this.forwarding;
    if (
      open !== null &&
      queued[queued.length - 1] === open.message &&
      open.message.to === this.leader &&
      open.bytes + entry.data.length <= this.messageBytesMax
    ) {
      open.entries.push(entry);
      open.bytes += entry.data.length;
      return;
    }
    const entries = [entry];
    this.send(makeMessage({ type: MessageType.Prop, to: this.leader, from: this.id, entries }));
    this.forwarding = { message: this.messagesBeforePersist[this.messagesBeforePersist.length - 1] as Message, entries, bytes: entry.data.length };
  }

  private refuseProposal(bytes: number, type: EntryType): ProposalDroppedError | null {
    if (this.leadTransferee !== NONE) return new ProposalDroppedError(`a leadership transfer to ${this.leadTransferee} is in progress`);
    if (!this.progress.has(this.id)) return new ProposalDroppedError('this leader was removed from the configuration');
    if (this.uncommittedBytes > 0 && this.uncommittedBytes + bytes > this.uncommittedBytesMax) {
      return new ProposalDroppedError(`too many uncommitted bytes at the leader (${this.uncommittedBytes})`);
    }
    if (type === EntryType.ConfChange && this.pendingConfIndex > this.log.applied) {
      return new ProposalDroppedError('another membership change is not yet applied', 'pending-conf-change');
    }
    return null;
  }

  private proposeForwarded(m: Message): void {
    for (const entry of m.entries) {
      if (this.refuseProposal(entry.data.length, entry.type) !== null) continue; // the proposer times out
      if (entry.type === EntryType.ConfChange) continue; // only accepted locally (validated there)
      this.appendEntries([{ term: this.term, index: 0, type: entry.type, data: entry.data }]);
    }
  }

  /** Sends the next append to one follower. Returns whether anything was sent. */
  sendAppend(to: NodeId, progress: Progress, sendIfEmpty: boolean): boolean {
    if (to === this.id || progress.isPaused()) return false;
    const previousIndex = progress.next - 1;
    let previousTerm: number;
    let entries: Entry[];
    try {
      previousTerm = this.log.term(previousIndex);
      entries = progress.next <= this.log.lastIndex() ? this.log.slice(progress.next, this.log.lastIndex() + 1, this.messageBytesMax) : [];
    } catch {
      return this.sendSnapshot(to, progress);
    }
    if (entries.length === 0 && !sendIfEmpty) return false;
    let bytes = 0;
    for (const entry of entries) bytes += entry.data.length;
    this.send(makeMessage({ type: MessageType.App, to, index: previousIndex, logTerm: previousTerm, entries, commit: this.log.committed }));
    progress.sentEntries(entries.length, bytes, previousIndex + entries.length);
    return true;
  }

  private sendSnapshot(to: NodeId, progress: Progress): boolean {
    if (!progress.recentActive) return false; // don't send a snapshot to a peer that may be down
    const snapshot = this.log.snapshot();
    if (snapshot.index === 0) return false;
    progress.becomeSnapshot(snapshot.index);
    this.send(makeMessage({ type: MessageType.Snap, to, snapshot }));
    return true;
  }

  broadcastAppend(): void {
    this.broadcastPending = false;
    for (const [id, progress] of this.progress) {
      if (id !== this.id) this.sendAppend(id, progress, true);
    }
  }

  /** Sends appends only where there are entries to send (new proposals). */
  broadcastNewEntries(): void {
    this.broadcastPending = false;
    for (const [id, progress] of this.progress) {
      if (id === this.id) continue;
      while (this.sendAppend(id, progress, false)) {
        // pipeline
      }
    }
  }

  private broadcastHeartbeat(context: Uint8Array): void {
    for (const [id, progress] of this.progress) {
      if (id === this.id) continue;
      const commit = Math.min(progress.match, this.log.committed);
      this.send(makeMessage({ type: MessageType.Heartbeat, to: id, commit, context }));
    }
  }

  /** Commits what a quorum has durably acknowledged. */
  maybeCommit(): boolean {
    const acked = (id: NodeId): number => this.progress.get(id)?.match ?? 0;
    const index = jointCommitted(this.conf.voters, this.conf.votersOutgoing, acked);
    const committedBefore = this.log.committed;
    if (!this.log.maybeCommit(index, this.term)) return false;
    this.onCommitAdvanced(committedBefore);
    return true;
  }

  private onCommitAdvanced(committedBefore: number): void {
    // Release uncommitted bytes for the newly committed entries.
    if (this.uncommittedBytes > 0) {
      let released = 0;
      try {
        for (const entry of this.log.slice(committedBefore + 1, this.log.committed + 1, Number.MAX_SAFE_INTEGER)) released += entry.data.length;
      } catch {
        released = this.uncommittedBytes;
      }
      this.uncommittedBytes = Math.max(0, this.uncommittedBytes - released);
    }
    if (this.readsBeforeFirstCommit.length > 0 && this.committedInCurrentTerm()) this.releaseReadsBeforeFirstCommit();
  }

  committedInCurrentTerm(): boolean {
    return this.log.termOrZero(this.log.committed) === this.term;
  }

  /** The host made entries through (index, term) durable. Leaders count their own copy now. */
  acknowledgePersisted(index: number, term: number): void {
    this.log.stableTo(index, term);
    if (this.role !== Role.Leader) return;
    const self = this.progress.get(this.id);
    if (self === undefined) return;
    // Everything below the unstable tail is durable and part of our current log.
    const stable = this.stableLastIndex();
    if (stable > self.match) {
      self.maybeUpdate(stable);
      if (this.maybeCommit()) this.broadcastAppend();
    }
  }

  // ---- Reads ----

  readIndex(context: Uint8Array): ProposeResult {
    if (this.role !== Role.Leader) {
      if (this.leader === NONE) return { ok: false, error: new NoLeaderError('no leader is known; the read was not sent') };
      this.send(makeMessage({ type: MessageType.ReadIndex, to: this.leader, from: this.id, context }));
      return OK;
    }
    this.handleReadIndexRequest(makeMessage({ type: MessageType.ReadIndex, from: this.id, to: this.id, context }));
    return OK;
  }

  private handleReadIndexRequest(m: Message): void {
    if (!this.committedInCurrentTerm()) {
      // etcd #7331: the commit index may be stale until we commit an entry of our term.
      if (this.readsBeforeFirstCommit.length < 4096) this.readsBeforeFirstCommit.push(m);
      return;
    }
    const index = this.log.committed;
    if (this.isSingleVoter() || this.readOnlyLease) {
      this.answerRead(m.from, m.context, index);
      return;
    }
    const acks = new Set<NodeId>([this.id]);
    this.pendingReads.push({ index, from: m.from, context: m.context, key: contextKey(m.context), acks });
    this.broadcastHeartbeat(m.context);
  }

  private releaseReadsBeforeFirstCommit(): void {
    const waiting = this.readsBeforeFirstCommit;
    this.readsBeforeFirstCommit = [];
    for (const m of waiting) this.handleReadIndexRequest(m);
  }

  private isSingleVoter(): boolean {
    return this.conf.votersOutgoing.length === 0 && this.conf.voters.length === 1 && this.conf.voters[0] === this.id;
  }

  private lastPendingReadContext(): Uint8Array {
    const last = this.pendingReads[this.pendingReads.length - 1];
    return last === undefined ? EMPTY : last.context;
  }

  private acknowledgeRead(context: Uint8Array, from: NodeId): void {
    const key = contextKey(context);
    const at = this.pendingReads.findIndex((read) => read.key === key);
    if (at < 0) return;
    const read = this.pendingReads[at]!;
    read.acks.add(from);
    const votes = new Map<NodeId, boolean>();
    for (const id of read.acks) votes.set(id, true);
    if (jointVote(this.conf.voters, this.conf.votersOutgoing, votes) !== VoteResult.Won) return;
    // This read and every earlier one are confirmed (a quorum acknowledged our leadership after they arrived).
    const released = this.pendingReads.splice(0, at + 1);
    for (const done of released) this.answerRead(done.from, done.context, done.index);
  }

  private answerRead(from: NodeId, context: Uint8Array, index: number): void {
    if (from === this.id || from === NONE) this.readStates.push({ index, context });
    else this.send(makeMessage({ type: MessageType.ReadIndexResp, to: from, index, context }));
  }

  // ---- Leadership transfer ----

  transferLeadership(to: NodeId): void {
    if (this.role === Role.Leader) this.handleTransferLeader(to);
    else if (this.leader !== NONE) this.send(makeMessage({ type: MessageType.TransferLeader, to: this.leader, from: to }));
  }

  private handleTransferLeader(transferee: NodeId): void {
    const progress = this.progress.get(transferee);
    if (progress === undefined || progress.isLearner || transferee === this.id) return;
    if (this.leadTransferee === transferee) return;
    this.leadTransferee = transferee;
    this.electionElapsed = 0; // the transfer must finish within an election timeout
    if (progress.match === this.log.lastIndex()) {
      this.send(makeMessage({ type: MessageType.TimeoutNow, to: transferee }));
    } else {
      this.sendAppend(transferee, progress, true);
    }
  }

  // ---- Membership ----

  applyConfChange(change: ConfChange): ConfState {
    const next = nextConfState(this.conf, change);
    this.setConf(next);
    if (this.role === Role.Leader) {
      if (this.progress.get(this.id)?.isLearner !== false) {
        // A removed (or demoted to learner) leader steps down (etcd #11038).
        this.becomeFollower(this.term, NONE);
      } else {
        if (this.maybeCommit()) this.broadcastAppend();
        else this.broadcastNewEntries();
      }
    } else if (this.role !== Role.Follower && !this.promotable()) {
      // A (pre-)candidate removed or demoted mid-campaign must not win with the new configuration's votes.
      this.becomeFollower(this.term, NONE);
    }
    return next;
  }

  setConf(conf: ConfState): void {
    this.conf = conf;
    const members = new Map<NodeId, boolean>();
    for (const id of conf.voters) members.set(id, false);
    for (const id of conf.votersOutgoing) members.set(id, false);
    for (const id of conf.learners) if (!members.has(id)) members.set(id, true);
    for (const id of conf.learnersNext) if (!members.has(id)) members.set(id, true);
    for (const id of [...this.progress.keys()]) if (!members.has(id)) this.progress.delete(id);
    const last = this.log.lastIndex();
    for (const [id, isLearner] of members) {
      const existing = this.progress.get(id);
      if (existing !== undefined) {
        existing.isLearner = isLearner;
        continue;
      }
      const progress = new Progress(last + 1, isLearner, this.inflightMessagesMax, this.inflightBytesMax);
      if (id === this.id) progress.match = this.stableLastIndex();
      progress.recentActive = true;
      this.progress.set(id, progress);
    }
    if (this.leadTransferee !== NONE && !this.progress.has(this.leadTransferee)) this.leadTransferee = NONE;
  }

  isJoint(): boolean {
    return isJoint(this.conf);
  }

  // ---- Output ----

  send(m: Message): void {
    const message: Message =
      m.type === MessageType.Prop || m.type === MessageType.ReadIndex || m.type === MessageType.TransferLeader
        ? { ...m, from: m.from === NONE ? this.id : m.from, term: 0 }
        : {
            ...m,
            from: this.id,
            term:
              m.type === MessageType.PreVote || m.type === MessageType.Vote || m.type === MessageType.VoteResp || m.type === MessageType.PreVoteResp
                ? m.term
                : this.term,
          };
    assert(message.to !== this.id, () => `a message of type ${message.type} addressed to self`);
    if (mayLeaveBeforePersist(message.type)) this.messagesBeforePersist.push(message);
    else this.messagesAfterPersist.push(message);
  }
}
