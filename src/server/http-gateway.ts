// A small HTTP/JSON client endpoint for one member: a subset of etcd's
// gRPC gateway (v3), with its JSON shapes, so curl, scripts and tests can
// write and read through any process: POST /v3/kv/put, /v3/kv/range,
// /v3/kv/deleterange and /v3/maintenance/status. As etcd's gateway emits
// proto3 JSON: snake_case field names, bytes in base64, 64-bit integers as
// decimal strings, and fields at their zero value left out. Anything else —
// another path, method or field, a malformed body, one over the size
// limit — gets an error status with a JSON body {error, code, message}
// (code is the gRPC status code etcd would give). Later work extends this
// toward etcd's whole gateway; the shapes here are already its shapes.

import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import createDebug from 'debug';
import { InvalidArgumentError, RaftKVError } from '../raft/errors.ts';
import type { KeyValue, RangeResponse, SortOrder, SortTarget } from '../storage/mvcc/types.ts';
import type { DeleteOptions, DeleteResult, PutOptions, PutResult, RangeOptions, Status } from './raftkv.ts';
import { formatAddress, parseAddress } from '../transport/tcp-connection.ts';

const log = createDebug('raftkv:gateway');

/** What the gateway needs of a member (RaftKV fits). */
export interface GatewayStore {
  readonly id: number;
  /** The Raft term, for response headers (read on every request: no I/O). */
  readonly raftTerm: number;
  put(key: Uint8Array, value: Uint8Array, options?: PutOptions): Promise<PutResult>;
  range(options: RangeOptions): Promise<RangeResponse>;
  delete(selector: DeleteOptions): Promise<DeleteResult>;
  status(): Promise<Status>;
}

export interface HttpGatewayOptions {
  /** Where to listen, "host:port" (port 0 picks one). Keep it on loopback: there is no authentication. */
  readonly listen: string;
  /** Largest request body. Default 3 MiB (a 1.5 MiB value is 2 MiB in base64). */
  readonly bodyBytesMax?: number;
  /** Requests served at once; beyond, 503. Default 1,024. */
  readonly requestsInFlightMax?: number;
  /** Reported as `version` by /v3/maintenance/status. Default "raftkv". */
  readonly version?: string;
  /** Offered every request for a path this gateway does not serve; returns true if it took it (e.g. `(req, res) => new EtcdJsonApi(grpcGateway).handle(req, res)`). */
  readonly fallback?: (request: IncomingMessage, response: ServerResponse) => boolean;
}

/** gRPC status codes and the HTTP status grpc-gateway maps each to. */
const Grpc = {
  InvalidArgument: { code: 3, http: 400 },
  DeadlineExceeded: { code: 4, http: 504 },
  NotFound: { code: 5, http: 404 },
  MethodNotAllowed: { code: 12, http: 405 },
  PayloadTooLarge: { code: 8, http: 413 },
  ResourceExhausted: { code: 8, http: 429 },
  OutOfRange: { code: 11, http: 400 },
  Internal: { code: 13, http: 500 },
  Unavailable: { code: 14, http: 503 },
} as const;
type Grpc = (typeof Grpc)[keyof typeof Grpc];

const GRPC_OF_CODE: Readonly<Record<string, Grpc>> = {
  RAFTKV_INVALID_ARGUMENT: Grpc.InvalidArgument,
  RAFTKV_EMPTY_KEY: Grpc.InvalidArgument,
  RAFTKV_REQUEST_TOO_LARGE: Grpc.InvalidArgument,
  RAFTKV_TOO_MANY_OPS: Grpc.InvalidArgument,
  RAFTKV_DUPLICATE_KEY: Grpc.InvalidArgument,
  RAFTKV_COMPACTED: Grpc.OutOfRange,
  RAFTKV_FUTURE_REVISION: Grpc.OutOfRange,
  RAFTKV_KEY_NOT_FOUND: Grpc.NotFound,
  RAFTKV_LEASE_NOT_FOUND: Grpc.NotFound,
  RAFTKV_NO_SPACE: Grpc.ResourceExhausted,
  RAFTKV_NO_LEADER: Grpc.Unavailable,
  RAFTKV_STOPPED: Grpc.Unavailable,
  RAFTKV_PROPOSAL_DROPPED: Grpc.Unavailable,
  RAFTKV_TIMEOUT: Grpc.DeadlineExceeded,
  RAFTKV_OUTCOME_UNKNOWN: Grpc.DeadlineExceeded,
};

