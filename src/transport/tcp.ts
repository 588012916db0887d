// The TCP transport: carries Raft messages and snapshots between processes,
// over plain TCP (loopback and tests) or TLS with mutual certificate
// authentication. Each member dials one connection per peer for its
// messages (tcp-peer.ts) and one per snapshot (tcp-snapshot.ts), and accepts
// connections from known peers only: a hello naming an unknown sender, the
// wrong receiver, or (with TLS) a sender its certificate does not name is
// refused, and a connection that sends bad input is closed with a logged
// reason. See docs/transport.md.

import { createServer as netCreateServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { createServer as tlsCreateServer } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import createDebug from 'debug';
import { InvalidArgumentError, NodeStoppedError, RaftKVError } from '../raft/errors.ts';
import { MessageType } from '../raft/types.ts';
import type { Message, NodeId } from '../raft/types.ts';
import type { TransportHandlers, TransportPort } from '../server/ports.ts';
import { decodeMessages, MalformedFrameError } from './codec.ts';
import { UnreachableError } from './memory.ts';
import { FramedConnection, formatAddress, isLoopback, parseAddress } from './tcp-connection.ts';
import type { Address, TcpContext } from './tcp-connection.ts';
import { decodeHello, FrameKind, Purpose } from './tcp-frame.ts';
import type { Frame, Hello } from './tcp-frame.ts';
import { PeerLink } from './tcp-peer.ts';
import type { PeerLinkLimits, PeerStats } from './tcp-peer.ts';
import { IncomingSnapshot, sendSnapshotStream } from './tcp-snapshot.ts';
import { certificateNamesMember, checkOwnCertificate, memberIdentity } from './tcp-tls.ts';
import type { TcpTlsOptions } from './tcp-tls.ts';

export type { TcpTlsOptions } from './tcp-tls.ts';
export type { PeerStats } from './tcp-peer.ts';

const log = createDebug('raftkv:transport:tcp');

/** The listener could not be bound (address in use, not local, no permission). */
export class ListenFailedError extends RaftKVError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('RAFTKV_LISTEN_FAILED', message, options);
  }
}

export interface TcpTransportOptions {
  /** This member's id. */
  readonly id: NodeId;
  /** Where to accept peers, "host:port"; port 0 picks a free port (read it from `address`). */
  readonly listen: string;
  /** Peers known from the start: id → "host:port". More come with addPeer. */
  readonly peers?: ReadonlyMap<NodeId, string> | Readonly<Record<string, string>>;
  /** Mutual TLS. Without it connections are plain TCP and authenticate nothing. */
  readonly tls?: TcpTlsOptions;
  /** Allow plain TCP on an address other than loopback. Default false. */
  readonly allowPlainTcp?: boolean;
  /** Largest frame sent or accepted (a batch of messages, a snapshot chunk). Default 8 MiB. */
  readonly frameBytesMax?: number;
  /** Messages queued per peer before new ones are dropped. Default 4,096. */
  readonly queueMessagesMax?: number;
  /** Estimated bytes queued per peer before new messages are dropped. Default 32 MiB. */
  readonly queueBytesMax?: number;
  /** First delay before redialling a lost peer, doubled per failure. Default 50 ms. */
  readonly reconnectDelayMs?: number;
  /** Cap of the redial delay. Default 2,000 ms. */
  readonly reconnectDelayMaxMs?: number;
  /** Deadline to connect and be accepted (TCP, TLS and hello). Default 5,000 ms. */
  readonly connectTimeoutMs?: number;
  /** A connection whose socket takes no data for this long is dropped and redialled. Default 10,000 ms. */
  readonly writeStallTimeoutMs?: number;
  /** Snapshot chunks sent ahead of the receiver's consumption. Default 4. */
  readonly snapshotWindowChunks?: number;
  /** A snapshot stream with no progress from the other side for this long fails. Default 30,000 ms. */
  readonly snapshotIdleTimeoutMs?: number;
  /** Accepted connections open at once (authenticated or not). Default 256. */
  readonly inboundConnectionsMax?: number;
}

