// The error classes every layer shares. They live in the Raft core because the
// core depends on nothing else in raftkv; every other layer imports them from
// here (re-exported by src/errors.ts). Codes are stable; messages may change.

/** Base class of every operating error raftkv returns or throws. */
export class RaftKVError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** The requested log index is below the first index kept (it was compacted). */
export class LogCompactedError extends RaftKVError {
  constructor(index: number, firstIndex: number) {
    super('RAFTKV_LOG_COMPACTED', `log index ${index} is compacted (first index is ${firstIndex})`);
  }
}

/** The requested log index is beyond the last index stored. */
export class LogUnavailableError extends RaftKVError {
  constructor(index: number, lastIndex: number) {
    super('RAFTKV_LOG_UNAVAILABLE', `log index ${index} is unavailable (last index is ${lastIndex})`);
  }
}

/** A caller broke an API contract (bad argument, wrong state). */
export class InvalidArgumentError extends RaftKVError {
  constructor(message: string) {
    super('RAFTKV_INVALID_ARGUMENT', message);
  }
}

/**
 * A programmer error: an invariant did not hold. Never caught and handled;
 * it stops the node. Assertions stay on in production.
 */
export class AssertionFailedError extends Error {
  constructor(message: string) {
    super(`assertion failed: ${message}`);
    this.name = 'AssertionFailedError';
  }
}

export function assert(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) {
    throw new AssertionFailedError(typeof message === 'function' ? message() : message);
  }
}

// ---- Errors the replicated node reports to callers (src/server). ----

/** No leader is known; nothing was proposed. Safe to retry. */
export class NoLeaderError extends RaftKVError {
  constructor(message = 'no leader is known') {
    super('RAFTKV_NO_LEADER', message);
  }
}

/** The proposal was refused before it entered the log. Safe to retry. */
export class ProposalDroppedError extends RaftKVError {
  /** Why, where a caller may act on it: 'pending-conf-change' clears once the previous change is applied. */
  readonly reason: 'pending-conf-change' | 'other';
  constructor(message: string, reason: 'pending-conf-change' | 'other' = 'other') {
    super('RAFTKV_PROPOSAL_DROPPED', message);
    this.reason = reason;
  }
}

/**
 * The request was sent but its outcome is unknown (timed out after it may
 * have entered the log): it may or may not have been applied. Never retry a
 * non-idempotent write blindly on this error.
 */
export class OutcomeUnknownError extends RaftKVError {
  constructor(message: string) {
    super('RAFTKV_OUTCOME_UNKNOWN', message);
  }
}

/** A request that changes nothing timed out (reads, status). Safe to retry. */
export class TimeoutError extends RaftKVError {
  constructor(message: string) {
    super('RAFTKV_TIMEOUT', message);
  }
}

/** The node is closed, or stopped after a fatal storage failure. */
export class NodeStoppedError extends RaftKVError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('RAFTKV_STOPPED', message, options);
  }
}

/** The request is over a configured size limit. */
export class RequestTooLargeError extends RaftKVError {
  constructor(message: string) {
    super('RAFTKV_REQUEST_TOO_LARGE', message);
  }
}