/** A request the gateway answers with an error status; `raftkvCode` is raftkv's stable code. */
class GatewayError extends Error {
  constructor(
    readonly grpc: Grpc,
    message: string,
    readonly raftkvCode = 'RAFTKV_INVALID_ARGUMENT',
  ) {
    super(message);
  }
}

type Body = Readonly<Record<string, unknown>>;

// ---- Reading proto3 JSON ----

function checkFields(body: Body, allowed: readonly string[]): void {
  for (const field of Object.keys(body)) {
    if (!allowed.includes(field)) throw new GatewayError(Grpc.InvalidArgument, `unknown field "${field}"`);
  }
}

function bytesField(body: Body, field: string): Uint8Array | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(value)) throw new GatewayError(Grpc.InvalidArgument, `${field} must be base64`);
  return Buffer.from(value, 'base64');
}

function int64Field(body: Body, field: string): number | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  const number = typeof value === 'string' && /^\d{1,16}$/.test(value) ? Number(value) : value;
  if (typeof number !== 'number' || !Number.isSafeInteger(number) || number < 0) {
    throw new GatewayError(Grpc.InvalidArgument, `${field} must be a non-negative integer (a number or a decimal string)`);
  }
  return number;
}

function boolField(body: Body, field: string): boolean | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw new GatewayError(Grpc.InvalidArgument, `${field} must be true or false`);
  return value;
}

function enumField<T extends string>(body: Body, field: string, names: readonly T[]): T | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < names.length) return names[value];
  if (typeof value === 'string' && names.includes(value.toLowerCase() as T)) return value.toLowerCase() as T;
  throw new GatewayError(Grpc.InvalidArgument, `${field} must be one of ${names.map((name) => name.toUpperCase()).join(', ')}`);
}

function keyField(body: Body): Uint8Array {
  const key = bytesField(body, 'key');
  if (key === undefined || key.length === 0) throw new GatewayError(Grpc.InvalidArgument, 'key is required and must not be empty', 'RAFTKV_EMPTY_KEY');
  return key;
}

// ---- Writing proto3 JSON (zero values left out) ----

function int64(value: number): string | undefined {
  return value === 0 ? undefined : String(value);
}