export interface TcpTransportStats {
  readonly peers: readonly PeerStats[];
  /** Messages sent to ids that are not peers (dropped). */
  readonly droppedUnknownPeer: number;
  /** Messages received before start() or after close() (dropped). */
  readonly droppedNotRunning: number;
  /** Connections refused at the hello or the TLS handshake. */
  readonly connectionsRefused: number;
  /** Connections closed because they sent bad input. */
  readonly connectionsClosedBadInput: number;
}

/** Snapshot connections accepted from one peer at once. */
const SNAPSHOT_STREAMS_PER_PEER_MAX = 2;

function positiveInteger(value: number | undefined, fallback: number, name: string): number {
  const result = value ?? fallback;
  if (typeof result !== 'number' || !Number.isSafeInteger(result) || result <= 0) {
    throw new InvalidArgumentError(`${name} must be a positive integer, got ${String(value)}`);
  }
  return result;
}

function checkPeerId(id: unknown, self: NodeId): NodeId {
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id <= 0) throw new InvalidArgumentError(`a peer id must be a positive integer, got ${String(id)}`);
  if (id === self) throw new InvalidArgumentError(`member ${self} cannot be its own peer`);
  return id;
}

function peerEntries(peers: TcpTransportOptions['peers']): [NodeId, string][] {
  if (peers === undefined) return [];
  if (peers instanceof Map) return [...peers.entries()];
  if (typeof peers !== 'object' || peers === null) throw new InvalidArgumentError('peers must be a Map or an object of id → address');
  return Object.entries(peers).map(([id, address]) => [Number(id), address]);
}

function settingsOf(options: TcpTransportOptions): { context: Omit<TcpContext, 'log' | 'counters'>; limits: PeerLinkLimits; inboundConnectionsMax: number } {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options are required');
  const id = options.id;
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id <= 0) throw new InvalidArgumentError(`id must be a positive integer, got ${String(id)}`);
  if (options.tls !== undefined) checkOwnCertificate(options.tls, id);
  const frameBytesMax = positiveInteger(options.frameBytesMax, 8 * 1024 * 1024, 'frameBytesMax');
  if (frameBytesMax < 64 * 1024) throw new InvalidArgumentError('frameBytesMax must be at least 64 KiB');
  const limits: PeerLinkLimits = {
    queueMessagesMax: positiveInteger(options.queueMessagesMax, 4_096, 'queueMessagesMax'),
    queueBytesMax: positiveInteger(options.queueBytesMax, 32 * 1024 * 1024, 'queueBytesMax'),
    reconnectDelayMs: positiveInteger(options.reconnectDelayMs, 50, 'reconnectDelayMs'),
    reconnectDelayMaxMs: positiveInteger(options.reconnectDelayMaxMs, 2_000, 'reconnectDelayMaxMs'),
    writeStallTimeoutMs: positiveInteger(options.writeStallTimeoutMs, 10_000, 'writeStallTimeoutMs'),
  };
  if (limits.reconnectDelayMaxMs < limits.reconnectDelayMs) throw new InvalidArgumentError('reconnectDelayMaxMs must be at least reconnectDelayMs');
  return {
    context: {
      id,
      tls: options.tls,
      frameBytesMax,
      connectTimeoutMs: positiveInteger(options.connectTimeoutMs, 5_000, 'connectTimeoutMs'),
      snapshotWindowChunks: positiveInteger(options.snapshotWindowChunks, 4, 'snapshotWindowChunks'),
      snapshotIdleTimeoutMs: positiveInteger(options.snapshotIdleTimeoutMs, 30_000, 'snapshotIdleTimeoutMs'),
    },
    limits,
    inboundConnectionsMax: positiveInteger(options.inboundConnectionsMax, 256, 'inboundConnectionsMax'),
  };
}

