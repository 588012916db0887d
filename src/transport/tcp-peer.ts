// The outbound side of one peer in the TCP transport: a bounded queue of
// messages and one connection that carries them. Messages sent within one
// event-loop turn leave together, packed into as few frames as the frame
// limit allows. A lost connection is redialled after a capped exponential
// backoff (with jitter); while it is down, or while the socket cannot take
// more, messages wait in the queue, and beyond the queue's count or byte
// bound they are dropped — Raft retries; the node never blocks.

import { assert } from '../raft/errors.ts';
import type { Message, NodeId } from '../raft/types.ts';
import { encodeMessages, MalformedFrameError } from './codec.ts';
import { dial, formatAddress } from './tcp-connection.ts';
import type { Address, FramedConnection, TcpContext } from './tcp-connection.ts';
import { FrameKind, Purpose } from './tcp-frame.ts';

export interface PeerLinkLimits {
  readonly queueMessagesMax: number;
  readonly queueBytesMax: number;
  readonly reconnectDelayMs: number;
  readonly reconnectDelayMaxMs: number;
  readonly writeStallTimeoutMs: number;
}

export interface PeerStats {
  readonly id: NodeId;
  readonly address: string;
  readonly connected: boolean;
  readonly queuedMessages: number;
  readonly queuedBytes: number;
  readonly sentMessages: number;
  readonly droppedMessages: number;
  readonly connects: number;
  readonly connectFailures: number;
}

/** An upper estimate of a message's encoded size (bounds the queue before encoding). */
export function estimateBytes(message: Message): number {
  let bytes = 64 + message.context.length;
  for (const entry of message.entries) bytes += 32 + entry.data.length;
  if (message.snapshot !== null) {
    const conf = message.snapshot.confState;
    bytes += 32 + 9 * (conf.voters.length + conf.learners.length + conf.votersOutgoing.length + conf.learnersNext.length);
  }
  return bytes;
}

type LinkState = 'idle' | 'dialing' | 'ready' | 'waiting' | 'closed';

export class PeerLink {
  private queue: Message[] = [];
  private queuedBytes = 0;
  private connection: FramedConnection | null = null;
  private state: LinkState = 'idle';
  /** Waiting for 'drain': the socket holds more than its high-water mark. */
  private blocked = false;
  private stallTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private delayMs = 0;
  /** Bumped whenever the current connection attempt must be forgotten. */
  private generation = 0;
  /** Abandons the dial in progress, if any. */
  private dialing: AbortController | null = null;
  private readonly counters = { sentMessages: 0, droppedMessages: 0, connects: 0, connectFailures: 0 };

  constructor(
    private readonly context: TcpContext,
    readonly id: NodeId,
    private addressOf: Address,
    private readonly limits: PeerLinkLimits,
  ) {}

  get address(): Address {
    return this.addressOf;
  }

  /** Queues a message, or drops it if the queue is full; flush() sends. */
  enqueue(message: Message): void {
    const bytes = estimateBytes(message);
    if (this.state === 'closed' || this.queue.length >= this.limits.queueMessagesMax || this.queuedBytes + bytes > this.limits.queueBytesMax) {
      this.counters.droppedMessages++;
      return;
    }
    this.queue.push(message);
    this.queuedBytes += bytes;
  }

  /** Sends what is queued if the connection can take it; dials if there is none. */
  flush(): void {
    if (this.queue.length === 0) return;
    if (this.state === 'idle') {
      this.dial();
      return;
    }
    if (this.state !== 'ready' || this.blocked || this.connection === null) return;
    const connection = this.connection;
    const messages = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    let writable = true;
    connection.socket.cork();
    for (const body of this.frames(messages)) writable = connection.write(FrameKind.Messages, body) && writable;
    connection.socket.uncork();
    if (!writable && !connection.isClosed) this.block(connection);
  }

  /** Points the link at a new address: the current connection is dropped and the backoff reset. */
  moveTo(address: Address): void {
    if (this.state === 'closed' || (address.host === this.addressOf.host && address.port === this.addressOf.port)) return;
    this.addressOf = address;
    this.reset('the peer moved');
    this.state = 'idle';
    this.delayMs = 0;
    this.flush();
  }

  close(reason: string): void {
    if (this.state === 'closed') return;
    this.reset(reason);
    this.state = 'closed';
    this.counters.droppedMessages += this.queue.length;
    this.queue = [];
    this.queuedBytes = 0;
  }