function base64(bytes: Uint8Array): string | undefined {
  return bytes.length === 0 ? undefined : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

function keyValueJson(kv: KeyValue): Record<string, unknown> {
  return {
    key: base64(kv.key),
    create_revision: int64(kv.createRevision),
    mod_revision: int64(kv.modRevision),
    version: int64(kv.version),
    value: base64(kv.value),
    lease: int64(kv.lease),
  };
}

const SORT_ORDERS: readonly SortOrder[] = ['none', 'ascend', 'descend'];
const SORT_TARGETS: readonly SortTarget[] = ['key', 'version', 'create', 'mod', 'value'];

function rangeOptions(body: Body): RangeOptions {
  checkFields(body, [
    'key', 'range_end', 'limit', 'revision', 'sort_order', 'sort_target', 'serializable', 'keys_only', 'count_only',
    'min_mod_revision', 'max_mod_revision', 'min_create_revision', 'max_create_revision',
  ]);
  const options: { -readonly [K in keyof RangeOptions]: RangeOptions[K] } = { key: keyField(body) };
  const rangeEnd = bytesField(body, 'range_end');
  if (rangeEnd !== undefined && rangeEnd.length > 0) options.rangeEnd = rangeEnd;
  const numbers = [
    ['limit', 'limit'], ['revision', 'revision'], ['min_mod_revision', 'minModRevision'], ['max_mod_revision', 'maxModRevision'],
    ['min_create_revision', 'minCreateRevision'], ['max_create_revision', 'maxCreateRevision'],
  ] as const;
  for (const [field, option] of numbers) {
    const value = int64Field(body, field);
    if (value !== undefined && value !== 0) options[option] = value;
  }
  const order = enumField(body, 'sort_order', SORT_ORDERS);
  const target = enumField(body, 'sort_target', SORT_TARGETS);
  if (order !== undefined || target !== undefined) options.sort = { ...(order === undefined ? {} : { order }), ...(target === undefined ? {} : { target }) };
  for (const [field, option] of [['serializable', 'serializable'], ['keys_only', 'keysOnly'], ['count_only', 'countOnly']] as const) {
    if (boolField(body, field) === true) options[option] = true;
  }
  return options;
}

const SERVED_PATHS: readonly string[] = ['/v3/kv/put', '/v3/kv/range', '/v3/kv/deleterange', '/v3/maintenance/status'];

export class HttpGateway {
  private inFlight = 0;
  private statusInFlight: Promise<Status> | null = null;
  private closing: Promise<void> | null = null;
  private fallback: HttpGatewayOptions['fallback'] = undefined;

  private constructor(
    private readonly store: GatewayStore,
    private readonly server: Server,
    private readonly bodyBytesMax: number,
    private readonly requestsInFlightMax: number,
    private readonly version: string,
  ) {}

  /** Starts serving `store` on `options.listen`. */
  static async start(store: GatewayStore, options: HttpGatewayOptions): Promise<HttpGateway> {
    if (typeof store !== 'object' || store === null || typeof store.put !== 'function') throw new InvalidArgumentError('a store to serve is required');
    const listen = parseAddress(options.listen, 'listen', { allowPortZero: true });
    const bodyBytesMax = options.bodyBytesMax ?? 3 * 1024 * 1024;
    const requestsInFlightMax = options.requestsInFlightMax ?? 1_024;
    for (const [name, value] of [['bodyBytesMax', bodyBytesMax], ['requestsInFlightMax', requestsInFlightMax]] as const) {
      if (!Number.isSafeInteger(value) || value <= 0) throw new InvalidArgumentError(`${name} must be a positive integer`);
    }
    const server = createServer({ requestTimeout: 60_000, headersTimeout: 10_000 });
    server.maxConnections = requestsInFlightMax;
    const gateway = new HttpGateway(store, server, bodyBytesMax, requestsInFlightMax, options.version ?? 'raftkv');
    if (options.fallback !== undefined && typeof options.fallback !== 'function') throw new InvalidArgumentError('fallback must be a function');
    gateway.fallback = options.fallback;
    server.on('request', (request: IncomingMessage, response: ServerResponse) => void gateway.serve(request, response));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(listen.port, listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((error: Error) => {
      throw new RaftKVError('RAFTKV_LISTEN_FAILED', `cannot listen on ${options.listen}: ${error.message}`, { cause: error });
    });
    return gateway;
  }

  /** "host:port" actually bound. */
  get address(): string {
    const bound = this.server.address() as AddressInfo;
    return formatAddress({ host: bound.address, port: bound.port });
  }

  /** Stops accepting and closes every connection; idempotent. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    return this.closing;
  }

  private async serve(request: IncomingMessage, response: ServerResponse): Promise<void> {
    if (this.fallback !== undefined && !SERVED_PATHS.includes((request.url ?? '').split('?')[0] ?? '') && this.fallback(request, response)) return;
    if (this.inFlight >= this.requestsInFlightMax) {
      this.reply(response, new GatewayError(Grpc.Unavailable, 'too many requests in flight', 'RAFTKV_TOO_MANY_REQUESTS'));
      request.resume();
      return;
    }
    this.inFlight++;
    try {
      const route = this.route(request);
      const body = await this.readBody(request);
      this.reply(response, null, await route(body));
    } catch (error) {
      this.reply(response, error);
    } finally {
      this.inFlight--;
    }
  }

  private route(request: IncomingMessage): (body: Body) => Promise<unknown> {
    const path = (request.url ?? '').split('?')[0];
    const routes: Readonly<Record<string, (body: Body) => Promise<unknown>>> = {
      '/v3/kv/put': (body) => this.put(body),
      '/v3/kv/range': (body) => this.range(body),
      '/v3/kv/deleterange': (body) => this.deleteRange(body),
      '/v3/maintenance/status': (body) => this.status(body),
    };
    const handler = path === undefined ? undefined : routes[path];
    if (handler === undefined) throw new GatewayError(Grpc.NotFound, `no such endpoint: ${path ?? ''}`, 'RAFTKV_NOT_FOUND');
    if (request.method !== 'POST') throw new GatewayError(Grpc.MethodNotAllowed, `${path ?? ''} takes POST, not ${request.method ?? '?'}`, 'RAFTKV_METHOD_NOT_ALLOWED');
    return handler;
  }

  private async readBody(request: IncomingMessage): Promise<Body> {
    const declared = Number(request.headers['content-length'] ?? 0);
    const tooLarge = new GatewayError(Grpc.PayloadTooLarge, `the request body is over ${this.bodyBytesMax} bytes`, 'RAFTKV_REQUEST_TOO_LARGE');
    if (declared > this.bodyBytesMax) throw tooLarge;
    const pieces: Buffer[] = [];
    let bytes = 0;
    for await (const piece of request as AsyncIterable<Buffer>) {
      bytes += piece.length;
      if (bytes > this.bodyBytesMax) throw tooLarge;
      pieces.push(piece);
    }
    if (bytes === 0) return {};
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.concat(pieces).toString('utf8'));
    } catch {
      throw new GatewayError(Grpc.InvalidArgument, 'the request body is not JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new GatewayError(Grpc.InvalidArgument, 'the request body must be a JSON object');
    return parsed as Body;
  }

  private reply(response: ServerResponse, error: unknown, result?: unknown): void {
    if (response.headersSent) return;
    let status = 200;
    let payload = result;
    if (error !== null) {
      const failure = gatewayErrorOf(error);
      status = failure.grpc.http;
      payload = { error: failure.message, code: failure.grpc.code, message: failure.message, raftkv_code: failure.raftkvCode };
      if (failure.grpc === Grpc.Internal) log('internal error: %O', error);
    }
    const text = JSON.stringify(payload);
    // A refused request may not have had its body read: close instead of draining it.
    if (status !== 200) response.shouldKeepAlive = false;
    response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    response.end(text);
  }

  /** The member's status (it sizes the store on disk), one request at a time however many callers ask. */
  private memberStatus(): Promise<Status> {
    this.statusInFlight ??= this.store.status().finally(() => {
      this.statusInFlight = null;
    });
    return this.statusInFlight;
  }

  private header(revision: number): Record<string, unknown> {
    return { member_id: String(this.store.id), revision: int64(revision), raft_term: int64(this.store.raftTerm) };
  }

  private async put(body: Body): Promise<unknown> {
    checkFields(body, ['key', 'value', 'lease', 'prev_kv', 'ignore_value', 'ignore_lease']);
    const key = keyField(body);
    const value = bytesField(body, 'value') ?? new Uint8Array(0);
    const options: { -readonly [K in keyof PutOptions]: PutOptions[K] } = {};
    const lease = int64Field(body, 'lease');
    if (lease !== undefined && lease !== 0) options.lease = lease;
    for (const [field, option] of [['prev_kv', 'prevKv'], ['ignore_value', 'ignoreValue'], ['ignore_lease', 'ignoreLease']] as const) {
      if (boolField(body, field) === true) options[option] = true;
    }
    const result = await this.store.put(key, value, options);
    return { header: this.header(result.revision), prev_kv: result.prevKv === undefined ? undefined : keyValueJson(result.prevKv) };
  }

  private async range(body: Body): Promise<unknown> {
    const result = await this.store.range(rangeOptions(body));
    return {
      header: this.header(result.revision),
      kvs: result.kvs.length === 0 ? undefined : result.kvs.map(keyValueJson),
      more: result.more ? true : undefined,
      count: int64(result.count),
    };
  }

  private async deleteRange(body: Body): Promise<unknown> {
    checkFields(body, ['key', 'range_end', 'prev_kv']);
    const rangeEnd = bytesField(body, 'range_end');
    const selector: DeleteOptions = {
      key: keyField(body),
      ...(rangeEnd === undefined || rangeEnd.length === 0 ? {} : { rangeEnd }),
      ...(boolField(body, 'prev_kv') === true ? { prevKv: true } : {}),
    };
    const result = await this.store.delete(selector);
    return {
      header: this.header(result.revision),
      deleted: int64(result.deleted),
      prev_kvs: result.prevKvs.length === 0 ? undefined : result.prevKvs.map(keyValueJson),
    };
  }

  private async status(body: Body): Promise<unknown> {
    checkFields(body, []);
    const status = await this.memberStatus();
    return {
      header: { member_id: String(this.store.id), revision: int64(status.revision), raft_term: int64(status.term) },
      version: this.version,
      dbSize: int64(status.dbSizeBytes),
      leader: int64(status.leader),
      raftIndex: int64(status.commitIndex),
      raftTerm: int64(status.term),
      raftAppliedIndex: int64(status.appliedIndex),
      dbSizeInUse: int64(status.dbSizeBytes),
      isLearner: status.confState.learners.includes(this.store.id) ? true : undefined,
    };
  }
}

function gatewayErrorOf(error: unknown): GatewayError {
  if (error instanceof GatewayError) return error;
  if (error instanceof RaftKVError) return new GatewayError(GRPC_OF_CODE[error.code] ?? Grpc.Internal, error.message, error.code);
  return new GatewayError(Grpc.Internal, 'internal error', 'RAFTKV_INTERNAL');
}
