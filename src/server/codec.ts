// How the node's requests travel inside Raft log entries: a proposal is the
// proposing node's id, a per-node sequence number (to find the waiting
// caller when the entry is applied) and the state-machine request, packed
// with msgpackr. Decoding is strict: an entry that does not decode stops the
// node (it was written by a node of ours, so it is corruption, not input).

import { Packr } from 'msgpackr';
import { assert } from '../raft/errors.ts';

const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

export interface Proposal<Request> {
  readonly node: number;
  readonly sequence: number;
  readonly request: Request;
}

export function encodeProposal<Request>(proposal: Proposal<Request>): Uint8Array {
  return packr.pack([proposal.node, proposal.sequence, proposal.request]);
}

export function decodeProposal<Request>(data: Uint8Array): Proposal<Request> {
  const decoded: unknown = packr.unpack(data);
  assert(Array.isArray(decoded) && decoded.length === 3, 'log entry is not a proposal');
  const [node, sequence, request] = decoded as [unknown, unknown, Request];
  assert(Number.isSafeInteger(node) && Number.isSafeInteger(sequence), 'proposal id is not a pair of integers');
  return { node: node as number, sequence: sequence as number, request };
}
