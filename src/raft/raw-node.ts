// The synchronous, single-threaded seam between the consensus state machine
// and its host (etcd-io/raft's rawnode.go): inputs (tick, step, propose, …)
// and the Ready / advance cycle that hands out what to persist, send and
// apply. The contract of a Ready is documented on the Ready type
// (src/raft/types.ts) and in docs/raft.md.

import { applyConfChange as nextConfState, encodeConfChange } from './confchange.ts';
import { assert, InvalidArgumentError } from './errors.ts';
import { makeMessage, Raft } from './raft.ts';
import type { ProposeResult, RaftConfig } from './raft.ts';
import type { RaftLogReader } from './storage.ts';
import { ConfChangeTransition, EntryType, MessageType, Role } from './types.ts';
import type { ConfChange, ConfState, Entry, HardState, Message, NodeId, Ready, ReadState, SoftState } from './types.ts';
import { ProgressState } from './progress.ts';

export type { ProposeResult, RaftConfig } from './raft.ts';
export { decodeConfChange, encodeConfChange } from './confchange.ts';

export interface PeerStatus {
  readonly match: number;
  readonly next: number;
  readonly state: 'probe' | 'replicate' | 'snapshot';
  readonly isLearner: boolean;
  readonly recentActive: boolean;
}

export interface RaftStatus {
  readonly id: NodeId;
  readonly term: number;
  readonly vote: NodeId;
  readonly commit: number;
  readonly applied: number;
  readonly leader: NodeId;
  readonly role: Role;
  readonly firstIndex: number;
  readonly lastIndex: number;
  readonly confState: ConfState;
  readonly leadTransferee: NodeId;
  /** Leader only: replication state per member. */
  readonly progress: ReadonlyMap<NodeId, PeerStatus>;
}

interface Outstanding {
  readonly lastEntry: { readonly index: number; readonly term: number } | null;
  readonly snapshotIndex: number;
  /** Committed entries handed to the host through this index (by ready() or, later, takeCommittedEntries()). */
  appliedThrough: number;
}

const stateNames = ['probe', 'replicate', 'snapshot'] as const;

export class RawNode {
  private readonly raft: Raft;
  private previousSoft: SoftState;
  private previousHard: HardState;
  private outstanding: Outstanding | null = null;

  constructor(config: RaftConfig, storage: RaftLogReader) {
    this.raft = new Raft(config, storage);
    this.previousSoft = { leader: this.raft.leader, role: this.raft.role };
    this.previousHard = storage.initialState().hardState;
  }

  tick(): void {
    this.raft.tick();
  }

  /** A message from a peer. Local-only kinds and messages from nobody are ignored. */
  step(message: Message): void {
    const type = message.type;
    if (type === MessageType.Hup || type === MessageType.SnapStatus || type === MessageType.Unreachable) return;
    if (!Number.isSafeInteger(message.from) || message.from <= 0 || message.from === this.raft.id) return;
    // While the host applies committed entries of the outstanding Ready, a snapshot must not replace
    // the configuration under it (those entries may hold membership changes the snapshot already
    // covers: applying them again would fail or diverge). Dropped like a lost message; the leader resends.
    if (type === MessageType.Snap && this.outstanding !== null && this.outstanding.appliedThrough > this.raft.log.applied) return;
    this.raft.step(message);
  }

  /** Starts an election now (if this node may campaign). */
  campaign(): void {
    this.raft.step(makeMessage({ type: MessageType.Hup, from: this.raft.id, to: this.raft.id }));
  }

  propose(data: Uint8Array): ProposeResult {
    if (!(data instanceof Uint8Array)) return { ok: false, error: new InvalidArgumentError('proposal data must be a Uint8Array') };
    return this.raft.propose(data);
  }

  /** Proposes a membership change; an invalid or premature change is an error, never a no-op. */
  proposeConfChange(change: ConfChange): ProposeResult {
    try {
      nextConfState(this.raft.conf, change);
    } catch (error) {
      if (error instanceof InvalidArgumentError) return { ok: false, error };
      throw error;
    }
    return this.raft.propose(encodeConfChange(change), EntryType.ConfChange);
  }

