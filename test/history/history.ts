// The history recorder: every client operation's invocation and completion,
// stamped with a logical clock, with what the client learned — a value, a
// revision, and an outcome: ok, failed for sure (it certainly did not take
// effect) or unknown (it may have taken effect, now or later). Nemesis
// actions are noted on the same clock so a printed timeline shows them.
// JavaScript runs one callback at a time, so stamping an invocation just
// before the call and a completion when the promise settles gives a total
// order that only ever widens an operation's real interval: never a false
// violation, never a hidden one.

import { InvalidArgumentError } from '../../src/index.ts';

/** A key's value as a client sees it: a string, or null when the key is absent. */
export type Value = string | null;

export type OperationInput =
  | { readonly kind: 'put'; readonly key: string; readonly value: string }
  | { readonly kind: 'get'; readonly key: string }
  /** A read at a past revision (etcd's `get --rev`); checked against revisions, not by the search. */
  | { readonly kind: 'getAt'; readonly key: string; readonly revision: number }
  /** Delete with prevKv: the previous value is observed. */
  | { readonly kind: 'delete'; readonly key: string }
  /** txn().if(value(key) == expected, or version(key) == 0 when expected is null).then(put(key, value)).else(get(key)) */
  | { readonly kind: 'cas'; readonly key: string; readonly expected: Value; readonly value: string };

export type OperationKind = OperationInput['kind'];

/** What a completed operation returned. Fields that do not apply are absent. */
export interface OperationOutput {
  /** get / getAt: the value read; delete: the previous value; cas that failed: the current value (else branch). */
  readonly value?: Value;
  /** Mod revision of the key-value read (get, getAt, delete's previous value, failed cas). */
  readonly modRevision?: number;
  /** The response's revision: of the write for put / delete / cas, the store's for reads. */
  readonly revision?: number;
  readonly succeeded?: boolean;
  readonly deleted?: number;
}

export type Outcome = 'pending' | 'ok' | 'fail' | 'unknown';

export interface Operation {
  readonly id: number;
  readonly client: number;
  /** The member the client called. */
  readonly member: number;
  readonly input: OperationInput;
  readonly invokedAt: number;
  /** Logical time of the completion; Infinity while pending and for unknown outcomes. */
  completedAt: number;
  outcome: Outcome;
  output?: OperationOutput;
  /** The error code of a failed or unknown operation. */
  error?: string;
}

export interface Note {
  readonly at: number;
  readonly text: string;
}

export class HistoryRecorder {
  private clock = 0;
  private readonly recorded: Operation[] = [];
  private readonly recordedNotes: Note[] = [];

  constructor(
    private readonly operationsMax = 1_000_000,
    private readonly notesMax = 100_000,
  ) {
    if (!Number.isSafeInteger(operationsMax) || operationsMax < 1) throw new InvalidArgumentError('operationsMax must be a positive integer');
    if (!Number.isSafeInteger(notesMax) || notesMax < 1) throw new InvalidArgumentError('notesMax must be a positive integer');
  }

  get operations(): readonly Operation[] {
    return this.recorded;
  }

  get notes(): readonly Note[] {
    return this.recordedNotes;
  }

  get size(): number {
    return this.recorded.length;
  }

  /** Records an invocation; call it right before the request is made. */
  invoke(client: number, member: number, input: OperationInput): Operation {
    if (this.recorded.length >= this.operationsMax) throw new InvalidArgumentError(`the history is full (${this.operationsMax} operations)`);
    validateInput(input);
    const operation: Operation = { id: this.recorded.length, client, member, input, invokedAt: this.tick(), completedAt: Infinity, outcome: 'pending' };
    this.recorded.push(operation);
    return operation;
  }

  /** The operation completed and returned `output`. */
  ok(operation: Operation, output: OperationOutput): void {
    this.settle(operation, 'ok');
    operation.output = output;
    operation.completedAt = this.tick();
  }

  /** The operation certainly did not take effect. */
  fail(operation: Operation, code: string): void {
    this.settle(operation, 'fail');
    operation.error = code;
    operation.completedAt = this.tick();
  }

  /** The operation may have taken effect, at any time after its invocation, or never. */
  unknown(operation: Operation, code: string): void {
    this.settle(operation, 'unknown');
    operation.error = code;
  }

  /** Notes a nemesis action (or anything else) on the history's clock. */
  note(text: string): void {
    if (this.recordedNotes.length >= this.notesMax) return;
    this.recordedNotes.push({ at: this.tick(), text });
  }

  private tick(): number {
    this.clock += 1;
    return this.clock;
  }

  private settle(operation: Operation, outcome: Outcome): void {
    if (this.recorded[operation.id] !== operation) throw new InvalidArgumentError(`operation ${operation.id} is not from this history`);
    if (operation.outcome !== 'pending') throw new InvalidArgumentError(`operation ${operation.id} already settled (${operation.outcome})`);
    operation.outcome = outcome;
  }
}

function validateInput(input: OperationInput): void {
  if (typeof input !== 'object' || input === null || typeof input.key !== 'string' || input.key.length === 0) {
    throw new InvalidArgumentError('an operation needs a non-empty string key');
  }
  switch (input.kind) {
    case 'put':
    case 'cas':
      if (typeof input.value !== 'string') throw new InvalidArgumentError(`${input.kind} needs a string value`);
      return;
    case 'getAt':
      if (!Number.isSafeInteger(input.revision) || input.revision < 1) throw new InvalidArgumentError('getAt needs a positive revision');
      return;
    case 'get':
    case 'delete':
      return;
    default:
      throw new InvalidArgumentError(`unknown operation kind ${String((input as { kind: unknown }).kind)}`);
  }
}

/** A one-line description of an operation: `c03 put(k1, "v12") → rev 40`. */
export function describe(operation: Operation): string {
  const input = operation.input;
  const show = (value: Value | undefined): string => (value === null || value === undefined ? '∅' : JSON.stringify(value));
  let call: string;
  switch (input.kind) {
    case 'put':
      call = `put(${input.key}, ${show(input.value)})`;
      break;
    case 'get':
      call = `get(${input.key})`;
      break;
    case 'getAt':
      call = `get(${input.key}, rev ${input.revision})`;
      break;
    case 'delete':
      call = `delete(${input.key})`;
      break;
    case 'cas':
      call = `cas(${input.key}, ${show(input.expected)} → ${show(input.value)})`;
      break;
  }
  const output = operation.output;
  let result: string;
  if (operation.outcome === 'ok' && output !== undefined) {
    const revision = output.revision === undefined ? '' : ` @${output.revision}`;
    const mod = output.modRevision === undefined ? '' : ` mod ${output.modRevision}`;
    switch (input.kind) {
      case 'put':
        result = `ok${revision}`;
        break;
      case 'cas':
        result = output.succeeded === true ? `ok${revision}` : `failed, saw ${show(output.value)}${mod}${revision}`;
        break;
      case 'delete':
        result = `prev ${show(output.value)}${mod}${revision}`;
        break;
      default:
        result = `${show(output.value)}${mod}${revision}`;
    }
  } else if (operation.outcome === 'pending') {
    result = 'pending';
  } else {
    result = `${operation.outcome === 'fail' ? 'FAILED' : 'UNKNOWN'} ${operation.error ?? ''}`.trim();
  }
  return `c${String(operation.client).padStart(2, '0')}@m${operation.member} ${call} → ${result}`;
}
