// Hand-made histories for the checker's own tests: a small builder that
// writes operations with explicit logical times, and a brute-force
// reference checker (every order of every subset) for tiny histories.

import type { Operation, OperationInput, OperationOutput, Value } from './history.ts';
import { step } from './model.ts';

/** When an operation ended: [invoke, complete] for ok, [invoke, 'unknown'], or [invoke, complete, 'fail']. */
export type Span = readonly [number, number] | readonly [number, 'unknown'] | readonly [number, number, 'fail'];

export class Builder {
  readonly operations: Operation[] = [];

  private add(client: number, input: OperationInput, span: Span, output: OperationOutput): this {
    const [invokedAt, end, failed] = span;
    const base = { id: this.operations.length, client, member: 1, input, invokedAt };
    if (end === 'unknown') this.operations.push({ ...base, completedAt: Infinity, outcome: 'unknown', error: 'RAFTKV_OUTCOME_UNKNOWN' });
    else if (failed === 'fail') this.operations.push({ ...base, completedAt: end, outcome: 'fail', error: 'RAFTKV_NO_LEADER' });
    else this.operations.push({ ...base, completedAt: end, outcome: 'ok', output });
    return this;
  }

  put(client: number, key: string, value: string, span: Span, revision?: number): this {
    return this.add(client, { kind: 'put', key, value }, span, revision === undefined ? {} : { revision });
  }

  get(client: number, key: string, value: Value, span: Span, revisions: { mod?: number; revision?: number } = {}): this {
    return this.add(client, { kind: 'get', key }, span, { value, ...(revisions.mod === undefined ? {} : { modRevision: revisions.mod }), ...(revisions.revision === undefined ? {} : { revision: revisions.revision }) });
  }

  getAt(client: number, key: string, at: number, value: Value, span: Span, mod?: number): this {
    return this.add(client, { kind: 'getAt', key, revision: at }, span, { value, revision: at, ...(mod === undefined ? {} : { modRevision: mod }) });
  }

  delete(client: number, key: string, previous: Value, span: Span, revision?: number): this {
    return this.add(client, { kind: 'delete', key }, span, { value: previous, deleted: previous === null ? 0 : 1, ...(revision === undefined ? {} : { revision }) });
  }

  /** A compare-and-swap that succeeded (`seen` undefined) or failed seeing `seen`. */
  cas(client: number, key: string, expected: Value, value: string, span: Span, seen?: Value, revision?: number): this {
    const output: OperationOutput = seen === undefined ? { succeeded: true } : { succeeded: false, value: seen };
    return this.add(client, { kind: 'cas', key, expected, value }, span, revision === undefined ? output : { ...output, revision });
  }
}

export const history = (): Builder => new Builder();

/**
 * The reference answer for a tiny single-key history: tries every order of
 * every subset that holds all ok operations (unknown writes optional,
 * unknown reads and failures left out) against the model and real time.
 */
export function bruteForceLinearizable(operations: readonly Operation[]): boolean {
  const relevant = operations.filter((operation) => operation.outcome === 'ok' || (operation.outcome === 'unknown' && operation.input.kind !== 'get'));
  if (relevant.length > 9) throw new Error('the brute-force checker takes at most 9 operations');
  const used = new Array<boolean>(relevant.length).fill(false);
  const okLeft = (): boolean => relevant.some((operation, position) => !used[position] && operation.outcome === 'ok');
  const extend = (state: Value): boolean => {
    if (!okLeft()) return true;
    for (let position = 0; position < relevant.length; position++) {
      if (used[position]) continue;
      const candidate = relevant[position] as Operation;
      // Real time: nothing left unplaced may have completed before the candidate was invoked.
      const blocked = relevant.some((other, index) => !used[index] && index !== position && other.outcome === 'ok' && other.completedAt < candidate.invokedAt);
      if (blocked) continue;
      const result = step(state, candidate);
      if (!result.legal) continue;
      used[position] = true;
      if (extend(result.next)) return true;
      used[position] = false;
    }
    return false;
  };
  return extend(null);
}
