// The watch check: what watchers received against what was committed. A
// watcher's record is a list of segments, one per stream it opened (it
// reopens at the next revision when its member stops or is removed, or at
// the compact revision when its start was compacted — that gap is the only
// one allowed). The committed history ("truth") is a final replay of every
// key from one member's store, from its compact revision on; revisions it
// does not cover (compacted away before the end) are judged by the first
// segment that covered them, so every watcher must agree with every other.
// Checked:
// - each segment's events come in revision order, each revision at most once
//   per key (a second event for a key in one revision is a duplicate);
// - a segment covers [startRevision, coveredTo] (coveredTo is the highest
//   revision a response said was complete): at every revision in it, its
//   events equal the truth's — same keys, types, values, create revisions,
//   versions, leases, in the same order — so no gap, no extra, no change;
// - a watcher's next segment starts right after the last one's coverage, or
//   at the compact revision named by the error that ended it;
// - every write the history saw succeed (put, compare-and-swap that
//   succeeded, delete that deleted) appears at the revision it returned,
//   with its key and value, wherever that revision is covered;
// - a put event on a history key carries a value some write of that key
//   wrote (and that did not fail for sure);
// - along the truth, each key's versions and create revisions follow etcd's
//   rules (a put after a delete starts a generation at version 1).
// Sound: a correct store and watch hub satisfy every rule whatever the
// faults (a response's revision promises completeness up to it, and a
// watch may restart at any revision still in history).

import type { Operation } from './history.ts';
import { writtenValue } from './model.ts';

export interface WatchedEvent {
  readonly revision: number;
  readonly type: 'put' | 'delete';
  readonly key: string;
  readonly value: string;
  readonly createRevision: number;
  readonly version: number;
  readonly lease: number;
  /** Date.now() when the response holding it was received. */
  readonly receivedAtMs: number;
}

export interface WatchSegment {
  readonly watcher: number;
  readonly member: number;
  readonly startRevision: number;
  /** Highest revision a response of this stream said was complete (startRevision - 1 before any). */
  coveredTo: number;
  readonly events: WatchedEvent[];
  /** Why the stream ended: 'cancelled', an error code, or '' while open. */
  end: string;
  /** When it ended with RAFTKV_COMPACTED: the compact revision it named. */
  compactRevision?: number;
}

/** The committed history of every key over [from, to], as a final replay read it. */
export interface WatchTruth {
  readonly member: number;
  readonly from: number;
  readonly to: number;
  readonly events: readonly WatchedEvent[];
}

export interface WatchViolation {
  readonly rule: string;
  readonly message: string;
}

export interface WatchCheckResult {
  readonly violations: readonly WatchViolation[];
  /** Segment-revisions compared (how much the watchers covered). */
  readonly comparedRevisions: number;
  /** History writes found in a watched revision. */
  readonly writesMatched: number;
}

const VIOLATIONS_MAX = 20;

export function describeEvent(event: WatchedEvent): string {
  return event.type === 'put'
    ? `put ${event.key}=${JSON.stringify(event.value)} create ${event.createRevision} version ${event.version} lease ${event.lease}`
    : `delete ${event.key}`;
}

function groupByRevision(events: readonly WatchedEvent[]): Map<number, string> {
  const byRevision = new Map<number, string[]>();
  for (const event of events) {
    let list = byRevision.get(event.revision);
    if (list === undefined) byRevision.set(event.revision, (list = []));
    list.push(describeEvent(event));
  }
  return new Map([...byRevision].map(([revision, list]) => [revision, list.join(' | ')] as const));
}

/** The revision an ok history write created, with the event it must show. */
function expectedEvent(operation: Operation): { revision: number; type: 'put' | 'delete'; value: string } | undefined {
  if (operation.outcome !== 'ok' || operation.output?.revision === undefined) return undefined;
  const { kind } = operation.input;
  const revision = operation.output.revision;
  if (kind === 'put' || (kind === 'cas' && operation.output.succeeded === true)) return { revision, type: 'put', value: writtenValue(operation) as string };
  if (kind === 'delete' && (operation.output.deleted ?? 0) > 0) return { revision, type: 'delete', value: '' };
  return undefined;
}

class Reporter {
  readonly violations: WatchViolation[] = [];
  private count = 0;
  add(rule: string, message: string): void {
    this.count += 1;
    if (this.violations.length < VIOLATIONS_MAX) this.violations.push({ rule, message });
    else if (this.violations.length === VIOLATIONS_MAX) this.violations.push({ rule: 'more', message: 'further violations left out' });
  }
  get total(): number {
    return this.count;
  }
}

function checkOrder(segment: WatchSegment, out: Reporter): void {
  let previous = segment.startRevision - 1;
  const keysAtRevision = new Set<string>();
  for (const event of segment.events) {
    const where = `watcher ${segment.watcher} on member ${segment.member} (from ${segment.startRevision})`;
    if (event.revision < segment.startRevision) out.add('watch-order', `${where}: revision ${event.revision} is before the start revision (a duplicate of an earlier stream's)`);
    else if (event.revision < previous) out.add('watch-order', `${where}: revision ${event.revision} came after revision ${previous}`);
    if (event.revision > segment.coveredTo) out.add('watch-order', `${where}: revision ${event.revision} is past the coverage ${segment.coveredTo} its responses claimed`);
    if (event.revision !== previous) keysAtRevision.clear();
    if (keysAtRevision.has(event.key)) out.add('watch-duplicate', `${where}: ${event.key} twice at revision ${event.revision}`);
    keysAtRevision.add(event.key);
    previous = Math.max(previous, event.revision);
  }
}

