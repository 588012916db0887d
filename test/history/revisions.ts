// Checks on revisions, beside the linearizability search: etcd gives every
// change one store-wide revision, so revisions order writes across keys.
// - Each change has its own revision.
// - Revisions follow real time: an operation that starts after another
//   completed sees at least that one's revision, and a write gets a larger one.
// - A value read names its write: it was written (by a write that did not fail
//   for sure), and its mod revision is that write's revision.
// - A read at a past revision sees the last write at or before it.
// - A read at a revision some completed operation already reported is not
//   "in the future".
// - A delete's count matches the previous value it reports.
// Values are unique per write, which is what makes the look-ups exact.

import type { Operation, Value } from './history.ts';
import { writtenValue } from './model.ts';

export interface RevisionViolation {
  readonly rule: string;
  readonly message: string;
  readonly operations: readonly Operation[];
}

/** Whether an ok operation created a revision (a change), and which. */
function createdRevision(operation: Operation): number | undefined {
  if (operation.outcome !== 'ok' || operation.output === undefined) return undefined;
  const { kind } = operation.input;
  const output = operation.output;
  if (kind === 'put') return output.revision;
  if (kind === 'cas' && output.succeeded === true) return output.revision;
  if (kind === 'delete' && output.value !== null && output.value !== undefined) return output.revision;
  return undefined;
}

/** The store revision an ok operation reports (historical reads report theirs, which is not "now"). */
function reportedRevision(operation: Operation): number | undefined {
  if (operation.outcome !== 'ok' || operation.input.kind === 'getAt') return undefined;
  return operation.output?.revision;
}

function distinctRevisions(operations: readonly Operation[], out: RevisionViolation[]): void {
  const byRevision = new Map<number, Operation>();
  for (const operation of operations) {
    const revision = createdRevision(operation);
    if (revision === undefined) continue;
    const other = byRevision.get(revision);
    if (other !== undefined) out.push({ rule: 'distinct-revisions', message: `two changes got revision ${revision}`, operations: [other, operation] });
    else byRevision.set(revision, operation);
  }
}

function realTimeOrder(operations: readonly Operation[], out: RevisionViolation[]): void {
  const completed = operations.filter((operation) => reportedRevision(operation) !== undefined).sort((left, right) => left.completedAt - right.completedAt);
  const invoked = [...operations].sort((left, right) => left.invokedAt - right.invokedAt);
  let position = 0;
  let highest: Operation | undefined;
  for (const operation of invoked) {
    while (position < completed.length && (completed[position] as Operation).completedAt < operation.invokedAt) {
      const candidate = completed[position] as Operation;
      if (highest === undefined || (reportedRevision(candidate) as number) > (reportedRevision(highest) as number)) highest = candidate;
      position += 1;
    }
    if (highest === undefined) continue;
    const floor = reportedRevision(highest) as number;
    if (operation.input.kind === 'getAt' && operation.outcome === 'fail' && operation.error === 'RAFTKV_FUTURE_REVISION' && operation.input.revision <= floor) {
      out.push({ rule: 'future-revision', message: `a read at revision ${operation.input.revision} was refused as "future" after revision ${floor} was reported`, operations: [highest, operation] });
    }
    const revision = reportedRevision(operation);
    if (revision === undefined) continue;
    const created = createdRevision(operation) !== undefined;
    if (revision < floor || (created && revision === floor)) {
      out.push({ rule: 'real-time-revisions', message: `revision ${revision} ${created ? 'is not above' : 'is below'} revision ${floor} of an operation that completed before this one began`, operations: [highest, operation] });
    }
  }
}

interface Writer {
  readonly operation: Operation;
}

