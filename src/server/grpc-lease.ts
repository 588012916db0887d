// etcd's Lease service for the gRPC gateway: LeaseGrant, LeaseRevoke,
// LeaseTimeToLive, LeaseLeases (unary) and LeaseKeepAlive (a bidirectional
// stream answering each request in order, as etcd does: the granted TTL, or
// TTL 0 once the lease is gone). Lease ids are int64 on the wire and
// positive safe integers in raftkv: an id raftkv can never have granted
// (0, negative, 2^53 or more) is a lease that does not exist — not found
// for revoke, TTL 0 for a keep-alive, TTL -1 for time-to-live, exactly as
// etcd answers for a missing lease — and a grant that asks for one is
// refused with INVALID_ARGUMENT.

import { status as GrpcStatus, type ServerDuplexStream } from '@grpc/grpc-js';
import createDebug from 'debug';
import { RaftKVError } from '../raft/errors.ts';
import { LEASE_TTL_SECONDS_MAX } from '../storage/mvcc/validate.ts';
import { GrpcCallError, boolOf, grpcErrorOf, type Header, type Message } from './grpc-codec.ts';
import type { RaftKV } from './raftkv.ts';

const log = createDebug('raftkv:grpc');

/** What the Lease service needs of a member (RaftKV fits). */
export type LeaseStore = Pick<RaftKV, 'grant' | 'revoke' | 'keepAliveOnce' | 'timeToLive' | 'leases'>;

type HeaderOf = (revision: number) => Promise<Header>;

export const LEASE_NOT_FOUND = (): GrpcCallError => new GrpcCallError(GrpcStatus.NOT_FOUND, 'etcdserver: requested lease not found');
export const LEASE_TTL_TOO_LARGE = (): GrpcCallError => new GrpcCallError(GrpcStatus.OUT_OF_RANGE, 'etcdserver: too large lease TTL');

/** The largest lease id raftkv grants (its ids are JavaScript safe integers). */
export const LEASE_ID_MAX = Number.MAX_SAFE_INTEGER;

/**
 * An int64 lease id from the wire (a decimal string from proto-loader, or a
 * number) as raftkv's id, or null when it is outside 1..2^53-1, so no lease
 * can have it. Any decimal of 2^53 or more parses to an unsafe number.
 */
export function storedLeaseIdOf(message: Message, field = 'ID'): number | null {
  const value = message[field];
  const number = typeof value === 'string' && /^-?\d{1,20}$/.test(value) ? Number(value) : value;
  if (typeof number !== 'number' || !Number.isSafeInteger(number) || number < 1) return null;
  return number;
}

/** The wire id to echo back: as the client sent it (exact even beyond 2^53). */
function wireIdOf(message: Message): string | number {
  const value = message.ID;
  return typeof value === 'string' || typeof value === 'number' ? value : 0;
}

/** A grant's TTL: etcd raises anything below the minimum (0 and negatives too) and refuses more than 9,000,000,000 s. */
function grantTtlOf(message: Message): number {
  const value = message.TTL;
  const ttl = typeof value === 'string' ? Number(value) : typeof value === 'number' ? value : 0;
  if (Number.isNaN(ttl)) throw new GrpcCallError(GrpcStatus.INVALID_ARGUMENT, 'etcdserver: TTL must be an integer');
  if (ttl > LEASE_TTL_SECONDS_MAX) throw LEASE_TTL_TOO_LARGE();
  // raftkv raises a TTL of 1 to its minimum, as etcd raises anything below its own.
  return ttl < 1 ? 1 : Math.floor(ttl);
}

function isLeaseNotFound(error: unknown): boolean {
  return error instanceof RaftKVError && error.code === 'RAFTKV_LEASE_NOT_FOUND';
}

