// A history client over HTTP/JSON for the multi-process nemesis: turns one
// history operation (test/history/history.ts) into a request to a member's
// client endpoint — /v3/kv/put, /v3/kv/range, /v3/kv/deleterange with
// prev_kv, /v3/kv/txn for compare-and-swap — and the reply into the
// operation's output or outcome. The outcome is "failed for sure" only when
// it is certain nothing reached a member's Raft log: the connection was
// never established (refused, or the attempt timed out before connecting),
// or the member answered with a code raftkv gives only before proposing.
// Anything else that goes wrong after the request may have left — a timeout,
// a reset, a reply that says "timed out" — is "unknown" for a write. A read
// that fails has no effect, so it just drops out.

import { Agent, request } from 'node:http';
import type { OperationInput, OperationOutput, Value } from './history.ts';

export const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');
const unb64 = (text: unknown): string => Buffer.from(String(text ?? ''), 'base64').toString('utf8');

/** raftkv codes that prove a write never reached the log (refused before it was proposed). */
export const WRITE_FAILED_FOR_SURE = new Set(['RAFTKV_NO_LEADER', 'RAFTKV_PROPOSAL_DROPPED', 'RAFTKV_TOO_MANY_REQUESTS', 'RAFTKV_REQUEST_TOO_LARGE', 'RAFTKV_INVALID_ARGUMENT', 'CONNECTION_REFUSED']);
/** Codes whose outcome is open. */
export const WRITE_UNKNOWN = new Set(['RAFTKV_OUTCOME_UNKNOWN', 'RAFTKV_STOPPED', 'RAFTKV_TIMEOUT', 'CLIENT_TIMEOUT', 'CONNECTION_LOST']);
/** Codes a read may get. */
export const READ_ERRORS = new Set([...WRITE_FAILED_FOR_SURE, ...WRITE_UNKNOWN, 'RAFTKV_COMPACTED', 'RAFTKV_FUTURE_REVISION']);

/** etcd's error messages from EtcdJsonApi (which has no raftkv code in its body), by the raftkv code behind them. */
const CODE_OF_ETCD_MESSAGE: readonly (readonly [string, string])[] = [
  ['etcdserver: no leader', 'RAFTKV_NO_LEADER'],
  ['etcdserver: leader changed', 'RAFTKV_PROPOSAL_DROPPED'],
  ['etcdserver: server stopped', 'RAFTKV_STOPPED'],
  ['etcdserver: request timed out, possibly due to previous leader failure', 'RAFTKV_OUTCOME_UNKNOWN'],
  ['etcdserver: request timed out', 'RAFTKV_TIMEOUT'],
  ['etcdserver: too many requests', 'RAFTKV_TOO_MANY_REQUESTS'],
  ['etcdserver: mvcc: required revision has been compacted', 'RAFTKV_COMPACTED'],
  ['etcdserver: mvcc: required revision is a future revision', 'RAFTKV_FUTURE_REVISION'],
];

/** A failed request: `code` is raftkv's code, or CONNECTION_REFUSED / CONNECTION_LOST / CLIENT_TIMEOUT / UNTYPED. */
export class RequestFailed extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type Json = Record<string, unknown>;

