// The sequential specification of one key, as an etcd client observes it:
// the state is the key's value, or null when it is absent. Given a state
// and an operation linearized at that point, `step` says whether the
// operation's recorded result is possible there and what the state becomes.
// Operations with an unknown outcome are linearized as "applied at that
// point" (not linearizing them at all is the checker's business: it is
// always allowed). Reads with an unknown outcome never reach the model.

import type { Operation, Value } from './history.ts';

export interface StepResult {
  readonly legal: boolean;
  readonly next: Value;
}

const ILLEGAL: StepResult = { legal: false, next: null };

/** Whether the operation changes the state whenever it is applied (so it can be relaxed to unknown). */
export function isWrite(operation: Operation): boolean {
  const kind = operation.input.kind;
  if (kind === 'put') return true;
  if (kind === 'delete') return operation.outcome !== 'ok' || operation.output?.value !== null;
  if (kind === 'cas') return operation.outcome !== 'ok' || operation.output?.succeeded === true;
  return false;
}

/** The value the operation writes, if it writes one (puts and compare-and-swaps). */
export function writtenValue(operation: Operation): string | undefined {
  const input = operation.input;
  return input.kind === 'put' || input.kind === 'cas' ? input.value : undefined;
}

/**
 * Values the operation's result proves the key held at its linearization
 * point (for a compare-and-swap of unknown outcome, the value it compares
 * with: whether it applied depends on it).
 */
export function observedValue(operation: Operation): Value | undefined {
  const input = operation.input;
  const output = operation.output;
  if (input.kind === 'cas' && (operation.outcome !== 'ok' || output?.succeeded === true)) return input.expected;
  if (operation.outcome !== 'ok' || output === undefined) return undefined;
  if (input.kind === 'get' || input.kind === 'delete' || input.kind === 'cas') return output.value ?? null;
  return undefined;
}

export function step(state: Value, operation: Operation): StepResult {
  const input = operation.input;
  const known = operation.outcome === 'ok';
  const output = operation.output;
  switch (input.kind) {
    case 'put':
      return { legal: true, next: input.value };
    case 'delete':
      if (known && (output?.value ?? null) !== state) return ILLEGAL;
      return { legal: true, next: null };
    case 'get':
      if (!known) return ILLEGAL; // a read with an unknown outcome has nothing to check
      return (output?.value ?? null) === state ? { legal: true, next: state } : ILLEGAL;
    case 'cas': {
      const matches = state === input.expected;
      if (!known) return { legal: true, next: matches ? input.value : state };
      if (output?.succeeded === true) return matches ? { legal: true, next: input.value } : ILLEGAL;
      return !matches && (output?.value ?? null) === state ? { legal: true, next: state } : ILLEGAL;
    }
    case 'getAt':
      return ILLEGAL; // historical reads are checked against revisions, not here
  }
}
