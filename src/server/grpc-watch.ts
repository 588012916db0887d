// One etcd Watch stream over gRPC: the client's requests (create, cancel,
// progress) come in on the stream, in order, one at a time; each watch it
// creates is a raftkv Watch pumped into the outgoing side with etcd's
// watch ids, created / canceled flags and compact revision. A watch's
// responses wait for the stream to drain before the next is read from
// raftkv, so a slow client costs one bounded watch buffer, then nothing.

import { once } from 'node:events';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import createDebug from 'debug';
import { RaftKVError } from '../raft/errors.ts';
import type { Watch, WatchFilter } from './watch.ts';
import type { RaftKV } from './raftkv.ts';
import { boolOf, bytesOf, eventMessage, grpcErrorOf, int64Of, type Header, type Message } from './grpc-codec.ts';

const log = createDebug('raftkv:grpc');

export interface WatchStreamLimits {
  /** Watches open on one stream at most; a create beyond is answered created + canceled. */
  readonly watchesMax: number;
}

type WatchStore = Pick<RaftKV, 'watch'>;
type Stream = ServerDuplexStream<Message, unknown>;

const FILTERS: Readonly<Record<string, WatchFilter>> = { NOPUT: 'noPut', NODELETE: 'noDelete' };

class WatchStream {
  private readonly watches = new Map<number, Watch>();
  private nextWatchId = 0;
  private closed = false;

  constructor(
    private readonly stream: Stream,
    private readonly store: WatchStore,
    private readonly header: (revision: number) => Promise<Header>,
    private readonly limits: WatchStreamLimits,
  ) {}

  /** Reads requests until the call ends (the client cancels, the stream fails, the gateway closes), then cancels every watch. */
  async serve(): Promise<void> {
    // As in etcd, a client that half-closes (ends its requests) keeps its watches until the call ends.
    const ended = new Promise<void>((resolve) => {
      for (const event of ['cancelled', 'close', 'error', 'finish']) this.stream.once(event, () => resolve());
    });
    this.stream.on('error', (error: Error) => log('watch stream error: %s', error.message));
    try {
      // destroyOnReturn false: the end of the requests (a half-close) must not tear down the responses.
      for await (const request of this.stream.iterator({ destroyOnReturn: false }) as AsyncIterable<Message>) {
        if (this.closed) break;
        await this.handle(request);
      }
      await ended;
    } catch (error) {
      log('watch stream ended: %s', (error as Error).message);
    } finally {
      this.closed = true;
      for (const watch of this.watches.values()) watch.cancel();
      this.watches.clear();
      if (!this.stream.writableEnded && !this.stream.destroyed) this.stream.end();
    }
  }

  private async handle(request: Message): Promise<void> {
    if (isSet(request.create_request)) await this.create(request.create_request as Message);
    else if (isSet(request.cancel_request)) await this.cancel(int64Of(request.cancel_request as Message, 'watch_id'));
    else if (isSet(request.progress_request)) {
      // Per watch, so no notification reports a revision below events still queued for it.
      for (const watch of this.watches.values()) watch.requestProgress();
    }
  }

  private async create(request: Message): Promise<void> {
    let watchId = int64Of(request, 'watch_id');
    if (watchId === 0) {
      while (this.watches.has(this.nextWatchId)) this.nextWatchId++;
      watchId = this.nextWatchId++;
    }
    if (this.watches.has(watchId) || watchId < 0) {
      await this.refuse(watchId, 'mvcc: duplicate watch ID provided on the WatchStream');
      return;
    }
    if (this.watches.size >= this.limits.watchesMax) {
      await this.refuse(watchId, `etcdserver: too many watches on one stream (at most ${this.limits.watchesMax})`);
      return;
    }
    let watch: Watch;
    try {
      watch = this.openWatch(request);
    } catch (error) {
      await this.send({ header: await this.header(0), watch_id: watchId, created: true });
      await this.failed(watchId, error);
      return;
    }
    this.watches.set(watchId, watch);
    await this.send({ header: await this.header(0), watch_id: watchId, created: true });
    void this.pump(watchId, watch);
  }

  private openWatch(request: Message): Watch {
    const rangeEnd = bytesOf(request, 'range_end');
    const startRevision = int64Of(request, 'start_revision');
    const filters = (Array.isArray(request.filters) ? (request.filters as unknown[]) : []).map((name) => FILTERS[String(name)]);
    if (filters.some((filter) => filter === undefined)) throw new RaftKVError('RAFTKV_INVALID_ARGUMENT', 'unknown watch filter');
    return this.store.watch({
      key: bytesOf(request, 'key'),
      ...(rangeEnd.length > 0 ? { rangeEnd } : {}),
      ...(startRevision > 0 ? { startRevision } : {}),
      ...(boolOf(request, 'prev_kv') ? { prevKv: true } : {}),
      ...(boolOf(request, 'progress_notify') ? { progressNotify: true } : {}),
      ...(filters.length > 0 ? { filters: filters as WatchFilter[] } : {}),
    });
  }

  /** Moves one watch's responses to the client, waiting for the stream to drain between them. */
  private async pump(watchId: number, watch: Watch): Promise<void> {
    try {
      for await (const response of watch) {
        if (this.watches.get(watchId) !== watch || this.closed) return;
        await this.send({ header: await this.header(response.revision), watch_id: watchId, events: response.events.map(eventMessage) });
      }
    } catch (error) {
      if (this.watches.get(watchId) !== watch || this.closed) return;
      this.watches.delete(watchId);
      await this.failed(watchId, error).catch(() => undefined);
    }
  }

  /** A watch that cannot go on: compacted (etcd sets compact_revision), or another failure (cancel_reason). */
  private async failed(watchId: number, error: unknown): Promise<void> {
    if (error instanceof RaftKVError && error.code === 'RAFTKV_COMPACTED') {
      const compactRevision = (error as RaftKVError & { compactRevision?: number }).compactRevision ?? 0;
      await this.send({ header: await this.header(0), watch_id: watchId, canceled: true, compact_revision: Math.max(compactRevision, 1) });
      return;
    }
    await this.refuse(watchId, grpcErrorOf(error).message, false);
  }

  private async refuse(watchId: number, reason: string, created = true): Promise<void> {
    await this.send({ header: await this.header(0), watch_id: watchId, created, canceled: true, cancel_reason: reason });
  }

  private async cancel(watchId: number): Promise<void> {
    const watch = this.watches.get(watchId);
    if (watch === undefined) return;
    this.watches.delete(watchId);
    watch.cancel();
    await this.send({ header: await this.header(0), watch_id: watchId, canceled: true });
  }

  private async send(message: Record<string, unknown>): Promise<void> {
    if (this.closed || this.stream.writableEnded || this.stream.destroyed) return;
    if (!this.stream.write(message)) await Promise.race([once(this.stream, 'drain'), once(this.stream, 'close')]);
  }
}

function isSet(value: unknown): boolean {
  return value !== undefined && value !== null;
}

/** Serves one Watch call until it ends. */
export function serveWatchStream(
  stream: Stream,
  store: WatchStore,
  header: (revision: number) => Promise<Header>,
  limits: WatchStreamLimits,
): Promise<void> {
  return new WatchStream(stream, store, header, limits).serve();
}
