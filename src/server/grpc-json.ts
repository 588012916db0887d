// etcd's HTTP/JSON gateway (grpc-gateway's mapping of the v3 API) on top
// of GrpcGateway: POST /v3/<service>/<method> with a JSON body, answered in
// proto3 JSON as etcd's gateway writes it — original snake_case field
// names, bytes in base64, 64-bit integers as decimal strings, zero values
// left out. A body is read into the protobuf message with the same .proto
// definitions the gRPC server uses, handled by the very same code, and the
// response written back through the protobuf message, so the JSON shapes
// cannot drift from the gRPC ones. POST /v3/watch streams one JSON object
// per line, {"result": WatchResponse}, until the client goes away; POST
// /v3/lease/keepalive answers each request of its body the same way,
// {"result": LeaseKeepAliveResponse} per line, then ends (etcd's stream
// ends when the client's requests do).
// Mount it alone, or behind HttpGateway (its `fallback` option) for the
// paths that one does not serve.

import { Duplex } from 'node:stream';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { status as GrpcStatus, type ServerDuplexStream } from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { InvalidArgumentError } from '../raft/errors.ts';
import { GrpcCallError, grpcErrorOf, type Message } from './grpc-codec.ts';
import { PROTO_FILE, protoDirectory, type GrpcGateway } from './grpc-gateway.ts';

export interface EtcdJsonApiOptions {
  /** Largest request body. Default 3 MiB (a 1.5 MiB value is 2 MiB in base64). */
  readonly bodyBytesMax?: number;
}

/** Path → [service, method], as etcd's gateway maps them. */
const ROUTES: Readonly<Record<string, readonly [string, string]>> = {
  '/v3/kv/range': ['KV', 'Range'],
  '/v3/kv/put': ['KV', 'Put'],
  '/v3/kv/deleterange': ['KV', 'DeleteRange'],
  '/v3/kv/txn': ['KV', 'Txn'],
  '/v3/kv/compaction': ['KV', 'Compact'],
  '/v3/cluster/member/list': ['Cluster', 'MemberList'],
  '/v3/cluster/member/add': ['Cluster', 'MemberAdd'],
  '/v3/cluster/member/remove': ['Cluster', 'MemberRemove'],
  '/v3/cluster/member/promote': ['Cluster', 'MemberPromote'],
  '/v3/maintenance/status': ['Maintenance', 'Status'],
  '/v3/maintenance/hash': ['Maintenance', 'Hash'],
  '/v3/maintenance/hashkv': ['Maintenance', 'HashKV'],
  '/v3/watch': ['Watch', 'Watch'],
  '/v3/lease/grant': ['Lease', 'LeaseGrant'],
  '/v3/lease/revoke': ['Lease', 'LeaseRevoke'],
  '/v3/kv/lease/revoke': ['Lease', 'LeaseRevoke'],
  '/v3/lease/keepalive': ['Lease', 'LeaseKeepAlive'],
  '/v3/lease/timetolive': ['Lease', 'LeaseTimeToLive'],
  '/v3/kv/lease/timetolive': ['Lease', 'LeaseTimeToLive'],
  '/v3/lease/leases': ['Lease', 'LeaseLeases'],
  '/v3/kv/lease/leases': ['Lease', 'LeaseLeases'],
};

/** The streaming methods: the gateway's function that serves one stream of each. */
const STREAMS: Readonly<Record<string, (gateway: GrpcGateway, stream: ServerDuplexStream<Message, unknown>) => void>> = {
  'Watch.Watch': (gateway, stream) => gateway.serveWatch(stream),
  'Lease.LeaseKeepAlive': (gateway, stream) => gateway.serveLeaseKeepAlive(stream),
};

/** grpc-gateway's HTTP status for each gRPC code. */
const HTTP_OF_GRPC: Readonly<Partial<Record<GrpcStatus, number>>> = {
  [GrpcStatus.INVALID_ARGUMENT]: 400,
  [GrpcStatus.OUT_OF_RANGE]: 400,
  [GrpcStatus.FAILED_PRECONDITION]: 412, // grpc-gateway v1, as etcd 3.4 and 3.5 ship it
  [GrpcStatus.NOT_FOUND]: 404,
  [GrpcStatus.RESOURCE_EXHAUSTED]: 429,
  [GrpcStatus.UNIMPLEMENTED]: 501,
  [GrpcStatus.UNAVAILABLE]: 503,
  [GrpcStatus.DEADLINE_EXCEEDED]: 504,
};