export class TcpTransport implements TransportPort {
  readonly id: NodeId;
  private handlers: TransportHandlers | null = null;
  private started = false;
  private closing: Promise<void> | null = null;
  private readonly links = new Map<NodeId, PeerLink>();
  /** Every accepted connection, authenticated or not. */
  private readonly inbound = new Set<FramedConnection>();
  /** The message connection each peer dialled (a newer one replaces it). */
  private readonly inboundMessages = new Map<NodeId, FramedConnection>();
  private readonly inboundSnapshots = new Map<NodeId, Set<FramedConnection>>();
  private readonly outgoingSnapshots = new Map<FramedConnection, NodeId>();
  private flushScheduled = false;
  /** Every socket the listener accepted, TLS handshake finished or not (closed at close()). */
  private readonly sockets = new Set<Socket>();
  /** Aborts snapshot dials in progress at close(). */
  private readonly closed = new AbortController();
  private readonly counters = { droppedUnknownPeer: 0, droppedNotRunning: 0, connectionsRefused: 0 };

  private constructor(
    private readonly context: TcpContext,
    private readonly limits: PeerLinkLimits,
    private readonly server: Server,
    private readonly listening: Address,
  ) {
    this.id = context.id;
  }

  /** Validates the options, binds the listener and returns the transport, ready for start(). */
  static async listen(options: TcpTransportOptions): Promise<TcpTransport> {
    const { context: settings, limits, inboundConnectionsMax } = settingsOf(options);
    const listen = parseAddress(options.listen, 'listen', { allowPortZero: true });
    if (options.tls === undefined && options.allowPlainTcp !== true && !isLoopback(listen.host)) {
      throw new InvalidArgumentError(`plain TCP authenticates nobody: listen on loopback, configure tls, or set allowPlainTcp (listen is ${options.listen})`);
    }
    const peers = peerEntries(options.peers).map(([id, address]) => [checkPeerId(id, settings.id), parseAddress(address, `the address of peer ${id}`)] as const);
    const context: TcpContext = { ...settings, log, counters: { badInput: 0 } };
    const server = createListener(context, inboundConnectionsMax);
    await bind(server, listen);
    const bound = server.address() as AddressInfo;
    const transport = new TcpTransport(context, limits, server, { host: listen.host, port: bound.port });
    server.on('connection', (socket: Socket) => transport.track(socket));
    server.on(context.tls === undefined ? 'connection' : 'secureConnection', (socket: Socket) => transport.accept(socket));
    server.on('tlsClientError', (error: Error, socket: TLSSocket) => {
      transport.counters.connectionsRefused++;
      log('member %d: refused a TLS connection from %s: %s', settings.id, socket.remoteAddress, error.message);
    });
    server.on('error', (error) => log('member %d: listener error: %s', settings.id, error.message));
    for (const [id, address] of peers) transport.links.set(id, new PeerLink(context, id, address, limits));
    log('member %d: listening on %s (%s)', settings.id, transport.address, context.tls === undefined ? 'plain TCP' : 'TLS');
    return transport;
  }

  /** The address peers dial ("host:port", with the port actually bound). */
  get address(): string {
    return formatAddress(this.listening);
  }

  get isClosed(): boolean {
    return this.closing !== null;
  }

  start(handlers: TransportHandlers): void {
    if (typeof handlers?.onMessage !== 'function' || typeof handlers.onSnapshot !== 'function') {
      throw new InvalidArgumentError('start needs onMessage and onSnapshot handlers');
    }
    if (this.started) throw new InvalidArgumentError('the transport is already started');
    if (this.closing !== null) throw new NodeStoppedError('the transport is closed');
    this.started = true;
    this.handlers = handlers;
  }

  send(messages: readonly Message[]): void {
    if (this.closing !== null) return;
    for (const message of messages) {
      const link = this.links.get(message.to);
      if (link === undefined) {
        this.counters.droppedUnknownPeer++;
        continue;
      }
      link.enqueue(message);
    }
    this.scheduleFlush();
  }

