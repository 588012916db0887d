// Checking a history recorded outside these tests: an app's own clients
// against raftkv (or etcd), written down as JSON. The same checks as the
// scenarios: linearizability per key, and etcd's revision rules where the
// operations carry revisions. `scripts/check-history.ts` is the command.
//
// The JSON: { "operations": [ ... ], "notes": [ ... ] } or a bare array of
// operations. An operation:
//   { "client": 3, "member": 1,                      // member is optional
//     "input": { "kind": "put", "key": "k", "value": "v1" },
//     "invokedAt": 10, "completedAt": 14,             // one clock for the whole history
//     "outcome": "ok", "output": { "revision": 42 } }
// kinds: put {key, value}; get {key}; getAt {key, revision}; delete {key}
// (with prevKv: output.value is the previous value or null); cas {key,
// expected (null: the key must be absent), value} (output.succeeded, and
// output.value when it failed). Outcomes: "ok"; "fail" (certainly did not
// take effect); "unknown" (timed out after it was sent: it may take effect
// at any time after its call, or never; completedAt is ignored). Every
// written value must be unique per key.

import { InvalidArgumentError } from '../../src/index.ts';
import { checkLinearizability } from './checker.ts';
import type { LinearizabilityResult } from './checker.ts';
import { formatReport } from './format.ts';
import type { Note, Operation, OperationInput, OperationOutput } from './history.ts';
import { checkRevisions } from './revisions.ts';
import type { RevisionViolation } from './revisions.ts';

/** Operations a file may hold (the checker's own recorder keeps at most this many). */
export const EXTERNAL_OPERATIONS_MAX = 1_000_000;

export interface ExternalHistory {
  readonly operations: Operation[];
  readonly notes: Note[];
}

export interface ExternalVerdict {
  /** 0 linearizable and no revision rule broken; 1 a violation; 2 the checker gave up (not a pass). */
  readonly exitCode: 0 | 1 | 2;
  readonly summary: string;
  readonly report: string;
  readonly linearizability: LinearizabilityResult;
  readonly revisionViolations: readonly RevisionViolation[];
}

const KINDS = new Set(['put', 'get', 'getAt', 'delete', 'cas']);
const OUTCOMES = new Set(['ok', 'fail', 'unknown']);

