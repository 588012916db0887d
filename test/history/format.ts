// Readable reports of a history check: each failing key's smallest failing
// sub-history as a timeline (one row per operation, a bar from its call to
// its return, an open arrow for an unknown outcome, nemesis notes in
// between), the revision rules broken, and the line that replays the run.

import type { Note, Operation } from './history.ts';
import { describe } from './history.ts';
import type { KeyVerdict, LinearizabilityResult, MinimalOperation } from './checker.ts';
import type { RevisionViolation } from './revisions.ts';

const WIDTH_MAX = 90;

/** A timeline of operations (and the notes that fall among them), in call order. */
export function formatTimeline(rows: readonly MinimalOperation[], notes: readonly Note[] = []): string {
  if (rows.length === 0) return '  (no operations)';
  const sorted = [...rows].sort((left, right) => left.operation.invokedAt - right.operation.invokedAt);
  const first = sorted[0]?.operation.invokedAt ?? 0;
  let lastFinite = first;
  for (const { operation } of sorted) {
    if (Number.isFinite(operation.completedAt)) lastFinite = Math.max(lastFinite, operation.completedAt);
    lastFinite = Math.max(lastFinite, operation.invokedAt);
  }
  const shownNotes = notes.filter((note) => note.at > first && note.at < lastFinite).slice(0, 12);
  const times = new Set<number>();
  for (const { operation } of sorted) {
    times.add(operation.invokedAt);
    if (Number.isFinite(operation.completedAt)) times.add(operation.completedAt);
  }
  for (const note of shownNotes) times.add(note.at);
  const ranks = [...times].sort((left, right) => left - right);
  const rankOf = new Map(ranks.map((time, position) => [time, position] as const));
  const cell = ranks.length * 3 + 2 <= WIDTH_MAX ? 3 : ranks.length * 2 + 2 <= WIDTH_MAX ? 2 : 1;
  const width = ranks.length * cell + 2;
  const lines: string[] = [];
  const items: { at: number; line: string }[] = [];
  for (const { operation, weakened } of sorted) {
    const start = (rankOf.get(operation.invokedAt) as number) * cell;
    const known = Number.isFinite(operation.completedAt);
    const end = known ? (rankOf.get(operation.completedAt) as number) * cell : width - 1;
    const bar = [...' '.repeat(width)];
    bar[start] = '[';
    for (let column = start + 1; column < end; column++) bar[column] = weakened ? '~' : known ? '=' : '-';
    bar[end] = known ? ']' : '>';
    const times = `t${operation.invokedAt}..${known ? `t${operation.completedAt}` : '∞'}`;
    const tag = weakened ? '  (weakened to "may have applied")' : '';
    items.push({ at: operation.invokedAt, line: `  ${bar.join('')} ${describe(operation)}  [${times}]${tag}` });
  }
  for (const note of shownNotes) {
    const column = (rankOf.get(note.at) as number) * cell;
    items.push({ at: note.at, line: `  ${' '.repeat(column)}^ nemesis t${note.at}: ${note.text}` });
  }
  items.sort((left, right) => left.at - right.at);
  for (const item of items) lines.push(item.line);
  return lines.join('\n');
}

export function formatKeyViolation(verdict: KeyVerdict, notes: readonly Note[] = []): string {
  const minimal = verdict.minimal ?? [];
  const header = `key ${verdict.key}: NOT LINEARIZABLE (${verdict.searched} operations searched, ${verdict.pruned} unobserved unknown writes pruned)`;
  const shrink = `smallest failing sub-history found: ${minimal.length} operations${verdict.minimalComplete === true ? ' (1-minimal: dropping any kept operation makes it linearizable)' : ' (shrinking stopped at its budget)'}`;
  return [header, shrink, formatTimeline(minimal, notes)].join('\n');
}

export function formatRevisionViolation(violation: RevisionViolation): string {
  const rows = violation.operations.map((operation: Operation) => `    ${describe(operation)}  [t${operation.invokedAt}..${Number.isFinite(operation.completedAt) ? `t${operation.completedAt}` : '∞'}]`);
  return [`revision rule ${violation.rule}: ${violation.message}`, ...rows].join('\n');
}

/** The whole report of a failed check (empty when nothing failed). */
export function formatReport(
  result: LinearizabilityResult,
  revisionViolations: readonly RevisionViolation[],
  notes: readonly Note[] = [],
  revisionViolationsShown = 10,
): string {
  const parts: string[] = [];
  for (const key of result.keys) {
    if (key.verdict === 'violation') parts.push(formatKeyViolation(key, notes));
    else if (key.verdict === 'unknown') parts.push(`key ${key.key}: UNKNOWN — the checker gave up (${key.reason ?? 'limit reached'}); this is not a pass`);
  }
  for (const violation of revisionViolations.slice(0, revisionViolationsShown)) parts.push(formatRevisionViolation(violation));
  if (revisionViolations.length > revisionViolationsShown) parts.push(`… and ${revisionViolations.length - revisionViolationsShown} more revision violations`);
  return parts.join('\n\n');
}
