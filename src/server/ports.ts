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
  /**
   * Makes every applyBatch that has finished durable (before the log is
   * compacted behind it). It may run while a later applyBatch is in flight.
   */
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

/** Where a transport delivers what it receives (given once, to start()). */
export interface TransportHandlers {
  /** One received message, already decoded and validated; called synchronously, must not throw. */
  onMessage(message: Message): void;
  /**
   * A received snapshot: its Snap message and its data, chunk by chunk, with
   * the sender's chunk boundaries. Resolving tells the sender the snapshot
   * was taken in; rejecting (or the chunks iterator throwing because the
   * stream broke) tells it the snapshot failed.
   */
  onSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): Promise<void>;
}

/**
 * What the node needs of the transport, and what a host app implements to
 * carry raftkv's messages over its own RPC or message bus (the `Transport`
 * interface; `transportSuite` in raftkv/testing checks an implementation).
 *
 * Delivery is best-effort: messages may be lost, duplicated or reordered,
 * and Raft retries. What a transport must never do is block or throw in
 * send(), or hand a message from one peer to the handler as if another had
 * sent it.
 */
export interface TransportPort {
  /** Begins delivering received messages to `handlers`; called once, before any send. */
  start(handlers: TransportHandlers): Promise<void> | void;
  /**
   * Queues messages for their peers (`message.to`) and returns at once.
   * Messages to an unknown peer, or beyond a full queue, are dropped.
   */
  send(messages: readonly Message[]): void;
  /**
   * Streams a snapshot (a Snap message and its data) to `message.to`.
   * Resolves once the receiver's onSnapshot resolved; rejects if the peer
   * is unknown or unreachable, the stream breaks, the source throws, or the
   * receiver refused it.
   */
  sendSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): Promise<void>;
  /** Makes a peer known at an address (the meaning of an address is the transport's); an already known peer moves to the new address. */
  addPeer(id: NodeId, address: string): void;
  /** Points a known peer at a new address (reconnecting), or adds it. */
  updatePeer(id: NodeId, address: string): void;
  /** Forgets a peer: nothing more is sent to it or accepted from it. */
  removePeer(id: NodeId): void;
  /** Stops sending and delivering and releases every resource; idempotent. */
  close(): Promise<void>;
}

/** The transport interface under its public name. */
export type Transport = TransportPort;

export type { SnapshotMetadata };