  /** The host applies a committed ConfChange entry. Throws InvalidArgumentError if it cannot apply. */
  applyConfChange(change: ConfChange): ConfState {
    return this.raft.applyConfChange(change);
  }

  readIndex(context: Uint8Array): ProposeResult {
    return this.raft.readIndex(context);
  }

  transferLeadership(to: NodeId): void {
    this.raft.transferLeadership(to);
  }

  reportUnreachable(id: NodeId): void {
    this.raft.step(makeMessage({ type: MessageType.Unreachable, from: id, to: this.raft.id }));
  }

  reportSnapshot(id: NodeId, succeeded: boolean): void {
    this.raft.step(makeMessage({ type: MessageType.SnapStatus, from: id, to: this.raft.id, reject: !succeeded }));
  }

  /**
   * The messages that may leave before anything is persisted (appends,
   * heartbeats, forwarded proposals, …; see Ready), taken now instead of in
   * the next Ready, the leader's pending append of new entries included. A
   * host whose Ready is still being persisted sends them at once rather than
   * after its write (as etcd-raft's asynchronous storage writes allow).
   */
  takeMessagesBeforePersist(): Message[] {
    const raft = this.raft;
    if (raft.broadcastPending && raft.role === Role.Leader) raft.broadcastNewEntries();
    const messages = raft.messagesBeforePersist;
    raft.messagesBeforePersist = [];
    return messages;
  }

  /**
   * Committed entries the host may apply while the outstanding Ready's write
   * is in flight: those committed since that Ready was handed out (an
   * acknowledgement from a follower, say) that are already durable in the
   * local log, i.e. not among the entries being written. Handed out once, in
   * order after the Ready's own committedEntries, and counted as applied at
   * advance(); empty without an outstanding Ready or while a snapshot is
   * being installed. A commit then waits for no unrelated fsync, as with
   * etcd-raft's asynchronous storage writes.
   */
  takeCommittedEntries(): Entry[] {
    const outstanding = this.outstanding;
    if (outstanding === null || outstanding.snapshotIndex > 0) return [];
    const log = this.raft.log;
    if (log.unstableSnapshot !== null) return [];
    // Below unstableOffset the log is durable (and committed entries are never replaced).
    const durableCommitted = Math.min(log.committed, log.unstableOffset - 1);
    const lo = Math.max(outstanding.appliedThrough + 1, log.firstIndex());
    if (lo > durableCommitted) return [];
    const entries = log.slice(lo, durableCommitted + 1, this.raft.committedBytesMaxPerReady);
    if (entries.length > 0) outstanding.appliedThrough = entries[entries.length - 1]!.index;
    return entries;
  }

  /**
   * Read states confirmed since the last Ready, taken now rather than in the
   * next one (they depend on nothing the host persists).
   */
  takeReadStates(): ReadState[] {
    const states = this.raft.readStates;
    if (states.length === 0) return [];
    this.raft.readStates = [];
    return states;
  }

  hasReady(): boolean {
    const raft = this.raft;
    const log = raft.log;
    if (this.outstanding !== null) return false;
    if (raft.broadcastPending && raft.role === Role.Leader) return true;
    if (raft.messagesBeforePersist.length > 0 || raft.messagesAfterPersist.length > 0) return true;
    if (log.hasEntriesToPersist()) return true;
    if (log.unstableSnapshot !== null && !log.snapshotHanded) return true;
    if (log.hasCommittedToApply()) return true;
    if (raft.readStates.length > 0) return true;
    if (raft.leader !== this.previousSoft.leader || raft.role !== this.previousSoft.role) return true;
    const hard = this.previousHard;
    return raft.term !== hard.term || raft.vote !== hard.vote || log.committed !== hard.commit;
  }