interface Codec {
  /** A JSON request body as the message the handlers take. */
  readonly request: (body: unknown) => Message;
  /** A handler's response as proto3 JSON. */
  readonly response: (message: unknown) => unknown;
}

type MethodDefinitions = Readonly<Record<string, protoLoader.MethodDefinition<unknown, unknown>>>;

function loadDefinitions(options: protoLoader.Options): Readonly<Record<string, MethodDefinitions>> {
  const definition = protoLoader.loadSync(PROTO_FILE, { includeDirs: [protoDirectory()], keepCase: true, ...options });
  return {
    KV: definition['etcdserverpb.KV'] as MethodDefinitions,
    Cluster: definition['etcdserverpb.Cluster'] as MethodDefinitions,
    Maintenance: definition['etcdserverpb.Maintenance'] as MethodDefinitions,
    Watch: definition['etcdserverpb.Watch'] as MethodDefinitions,
    Lease: definition['etcdserverpb.Lease'] as MethodDefinitions,
  };
}

let codecs: Map<string, Codec> | null = null;

/** One codec per routed method: JSON ↔ protobuf bytes ↔ the handlers' message shape. */
function codecOf(service: string, method: string): Codec {
  if (codecs === null) {
    const handlerShape = loadDefinitions({ longs: String, enums: String, defaults: true, oneofs: true });
    const jsonShape = loadDefinitions({ longs: String, enums: String, bytes: String, defaults: false, oneofs: false });
    codecs = new Map();
    for (const [name, pair] of Object.values(ROUTES).map((route) => [route.join('.'), route] as const)) {
      const [routeService, routeMethod] = pair;
      const handlers = handlerShape[routeService]?.[routeMethod];
      const json = jsonShape[routeService]?.[routeMethod];
      if (handlers === undefined || json === undefined) continue;
      codecs.set(name, {
        request: (body) => handlers.requestDeserialize(handlers.requestSerialize(body)) as Message,
        response: (message) => withoutZeroValues(json.responseDeserialize(handlers.responseSerialize(message))),
      });
    }
  }
  const codec = codecs.get(`${service}.${method}`);
  if (codec === undefined) throw new GrpcCallError(GrpcStatus.UNIMPLEMENTED, `no JSON codec for ${service}.${method}`);
  return codec;
}

/**
 * Leaves out fields at their zero value, as etcd's gateway does (protobufjs
 * writes explicitly set zeros): "0", 0, false, "", [], and the one zero enum
 * in these responses, an event's type PUT. Bounded by the message's own size.
 */
function withoutZeroValues(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutZeroValues);
  if (typeof value !== 'object' || value === null || value instanceof Uint8Array) return value;
  const result: Record<string, unknown> = {};
  for (const [field, inner] of Object.entries(value)) {
    const zero = inner === '0' || inner === 0 || inner === false || inner === '' || (Array.isArray(inner) && inner.length === 0) || (field === 'type' && inner === 'PUT');
    if (!zero && inner !== undefined && inner !== null) result[field] = withoutZeroValues(inner);
  }
  return result;
}

export class EtcdJsonApi {
  private readonly bodyBytesMax: number;

  constructor(
    private readonly gateway: GrpcGateway,
    options: EtcdJsonApiOptions = {},
  ) {
    if (typeof gateway !== 'object' || gateway === null || typeof gateway.callUnary !== 'function') throw new InvalidArgumentError('a GrpcGateway is required');
    this.bodyBytesMax = options.bodyBytesMax ?? 3 * 1024 * 1024;
    if (!Number.isSafeInteger(this.bodyBytesMax) || this.bodyBytesMax <= 0) throw new InvalidArgumentError('bodyBytesMax must be a positive integer');
  }

  /** Serves `request` if its path is one of etcd's gateway paths (true), else leaves it alone (false). */
  handle(request: IncomingMessage, response: ServerResponse): boolean {
    const route = ROUTES[(request.url ?? '').split('?')[0] ?? ''];
    if (route === undefined) return false;
    void this.serve(route, request, response);
    return true;
  }

