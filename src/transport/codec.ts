// How Raft messages cross a transport: a frame is one version byte and a
// msgpack array of messages. Decoding checks every field's type, so a
// malformed frame from the wire is refused as a whole with a typed error and
// never reaches the Raft core.

import { Packr } from 'msgpackr';
import { RaftKVError } from '../raft/errors.ts';
import { EntryType, MessageType } from '../raft/types.ts';
import type { ConfState, Entry, Message, SnapshotMetadata } from '../raft/types.ts';

export const FRAME_VERSION = 1;
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

/** A frame that cannot be decoded; the connection that sent it should be closed. */
export class MalformedFrameError extends RaftKVError {
  constructor(message: string) {
    super('RAFTKV_MALFORMED_FRAME', message);
  }
}

function entryToWire(entry: Entry): unknown[] {
  return [entry.term, entry.index, entry.type, entry.data];
}

function messageToWire(message: Message): unknown[] {
  const snapshot = message.snapshot;
  return [
    message.type,
    message.from,
    message.to,
    message.term,
    message.logTerm,
    message.index,
    message.entries.map(entryToWire),
    message.commit,
    message.reject ? 1 : 0,
    message.rejectHint,
    snapshot === null
      ? null
      : [
          snapshot.index,
          snapshot.term,
          snapshot.confState.voters,
          snapshot.confState.learners,
          snapshot.confState.votersOutgoing,
          snapshot.confState.learnersNext,
          snapshot.confState.autoLeave ? 1 : 0,
        ],
    message.context,
  ];
}

export function encodeMessages(messages: readonly Message[]): Uint8Array {
  const body = packr.pack(messages.map(messageToWire));
  const frame = new Uint8Array(body.length + 1);
  frame[0] = FRAME_VERSION;
  frame.set(body, 1);
  return frame;
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

function bytes(value: unknown, what: string): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new MalformedFrameError(`${what} is not bytes`);
  return value;
}

function ids(value: unknown, what: string): number[] {
  if (!Array.isArray(value)) throw new MalformedFrameError(`${what} is not a list`);
  return value.map((id) => integer(id, what));
}

function list(value: unknown, length: number, what: string): unknown[] {
  if (!Array.isArray(value) || value.length !== length) throw new MalformedFrameError(`${what} is malformed`);
  return value;
}

function snapshotFromWire(value: unknown): SnapshotMetadata | null {
  if (value === null) return null;
  const [index, term, voters, learners, votersOutgoing, learnersNext, autoLeave] = list(value, 7, 'snapshot metadata');
  const confState: ConfState = {
    voters: ids(voters, 'voters'),
    learners: ids(learners, 'learners'),
    votersOutgoing: ids(votersOutgoing, 'outgoing voters'),
    learnersNext: ids(learnersNext, 'next learners'),
    autoLeave: integer(autoLeave, 'autoLeave') === 1,
  };
  return { index: integer(index, 'snapshot index'), term: integer(term, 'snapshot term'), confState };
}

function messageFromWire(value: unknown): Message {
  const fields = list(value, 12, 'message');
  const entries = fields[6];
  if (!Array.isArray(entries)) throw new MalformedFrameError('entries is not a list');
  return {
    type: messageType(fields[0]),
    from: integer(fields[1], 'from'),
    to: integer(fields[2], 'to'),
    term: integer(fields[3], 'term'),
    logTerm: integer(fields[4], 'logTerm'),
    index: integer(fields[5], 'index'),
    entries: entries.map((entry) => {
      const [term, index, type, data] = list(entry, 4, 'entry');
      return { term: integer(term, 'entry term'), index: integer(index, 'entry index'), type: entryType(type), data: bytes(data, 'entry data') };
    }),
    commit: integer(fields[7], 'commit'),
    reject: integer(fields[8], 'reject') === 1,
    rejectHint: integer(fields[9], 'rejectHint'),
    snapshot: snapshotFromWire(fields[10]),
    context: bytes(fields[11], 'context'),
  };
}

/** Decodes a frame; throws MalformedFrameError on anything but a well-formed frame of this version. */
export function decodeMessages(frame: Uint8Array): Message[] {
  if (frame.length < 2) throw new MalformedFrameError('frame too short');
  if (frame[0] !== FRAME_VERSION) throw new MalformedFrameError(`unsupported frame version ${frame[0]}`);
  let decoded: unknown;
  try {
    decoded = packr.unpack(frame.subarray(1));
  } catch (error) {
    throw new MalformedFrameError(`frame body does not decode: ${(error as Error).message}`);
  }
  if (!Array.isArray(decoded)) throw new MalformedFrameError('frame body is not a list of messages');
  return decoded.map(messageFromWire);
}
