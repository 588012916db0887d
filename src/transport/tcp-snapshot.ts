// Snapshots over the TCP transport. Each snapshot gets its own connection:
// the Snap message, then the chunks, then an end mark; the receiver answers
// with credits and finally with done (success or the error). The sender
// keeps at most `snapshotWindowChunks` chunks ahead of what the receiver's
// handler consumed, so a multi-gigabyte snapshot never sits whole in memory
// on either side. A stream that breaks — the source throws, the connection
// drops, a side goes quiet longer than `snapshotIdleTimeoutMs` — fails on
// both sides: the receiver's chunk iterator throws, the sender rejects.

import { InvalidArgumentError, NodeStoppedError, RequestTooLargeError } from '../raft/errors.ts';
import { MessageType } from '../raft/types.ts';
import type { Message, NodeId } from '../raft/types.ts';
import type { TransportHandlers } from '../server/ports.ts';
import { decodeMessages, encodeMessages, MalformedFrameError } from './codec.ts';
import { UnreachableError } from './memory.ts';
import { dial } from './tcp-connection.ts';
import type { Address, FramedConnection, TcpContext } from './tcp-connection.ts';
import { FrameKind, Purpose } from './tcp-frame.ts';
import type { Frame } from './tcp-frame.ts';

const REASON_BYTES_MAX = 1024;

interface Waiter {
  wake: (() => void) | null;
}

function wake(waiter: Waiter): void {
  const resume = waiter.wake;
  waiter.wake = null;
  resume?.();
}

/** Resolves true when woken, false after `timeoutMs`. */
function sleep(waiter: Waiter, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      waiter.wake = null;
      resolve(false);
    }, timeoutMs);
    waiter.wake = () => {
      clearTimeout(timer);
      resolve(true);
    };
  });
}

function reasonBytes(text: string): Buffer {
  const bytes = Buffer.from(text.length === 0 ? 'failed' : text, 'utf8');
  return bytes.length <= REASON_BYTES_MAX ? bytes : bytes.subarray(0, REASON_BYTES_MAX);
}

/** Resolves true once the socket drained, false if it closed or stayed full for `timeoutMs`. */
function drained(connection: FramedConnection, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connection.socket;
    const finish = (result: boolean): void => {
      clearTimeout(timer);
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      resolve(result);
    };
    const onDrain = (): void => finish(true);
    const onClose = (): void => finish(false);
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('drain', onDrain);
    socket.on('close', onClose);
  });
}

interface OutgoingState extends Waiter {
  credit: number;
  /** undefined until the receiver answered; null for success, else its error. */
  answer: string | null | undefined;
  broken: string | null;
}

/**
 * Streams one snapshot to member `to` over a new connection. `register`
 * lets the transport close the connection early (close, removePeer); it
 * returns the matching unregister.
 */
export async function sendSnapshotStream(
  context: TcpContext,
  to: NodeId,
  address: Address,
  message: Message,
  chunks: AsyncIterable<Uint8Array>,
  register: (connection: FramedConnection) => () => void,
  signal?: AbortSignal,
): Promise<void> {
  const state: OutgoingState = { credit: context.snapshotWindowChunks, answer: undefined, broken: null, wake: null };
  const connection = await dial(context, to, address, Purpose.Snapshot, {
    onFrame: (frame) => onAnswer(context, state, frame),
    onClose: (reason) => {
      state.broken ??= reason;
      wake(state);
    },
  }, signal);
  const unregister = register(connection);
  const settled = (): boolean => state.answer !== undefined || state.broken !== null;
  const waitForPeer = async (what: string): Promise<void> => {
    if (!(await sleep(state, context.snapshotIdleTimeoutMs))) {
      throw new UnreachableError(`member ${to} sent no ${what} for ${context.snapshotIdleTimeoutMs} ms`);
    }
  };
  try {
    connection.write(FrameKind.SnapshotBegin, encodeMessages([message]));
    for await (const chunk of chunks) {
      if (!(chunk instanceof Uint8Array)) throw new InvalidArgumentError('a snapshot chunk must be a Uint8Array');
      if (chunk.length + 2 > context.frameBytesMax) {
        throw new RequestTooLargeError(`a snapshot chunk of ${chunk.length} bytes is over the frame limit of ${context.frameBytesMax}`);
      }
      while (state.credit === 0 && !settled()) await waitForPeer('credit');
      if (settled()) break; // the receiver answered early or the stream broke: its answer says which
      state.credit--;
      if (!connection.write(FrameKind.SnapshotChunk, chunk) && !(await drained(connection, context.snapshotIdleTimeoutMs)) && !settled()) {
        throw new UnreachableError(`the connection to member ${to} took no data for ${context.snapshotIdleTimeoutMs} ms`);
      }
    }
    if (!settled()) connection.write(FrameKind.SnapshotEnd);
    while (!settled()) await waitForPeer('answer');
    if (state.answer === undefined) throw new UnreachableError(`the snapshot stream to member ${to} broke: ${state.broken ?? ''}`);
    if (state.answer !== null) throw new UnreachableError(`member ${to} refused the snapshot: ${state.answer}`);
  } catch (error) {
    // Never let the receiver take a cut-short stream for a whole one.
    if (state.answer === undefined) connection.write(FrameKind.SnapshotAbort, reasonBytes((error as Error).message ?? String(error)));
    throw error;
  } finally {
    unregister();
    connection.end('snapshot stream finished');
  }
}

