// A transport over worker_threads MessagePorts, for apps that run each
// member in its own worker thread (and for benchmarks that spread a cluster
// over the machine's cores). Frames are the wire codec's, transferred, not
// copied. Snapshots stream as numbered chunks with a credit window, so a
// large one never sits whole in a queue; the receiver acknowledges the end.

import type { MessagePort } from 'node:worker_threads';
import createDebug from 'debug';
import { InvalidArgumentError, NodeStoppedError } from '../raft/errors.ts';
import type { Message, NodeId } from '../raft/types.ts';
import type { TransportPort } from '../server/ports.ts';
import { decodeMessages, encodeMessages, MalformedFrameError } from './codec.ts';
import { UnreachableError } from './memory.ts';

const log = createDebug('raftkv:transport:port');

type Handlers = Parameters<TransportPort['start']>[0];

type Control =
  | { kind: 'snapshot-begin'; stream: number; frame: Uint8Array }
  | { kind: 'snapshot-chunk'; stream: number; chunk: Uint8Array }
  | { kind: 'snapshot-end'; stream: number }
  | { kind: 'snapshot-abort'; stream: number; error: string }
  | { kind: 'snapshot-credit'; stream: number }
  | { kind: 'snapshot-done'; stream: number; error: string | null };

export interface MessagePortTransportOptions {
  /** Snapshot chunks sent ahead of the receiver. Default 4. */
  readonly snapshotWindowChunks?: number;
}

interface IncomingSnapshot {
  readonly chunks: Uint8Array[];
  ended: boolean;
  wake: (() => void) | null;
  failed: Error | null;
}

interface OutgoingSnapshot {
  readonly peer: NodeId;
  credit: number;
  finished: boolean;
  wake: (() => void) | null;
  done: (error: string | null) => void;
}

export class MessagePortTransport implements TransportPort {
  private readonly ports = new Map<NodeId, MessagePort>();
  private handlers: Handlers | null = null;
  private closed = false;
  private nextStream = 1;
  private readonly incoming = new Map<string, IncomingSnapshot>();
  private readonly outgoing = new Map<number, OutgoingSnapshot>();
  private readonly windowChunks: number;

  constructor(
    readonly id: NodeId,
    options: MessagePortTransportOptions = {},
  ) {
    this.windowChunks = options.snapshotWindowChunks ?? 4;
    if (!Number.isSafeInteger(this.windowChunks) || this.windowChunks < 1) throw new InvalidArgumentError('snapshotWindowChunks must be a positive integer');
  }

  /** Connects a peer through one end of a MessageChannel (the peer holds the other end). */
  connect(peer: NodeId, port: MessagePort): void {
    if (!Number.isSafeInteger(peer) || peer <= 0 || peer === this.id) throw new InvalidArgumentError(`bad peer id ${String(peer)}`);
    this.ports.set(peer, port);
    port.on('message', (data: unknown) => this.onData(peer, data));
    port.on('close', () => this.failStreams(peer, 'the port closed'));
  }

  /** Fails every snapshot stream to or from `peer` whose port closed. */
  private failStreams(peer: NodeId, reason: string): void {
    for (const state of this.outgoing.values()) if (state.peer === peer && !state.finished) state.done(reason);
    for (const [key, state] of this.incoming) {
      if (!key.startsWith(`${peer}/`) || state.ended) continue;
      state.failed ??= new UnreachableError(`snapshot stream from ${peer} broke: ${reason}`);
      state.wake?.();
    }
  }

  start(handlers: Handlers): void {
    this.handlers = handlers;
  }

  send(messages: readonly Message[]): void {
    if (this.closed) return;
    const byPeer = new Map<NodeId, Message[]>();
    for (const message of messages) {
      let list = byPeer.get(message.to);
      if (list === undefined) byPeer.set(message.to, (list = []));
      list.push(message);
    }
    for (const [peer, list] of byPeer) {
      const port = this.ports.get(peer);
      if (port === undefined) continue; // unknown peer: dropped, Raft retries
      const frame = encodeMessages(list);
      port.postMessage(frame, [frame.buffer as ArrayBuffer]);
    }
  }

