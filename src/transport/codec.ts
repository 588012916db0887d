// How Raft messages cross a transport: a frame is one version byte and the
// messages packed by hand (every put crosses twice per follower, so the
// encoding is on the write path; msgpack with its intermediate arrays cost
// several percent of it). Decoding checks every field, so a malformed frame
// from the wire is refused as a whole with a typed error and never reaches
// the Raft core. Entry data and contexts are views into the frame.
//
// frame    := version u8 (2) | count u32 | message*
// message  := type u8 | from f64 | to f64 | term f64 | logTerm f64 |
//             index f64 | commit f64 | reject u8 | rejectHint f64 |
//             context bytes | snapshot u8 (0 none, 1 present) [metadata] |
//             entry count u32 | entry*
// metadata := index f64 | term f64 | voters ids | learners ids |
//             votersOutgoing ids | learnersNext ids | autoLeave u8
// ids      := count u32 | f64*
// entry    := term f64 | index f64 | type u8 | data bytes
// bytes    := length u32 | byte*

import { RaftKVError } from '../raft/errors.ts';
import { EntryType, MessageType } from '../raft/types.ts';
import type { ConfState, Entry, Message, SnapshotMetadata } from '../raft/types.ts';

export const FRAME_VERSION = 2;

/** A frame that cannot be decoded; the connection that sent it should be closed. */
export class MalformedFrameError extends RaftKVError {
  constructor(message: string) {
    super('RAFTKV_MALFORMED_FRAME', message);
  }
}

const MESSAGE_FIXED_BYTES = 1 + 8 * 6 + 1 + 8 + 4 + 1 + 4;
const ENTRY_FIXED_BYTES = 8 + 8 + 1 + 4;

function idsBytes(ids: readonly number[]): number {
  return 4 + 8 * ids.length;
}

function messageBytes(message: Message): number {
  let size = MESSAGE_FIXED_BYTES + message.context.length;
  const snapshot = message.snapshot;
  if (snapshot !== null) {
    const conf = snapshot.confState;
    size += 16 + idsBytes(conf.voters) + idsBytes(conf.learners) + idsBytes(conf.votersOutgoing) + idsBytes(conf.learnersNext) + 1;
  }
  for (const entry of message.entries) size += ENTRY_FIXED_BYTES + entry.data.length;
  return size;
}

class Writer {
  offset = 0;
  readonly view: DataView;
  constructor(readonly out: Uint8Array) {
    this.view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  }
  u8(value: number): void {
    this.out[this.offset++] = value;
  }
  u32(value: number): void {
    this.view.setUint32(this.offset, value);
    this.offset += 4;
  }
  f64(value: number): void {
    this.view.setFloat64(this.offset, value);
    this.offset += 8;
  }
  bytes(value: Uint8Array): void {
    this.u32(value.length);
    this.out.set(value, this.offset);
    this.offset += value.length;
  }
  ids(value: readonly number[]): void {
    this.u32(value.length);
    for (const id of value) this.f64(id);
  }
}

export function encodeMessages(messages: readonly Message[]): Uint8Array {
  let size = 1 + 4;
  for (const message of messages) size += messageBytes(message);
  const writer = new Writer(new Uint8Array(size));
  writer.u8(FRAME_VERSION);
  writer.u32(messages.length);
  for (const message of messages) {
    writer.u8(message.type);
    writer.f64(message.from);
    writer.f64(message.to);
    writer.f64(message.term);
    writer.f64(message.logTerm);
    writer.f64(message.index);
    writer.f64(message.commit);
    writer.u8(message.reject ? 1 : 0);
    writer.f64(message.rejectHint);
    writer.bytes(message.context);
    const snapshot = message.snapshot;
    if (snapshot === null) {
      writer.u8(0);
    } else {
      writer.u8(1);
      writer.f64(snapshot.index);
      writer.f64(snapshot.term);
      writer.ids(snapshot.confState.voters);
      writer.ids(snapshot.confState.learners);
      writer.ids(snapshot.confState.votersOutgoing);
      writer.ids(snapshot.confState.learnersNext);
      writer.u8(snapshot.confState.autoLeave ? 1 : 0);
    }
    writer.u32(message.entries.length);
    for (const entry of message.entries) {
      writer.f64(entry.term);
      writer.f64(entry.index);
      writer.u8(entry.type);
      writer.bytes(entry.data);
    }
  }
  return writer.out;
}

