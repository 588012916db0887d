// The threaded bench target's client protocol: a batch of requests (or of
// replies) as one msgpack frame of tuples, sent over a MessagePort with its
// buffer transferred. A structured clone of one object per request, with a
// separate ArrayBuffer for each 256-byte value, cost the members more per
// put than an app calling its embedded member ever pays.

import { Packr } from 'msgpackr';

/** What the bench asks of a member. */
export type Operation =
  | { readonly op: 'put'; readonly key: string; readonly value: Uint8Array }
  | { readonly op: 'get'; readonly key: string; readonly serializable: boolean }
  | { readonly op: 'cas'; readonly key: string; readonly expected: Uint8Array | null; readonly value: Uint8Array }
  | { readonly op: 'status' }
  | { readonly op: 'close' };

/** An operation with the id its reply carries back. */
export type Request = Operation & { readonly id: number };

export type Reply = { readonly id: number; readonly ok: true; readonly result: unknown } | { readonly id: number; readonly ok: false; readonly code: string; readonly message: string };

const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

const PUT = 0;
const GET = 1;
const CAS = 2;
const STATUS = 3;
const CLOSE = 4;

/** Packs into a buffer of the frame's own, so the sender can transfer it. */
function frameOf(value: unknown): Uint8Array {
  return new Uint8Array(packr.pack(value));
}

export function encodeRequests(requests: readonly Request[]): Uint8Array {
  const tuples = requests.map((request): unknown[] => {
    switch (request.op) {
      case 'put':
        return [request.id, PUT, request.key, request.value];
      case 'get':
        return [request.id, GET, request.key, request.serializable];
      case 'cas':
        return [request.id, CAS, request.key, request.expected, request.value];
      case 'status':
        return [request.id, STATUS];
      case 'close':
        return [request.id, CLOSE];
    }
  });
  return frameOf(tuples);
}

export function decodeRequests(frame: Uint8Array): Request[] {
  const tuples = packr.unpack(frame) as unknown[][];
  return tuples.map((tuple): Request => {
    const id = tuple[0] as number;
    switch (tuple[1]) {
      case PUT:
        return { id, op: 'put', key: tuple[2] as string, value: tuple[3] as Uint8Array };
      case GET:
        return { id, op: 'get', key: tuple[2] as string, serializable: tuple[3] as boolean };
      case CAS:
        return { id, op: 'cas', key: tuple[2] as string, expected: tuple[3] as Uint8Array | null, value: tuple[4] as Uint8Array };
      case STATUS:
        return { id, op: 'status' };
      case CLOSE:
        return { id, op: 'close' };
      default:
        throw new Error(`unknown bench request kind ${String(tuple[1])}`);
    }
  });
}

export function encodeReplies(replies: readonly Reply[]): Uint8Array {
  return frameOf(replies.map((reply) => (reply.ok ? [reply.id, 1, reply.result] : [reply.id, 0, reply.code, reply.message])));
}

export function decodeReplies(frame: Uint8Array): Reply[] {
  const tuples = packr.unpack(frame) as unknown[][];
  return tuples.map((tuple): Reply => {
    const id = tuple[0] as number;
    return tuple[1] === 1 ? { id, ok: true, result: tuple[2] } : { id, ok: false, code: tuple[2] as string, message: tuple[3] as string };
  });
}