/** Every observed (key, value) pair must come from a write that may have happened, with that write's revision. */
function valuesNameTheirWrites(operations: readonly Operation[], out: RevisionViolation[]): Map<string, Map<string, number>> {
  const writers = new Map<string, Writer>();
  for (const operation of operations) {
    const value = writtenValue(operation);
    if (value !== undefined) writers.set(`${operation.input.key}\u0000${value}`, { operation });
  }
  const learned = new Map<string, Map<string, number>>();
  const firstSeen = new Map<string, Operation>();
  const reported = new Set<string>();
  for (const operation of operations) {
    if (operation.outcome !== 'ok' || operation.output === undefined) continue;
    const { value, modRevision } = operation.output;
    const key = operation.input.key;
    if (operation.input.kind === 'delete' && operation.output.deleted !== (value === null || value === undefined ? 0 : 1)) {
      out.push({ rule: 'delete-count', message: `a delete reports ${operation.output.deleted} deleted with previous value ${JSON.stringify(value ?? null)}`, operations: [operation] });
    }
    if (value === null || value === undefined) continue;
    const slot = `${key}\u0000${value}`;
    const writer = writers.get(slot);
    if (writer === undefined) {
      out.push({ rule: 'value-never-written', message: `${key} read as ${JSON.stringify(value)}, which no operation wrote`, operations: [operation] });
      continue;
    }
    const write = writer.operation;
    if (write.outcome === 'fail' || (write.outcome === 'ok' && write.input.kind === 'cas' && write.output?.succeeded !== true)) {
      out.push({ rule: 'failed-write-visible', message: `${key} read as ${JSON.stringify(value)}, written by an operation that failed for sure`, operations: [write, operation] });
      continue;
    }
    if (modRevision === undefined) continue;
    const limit = operation.input.kind === 'getAt' ? operation.input.revision : operation.output.revision;
    if (limit !== undefined && modRevision > limit) {
      out.push({ rule: 'mod-revision-ahead', message: `${key} read with mod revision ${modRevision} above the read's revision ${limit}`, operations: [operation] });
    }
    const writeRevision = createdRevision(write);
    if (writeRevision !== undefined && writeRevision !== modRevision) {
      if (reported.has(slot)) continue; // one report per write is enough
      reported.add(slot);
      out.push({ rule: 'mod-revision-mismatch', message: `${key} = ${JSON.stringify(value)} read with mod revision ${modRevision}, but its write got revision ${writeRevision}`, operations: [write, operation] });
      continue;
    }
    const earlier = firstSeen.get(slot);
    if (earlier !== undefined && earlier.output?.modRevision !== modRevision) {
      if (reported.has(slot)) continue;
      reported.add(slot);
      out.push({ rule: 'mod-revision-mismatch', message: `${key} = ${JSON.stringify(value)} read with mod revisions ${earlier.output?.modRevision} and ${modRevision}`, operations: [earlier, operation] });
      continue;
    }
    firstSeen.set(slot, operation);
    let perKey = learned.get(key);
    if (perKey === undefined) learned.set(key, (perKey = new Map()));
    perKey.set(value, modRevision);
  }
  return learned;
}

/** A read at revision r returns the key as the last change at or before r left it. */
function historicalReads(operations: readonly Operation[], learned: Map<string, Map<string, number>>, out: RevisionViolation[]): void {
  const changes = new Map<string, { revision: number; value: Value; operation: Operation | undefined }[]>();
  const add = (key: string, revision: number, value: Value, operation: Operation | undefined): void => {
    let list = changes.get(key);
    if (list === undefined) changes.set(key, (list = []));
    list.push({ revision, value, operation });
  };
  const unknownDeletes = new Map<string, Operation[]>();
  for (const operation of operations) {
    const revision = createdRevision(operation);
    const key = operation.input.key;
    if (revision !== undefined) add(key, revision, operation.input.kind === 'delete' ? null : (writtenValue(operation) as string), operation);
    if (operation.outcome === 'unknown' && operation.input.kind === 'delete') {
      let list = unknownDeletes.get(key);
      if (list === undefined) unknownDeletes.set(key, (list = []));
      list.push(operation);
    }
  }
  for (const [key, values] of learned) {
    const known = new Map((changes.get(key) ?? []).map((change) => [change.revision, change] as const));
    for (const [value, revision] of values) {
      const change = known.get(revision);
      if (change === undefined) add(key, revision, value, undefined);
      else if (change.value !== value) {
        out.push({ rule: 'mod-revision-mismatch', message: `${key} = ${JSON.stringify(value)} was read with mod revision ${revision}, the revision of a change to ${JSON.stringify(change.value)}`, operations: change.operation === undefined ? [] : [change.operation] });
      }
    }
  }
  for (const list of changes.values()) list.sort((left, right) => left.revision - right.revision);
  for (const operation of operations) {
    if (operation.input.kind !== 'getAt' || operation.outcome !== 'ok' || operation.output === undefined) continue;
    const { key, revision: at } = operation.input;
    const list = changes.get(key) ?? [];
    let last: (typeof list)[number] | undefined;
    for (const change of list) if (change.revision <= at) last = change;
    const value = operation.output.value ?? null;
    const modRevision = operation.output.modRevision ?? 0;
    const involved = last?.operation === undefined ? [operation] : [last.operation, operation];
    if (value !== null) {
      if (last !== undefined && last.revision > modRevision) {
        out.push({ rule: 'historical-read', message: `${key} at revision ${at} read as ${JSON.stringify(value)} (mod ${modRevision}), missing the change at revision ${last.revision}`, operations: involved });
      }
      continue;
    }
    if (last === undefined || last.value === null) continue;
    const mayBeDeleted = (unknownDeletes.get(key) ?? []).some((deletion) => deletion.invokedAt < operation.completedAt);
    if (!mayBeDeleted) {
      out.push({ rule: 'historical-read', message: `${key} at revision ${at} read as absent, but revision ${last.revision} set it to ${JSON.stringify(last.value)} and nothing deleted it`, operations: involved });
    }
  }
}

export function checkRevisions(operations: readonly Operation[]): RevisionViolation[] {
  const out: RevisionViolation[] = [];
  distinctRevisions(operations, out);
  realTimeOrder(operations, out);
  const learned = valuesNameTheirWrites(operations, out);
  historicalReads(operations, learned, out);
  return out;
}