  async sendSnapshot(message: Message, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    if (typeof message !== 'object' || message === null || message.type !== MessageType.Snap || message.snapshot === null) {
      throw new InvalidArgumentError('sendSnapshot takes a Snap message with snapshot metadata');
    }
    if (chunks === null || typeof (chunks as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] !== 'function') {
      throw new InvalidArgumentError('sendSnapshot takes an async iterable of chunks');
    }
    if (this.closing !== null) throw new NodeStoppedError('the transport is closed');
    const link = this.links.get(message.to);
    if (link === undefined) throw new UnreachableError(`member ${message.to} is not a peer of member ${this.id}`);
    const register = (connection: FramedConnection): (() => void) => {
      if (this.closing !== null || this.links.get(message.to) !== link) connection.close('the peer is gone');
      this.outgoingSnapshots.set(connection, message.to);
      return () => this.outgoingSnapshots.delete(connection);
    };
    await sendSnapshotStream(this.context, message.to, link.address, message, chunks, register, this.closed.signal);
  }

  addPeer(id: NodeId, address: string): void {
    checkPeerId(id, this.id);
    const parsed = parseAddress(address, `the address of peer ${id}`);
    if (this.closing !== null) return;
    const link = this.links.get(id);
    if (link === undefined) this.links.set(id, new PeerLink(this.context, id, parsed, this.limits));
    else link.moveTo(parsed);
  }

  updatePeer(id: NodeId, address: string): void {
    this.addPeer(id, address);
  }

  removePeer(id: NodeId): void {
    checkPeerId(id, this.id);
    const link = this.links.get(id);
    if (link === undefined) return;
    this.links.delete(id);
    link.close('the peer was removed');
    this.inboundMessages.get(id)?.close('the peer was removed');
    for (const connection of this.inboundSnapshots.get(id) ?? []) connection.close('the peer was removed');
    for (const [connection, peer] of this.outgoingSnapshots) if (peer === id) connection.close('the peer was removed');
    log('member %d: removed peer %d', this.id, id);
  }

