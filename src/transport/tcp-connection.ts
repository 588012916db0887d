// One framed TCP (or TLS) connection of the TCP transport, and dialling a
// peer: connect, say hello (who we are, whom we want, what for), wait for
// the answer. A connection that sends bad input — a frame over the limit,
// of another version, undecodable, or out of protocol — is closed with a
// logged reason; nothing it sent reaches the node.

import { connect as netConnect, isIP } from 'node:net';
import type { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { Debugger } from 'debug';
import { InvalidArgumentError } from '../raft/errors.ts';
import type { NodeId } from '../raft/types.ts';
import { MalformedFrameError } from './codec.ts';
import { UnreachableError } from './memory.ts';
import { CONTROL_FRAME_BYTES_MAX, encodeHello, FrameKind, frameHeader, FrameReader } from './tcp-frame.ts';
import type { Frame, Purpose } from './tcp-frame.ts';
import { certificateIdentities, certificateNamesMember, memberIdentity } from './tcp-tls.ts';
import type { TcpTlsOptions } from './tcp-tls.ts';

/** What every connection of one transport shares. */
export interface TcpContext {
  readonly id: NodeId;
  readonly tls: TcpTlsOptions | undefined;
  readonly frameBytesMax: number;
  readonly connectTimeoutMs: number;
  readonly snapshotWindowChunks: number;
  readonly snapshotIdleTimeoutMs: number;
  readonly log: Debugger;
  readonly counters: { badInput: number };
}

export interface Address {
  readonly host: string;
  readonly port: number;
}

/** Parses `host:port` or `[ipv6]:port`. */
export function parseAddress(text: string, what: string, options: { allowPortZero?: boolean } = {}): Address {
  if (typeof text !== 'string') throw new InvalidArgumentError(`${what} must be a "host:port" string`);
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text);
  if (match === null) throw new InvalidArgumentError(`${what} must be "host:port" (or "[ipv6]:port"), got ${JSON.stringify(text)}`);
  const host = (match[1] ?? match[2]) as string;
  const port = Number(match[3]);
  if (match[1] !== undefined && isIP(host) !== 6) throw new InvalidArgumentError(`${what}: ${host} is not an IPv6 address`);
  if (port > 65_535 || (port === 0 && options.allowPortZero !== true)) throw new InvalidArgumentError(`${what}: port ${port} is out of range`);
  return { host, port };
}

export function formatAddress(address: Address): string {
  return isIP(address.host) === 6 ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export interface ConnectionHandlers {
  onFrame(frame: Frame): void;
  onClose(reason: string): void;
}

/** A socket cut into frames. Handlers may throw MalformedFrameError to close it as bad input. */
export class FramedConnection {
  private handlers: ConnectionHandlers = { onFrame: () => {}, onClose: () => {} };
  private readonly reader: FrameReader;
  private closedReason: string | null = null;
  /** The authenticated peer (inbound, after its hello); 0 before. */
  peer: NodeId = 0;

  constructor(
    readonly socket: Socket,
    private readonly context: TcpContext,
    readonly label: string,
  ) {
    this.reader = new FrameReader(CONTROL_FRAME_BYTES_MAX);
    socket.on('data', (data: Buffer) => this.receive(data));
    socket.on('error', (error) => this.close(`socket error: ${error.message}`));
    socket.on('close', () => this.close('closed by the peer'));
  }

  get isClosed(): boolean {
    return this.closedReason !== null;
  }

  setHandlers(handlers: ConnectionHandlers): void {
    this.handlers = handlers;
  }

  /** Frames up to the transport's limit are accepted from now on (after authentication). */
  allowFullFrames(): void {
    this.reader.setLimit(this.context.frameBytesMax);
  }

  /** Writes one frame; false when the socket buffer is full (wait for 'drain') or closed. */
  write(kind: FrameKind, body?: Uint8Array): boolean {
    if (this.closedReason !== null) return false;
    const length = body?.length ?? 0;
    const flushed = this.socket.write(frameHeader(kind, length));
    if (body === undefined || length === 0) return flushed;
    return this.socket.write(body);
  }

  /** Closes at once (pending writes are discarded) and says why. */
  close(reason: string, badInput = false): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    if (badInput) this.context.counters.badInput++;
    this.context.log('member %d: closing connection %s: %s', this.context.id, this.label, reason);
    this.socket.destroy();
    this.handlers.onClose(reason);
  }

  /** Sends what is written, then closes; a refusal's reason reaches the peer this way. */
  end(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    this.context.log('member %d: ending connection %s: %s', this.context.id, this.label, reason);
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1_000).unref();
    this.handlers.onClose(reason);
  }

  private receive(data: Buffer): void {
    if (this.closedReason !== null) return;
    let frames: Frame[];
    try {
      frames = this.reader.push(data);
    } catch (error) {
      this.close(`bad input: ${(error as Error).message}`, true);
      return;
    }
    for (const frame of frames) {
      if (this.closedReason !== null) return;
      try {
        this.handlers.onFrame(frame);
      } catch (error) {
        if (error instanceof MalformedFrameError) this.close(`bad input: ${error.message}`, true);
        else this.close(`internal error: ${(error as Error).stack ?? String(error)}`);
      }
    }
  }
}