  async sendSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    if (this.closed) throw new NodeStoppedError('the transport is closed');
    const port = this.ports.get(message.to);
    if (port === undefined) throw new UnreachableError(`no port to node ${message.to}`);
    const stream = this.nextStream++;
    let finish: (error: string | null) => void = () => {};
    const finished = new Promise<string | null>((resolve) => (finish = resolve));
    const state: OutgoingSnapshot = {
      peer: message.to,
      credit: this.windowChunks,
      finished: false,
      wake: null,
      done: (error) => {
        state.finished = true;
        finish(error);
        state.wake?.();
      },
    };
    this.outgoing.set(stream, state);
    try {
      port.postMessage({ kind: 'snapshot-begin', stream, frame: encodeMessages([message]) } satisfies Control);
      try {
        for await (const chunk of chunks) {
          while (state.credit === 0 && !state.finished) await new Promise<void>((resolve) => (state.wake = resolve));
          if (state.finished) break; // the receiver gave up early; its answer says why
          if (this.closed) throw new NodeStoppedError('the transport closed during a snapshot');
          state.credit--;
          const copy = Uint8Array.from(chunk);
          port.postMessage({ kind: 'snapshot-chunk', stream, chunk: copy } satisfies Control, [copy.buffer]);
        }
      } catch (error) {
        // The source failed: the receiver must not take a truncated stream for a whole one.
        if (!state.finished && !this.closed) port.postMessage({ kind: 'snapshot-abort', stream, error: (error as Error).message } satisfies Control);
        throw error;
      }
      if (!state.finished) port.postMessage({ kind: 'snapshot-end', stream } satisfies Control);
      const error = await finished;
      if (error !== null) throw new UnreachableError(`node ${message.to} refused the snapshot: ${error}`);
    } finally {
      this.outgoing.delete(stream);
    }
  }

  addPeer(_id: NodeId, _address: string): void {
    // Peers are connected with connect(); an address means nothing here.
  }

  updatePeer(_id: NodeId, _address: string): void {}

  removePeer(id: NodeId): void {
    this.ports.get(id)?.close();
    this.ports.delete(id);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.handlers = null;
    for (const state of this.outgoing.values()) state.done('closed');
    for (const state of this.incoming.values()) {
      state.failed ??= new NodeStoppedError('the transport closed during a snapshot');
      state.wake?.();
    }
    for (const port of this.ports.values()) port.close();
    this.ports.clear();
  }

  private onData(peer: NodeId, data: unknown): void {
    if (this.closed || this.handlers === null) return;
    try {
      if (data instanceof Uint8Array) {
        for (const message of decodeMessages(data)) {
          if (message.from !== peer) throw new MalformedFrameError(`a message from ${message.from} arrived on the port of ${peer}`);
          this.handlers.onMessage(message);
        }
        return;
      }
      this.onControl(peer, data as Control);
    } catch (error) {
      log('node %d: dropped bad input from %d: %s', this.id, peer, (error as Error).message);
    }
  }

  private onControl(peer: NodeId, control: Control): void {
    const key = `${peer}/${control.stream}`;
    switch (control.kind) {
      case 'snapshot-begin': {
        const message = decodeMessages(control.frame)[0];
        if (message === undefined || message.from !== peer) throw new MalformedFrameError('bad snapshot header');
        const state: IncomingSnapshot = { chunks: [], ended: false, wake: null, failed: null };
        this.incoming.set(key, state);
        void this.receiveSnapshot(peer, control.stream, message, state);
        return;
      }
      case 'snapshot-chunk':
      case 'snapshot-end':
      case 'snapshot-abort': {
        const state = this.incoming.get(key);
        if (state === undefined) return;
        if (control.kind === 'snapshot-chunk') state.chunks.push(control.chunk);
        else if (control.kind === 'snapshot-end') state.ended = true;
        else state.failed ??= new UnreachableError(`node ${peer} aborted the snapshot: ${control.error}`);
        state.wake?.();
        return;
      }
      case 'snapshot-credit': {
        const state = this.outgoing.get(control.stream);
        if (state === undefined) return;
        state.credit++;
        state.wake?.();
        return;
      }
      case 'snapshot-done':
        this.outgoing.get(control.stream)?.done(control.error);
        return;
    }
  }

  private async receiveSnapshot(peer: NodeId, stream: number, message: Message, state: IncomingSnapshot): Promise<void> {
    const port = this.ports.get(peer);
    const handlers = this.handlers;
    let error: string | null = null;
    async function* chunks(): AsyncGenerator<Uint8Array> {
      for (;;) {
        if (state.failed !== null) throw state.failed;
        const chunk = state.chunks.shift();
        if (chunk !== undefined) {
          port?.postMessage({ kind: 'snapshot-credit', stream } satisfies Control);
          yield chunk;
          continue;
        }
        if (state.ended) return;
        await new Promise<void>((resolve) => (state.wake = resolve));
        state.wake = null;
      }
    }
    try {
      if (handlers === null) throw new NodeStoppedError('not started');
      await handlers.onSnapshot(message, chunks());
    } catch (failure) {
      error = (failure as Error).message;
    } finally {
      this.incoming.delete(`${peer}/${stream}`);
      if (!this.closed) port?.postMessage({ kind: 'snapshot-done', stream, error } satisfies Control);
    }
  }
}