/** Each watcher's segments follow each other without a gap, except the compacted one. */
function checkChaining(segments: readonly WatchSegment[], out: Reporter): void {
  const byWatcher = new Map<number, WatchSegment[]>();
  for (const segment of segments) {
    let list = byWatcher.get(segment.watcher);
    if (list === undefined) byWatcher.set(segment.watcher, (list = []));
    list.push(segment);
  }
  for (const [watcher, list] of byWatcher) {
    for (let position = 1; position < list.length; position++) {
      const before = list[position - 1] as WatchSegment;
      const after = list[position] as WatchSegment;
      const expected = before.compactRevision !== undefined ? Math.max(before.coveredTo + 1, before.compactRevision) : before.coveredTo + 1;
      if (after.startRevision !== expected) {
        out.add('watch-resume', `watcher ${watcher} resumed at ${after.startRevision}, not ${expected} (the last stream covered up to ${before.coveredTo}, ended ${before.end})`);
      }
    }
  }
}

/** Versions and create revisions along each key's committed events. */
function checkGenerations(truth: WatchTruth, out: Reporter): void {
  const last = new Map<string, WatchedEvent>();
  for (const event of truth.events) {
    const previous = last.get(event.key);
    last.set(event.key, event);
    if (event.type === 'delete') {
      if (previous?.type === 'delete') out.add('watch-generation', `${event.key} deleted at ${event.revision} though already deleted at ${previous.revision}`);
      continue;
    }
    const fresh = previous === undefined ? event.version === 1 : previous.type === 'delete';
    if (previous === undefined && !fresh) continue; // its generation began before the replay
    const expectedVersion = fresh ? 1 : (previous as WatchedEvent).version + 1;
    const expectedCreate = fresh ? event.revision : (previous as WatchedEvent).createRevision;
    if (event.version !== expectedVersion || event.createRevision !== expectedCreate) {
      out.add('watch-generation', `${describeEvent(event)} at ${event.revision}: expected version ${expectedVersion}, create ${expectedCreate}`);
    }
  }
}

export function checkWatches(segments: readonly WatchSegment[], truth: WatchTruth | undefined, operations: readonly Operation[]): WatchCheckResult {
  const out = new Reporter();
  for (const segment of segments) checkOrder(segment, out);
  checkChaining(segments, out);
  if (truth !== undefined) checkGenerations(truth, out);
  // The reference for each revision: the truth where it covers, else the first segment that covered it.
  const truthByRevision = truth === undefined ? new Map<number, string>() : groupByRevision(truth.events);
  const inTruth = (revision: number): boolean => truth !== undefined && revision >= truth.from && revision <= truth.to;
  const reference = new Map<number, { text: string; source: string }>();
  const referenceOf = (revision: number): { text: string; source: string } | undefined =>
    inTruth(revision) ? { text: truthByRevision.get(revision) ?? '', source: `the final replay from member ${(truth as WatchTruth).member}` } : reference.get(revision);
  let compared = 0;
  for (const segment of segments) {
    const mine = groupByRevision(segment.events);
    const source = `watcher ${segment.watcher} on member ${segment.member} (from ${segment.startRevision})`;
    for (let revision = Math.max(1, segment.startRevision); revision <= segment.coveredTo; revision++) {
      const text = mine.get(revision) ?? '';
      const expected = referenceOf(revision);
      if (expected === undefined) {
        reference.set(revision, { text, source });
        continue;
      }
      compared += 1;
      if (expected.text !== text) {
        out.add('watch-events', `revision ${revision}: ${source} got [${text || 'nothing'}], ${expected.source} has [${expected.text || 'nothing'}]`);
      }
    }
  }
  // What the history's successful writes did must be what the watchers saw at their revisions.
  let writesMatched = 0;
  const writers = new Map<string, Operation>();
  for (const operation of operations) {
    const value = writtenValue(operation);
    const failedCas = operation.outcome === 'ok' && operation.input.kind === 'cas' && operation.output?.succeeded !== true;
    if (value !== undefined && operation.outcome !== 'fail' && !failedCas) writers.set(`${operation.input.key}\u0000${value}`, operation);
  }
  const historyKeys = new Set(operations.map((operation) => operation.input.key));
  for (const operation of operations) {
    const expected = expectedEvent(operation);
    if (expected === undefined) continue;
    const seen = referenceOf(expected.revision);
    if (seen === undefined) continue; // no watcher covered it (compacted before anyone read it)
    const event = expected.type === 'put' ? `put ${operation.input.key}=${JSON.stringify(expected.value)} ` : `delete ${operation.input.key}`;
    const found = seen.text.split(' | ').some((part) => (expected.type === 'put' ? part.startsWith(event) : part === event));
    if (found) writesMatched += 1;
    else out.add('watch-history', `the history's write ${expected.type} ${operation.input.key}${expected.type === 'put' ? `=${JSON.stringify(expected.value)}` : ''} returned revision ${expected.revision}, but ${seen.source} has [${seen.text || 'nothing'}] there`);
  }
  const allEvents = [...(truth?.events ?? []), ...segments.flatMap((segment) => segment.events)];
  const reported = new Set<string>();
  for (const event of allEvents) {
    if (event.type !== 'put' || !historyKeys.has(event.key)) continue;
    const slot = `${event.key}\u0000${event.value}`;
    if (writers.has(slot) || reported.has(slot)) continue;
    reported.add(slot);
    out.add('watch-value', `a watch saw ${event.key}=${JSON.stringify(event.value)} at revision ${event.revision}, which no write that may have happened wrote`);
  }
  return { violations: out.violations, comparedRevisions: compared, writesMatched };
}