function onAnswer(context: TcpContext, state: OutgoingState, frame: Frame): void {
  if (frame.kind === FrameKind.SnapshotCredit) {
    if (frame.body.length !== 4) throw new MalformedFrameError('a credit is not 4 bytes');
    state.credit += frame.body.readUInt32BE(0);
    if (state.credit > context.snapshotWindowChunks) throw new MalformedFrameError('credit beyond the window');
  } else if (frame.kind === FrameKind.SnapshotDone) {
    state.answer = frame.body.length === 0 ? null : frame.body.toString('utf8');
  } else {
    throw new MalformedFrameError(`unexpected frame kind ${frame.kind} on a snapshot stream`);
  }
  wake(state);
}

/** The receiving end of one snapshot connection, after its hello. */
export class IncomingSnapshot implements Waiter {
  private readonly queue: Buffer[] = [];
  private begun = false;
  private ended = false;
  private failed: Error | null = null;
  wake: (() => void) | null = null;

  constructor(
    private readonly context: TcpContext,
    private readonly connection: FramedConnection,
    private readonly handlers: () => TransportHandlers | null,
  ) {}

  onFrame(frame: Frame): void {
    switch (frame.kind) {
      case FrameKind.SnapshotBegin:
        if (this.begun) throw new MalformedFrameError('a second snapshot header on one stream');
        this.begun = true;
        void this.run(this.header(frame.body));
        return;
      case FrameKind.SnapshotChunk:
        if (!this.begun || this.ended) throw new MalformedFrameError('a snapshot chunk outside a stream');
        if (this.queue.length >= this.context.snapshotWindowChunks) throw new MalformedFrameError('the sender went beyond its credit');
        this.queue.push(frame.body);
        break;
      case FrameKind.SnapshotEnd:
        if (!this.begun) throw new MalformedFrameError('a snapshot end before its header');
        this.ended = true;
        break;
      case FrameKind.SnapshotAbort:
        this.failed ??= new UnreachableError(`member ${this.connection.peer} aborted the snapshot: ${frame.body.toString('utf8')}`);
        break;
      default:
        throw new MalformedFrameError(`unexpected frame kind ${frame.kind} on a snapshot stream`);
    }
    wake(this);
  }

  onClose(reason: string): void {
    if (!this.ended) this.failed ??= new UnreachableError(`the snapshot stream from member ${this.connection.peer} broke: ${reason}`);
    wake(this);
  }

  private header(body: Buffer): Message {
    const messages = decodeMessages(body);
    const message = messages[0];
    if (messages.length !== 1 || message === undefined || message.type !== MessageType.Snap || message.snapshot === null) {
      throw new MalformedFrameError('a snapshot header is not one Snap message');
    }
    if (message.from !== this.connection.peer || message.to !== this.context.id) {
      throw new MalformedFrameError(`a snapshot from ${message.from} to ${message.to} on the connection of member ${this.connection.peer}`);
    }
    return message;
  }

  private async run(message: Message): Promise<void> {
    let error: string | null = null;
    try {
      const handlers = this.handlers();
      if (handlers === null) throw new NodeStoppedError(`member ${this.context.id} is not running`);
      await handlers.onSnapshot(message, this.chunks());
    } catch (failure) {
      error = (failure as Error).message ?? String(failure);
    }
    if (this.connection.isClosed) return;
    this.connection.write(FrameKind.SnapshotDone, error === null ? undefined : reasonBytes(error));
    this.connection.end(error === null ? 'snapshot received' : `snapshot refused: ${error}`);
  }

  private async *chunks(): AsyncGenerator<Uint8Array> {
    const credit = Buffer.alloc(4);
    credit.writeUInt32BE(1, 0);
    for (;;) {
      if (this.failed !== null) throw this.failed;
      const chunk = this.queue.shift();
      if (chunk !== undefined) {
        this.connection.write(FrameKind.SnapshotCredit, credit);
        yield chunk;
        continue;
      }
      if (this.ended) return;
      if (!(await sleep(this, this.context.snapshotIdleTimeoutMs))) {
        this.failed ??= new UnreachableError(`member ${this.connection.peer} sent nothing for ${this.context.snapshotIdleTimeoutMs} ms`);
        this.connection.close('snapshot stream went quiet');
      }
    }
  }
}