  stats(): PeerStats {
    return {
      id: this.id,
      address: formatAddress(this.addressOf),
      connected: this.state === 'ready',
      queuedMessages: this.queue.length,
      queuedBytes: this.queuedBytes,
      ...this.counters,
    };
  }

  /** Forgets the connection and any attempt or timer in progress. */
  private reset(reason: string): void {
    this.generation++;
    clearTimeout(this.retryTimer);
    clearTimeout(this.stallTimer);
    this.retryTimer = undefined;
    this.stallTimer = undefined;
    this.blocked = false;
    this.dialing?.abort();
    this.dialing = null;
    const connection = this.connection;
    this.connection = null;
    connection?.close(reason);
  }

  /** Packs messages into frame bodies within the limit; a message that cannot fit alone is dropped. */
  private *frames(messages: readonly Message[]): Generator<Uint8Array> {
    const bodyMax = this.context.frameBytesMax - 2;
    let group: Message[] = [];
    let groupBytes = 0;
    for (const message of messages) {
      const bytes = estimateBytes(message);
      if (group.length > 0 && groupBytes + bytes > bodyMax) {
        yield* this.encode(group, bodyMax);
        group = [];
        groupBytes = 0;
      }
      group.push(message);
      groupBytes += bytes;
    }
    if (group.length > 0) yield* this.encode(group, bodyMax);
  }

  private *encode(group: readonly Message[], bodyMax: number): Generator<Uint8Array> {
    const body = encodeMessages(group);
    if (body.length <= bodyMax) {
      this.counters.sentMessages += group.length;
      yield body;
    } else if (group.length > 1) {
      const half = Math.ceil(group.length / 2);
      yield* this.encode(group.slice(0, half), bodyMax);
      yield* this.encode(group.slice(half), bodyMax);
    } else {
      this.counters.droppedMessages++;
      this.context.log('member %d: dropped a message of %d bytes to %d: over the frame limit', this.context.id, body.length, this.id);
    }
  }

  private block(connection: FramedConnection): void {
    this.blocked = true;
    const generation = this.generation;
    this.stallTimer = setTimeout(() => {
      if (generation === this.generation) connection.close(`the peer took no data for ${this.limits.writeStallTimeoutMs} ms`);
    }, this.limits.writeStallTimeoutMs);
    connection.socket.once('drain', () => {
      if (generation !== this.generation) return;
      clearTimeout(this.stallTimer);
      this.blocked = false;
      this.flush();
    });
  }

  private dial(): void {
    assert(this.state === 'idle', 'dial only from idle');
    this.state = 'dialing';
    const generation = ++this.generation;
    const handlers = {
      onFrame: (): void => {
        throw new MalformedFrameError('a peer sent a frame on a message connection');
      },
      onClose: (reason: string): void => {
        if (generation === this.generation) this.lost(reason);
      },
    };
    const dialing = new AbortController();
    this.dialing = dialing;
    dial(this.context, this.id, this.addressOf, Purpose.Messages, handlers, dialing.signal).then(
      (connection) => {
        if (this.dialing === dialing) this.dialing = null;
        if (generation !== this.generation || this.state === 'closed') {
          connection.close('superseded');
          return;
        }
        this.connection = connection;
        this.state = 'ready';
        this.delayMs = 0;
        this.counters.connects++;
        this.context.log('member %d: connected to %d at %s', this.context.id, this.id, formatAddress(this.addressOf));
        this.flush();
      },
      (error: unknown) => {
        if (generation === this.generation) this.lost((error as Error).message);
      },
    );
  }

  /** The connection (or the attempt) failed: wait, then dial again if there is something to send. */
  private lost(reason: string): void {
    if (this.state === 'closed') return;
    this.reset(reason);
    this.counters.connectFailures++;
    this.delayMs = this.delayMs === 0 ? this.limits.reconnectDelayMs : Math.min(this.delayMs * 2, this.limits.reconnectDelayMaxMs);
    const delayMs = Math.round(this.delayMs * (0.5 + Math.random() / 2));
    this.state = 'waiting';
    this.context.log('member %d: link to %d down (%s); retry in %d ms', this.context.id, this.id, reason, delayMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.state !== 'waiting') return;
      this.state = 'idle';
      this.flush();
    }, delayMs);
  }
}