  private async serve([service, method]: readonly [string, string], request: IncomingMessage, response: ServerResponse): Promise<void> {
    try {
      if (request.method !== 'POST') throw new GrpcCallError(GrpcStatus.UNIMPLEMENTED, `${request.url ?? ''} takes POST, not ${request.method ?? '?'}`);
      const codec = codecOf(service, method);
      const body = await this.readBody(request);
      const serveStream = STREAMS[`${service}.${method}`];
      if (serveStream !== undefined) {
        this.stream(codec, body, request, response, serveStream);
        return;
      }
      let message: Message;
      try {
        message = codec.request(body);
      } catch (error) {
        throw new GrpcCallError(GrpcStatus.INVALID_ARGUMENT, `the request body is not a valid ${method} request: ${(error as Error).message}`);
      }
      const result = codec.response(await this.gateway.callUnary(service, method, message));
      const text = JSON.stringify(result);
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      response.end(text);
    } catch (error) {
      replyError(response, error);
    }
  }

  /**
   * A streaming method (/v3/watch, /v3/lease/keepalive): the body's requests
   * (one JSON object, or several, one per line) are the stream's requests;
   * responses go out one per line until the method ends the stream or the
   * client goes away.
   */
  private stream(
    codec: Codec,
    bodies: unknown,
    request: IncomingMessage,
    response: ServerResponse,
    serve: (gateway: GrpcGateway, stream: ServerDuplexStream<Message, unknown>) => void,
  ): void {
    const requests = (Array.isArray(bodies) ? bodies : [bodies]).map((body) => codec.request(body));
    response.writeHead(200, { 'content-type': 'application/json' });
    const stream = new Duplex({
      objectMode: true,
      read() {},
      write(message: unknown, _encoding, callback) {
        response.write(`${JSON.stringify({ result: codec.response(message) })}\n`, () => callback());
      },
      final(callback) {
        response.end();
        callback();
      },
    });
    stream.on('error', (error: unknown) => {
      if (!response.writableEnded) response.end(`${JSON.stringify({ error: errorBody(error) })}\n`);
    });
    for (const message of requests) stream.push(message);
    // The client's requests end with its body; the call ends when it goes away (or the gateway closes).
    stream.push(null);
    response.on('close', () => stream.destroy());
    request.on('error', () => stream.destroy());
    serve(this.gateway, stream as unknown as ServerDuplexStream<Message, unknown>);
  }

  /** The body as JSON: one object, or (for /v3/watch) several, one per line. */
  private async readBody(request: IncomingMessage): Promise<unknown> {
    const tooLarge = new GrpcCallError(GrpcStatus.INVALID_ARGUMENT, 'etcdserver: request is too large');
    if (Number(request.headers['content-length'] ?? 0) > this.bodyBytesMax) throw tooLarge;
    const pieces: Buffer[] = [];
    let bytes = 0;
    for await (const piece of request as AsyncIterable<Buffer>) {
      bytes += piece.length;
      if (bytes > this.bodyBytesMax) throw tooLarge;
      pieces.push(piece);
    }
    const text = Buffer.concat(pieces).toString('utf8').trim();
    if (text === '') return {};
    try {
      const lines = text.split('\n').filter((line) => line.trim() !== '');
      const parsed: unknown[] = lines.length > 1 ? lines.map((line) => JSON.parse(line) as unknown) : [JSON.parse(text) as unknown];
      if (parsed.some((value) => typeof value !== 'object' || value === null || Array.isArray(value))) throw new Error('not an object');
      return parsed.length === 1 ? parsed[0] : parsed;
    } catch {
      throw new GrpcCallError(GrpcStatus.INVALID_ARGUMENT, 'the request body must be a JSON object (or one per line)');
    }
  }
}

function errorBody(error: unknown): { error: string; code: number; message: string } {
  // A refused watch stream fails with a plain gRPC status object.
  const status = error as { code?: unknown; details?: unknown } | null;
  if (typeof status === 'object' && status !== null && typeof status.code === 'number' && typeof status.details === 'string') {
    return { error: status.details, code: status.code, message: status.details };
  }
  const failure = grpcErrorOf(error);
  return { error: failure.message, code: failure.grpcCode, message: failure.message };
}

function replyError(response: ServerResponse, error: unknown): void {
  if (response.headersSent) return;
  const body = errorBody(error);
  const text = JSON.stringify(body);
  response.shouldKeepAlive = false;
  response.writeHead(HTTP_OF_GRPC[body.code as GrpcStatus] ?? 500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}