  /** Counters and per-peer queue sizes, for tests and metrics. */
  stats(): TcpTransportStats {
    return {
      peers: [...this.links.values()].map((link) => link.stats()),
      ...this.counters,
      connectionsClosedBadInput: this.context.counters.badInput,
    };
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async shutdown(): Promise<void> {
    this.handlers = null;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const link of this.links.values()) link.close('the transport closed');
    for (const connection of this.inbound) connection.close('the transport closed');
    for (const connection of this.outgoingSnapshots.keys()) connection.close('the transport closed');
    this.closed.abort();
    for (const socket of this.sockets) socket.destroy();
    await closed;
    log('member %d: transport closed', this.id);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      if (this.closing !== null) return;
      for (const link of this.links.values()) link.flush();
    });
  }

  // ---- Accepting ----

  /** Remembers a raw accepted socket until it closes (a TLS handshake may still be under way). */
  private track(socket: Socket): void {
    if (this.closing !== null) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private accept(socket: Socket): void {
    if (this.closing !== null) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    const connection = new FramedConnection(socket, this.context, `from ${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`);
    this.inbound.add(connection);
    const timer = setTimeout(() => connection.close(`no hello within ${this.context.connectTimeoutMs} ms`), this.context.connectTimeoutMs);
    connection.setHandlers({
      onFrame: (frame) => {
        clearTimeout(timer);
        this.onHello(connection, frame);
      },
      onClose: () => {
        clearTimeout(timer);
        this.inbound.delete(connection);
      },
    });
  }

  private onHello(connection: FramedConnection, frame: Frame): void {
    if (frame.kind !== FrameKind.Hello) throw new MalformedFrameError(`expected a hello, got frame kind ${frame.kind}`);
    const hello = decodeHello(frame.body);
    const refusal = this.refusalOf(connection, hello);
    if (refusal !== null) {
      this.counters.connectionsRefused++;
      log('member %d: refused %s: %s', this.id, connection.label, refusal);
      connection.write(FrameKind.Refused, Buffer.from(refusal, 'utf8'));
      connection.end(`refused: ${refusal}`);
      return;
    }
    connection.peer = hello.from;
    connection.allowFullFrames();
    if (hello.purpose === Purpose.Messages) this.acceptMessages(connection, hello.from);
    else this.acceptSnapshot(connection, hello.from);
    connection.write(FrameKind.HelloOk);
  }

  /** Why a hello is refused, or null if it is accepted. */
  private refusalOf(connection: FramedConnection, hello: Hello): string | null {
    if (hello.to !== this.id) return `this is member ${this.id}, not ${hello.to}`;
    if (!this.links.has(hello.from)) return `member ${hello.from} is not a peer of member ${this.id}`;
    if (this.context.tls !== undefined) {
      const certificate = (connection.socket as TLSSocket).getPeerCertificate();
      if (!certificateNamesMember(certificate, hello.from)) return `the client certificate does not name ${memberIdentity(hello.from)}`;
    }
    if (hello.purpose === Purpose.Snapshot && (this.inboundSnapshots.get(hello.from)?.size ?? 0) >= SNAPSHOT_STREAMS_PER_PEER_MAX) {
      return `member ${hello.from} already streams ${SNAPSHOT_STREAMS_PER_PEER_MAX} snapshots`;
    }
    return null;
  }

  private acceptMessages(connection: FramedConnection, peer: NodeId): void {
    const previous = this.inboundMessages.get(peer);
    this.inboundMessages.set(peer, connection);
    previous?.close('replaced by a newer connection from the same peer');
    connection.setHandlers({
      onFrame: (frame) => this.onMessages(connection, frame),
      onClose: () => {
        this.inbound.delete(connection);
        if (this.inboundMessages.get(peer) === connection) this.inboundMessages.delete(peer);
      },
    });
  }

  private onMessages(connection: FramedConnection, frame: Frame): void {
    if (frame.kind !== FrameKind.Messages) throw new MalformedFrameError(`unexpected frame kind ${frame.kind} on a message connection`);
    const messages = decodeMessages(frame.body);
    for (const message of messages) {
      if (message.from !== connection.peer || message.to !== this.id) {
        throw new MalformedFrameError(`a message from ${message.from} to ${message.to} on the connection of member ${connection.peer}`);
      }
    }
    const handlers = this.handlers;
    if (handlers === null) {
      this.counters.droppedNotRunning += messages.length;
      return;
    }
    for (const message of messages) {
      try {
        handlers.onMessage(message);
      } catch (error) {
        log('member %d: the message handler threw: %O', this.id, error);
      }
    }
  }

  private acceptSnapshot(connection: FramedConnection, peer: NodeId): void {
    let streams = this.inboundSnapshots.get(peer);
    if (streams === undefined) this.inboundSnapshots.set(peer, (streams = new Set()));
    streams.add(connection);
    const incoming = new IncomingSnapshot(this.context, connection, () => this.handlers);
    connection.setHandlers({
      onFrame: (frame) => incoming.onFrame(frame),
      onClose: (reason) => {
        this.inbound.delete(connection);
        streams.delete(connection);
        if (streams.size === 0 && this.inboundSnapshots.get(peer) === streams) this.inboundSnapshots.delete(peer);
        incoming.onClose(reason);
      },
    });
  }
}

function createListener(context: TcpContext, connectionsMax: number): Server {
  const server =
    context.tls === undefined
      ? netCreateServer()
      : tlsCreateServer({
          ca: context.tls.ca,
          cert: context.tls.cert,
          key: context.tls.key,
          requestCert: true,
          rejectUnauthorized: true,
          minVersion: 'TLSv1.2',
          handshakeTimeout: context.connectTimeoutMs,
        });
  server.maxConnections = connectionsMax;
  return server;
}

function bind(server: Server, address: Address): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => reject(new ListenFailedError(`cannot listen on ${formatAddress(address)}: ${error.message}`, { cause: error }));
    server.once('error', onError);
    server.listen(address.port, address.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}
