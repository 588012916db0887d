// A TCP proxy for one directed peer link of a process cluster (member A's
// connections to member B): A's --peers names the proxy's port instead of
// B's, and the proxy pipes each accepted connection to B. The nemesis can
// reset every connection on the link (both ends get ECONNRESET and redial),
// or blackhole it: nothing moves either way — bytes wait in the kernel's
// buffers as TCP would hold them during a partition, and a new connection is
// accepted but not connected onward — until the link opens again (then,
// optionally, its connections are reset, as after a partition that outlived
// TCP's patience). Binds only to 127.0.0.1. Bounded: at most
// `connectionsMax` connections at once, more are reset.

import { createConnection, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';

export type LinkMode = 'open' | 'blackhole';

interface Pipe {
  readonly inbound: Socket;
  /** Null while a connection accepted during a blackhole waits to be connected onward. */
  outbound: Socket | null;
}

export class LinkProxy {
  private readonly pipes = new Set<Pipe>();
  private mode: LinkMode = 'open';
  private closed = false;
  /** Connections accepted, and reset by the nemesis (for the report). */
  readonly counts = { accepted: 0, reset: 0 };

  private constructor(
    private readonly server: Server,
    private readonly targetPort: number,
    private readonly connectionsMax: number,
  ) {}

  /** Listens on 127.0.0.1:`port` (0 picks one) and forwards to 127.0.0.1:`targetPort`. */
  static async start(port: number, targetPort: number, connectionsMax = 64): Promise<LinkProxy> {
    if (!Number.isSafeInteger(targetPort) || targetPort <= 0 || targetPort > 65_535) throw new RangeError(`bad target port ${targetPort}`);
    if (!Number.isSafeInteger(connectionsMax) || connectionsMax <= 0) throw new RangeError(`bad connectionsMax ${connectionsMax}`);
    const server = createServer({ pauseOnConnect: true });
    const proxy = new LinkProxy(server, targetPort, connectionsMax);
    server.on('connection', (socket) => proxy.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get linkMode(): LinkMode {
    return this.mode;
  }

  /** Blackholes the link: every connection on it stops moving bytes; new ones wait. */
  blackhole(): void {
    this.mode = 'blackhole';
    for (const pipe of this.pipes) {
      pipe.inbound.pause();
      pipe.outbound?.pause();
    }
  }

  /** Opens the link: held bytes flow again (or, with `reset`, every connection on it is reset). */
  open(reset = false): void {
    this.mode = 'open';
    if (reset) this.resetAll();
    for (const pipe of this.pipes) {
      if (pipe.outbound === null) this.connect(pipe);
      else {
        pipe.inbound.resume();
        pipe.outbound.resume();
      }
    }
  }

  /** Resets every connection on the link (both ends see ECONNRESET); the peers redial. */
  resetAll(): number {
    const count = this.pipes.size;
    for (const pipe of [...this.pipes]) this.drop(pipe, true);
    this.counts.reset += count;
    return count;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const pipe of [...this.pipes]) this.drop(pipe, true);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(inbound: Socket): void {
    if (this.closed || this.pipes.size >= this.connectionsMax) {
      inbound.resetAndDestroy();
      return;
    }
    this.counts.accepted += 1;
    const pipe: Pipe = { inbound, outbound: null };
    this.pipes.add(pipe);
    inbound.setNoDelay(true);
    inbound.on('error', () => this.drop(pipe, true));
    inbound.on('close', () => this.drop(pipe, false));
    if (this.mode === 'open') this.connect(pipe);
  }

  private connect(pipe: Pipe): void {
    const outbound = createConnection({ host: '127.0.0.1', port: this.targetPort });
    pipe.outbound = outbound;
    outbound.setNoDelay(true);
    outbound.on('error', () => this.drop(pipe, true));
    outbound.on('close', () => this.drop(pipe, false));
    this.forward(pipe.inbound, outbound);
    this.forward(outbound, pipe.inbound);
    outbound.on('connect', () => {
      if (this.mode === 'open') pipe.inbound.resume();
      else outbound.pause();
    });
  }

  /** Copies `from` to `to`, with back-pressure (a paused side stays paused while the link is blackholed). */
  private forward(from: Socket, to: Socket): void {
    from.on('data', (chunk: Buffer) => {
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => {
          if (this.mode === 'open') from.resume();
        });
      }
    });
    from.on('end', () => to.end());
  }

  private drop(pipe: Pipe, reset: boolean): void {
    if (!this.pipes.delete(pipe)) return;
    for (const socket of [pipe.inbound, pipe.outbound]) {
      if (socket === null || socket.destroyed) continue;
      if (reset) socket.resetAndDestroy();
      else socket.destroy();
    }
  }
}