function integer(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new MalformedFrameError(`${what} is not a non-negative integer`);
  return value;
}

const MESSAGE_TYPES = new Set<number>(Object.values(MessageType));
const ENTRY_TYPES = new Set<number>(Object.values(EntryType));

function messageType(value: unknown): MessageType {
  const type = integer(value, 'message type');
  if (!MESSAGE_TYPES.has(type)) throw new MalformedFrameError(`unknown message type ${type}`);
  return type as MessageType;
}

function entryType(value: unknown): EntryType {
  const type = integer(value, 'entry type');
  if (!ENTRY_TYPES.has(type)) throw new MalformedFrameError(`unknown entry type ${type}`);
  return type as EntryType;
}

class Reader {
  offset = 0;
  readonly view: DataView;
  constructor(readonly frame: Uint8Array) {
    this.view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  }
  need(count: number, what: string): void {
    if (this.offset + count > this.frame.length) throw new MalformedFrameError(`frame ends inside ${what}`);
  }
  u8(what: string): number {
    this.need(1, what);
    return this.frame[this.offset++] as number;
  }
  u32(what: string): number {
    this.need(4, what);
    const value = this.view.getUint32(this.offset);
    this.offset += 4;
    return value;
  }
  integer(what: string): number {
    this.need(8, what);
    const value = this.view.getFloat64(this.offset);
    this.offset += 8;
    return integer(value, what);
  }
  flag(what: string): boolean {
    const value = this.u8(what);
    if (value > 1) throw new MalformedFrameError(`${what} is not 0 or 1`);
    return value === 1;
  }
  bytes(what: string): Uint8Array {
    const length = this.u32(what);
    this.need(length, what);
    const value = this.frame.subarray(this.offset, this.offset + length);
    this.offset += length;
    return value;
  }
  ids(what: string): number[] {
    const count = this.u32(what);
    this.need(count * 8, what);
    const ids: number[] = [];
    for (let i = 0; i < count; i++) ids.push(this.integer(what));
    return ids;
  }
}

function readSnapshot(reader: Reader): SnapshotMetadata | null {
  if (!reader.flag('snapshot presence')) return null;
  const index = reader.integer('snapshot index');
  const term = reader.integer('snapshot term');
  const confState: ConfState = {
    voters: reader.ids('voters'),
    learners: reader.ids('learners'),
    votersOutgoing: reader.ids('outgoing voters'),
    learnersNext: reader.ids('next learners'),
    autoLeave: reader.flag('autoLeave'),
  };
  return { index, term, confState };
}

function readMessage(reader: Reader): Message {
  const type = messageType(reader.u8('message type'));
  const from = reader.integer('from');
  const to = reader.integer('to');
  const term = reader.integer('term');
  const logTerm = reader.integer('logTerm');
  const index = reader.integer('index');
  const commit = reader.integer('commit');
  const reject = reader.flag('reject');
  const rejectHint = reader.integer('rejectHint');
  const context = reader.bytes('context');
  const snapshot = readSnapshot(reader);
  const count = reader.u32('entry count');
  reader.need(count * ENTRY_FIXED_BYTES, 'entries');
  const entries: Entry[] = [];
  for (let i = 0; i < count; i++) {
    const entryTerm = reader.integer('entry term');
    const entryIndex = reader.integer('entry index');
    const kind = entryType(reader.u8('entry type'));
    entries.push({ term: entryTerm, index: entryIndex, type: kind, data: reader.bytes('entry data') });
  }
  return { type, from, to, term, logTerm, index, entries, commit, reject, rejectHint, snapshot, context };
}

/** Decodes a frame; throws MalformedFrameError on anything but a well-formed frame of this version. */
export function decodeMessages(frame: Uint8Array): Message[] {
  if (frame.length < 5) throw new MalformedFrameError('frame too short');
  if (frame[0] !== FRAME_VERSION) throw new MalformedFrameError(`unsupported frame version ${frame[0]}`);
  const reader = new Reader(frame);
  reader.offset = 1;
  const count = reader.u32('message count');
  reader.need(count * MESSAGE_FIXED_BYTES, 'messages');
  const messages: Message[] = [];
  for (let i = 0; i < count; i++) messages.push(readMessage(reader));
  if (reader.offset !== frame.length) throw new MalformedFrameError(`${frame.length - reader.offset} bytes after the last message`);
  return messages;
}