  ready(): Ready {
    assert(this.outstanding === null, 'ready() called again before advance()');
    const raft = this.raft;
    const log = raft.log;
    if (raft.broadcastPending && raft.role === Role.Leader) raft.broadcastNewEntries();

    let snapshot = null;
    if (log.unstableSnapshot !== null && !log.snapshotHanded) {
      snapshot = log.unstableSnapshot;
      log.snapshotHanded = true;
    }
    const entries: Entry[] = log.entriesToPersist();
    const lastEntry = entries.length > 0 ? entries[entries.length - 1]! : null;
    if (lastEntry !== null) log.handedThrough = lastEntry.index;
    const committedEntries = snapshot === null ? log.committedToApply(raft.committedBytesMaxPerReady) : [];
    const appliedThrough =
      snapshot !== null ? snapshot.index : committedEntries.length > 0 ? committedEntries[committedEntries.length - 1]!.index : log.applied;

    let softState: SoftState | null = null;
    if (raft.leader !== this.previousSoft.leader || raft.role !== this.previousSoft.role) {
      softState = { leader: raft.leader, role: raft.role };
      this.previousSoft = softState;
    }
    let hardState: HardState | null = null;
    const previous = this.previousHard;
    const termOrVoteChanged = raft.term !== previous.term || raft.vote !== previous.vote;
    if (termOrVoteChanged || log.committed !== previous.commit) {
      hardState = { term: raft.term, vote: raft.vote, commit: log.committed };
      this.previousHard = hardState;
    }
    const ready: Ready = {
      softState,
      hardState,
      entries,
      snapshot,
      committedEntries,
      messagesBeforePersist: raft.messagesBeforePersist,
      messages: raft.messagesAfterPersist,
      readStates: raft.readStates,
      mustSync: entries.length > 0 || snapshot !== null || termOrVoteChanged,
    };
    raft.messagesBeforePersist = [];
    raft.messagesAfterPersist = [];
    raft.readStates = [];
    this.outstanding = {
      lastEntry: lastEntry === null ? null : { index: lastEntry.index, term: lastEntry.term },
      snapshotIndex: snapshot === null ? 0 : snapshot.index,
      appliedThrough,
    };
    return ready;
  }

  /**
   * The index of a snapshot the core has accepted and the host has not yet
   * persisted (handed out in a Ready or about to be), or 0. The host keeps
   * that snapshot's data until it is installed, whatever arrives meanwhile.
   */
  pendingSnapshotIndex(): number {
    return this.raft.log.unstableSnapshot?.index ?? 0;
  }

  /** The host has persisted, sent and applied the last Ready. */
  advance(): void {
    const outstanding = this.outstanding;
    assert(outstanding !== null, 'advance() without an outstanding Ready');
    this.outstanding = null;
    const raft = this.raft;
    const log = raft.log;
    if (outstanding.snapshotIndex > 0) log.stableSnapshotTo(outstanding.snapshotIndex);
    if (outstanding.lastEntry !== null) raft.acknowledgePersisted(outstanding.lastEntry.index, outstanding.lastEntry.term);
    if (outstanding.appliedThrough > log.applied) log.applied = Math.min(outstanding.appliedThrough, log.committed);
    this.maybeLeaveJoint();
  }

  /** A leader leaves an auto-leave joint configuration once the change that entered it is applied. */
  private maybeLeaveJoint(): void {
    const raft = this.raft;
    if (raft.role !== Role.Leader || !raft.isJoint() || !raft.conf.autoLeave) return;
    if (raft.pendingConfIndex > raft.log.applied) return;
    const leave: ConfChange = { transition: ConfChangeTransition.Auto, changes: [], context: new Uint8Array(0) };
    raft.propose(encodeConfChange(leave), EntryType.ConfChange);
  }

  /** The current term (status() without the copies). */
  get term(): number {
    return this.raft.term;
  }

  status(): RaftStatus {
    const raft = this.raft;
    const progress = new Map<NodeId, PeerStatus>();
    if (raft.role === Role.Leader) {
      for (const [id, p] of raft.progress) {
        progress.set(id, { match: p.match, next: p.next, state: stateNames[p.state as ProgressState], isLearner: p.isLearner, recentActive: p.recentActive });
      }
    }
    return {
      id: raft.id,
      term: raft.term,
      vote: raft.vote,
      commit: raft.log.committed,
      applied: raft.log.applied,
      leader: raft.leader,
      role: raft.role,
      firstIndex: raft.log.firstIndex(),
      lastIndex: raft.log.lastIndex(),
      confState: raft.conf,
      leadTransferee: raft.leadTransferee,
      progress,
    };
  }
}