/** One client's connection to the members: a keep-alive agent holding at most one socket per member. */
export class MemberClient {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 });

  constructor(
    private readonly portOf: (member: number) => number,
    private readonly timeoutMs: number,
  ) {}

  close(): void {
    this.agent.destroy();
  }

  /** POSTs `body` to `path` of member `member`; rejects with RequestFailed. */
  post(member: number, path: string, body: Json, timeoutMs = this.timeoutMs): Promise<Json> {
    const text = JSON.stringify(body);
    return new Promise((resolve, reject) => {
      // Whether the request may have reached the member: only once its socket is connected.
      let connected = false;
      let settled = false;
      const finish = (error: RequestFailed | null, value?: Json): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error === null) resolve(value as Json);
        else reject(error);
      };
      const outgoing = request(
        {
          host: '127.0.0.1', port: this.portOf(member), path, method: 'POST', agent: this.agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
        },
        (response) => {
          const pieces: Buffer[] = [];
          response.on('data', (piece: Buffer) => pieces.push(piece));
          response.on('error', () => finish(new RequestFailed('CONNECTION_LOST', 'the reply broke off')));
          response.on('end', () => {
            let parsed: Json;
            try {
              parsed = JSON.parse(Buffer.concat(pieces).toString('utf8')) as Json;
            } catch {
              finish(new RequestFailed('UNTYPED', `status ${response.statusCode}: a body that is not JSON`));
              return;
            }
            if (response.statusCode === 200) finish(null, parsed);
            else finish(new RequestFailed(codeOf(parsed), `status ${response.statusCode}: ${String(parsed.message ?? '')}`));
          });
        },
      );
      outgoing.on('socket', (socket) => {
        if (!socket.connecting) connected = true;
        else socket.once('connect', () => (connected = true));
      });
      outgoing.on('error', (error: NodeJS.ErrnoException) => {
        if (!connected) finish(new RequestFailed('CONNECTION_REFUSED', `not connected: ${error.code ?? error.message}`));
        else finish(new RequestFailed('CONNECTION_LOST', `connection lost: ${error.code ?? error.message}`));
      });
      const timer = setTimeout(() => {
        // Decide before destroying: the destroy's own error event comes later and is then ignored.
        finish(new RequestFailed(connected ? 'CLIENT_TIMEOUT' : 'CONNECTION_REFUSED', `no reply within ${timeoutMs} ms${connected ? '' : ' (never connected)'}`));
        outgoing.destroy();
      }, timeoutMs);
      outgoing.end(text);
    });
  }

  /** Performs a history operation on `member`; resolves with its output, rejects with RequestFailed. */
  async perform(member: number, input: OperationInput): Promise<OperationOutput> {
    switch (input.kind) {
      case 'put': {
        const reply = await this.post(member, '/v3/kv/put', { key: b64(input.key), value: b64(input.value) });
        return { revision: revisionOf(reply) };
      }
      case 'get':
      case 'getAt': {
        const reply = await this.post(member, '/v3/kv/range', { key: b64(input.key), ...(input.kind === 'getAt' ? { revision: String(input.revision) } : {}) });
        return { ...readOf(firstKv(reply.kvs)), revision: revisionOf(reply) };
      }
      case 'delete': {
        const reply = await this.post(member, '/v3/kv/deleterange', { key: b64(input.key), prev_kv: true });
        return { ...readOf(firstKv(reply.prev_kvs)), deleted: Number(reply.deleted ?? 0), revision: revisionOf(reply) };
      }
      case 'cas': {
        const key = b64(input.key);
        const compare = input.expected === null
          ? { key, target: 'VERSION', result: 'EQUAL', version: '0' }
          : { key, target: 'VALUE', result: 'EQUAL', value: b64(input.expected) };
        const reply = await this.post(member, '/v3/kv/txn', {
          compare: [compare],
          success: [{ request_put: { key, value: b64(input.value) } }],
          failure: [{ request_range: { key } }],
        });
        if (reply.succeeded === true) return { succeeded: true, revision: revisionOf(reply) };
        const responses = (reply.responses ?? []) as Json[];
        const range = (responses[0]?.response_range ?? {}) as Json;
        return { succeeded: false, ...readOf(firstKv(range.kvs)), revision: revisionOf(reply) };
      }
    }
  }
}

function codeOf(body: Json): string {
  if (typeof body.raftkv_code === 'string') return body.raftkv_code;
  const message = String(body.message ?? body.error ?? '');
  for (const [prefix, code] of CODE_OF_ETCD_MESSAGE) if (message.startsWith(prefix)) return code;
  return `UNTYPED(${String(body.code ?? '')}: ${message})`;
}

function revisionOf(reply: Json): number {
  return Number((reply.header as Json | undefined)?.revision ?? 0);
}

function firstKv(list: unknown): Json | undefined {
  return Array.isArray(list) ? (list[0] as Json | undefined) : undefined;
}

function readOf(kv: Json | undefined): { value: Value; modRevision?: number } {
  if (kv === undefined) return { value: null };
  return { value: unb64(kv.value), modRevision: Number(kv.mod_revision ?? 0) };
}
