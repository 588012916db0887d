// The smallest structural views the replicated node needs of its state
// machine and of its transport (Kysely's "subset of pg's Pool"): the node
// depends on these shapes, not on the concrete MVCC store or network, so a
// test can drive it with anything that fits.

import type { Message, NodeId, SnapshotMetadata } from '../raft/types.ts';

/** What the node needs of the state machine the log is applied to. */
export interface StateMachinePort<Request, Response> {
  /** Last Raft index whose effects are stored (durably or not: see flush). */
  appliedIndex(): number;
  /**
   * Applies committed entries in order, atomically with the new applied
   * index (an entry without a request only advances it). A request that
   * fails yields an error response and changes nothing. Entries at or
   * below the applied index were applied before and are skipped: their
   * response is undefined.
   */
  applyBatch(
    items: readonly { readonly index: number; readonly request: Request | undefined }[],
  ): Promise<readonly (Response | undefined)[]>;
  /** Makes everything applied so far durable (before the log is compacted behind it). */
  flush(): Promise<void>;
  /** A consistent point-in-time copy, streamed; carries its own applied index. */
  snapshot(): AsyncIterable<Uint8Array>;
  /** Replaces the whole state with a snapshot made by snapshot(). */
  restore(chunks: AsyncIterable<Uint8Array>): Promise<void>;
  close(): Promise<void>;
}

/** A snapshot's data travels beside its Snap message. */
export interface SnapshotTransfer {
  readonly message: Message;
  readonly chunks: AsyncIterable<Uint8Array>;
}

/** What the node needs of the transport. */
export interface TransportPort {
  start(handlers: {
    onMessage(message: Message): void;
    onSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): Promise<void>;
  }): Promise<void> | void;
  send(messages: readonly Message[]): void;
  sendSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): Promise<void>;
  addPeer(id: NodeId, address: string): void;
  removePeer(id: NodeId): void;
  close(): Promise<void>;
}

export type { SnapshotMetadata };
