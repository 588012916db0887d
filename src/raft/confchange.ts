// Membership changes with etcd's ConfChangeV2 semantics: a simple change
// (at most one voter added or removed) applies directly; anything else enters
// a joint configuration (old and new voters both decide) that is left
// automatically or by an explicit empty change. Also the pure binary codec of
// a ConfChange carried in a log entry.

import { assert, InvalidArgumentError } from './errors.ts';
import { ConfChangeTransition, ConfChangeType } from './types.ts';
import type { ConfChange, ConfState, NodeId } from './types.ts';

export function emptyConfState(): ConfState {
  return { voters: [], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
}

export function isJoint(conf: ConfState): boolean {
  return conf.votersOutgoing.length > 0;
}

/** Every member of the configuration (voters of both halves and learners). */
export function allMembers(conf: ConfState): NodeId[] {
  return [...new Set([...conf.voters, ...conf.votersOutgoing, ...conf.learners, ...conf.learnersNext])].sort((a, b) => a - b);
}

export function isVoter(conf: ConfState, id: NodeId): boolean {
  return conf.voters.includes(id) || conf.votersOutgoing.includes(id);
}

function validateChange(change: ConfChange): void {
  for (const single of change.changes) {
    if (!Number.isSafeInteger(single.nodeId) || single.nodeId <= 0) {
      throw new InvalidArgumentError(`conf change names an invalid node id ${String(single.nodeId)}`);
    }
    if (single.type !== ConfChangeType.AddVoter && single.type !== ConfChangeType.RemoveNode && single.type !== ConfChangeType.AddLearner) {
      throw new InvalidArgumentError(`unknown conf change type ${String(single.type)}`);
    }
  }
}

/** Applies the changes to one (incoming) half; returns new voters, learners, learnersNext. */
function applySingles(conf: ConfState, change: ConfChange, joint: boolean): { voters: Set<number>; learners: Set<number>; learnersNext: Set<number> } {
  const voters = new Set(conf.voters);
  const learners = new Set(conf.learners);
  const learnersNext = new Set(conf.learnersNext);
  const outgoing = new Set(joint ? conf.voters : conf.votersOutgoing);
  for (const { type, nodeId } of change.changes) {
    if (type === ConfChangeType.AddVoter) {
      learners.delete(nodeId);
      learnersNext.delete(nodeId);
      voters.add(nodeId);
    } else if (type === ConfChangeType.AddLearner) {
      voters.delete(nodeId);
      learners.delete(nodeId);
      learnersNext.delete(nodeId);
      // A voter of the outgoing half becomes a learner only once it is left.
      if (outgoing.has(nodeId)) learnersNext.add(nodeId);
      else learners.add(nodeId);
    } else {
      voters.delete(nodeId);
      learners.delete(nodeId);
      learnersNext.delete(nodeId);
    }
  }
  return { voters, learners, learnersNext };
}

const sorted = (set: Set<number>): number[] => [...set].sort((a, b) => a - b);

/**
 * The configuration after `change`. Throws InvalidArgumentError for a change
 * that is not allowed (the caller reports it; it is never a silent no-op).
 */
export function applyConfChange(conf: ConfState, change: ConfChange): ConfState {
  validateChange(change);
  if (change.changes.length === 0) {
    if (!isJoint(conf)) throw new InvalidArgumentError('cannot leave a joint configuration: not in one');
    const learners = new Set([...conf.learners, ...conf.learnersNext]);
    return { voters: [...conf.voters], learners: sorted(learners), votersOutgoing: [], learnersNext: [], autoLeave: false };
  }
  if (isJoint(conf)) throw new InvalidArgumentError('a joint configuration must be left before another change');
  const simple = change.transition === ConfChangeTransition.Auto && voterDifference(conf, change) <= 1;
  const next = applySingles(conf, change, !simple);
  if (next.voters.size === 0) throw new InvalidArgumentError('the change removes every voter');
  if (simple) {
    return { voters: sorted(next.voters), learners: sorted(next.learners), votersOutgoing: [], learnersNext: [], autoLeave: false };
  }
  return {
    voters: sorted(next.voters),
    learners: sorted(next.learners),
    votersOutgoing: [...conf.voters],
    learnersNext: sorted(next.learnersNext),
    autoLeave: change.transition !== ConfChangeTransition.JointExplicit,
  };
}

/** How many voters the change adds or removes (the symmetric difference). */
function voterDifference(conf: ConfState, change: ConfChange): number {
  const after = applySingles(conf, change, false).voters;
  let difference = 0;
  for (const id of after) if (!conf.voters.includes(id)) difference += 1;
  for (const id of conf.voters) if (!after.has(id)) difference += 1;
  return difference;
}

// ---- Codec: [version=1][transition][count u32] ([type][id f64])* [context length u32][context] ----

export function encodeConfChange(change: ConfChange): Uint8Array {
  const size = 1 + 1 + 4 + change.changes.length * 9 + 4 + change.context.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  out[at++] = 1;
  out[at++] = change.transition;
  view.setUint32(at, change.changes.length);
  at += 4;
  for (const single of change.changes) {
    out[at++] = single.type;
    view.setFloat64(at, single.nodeId);
    at += 8;
  }
  view.setUint32(at, change.context.length);
  at += 4;
  out.set(change.context, at);
  assert(at + change.context.length === size, 'conf change encoded to the wrong size');
  return out;
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  assert(data.length >= 10 && data[0] === 1, 'conf change entry has a bad header');
  const transition = data[1]! as ConfChange['transition'];
  const count = view.getUint32(2);
  assert(data.length >= 10 + count * 9, 'conf change entry is truncated');
  let at = 6;
  const changes: { type: ConfChangeType; nodeId: number }[] = [];
  for (let i = 0; i < count; i++) {
    const type = data[at]! as ConfChangeType;
    const nodeId = view.getFloat64(at + 1);
    changes.push({ type, nodeId });
    at += 9;
  }
  const contextLength = view.getUint32(at);
  at += 4;
  assert(at + contextLength === data.length, 'conf change entry has a bad context length');
  return { transition, changes, context: data.slice(at, at + contextLength) };
}