/** The unary Lease methods, by name. */
export function leaseMethods(store: LeaseStore, header: HeaderOf): Readonly<Record<string, (request: Message) => Promise<unknown>>> {
  return {
    LeaseGrant: async (request) => {
      const ttl = grantTtlOf(request);
      const wanted = wireIdOf(request);
      let id: number | undefined;
      if (wanted !== 0 && wanted !== '0') {
        const stored = storedLeaseIdOf(request);
        if (stored === null) throw new GrpcCallError(GrpcStatus.INVALID_ARGUMENT, `etcdserver: raftkv lease ids are from 1 to ${LEASE_ID_MAX}; ${String(wanted)} is not`);
        id = stored;
      }
      const granted = await store.grant(ttl, id).catch((error: unknown) => {
        // raftkv bounds its lease table (leasesMax); etcd has no such limit, so no message of its own.
        if (error instanceof RaftKVError && error.code === 'RAFTKV_TOO_MANY_LEASES') throw new GrpcCallError(GrpcStatus.RESOURCE_EXHAUSTED, `etcdserver: ${error.message}`);
        throw error;
      });
      return { header: await header(0), ID: granted.id, TTL: granted.ttlSeconds, error: '' };
    },
    LeaseRevoke: async (request) => {
      const id = storedLeaseIdOf(request);
      if (id === null) throw LEASE_NOT_FOUND();
      const result = await store.revoke(id);
      return { header: await header(result.revision) };
    },
    LeaseTimeToLive: async (request) => {
      const id = storedLeaseIdOf(request);
      const gone = async (): Promise<unknown> => ({ header: await header(0), ID: wireIdOf(request), TTL: -1 });
      if (id === null) return gone();
      try {
        const lease = await store.timeToLive(id, { keys: boolOf(request, 'keys') });
        return {
          header: await header(0),
          ID: id,
          // etcd truncates the remaining duration to whole seconds.
          TTL: Math.floor(Math.max(0, lease.remainingMs) / 1000),
          grantedTTL: lease.grantedTtlSeconds,
          keys: lease.keys ?? [],
        };
      } catch (error) {
        if (isLeaseNotFound(error)) return gone();
        throw error;
      }
    },
    LeaseLeases: async () => {
      const leases = await store.leases();
      return { header: await header(0), leases: leases.map((lease) => ({ ID: lease.id })) };
    },
  };
}

type Stream = ServerDuplexStream<Message, unknown>;

function drainedOrClosed(stream: Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/** Renewals one keep-alive stream has in flight at most (a client such as Go's clientv3 renews all its leases on one stream). */
export const RENEWALS_PER_STREAM_MAX = 32;

/** One request's answer: the lease's TTL, or 0 if it does not exist. */
async function renewal(request: Message, store: LeaseStore, header: HeaderOf): Promise<Message> {
  // The header is taken before the renewal, as etcd does: its revision is never above the renewal's.
  const response = { header: await header(0), ID: wireIdOf(request), TTL: 0 };
  const id = storedLeaseIdOf(request);
  if (id === null) return response;
  try {
    response.TTL = (await store.keepAliveOnce(id)).ttlSeconds;
  } catch (error) {
    if (!isLeaseNotFound(error)) throw error;
  }
  return response;
}

/**
 * Serves one LeaseKeepAlive stream: every request is answered with the
 * lease's TTL (0 if it does not exist), in the order the requests came, as
 * etcd does. Up to RENEWALS_PER_STREAM_MAX renewals (each a Raft entry) run
 * at once, so a stream carrying many leases is not one fsync per lease
 * behind; beyond that, and while the client does not read, requests wait.
 * The stream ends when the client ends its requests; any other failure ends
 * it with etcd's status.
 */
export async function serveLeaseKeepAliveStream(stream: Stream, store: LeaseStore, header: HeaderOf): Promise<void> {
  const writes = new Set<Promise<void>>();
  let lastWrite: Promise<void> = Promise.resolve();
  let failed = false;
  const fail = (error: unknown): void => {
    if (failed) return;
    failed = true;
    const failure = grpcErrorOf(error);
    log('lease keep-alive stream ended: %s', failure.message);
    if (!stream.destroyed && !stream.writableEnded) stream.emit('error', failure.toStatus());
  };
  try {
    // destroyOnReturn false: the end of the requests (a half-close) must not tear down the responses.
    for await (const request of stream.iterator({ destroyOnReturn: false }) as AsyncIterable<Message>) {
      const answer = renewal(request, store, header);
      answer.catch(() => undefined); // observed below, in order; a failure must not be "unhandled" meanwhile
      const write = lastWrite.then(async () => {
        const response = await answer;
        if (!stream.destroyed && !stream.writableEnded) stream.write(response);
      });
      lastWrite = write;
      writes.add(write);
      void write.then(
        () => writes.delete(write),
        (error: unknown) => {
          writes.delete(write);
          fail(error);
        },
      );
      if (writes.size >= RENEWALS_PER_STREAM_MAX) await Promise.race(writes);
      if (stream.writableNeedDrain) await drainedOrClosed(stream);
      if (failed || stream.destroyed || stream.writableEnded) break;
    }
    await lastWrite;
    if (!stream.destroyed && !stream.writableEnded) stream.end();
  } catch (error) {
    fail(error);
  }
}
