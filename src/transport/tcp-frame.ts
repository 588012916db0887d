// The TCP transport's framing: every frame is a 4-byte big-endian length,
// then a protocol version byte, a kind byte and the body (length counts the
// version, kind and body bytes). The reader refuses a frame over its size
// limit before buffering it, and a frame of another version, with a typed
// error: the connection that sent it is closed, the node never sees it.

import { Packr } from 'msgpackr';
import { assert } from '../raft/errors.ts';
import type { NodeId } from '../raft/types.ts';
import { MalformedFrameError } from './codec.ts';

export const TCP_PROTOCOL_VERSION = 1;

export const FrameKind = {
  /** Client → server, first frame: [from, to, purpose]. */
  Hello: 1,
  /** Server → client: the hello was accepted. */
  HelloOk: 2,
  /** Server → client: the hello was refused; the body says why (UTF-8). */
  Refused: 3,
  /** Client → server: a batch of Raft messages (the codec's frame). */
  Messages: 4,
  /** Client → server: a snapshot's Snap message (the codec's frame of one message). */
  SnapshotBegin: 5,
  /** Client → server: one snapshot chunk, raw bytes. */
  SnapshotChunk: 6,
  /** Client → server: the last chunk was sent. */
  SnapshotEnd: 7,
  /** Client → server: the source failed; the body says why. Never a whole snapshot. */
  SnapshotAbort: 8,
  /** Server → client: the receiver took chunks off its queue; body: 4-byte count. */
  SnapshotCredit: 9,
  /** Server → client: the receiver finished; an empty body is success, otherwise the error. */
  SnapshotDone: 10,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

/** What a connection carries, named in its hello. */
export const Purpose = { Messages: 0, Snapshot: 1 } as const;
export type Purpose = (typeof Purpose)[keyof typeof Purpose];

export const FRAME_HEADER_BYTES = 6;
/** Frames a connection accepts before it is authenticated (hello, refusals, credits) are tiny. */
export const CONTROL_FRAME_BYTES_MAX = 4096;

const KINDS = new Set<number>(Object.values(FrameKind));
const packr = new Packr({ useRecords: false, moreTypes: false });

export interface Frame {
  readonly kind: FrameKind;
  readonly body: Buffer;
}

/** The 6 bytes in front of a body of `bodyBytes`. */
export function frameHeader(kind: FrameKind, bodyBytes: number): Buffer {
  assert(Number.isSafeInteger(bodyBytes) && bodyBytes >= 0 && bodyBytes + 2 <= 0xffff_ffff, 'frame body size out of range');
  const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  header.writeUInt32BE(bodyBytes + 2, 0);
  header[4] = TCP_PROTOCOL_VERSION;
  header[5] = kind;
  return header;
}

export interface Hello {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly purpose: Purpose;
}

export function encodeHello(hello: Hello): Buffer {
  return packr.pack([hello.from, hello.to, hello.purpose]);
}

function memberId(value: unknown, what: string): NodeId {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) throw new MalformedFrameError(`${what} is not a member id`);
  return value;
}

export function decodeHello(body: Uint8Array): Hello {
  let decoded: unknown;
  try {
    decoded = packr.unpack(body);
  } catch (error) {
    throw new MalformedFrameError(`hello does not decode: ${(error as Error).message}`);
  }
  if (!Array.isArray(decoded) || decoded.length !== 3) throw new MalformedFrameError('hello is not [from, to, purpose]');
  const purpose = decoded[2];
  if (purpose !== Purpose.Messages && purpose !== Purpose.Snapshot) throw new MalformedFrameError(`unknown connection purpose ${String(purpose)}`);
  return { from: memberId(decoded[0], 'hello sender'), to: memberId(decoded[1], 'hello receiver'), purpose };
}

/**
 * Cuts a byte stream into frames. Chunks are kept as received and joined
 * once per frame, so a large frame arriving in many pieces is copied once.
 */
export class FrameReader {
  private readonly pieces: Buffer[] = [];
  private bufferedBytes = 0;
  /** Total size (header included) of the frame being read; 0 before its length is known. */
  private frameBytes = 0;

  constructor(private frameBytesMax: number) {
    assert(Number.isSafeInteger(frameBytesMax) && frameBytesMax >= 2, 'frameBytesMax must allow a header');
  }

  /** Raises or lowers the limit (after authentication a connection may send full frames). */
  setLimit(frameBytesMax: number): void {
    assert(Number.isSafeInteger(frameBytesMax) && frameBytesMax >= 2, 'frameBytesMax must allow a header');
    this.frameBytesMax = frameBytesMax;
  }

  /** Bytes received and not yet returned as a frame. */
  get pendingBytes(): number {
    return this.bufferedBytes;
  }

  /** Adds received bytes; returns the frames they complete. Throws MalformedFrameError on a bad frame. */
  push(data: Buffer): Frame[] {
    if (data.length > 0) {
      this.pieces.push(data);
      this.bufferedBytes += data.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.frameBytes === 0) {
        if (this.bufferedBytes < 4) break;
        const length = this.peekLength();
        if (length < 2) throw new MalformedFrameError(`frame length ${length} is below the header size`);
        if (length > this.frameBytesMax) throw new MalformedFrameError(`frame of ${length} bytes is over the limit of ${this.frameBytesMax}`);
        this.frameBytes = 4 + length;
      }
      if (this.bufferedBytes < this.frameBytes) break;
      const whole = this.take(this.frameBytes);
      this.frameBytes = 0;
      if (whole[4] !== TCP_PROTOCOL_VERSION) throw new MalformedFrameError(`unsupported protocol version ${String(whole[4])}`);
      const kind = whole[5] as number;
      if (!KINDS.has(kind)) throw new MalformedFrameError(`unknown frame kind ${kind}`);
      frames.push({ kind: kind as FrameKind, body: whole.subarray(FRAME_HEADER_BYTES) });
    }
    return frames;
  }

  /** The 4-byte length at the front, which may straddle pieces (nothing is consumed). */
  private peekLength(): number {
    const first = this.pieces[0] as Buffer;
    if (first.length >= 4) return first.readUInt32BE(0);
    const bytes = Buffer.allocUnsafe(4);
    let filled = 0;
    for (const piece of this.pieces) {
      filled += piece.copy(bytes, filled, 0, Math.min(piece.length, 4 - filled));
      if (filled === 4) break;
    }
    return bytes.readUInt32BE(0);
  }

  /** Removes and returns the first `bytes` buffered bytes (a view when they lie in one piece). */
  private take(bytes: number): Buffer {
    const first = this.pieces[0] as Buffer;
    let result: Buffer;
    if (first.length >= bytes) {
      result = first.subarray(0, bytes);
      if (first.length === bytes) this.pieces.shift();
      else this.pieces[0] = first.subarray(bytes);
    } else {
      result = Buffer.allocUnsafe(bytes);
      let filled = 0;
      while (filled < bytes) {
        const piece = this.pieces[0] as Buffer;
        const used = Math.min(piece.length, bytes - filled);
        piece.copy(result, filled, 0, used);
        filled += used;
        if (used === piece.length) this.pieces.shift();
        else this.pieces[0] = piece.subarray(used);
      }
    }
    this.bufferedBytes -= bytes;
    return result;
  }
}