function bad(position: number, what: string): never {
  throw new InvalidArgumentError(`operation ${position}: ${what}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function optionalInteger(value: unknown, position: number, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value)) bad(position, `${name} must be an integer`);
  return value as number;
}

function valueOrNull(value: unknown, position: number, name: string): string | null {
  if (value !== null && typeof value !== 'string') bad(position, `${name} must be a string or null`);
  return value as string | null;
}

function parseInput(raw: unknown, position: number): OperationInput {
  if (!isRecord(raw)) bad(position, 'input must be an object');
  const { kind, key } = raw;
  if (typeof kind !== 'string' || !KINDS.has(kind)) bad(position, `input.kind must be one of ${[...KINDS].join(', ')}`);
  if (typeof key !== 'string' || key.length === 0) bad(position, 'input.key must be a non-empty string');
  switch (kind) {
    case 'put':
      if (typeof raw['value'] !== 'string') bad(position, 'a put needs a string input.value');
      return { kind, key, value: raw['value'] as string };
    case 'cas':
      if (typeof raw['value'] !== 'string') bad(position, 'a cas needs a string input.value');
      return { kind, key, expected: valueOrNull(raw['expected'], position, 'input.expected'), value: raw['value'] as string };
    case 'getAt': {
      const revision = optionalInteger(raw['revision'], position, 'input.revision');
      if (revision === undefined || revision < 1) bad(position, 'a getAt needs a positive input.revision');
      return { kind, key, revision };
    }
    default:
      return { kind: kind as 'get' | 'delete', key };
  }
}

function parseOutput(raw: unknown, position: number): OperationOutput | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (!isRecord(raw)) bad(position, 'output must be an object');
  const output: { -readonly [K in keyof OperationOutput]: OperationOutput[K] } = {};
  if ('value' in raw) output.value = valueOrNull(raw['value'], position, 'output.value');
  const modRevision = optionalInteger(raw['modRevision'], position, 'output.modRevision');
  if (modRevision !== undefined) output.modRevision = modRevision;
  const revision = optionalInteger(raw['revision'], position, 'output.revision');
  if (revision !== undefined) output.revision = revision;
  if (raw['succeeded'] !== undefined) {
    if (typeof raw['succeeded'] !== 'boolean') bad(position, 'output.succeeded must be a boolean');
    output.succeeded = raw['succeeded'];
  }
  const deleted = optionalInteger(raw['deleted'], position, 'output.deleted');
  if (deleted !== undefined) output.deleted = deleted;
  return output;
}

/** Parses and validates a history; throws InvalidArgumentError (RAFTKV_INVALID_ARGUMENT) naming the first bad operation. */
export function parseHistory(json: unknown): ExternalHistory {
  const rawOperations = Array.isArray(json) ? json : isRecord(json) ? json['operations'] : undefined;
  if (!Array.isArray(rawOperations)) throw new InvalidArgumentError('a history is an array of operations, or an object with an "operations" array');
  if (rawOperations.length > EXTERNAL_OPERATIONS_MAX) throw new InvalidArgumentError(`a history holds at most ${EXTERNAL_OPERATIONS_MAX} operations`);
  const written = new Set<string>();
  const operations = rawOperations.map((raw: unknown, position): Operation => {
    if (!isRecord(raw)) bad(position, 'must be an object');
    const input = parseInput(raw['input'], position);
    const outcome = raw['outcome'];
    if (typeof outcome !== 'string' || !OUTCOMES.has(outcome)) bad(position, 'outcome must be "ok", "fail" or "unknown"');
    const invokedAt = raw['invokedAt'];
    if (typeof invokedAt !== 'number' || !Number.isFinite(invokedAt)) bad(position, 'invokedAt must be a finite number');
    let completedAt = Infinity;
    if (outcome !== 'unknown') {
      const completed = raw['completedAt'];
      if (typeof completed !== 'number' || !Number.isFinite(completed) || completed < invokedAt) bad(position, 'completedAt must be a finite number, not before invokedAt');
      completedAt = completed;
    }
    const output = parseOutput(raw['output'], position);
    if (outcome === 'ok' && output === undefined && input.kind !== 'put') bad(position, `an ok ${input.kind} needs its output`);
    if (input.kind === 'put' || input.kind === 'cas') {
      const identity = `${input.key}\u0000${input.value}`;
      if (written.has(identity)) bad(position, `the value ${JSON.stringify(input.value)} is written twice to key ${JSON.stringify(input.key)}: written values must be unique per key`);
      written.add(identity);
    }
    const client = optionalInteger(raw['client'], position, 'client') ?? 0;
    const member = optionalInteger(raw['member'], position, 'member') ?? 0;
    const operation: Operation = { id: position, client, member, input, invokedAt, completedAt, outcome: outcome as Operation['outcome'] };
    if (output !== undefined && outcome === 'ok') operation.output = output;
    if (typeof raw['error'] === 'string') operation.error = raw['error'];
    return operation;
  });
  const rawNotes = isRecord(json) && Array.isArray(json['notes']) ? (json['notes'] as unknown[]) : [];
  const notes = rawNotes.flatMap((note): Note[] => (isRecord(note) && typeof note['at'] === 'number' && typeof note['text'] === 'string' ? [{ at: note['at'], text: note['text'] }] : []));
  return { operations, notes };
}

/** Runs the checks on a parsed history. */
export function checkHistory(history: ExternalHistory): ExternalVerdict {
  const linearizability = checkLinearizability(history.operations);
  const revisionViolations = checkRevisions(history.operations);
  const exitCode = linearizability.verdict === 'violation' || revisionViolations.length > 0 ? 1 : linearizability.verdict === 'unknown' ? 2 : 0;
  const verdictText = linearizability.verdict === 'violation' ? 'NOT linearizable' : linearizability.verdict === 'unknown' ? 'too hard for the checker (unknown, not a pass)' : 'linearizable';
  const summary = `${history.operations.length} operations on ${linearizability.keys.length} keys: ${verdictText}; ${revisionViolations.length} revision rule violations`;
  return { exitCode, summary, report: formatReport(linearizability, revisionViolations, history.notes), linearizability, revisionViolations };
}