/**
 * Connects to member `peer` at `address` for `purpose` and resolves once it
 * accepted the hello; `handlers` take over the connection from then on.
 * Rejects with UnreachableError (refused, timed out, unreachable, a TLS
 * certificate that does not name the member, or `signal` aborted).
 */
export function dial(
  context: TcpContext,
  peer: NodeId,
  address: Address,
  purpose: Purpose,
  handlers: ConnectionHandlers,
  signal?: AbortSignal,
): Promise<FramedConnection> {
  const where = formatAddress(address);
  return new Promise((resolve, reject) => {
    const socket = context.tls === undefined ? netConnect({ host: address.host, port: address.port }) : tlsDial(context.tls, peer, address);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    const connection = new FramedConnection(socket, context, `to member ${peer} at ${where}`);
    let settled = false;
    const timer = setTimeout(() => connection.close(`no answer within ${context.connectTimeoutMs} ms`), context.connectTimeoutMs);
    const onAbort = (): void => connection.close('the attempt was abandoned');
    if (signal?.aborted === true) queueMicrotask(onAbort);
    else signal?.addEventListener('abort', onAbort, { once: true });
    connection.setHandlers({
      onFrame: (frame) => {
        if (frame.kind === FrameKind.Refused) {
          connection.close(`refused: ${frame.body.toString('utf8')}`);
          return;
        }
        if (frame.kind !== FrameKind.HelloOk) throw new MalformedFrameError(`expected the answer to a hello, got frame kind ${frame.kind}`);
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        connection.setHandlers(handlers);
        resolve(connection);
      },
      onClose: (reason) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (!settled) reject(new UnreachableError(`cannot reach member ${peer} at ${where}: ${reason}`));
        settled = true;
      },
    });
    socket.once(context.tls === undefined ? 'connect' : 'secureConnect', () => {
      connection.write(FrameKind.Hello, encodeHello({ from: context.id, to: peer, purpose }));
    });
  });
}

function tlsDial(options: TcpTlsOptions, peer: NodeId, address: Address): Socket {
  return tlsConnect({
    host: address.host,
    port: address.port,
    ca: options.ca,
    cert: options.cert,
    key: options.key,
    minVersion: 'TLSv1.2',
    // The server is checked for the member it should be, not for its address.
    checkServerIdentity: (_host, certificate) =>
      certificateNamesMember(certificate, peer)
        ? undefined
        : new Error(`the certificate at ${formatAddress(address)} names ${certificateIdentities(certificate).join(', ') || 'nothing'}, not ${memberIdentity(peer)}`),
  });
}
