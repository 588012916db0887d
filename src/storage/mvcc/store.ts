// The MVCC store: an etcd v3-style multi-version key-value store. The index
// of every key's revisions lives in memory (key-index.ts); the rows — one
// per revision, keyed by revision — live in classic-level, with a meta row
// holding the applied Raft index, the current and the compact revision.
// Each write of applied rows is one atomic write of those rows and a meta
// row, so a restart applies every Raft entry exactly once. The write lands
// behind the answer: a batch is queued, published to the index and answered, and
// everything that reads rows waits for the queue first. Writes are not
// synced (the Raft log is the durable record); flush() syncs before the log
// is compacted behind the store.
//
// Compaction is logical at once (reads below the compact revision fail) and
// physical in the background: the index is pruned a slice of keys at a
// time, and rows are deleted once every read that might still need them has
// finished. Snapshots stream every row; a restore writes a new database
// beside the old one and switches atomically.

import { createHash } from 'node:crypto';
import { mkdir, open as openFile, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import createDebug from 'debug';
import { Packr } from 'msgpackr';
import { assert, InvalidArgumentError } from '../../raft/errors.ts';
import { readFloat64, readUint32, writeFloat64, writeUint32 } from '../big-endian.ts';
import { StorageFailedError } from '../log/classic.ts';
import { applyRequest, BatchState } from './apply.ts';
import { CompactedError, FutureRevisionError } from './errors.ts';
import { KeyIndex, positionAt, unreachableCount } from './key-index.ts';
import type { KeyHistory, RevisionRecord } from './key-index.ts';
import { indexBounds, indexKey, isMetaRowKey, mainOfRowKey, metaRowKey, revisionOfRowKey, ROW_KEY_BYTES, ROW_PREFIX, rowKey, writeRowKey } from './keys.ts';
import type { IndexBounds } from './keys.ts';
import type { Event, KeyValue, LeaseRecord, RangeRequest, RangeResponse, WriteRequest, WriteResponse } from './types.ts';
import { validateRangeRequest } from './validate.ts';
import { EMPTY_BYTES, finishPlan, IndexView, keyValueOf, planRange } from './view.ts';
import type { RangePlan } from './view.ts';

const log = createDebug('raftkv:mvcc');

type Database = ClassicLevel<Uint8Array, Uint8Array>;
type BatchOperation = { type: 'put'; key: Uint8Array; value: Uint8Array } | { type: 'del'; key: Uint8Array };

// Key layout: revision rows ('r' + revision, see keys.ts) with the meta row
// among them, then lease rows ('u' + id). Every write of applied rows ends
// with a meta row keyed by the store's current revision (metaRowKey: 'r',
// the revision, a sub above any real one), so a write of new revisions
// touches only keys above every key written before it. LevelDB then need
// not merge its tables: a flushed table overlaps no other (but at a meta row
// rewritten at an unchanged revision, or at lease rows, which are rare
// beside puts) and moves down the levels as it is. With the meta at one
// fixed key (the second layout: 't', with a sync marker 'z'; the first: 'm'
// before the rows, leases 'n'), every table held that key, so each
// overlapped all the others and every compaction merged and rewrote them. The meta rows a later one superseded stay until the
// background compaction of revisions deletes them (staleMetaRevisions).
/** The second layout's meta row, and the meta's key in a snapshot stream (between the rows and the leases). */
const STREAM_META_KEY = Uint8Array.of(0x74); // 't'
/** The second layout's sync marker, deleted at open. */
const LEGACY_SYNC_MARKER_KEY = Uint8Array.of(0x7a); // 'z'
/** The first layout's meta row and lease prefix, moved at open (migrateLegacyLayout). */
const LEGACY_META_KEY = Uint8Array.of(0x6d); // 'm'
const LEGACY_LEASE_PREFIX = 0x6e; // 'n'
/** How long flush waits for LevelDB to write out an older memtable before syncing its log itself. */
const FLUSH_LOG_WAIT_MS = 5_000;
const FLUSH_LOG_POLL_MS = 5;
const META_FORMAT = 1;
/** Format 2 has the meta and lease rows after the revision rows; format 1 (before them) is still read. */
const SNAPSHOT_FORMAT = 'raftkv-mvcc-snapshot/2';
const LEGACY_SNAPSHOT_FORMAT = 'raftkv-mvcc-snapshot/1';
const CURRENT_FILE = 'CURRENT';
const packr = new Packr({ useRecords: false, mapsAsObjects: true });
/** Superseded meta rows the store remembers for deletion (8 bytes each); more wait for the next open to find them. */
const STALE_META_ROWS_MAX = 65_536;

interface QueuedRows {
  readonly operations: BatchOperation[];
  bytes: number;
  meta: Meta;
  sync: boolean;
  readonly release: () => void;
}

export interface MvccOptions {
  /** Live data (keys and latest values) the store accepts before refusing writes with RAFTKV_NO_SPACE. Default 2 GiB. */
  readonly quotaBytes?: number;
  /** Keys the background compaction prunes per step before yielding. Default 1,000. */
  readonly compactionKeysPerStep?: number;
  /**
   * Rows the background compaction deletes per step (one LevelDB batch) before
   * yielding. Default 1,000: steps of 10,000 keys built batches of thousands
   * of deletes in one turn, and compacting every 2 s under puts x256 put p99
   * at 116-168 ms, against 56-77 ms with these bounds (docs/storage.md).
   */
  readonly compactionRowsPerStep?: number;
  /** Target size of one snapshot chunk. Default 1 MiB. */
  readonly snapshotChunkBytes?: number;
  /** Leases that may exist at once (RAFTKV_TOO_MANY_LEASES beyond). Default 10,000. */
  readonly leasesMax?: number;
  /**
   * Bytes of applied rows that may wait for LevelDB before an apply waits
   * for them (applies answer before their rows are written). Default 16 MiB.
   */
  readonly pendingRowBytesMax?: number;
  /**
   * How long applied rows gather before they go to LevelDB as one write
   * (sooner once rowsGatherBytes are queued, or when a read, snapshot,
   * compaction, flush or close needs them). Applies never wait for it: the
   * Raft log already holds their entries. Fewer, larger writes cost the
   * thread pool and LevelDB's own log less per row. 0 writes each apply's
   * rows as soon as the write before them has landed. Default 20 ms.
   */
  readonly rowsGatherMs?: number;
  /** Bytes of gathered rows that start their write at once. Default 1 MiB. */
  readonly rowsGatherBytes?: number;
}

export interface MvccStatus {
  readonly appliedIndex: number;
  readonly currentRevision: number;
  readonly compactRevision: number;
  readonly keyCount: number;
  readonly liveBytes: number;
}

export interface ApplyItem {
  readonly index: number;
  /** Undefined for entries that carry no store request (no-ops, membership changes). */
  readonly request: WriteRequest | undefined;
}

interface Meta {
  appliedIndex: number;
  currentRevision: number;
  compactRevision: number;
}

interface Row {
  readonly key: Uint8Array;
  readonly record: RevisionRecord;
}

// A revision row: format u8 (1) | create revision f64 | version f64 |
// lease f64 | tombstone u8 | key length u32 | key | value. Every put writes
// one, so it is packed by hand (msgpack was 7% of the write path). Rows in
// the first format, a msgpack array of six fields, still decode.
const ROW_FORMAT = 1;
const ROW_LEGACY_ARRAY = 0x96; // msgpack fixarray of 6
const ROW_HEADER_BYTES = 1 + 8 + 8 + 8 + 1 + 4;

function rowBytes(key: Uint8Array, record: RevisionRecord): number {
  return ROW_HEADER_BYTES + key.length + (record.value ?? EMPTY_BYTES).length;
}

/** Writes a revision's row at `offset` of `out` (rowBytes long); returns a view of it. */
function writeRow(out: Uint8Array, offset: number, key: Uint8Array, record: RevisionRecord): Uint8Array {
  const value = record.value ?? EMPTY_BYTES;
  const end = offset + ROW_HEADER_BYTES + key.length + value.length;
  assert(end <= out.length, 'no room for a row');
  out[offset] = ROW_FORMAT;
  writeFloat64(out, offset + 1, record.createRevision);
  writeFloat64(out, offset + 9, record.version);
  writeFloat64(out, offset + 17, record.lease);
  out[offset + 25] = record.tombstone ? 1 : 0;
  writeUint32(out, offset + 26, key.length);
  out.set(key, offset + ROW_HEADER_BYTES);
  out.set(value, offset + ROW_HEADER_BYTES + key.length);
  return out.subarray(offset, end);
}

/**
 * The LevelDB puts of a batch's rows. Every row and row key is a view into
 * one buffer (LevelDB copies them into its write batch): an ArrayBuffer
 * each cost more to allocate, and then to free after the scavenge, than
 * writing the bytes.
 */
function rowOperations(written: readonly { key: Uint8Array; record: RevisionRecord }[]): BatchOperation[] {
  let total = 0;
  for (const { key, record } of written) total += ROW_KEY_BYTES + rowBytes(key, record);
  const arena = new Uint8Array(total);
  const operations: BatchOperation[] = [];
  let offset = 0;
  for (const { key, record } of written) {
    const rowKeyView = writeRowKey(arena, offset, record.main, record.sub);
    offset += ROW_KEY_BYTES;
    const row = writeRow(arena, offset, key, record);
    offset += row.length;
    operations.push({ type: 'put', key: rowKeyView, value: row });
  }
  return operations;
}

function operationBytes(operation: BatchOperation): number {
  return operation.key.length + (operation.type === 'put' ? operation.value.length : 0);
}

function decodeRow(rowKeyBytes: Uint8Array, bytes: Uint8Array): Row {
  const { main, sub } = revisionOfRowKey(rowKeyBytes);
  if (bytes[0] === ROW_LEGACY_ARRAY) return decodeLegacyRow(main, sub, bytes);
  assert(bytes.length >= ROW_HEADER_BYTES && bytes[0] === ROW_FORMAT, `row ${main}.${sub} is malformed`);
  const createRevision = readFloat64(bytes, 1);
  const version = readFloat64(bytes, 9);
  const lease = readFloat64(bytes, 17);
  const tombstone = bytes[25];
  const keyLength = readUint32(bytes, 26);
  assert(
    Number.isSafeInteger(createRevision) && Number.isSafeInteger(version) && Number.isSafeInteger(lease) && (tombstone === 0 || tombstone === 1) && bytes.length >= ROW_HEADER_BYTES + keyLength,
    `row ${main}.${sub} is malformed`,
  );
  const key = bytes.subarray(ROW_HEADER_BYTES, ROW_HEADER_BYTES + keyLength);
  const value = bytes.subarray(ROW_HEADER_BYTES + keyLength);
  return { key, record: { main, sub, createRevision, version, lease, tombstone: tombstone === 1, value } };
}

function decodeLegacyRow(main: number, sub: number, bytes: Uint8Array): Row {
  const fields = packr.unpack(bytes) as unknown[];
  assert(Array.isArray(fields) && fields.length === 6, `row ${main}.${sub} is malformed`);
  const [key, value, createRevision, version, lease, tombstone] = fields as [Uint8Array, Uint8Array, number, number, number, number];
  assert(key instanceof Uint8Array && value instanceof Uint8Array, `row ${main}.${sub} has malformed bytes`);
  return { key, record: { main, sub, createRevision, version, lease, tombstone: tombstone === 1, value } };
}

function encodeMeta(meta: Meta): Uint8Array {
  return packr.pack([META_FORMAT, meta.appliedIndex, meta.currentRevision, meta.compactRevision]);
}

function decodeMeta(bytes: Uint8Array): Meta {
  const fields = packr.unpack(bytes) as unknown[];
  assert(Array.isArray(fields) && fields[0] === META_FORMAT && fields.length === 4, 'the store meta row is malformed');
  const [, appliedIndex, currentRevision, compactRevision] = fields as number[];
  return { appliedIndex: appliedIndex as number, currentRevision: currentRevision as number, compactRevision: compactRevision as number };
}

const ROWS_LOW = rowKey(0, 0);
const ROWS_HIGH = Uint8Array.of(ROW_PREFIX + 1);

// Lease rows: 'u' + the id as 8 big-endian bytes → [ttlSeconds, renewals, remainingMs].
// They sort after the meta row, inside the range a snapshot carries.
const LEASE_PREFIX = 0x75; // 'u'
const LEASE_KEY_BYTES = 9;
const LEASES_LOW = Uint8Array.of(LEASE_PREFIX);
const LEASES_HIGH = Uint8Array.of(LEASE_PREFIX + 1);

function leaseKey(id: number): Uint8Array {
  assert(Number.isSafeInteger(id) && id > 0, 'a lease id is a positive safe integer');
  const bytes = new Uint8Array(LEASE_KEY_BYTES);
  const view = new DataView(bytes.buffer);
  bytes[0] = LEASE_PREFIX;
  view.setUint32(1, Math.floor(id / 2 ** 32));
  view.setUint32(5, id >>> 0);
  return bytes;
}

function encodeLease(lease: LeaseRecord): Uint8Array {
  return packr.pack([lease.ttlSeconds, lease.renewals, lease.remainingMs]);
}

function decodeLease(keyBytes: Uint8Array, bytes: Uint8Array): LeaseRecord {
  assert(keyBytes.length === LEASE_KEY_BYTES && keyBytes[0] === LEASE_PREFIX, 'a lease row key is malformed');
  const view = new DataView(keyBytes.buffer, keyBytes.byteOffset, keyBytes.byteLength);
  const id = view.getUint32(1) * 2 ** 32 + view.getUint32(5);
  const fields: unknown = packr.unpack(bytes);
  assert(Array.isArray(fields) && fields.length === 3 && fields.every((field) => Number.isSafeInteger(field)), `lease row ${id} is malformed`);
  const [ttlSeconds, renewals, remainingMs] = fields as [number, number, number];
  return { id, ttlSeconds, renewals, remainingMs };
}

async function writeFileSynced(path: string, contents: string): Promise<void> {
  const handle = await openFile(path, 'w');
  try {
    await handle.writeFile(contents);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function syncDirectory(path: string): Promise<void> {
  const handle = await openFile(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export interface ReadEventsOptions {
  /** Give each event the key's previous live key-value, while the index holds it. */
  readonly prevKv?: boolean;
  /** Only the events of this key (or range, with rangeEnd) are needed: found through the index when the range is narrow. */
  readonly key?: Uint8Array;
  readonly rangeEnd?: Uint8Array;
  /** Keys in the range beyond which a scan of all rows is used instead. Default 4 × rowsMax. */
  readonly keysMax?: number;
}

function withPreviousKv(
  event: Event,
  pick: { readonly key: Uint8Array; readonly previous: RevisionRecord | undefined; readonly previousValue: Uint8Array | undefined },
  fetched: ReadonlyMap<RevisionRecord, Uint8Array>,
): Event {
  if (pick.previous === undefined) return event;
  // Missing from disk: compaction removed it since the index was read.
  const value = pick.previousValue ?? fetched.get(pick.previous);
  return value === undefined ? event : { ...event, prevKv: keyValueOf(pick.key, pick.previous, value) };
}

export class MvccStore {
  private readonly index = new KeyIndex();
  private meta: Meta = { appliedIndex: 0, currentRevision: 0, compactRevision: 0 };
  private liveBytes = 0;
  private failure: Error | null = null;
  private closed = false;
  private applying = false;
  /**
   * Reads in flight, each in a slot of one long-lived array (free slots
   * listed in `freeReadSlots`), so the compaction and a restore can wait for
   * the reads that started before them. Not a Set: a Set that gains and
   * loses a promise per read replaces its table every few hundred reads, and
   * each obsolete table, once promoted, links to its successor and keeps the
   * young reads in it alive through the next scavenge (see proposals.ts).
   */
  private readonly readSlots: (Promise<unknown> | undefined)[] = [];
  private readonly freeReadSlots: number[] = [];
  private pruning: Promise<void> | null = null;
  private prunedRevision = 0;
  private restoring: Promise<void> | null = null;
  private readonly quotaBytes: number;
  private readonly compactionKeysPerStep: number;
  private readonly compactionRowsPerStep: number;
  private readonly snapshotChunkBytes: number;
  private readonly committedView: IndexView;
  private readonly leasesMax: number;
  private readonly pendingRowBytesMax: number;
  /**
   * Applied rows are written behind the apply: an apply publishes its batch
   * to the index and answers, and its LevelDB write joins a queue (see
   * queueRows). `rowsWritten` settles when every queued write has landed
   * and never rejects (a failed write fails the store).
   */
  private rowsWritten: Promise<void> = Promise.resolve();
  /**
   * Operations gathering for the next write (it starts once release() was
   * called and the write in flight landed), the meta of the last apply among
   * them (written as the write's last row), and whether the write is synced.
   */
  private rowsQueued: QueuedRows | null = null;
  /** The revision of the newest meta row queued: the meta row that, once landed, holds the store's state on disk. */
  private metaRowRevision: number | undefined;
  /**
   * Revisions of meta rows on disk that a newer one superseded (at most
   * STALE_META_ROWS_MAX: beyond that they are left until the next open
   * finds them); the background compaction of revisions deletes those below
   * its revision.
   */
  private staleMetaRevisions: number[] = [];
  private readonly rowsGatherMs: number;
  private readonly rowsGatherBytes: number;
  private pendingRowBytes = 0;
  /** The committed lease table. */
  private readonly leaseTable = new Map<number, LeaseRecord>();
  /** Lease id → index keys whose latest live revision is attached to it. */
  private readonly attached = new Map<number, Set<string>>();

  private constructor(
    private readonly directory: string,
    private db: Database,
    private generation: number,
    options: MvccOptions,
  ) {
    this.quotaBytes = options.quotaBytes ?? 2 * 1024 ** 3;
    this.compactionKeysPerStep = options.compactionKeysPerStep ?? 1_000;
    this.compactionRowsPerStep = options.compactionRowsPerStep ?? 1_000;
    this.snapshotChunkBytes = options.snapshotChunkBytes ?? 1024 * 1024;
    this.leasesMax = options.leasesMax ?? 10_000;
    this.pendingRowBytesMax = options.pendingRowBytesMax ?? 16 * 1024 * 1024;
    this.rowsGatherMs = options.rowsGatherMs ?? 20;
    this.rowsGatherBytes = options.rowsGatherBytes ?? 1024 * 1024;
    if (!Number.isSafeInteger(this.rowsGatherMs) || this.rowsGatherMs < 0 || this.rowsGatherMs > 60_000) {
      throw new InvalidArgumentError('rowsGatherMs must be an integer from 0 to 60000');
    }
    for (const [name, value] of Object.entries({
      leasesMax: this.leasesMax,
      pendingRowBytesMax: this.pendingRowBytesMax,
      rowsGatherBytes: this.rowsGatherBytes,
      quotaBytes: this.quotaBytes,
      compactionKeysPerStep: this.compactionKeysPerStep,
      compactionRowsPerStep: this.compactionRowsPerStep,
      snapshotChunkBytes: this.snapshotChunkBytes,
    })) {
      if (!Number.isSafeInteger(value) || value < 1) throw new InvalidArgumentError(`${name} must be a positive integer`);
    }
    this.committedView = new IndexView(
      this.index,
      () => this.meta.currentRevision,
      () => this.meta.compactRevision,
    );
  }

  /** Opens (or creates) the store in a directory, rebuilding the index from its rows. */
  static async open(directory: string, options: MvccOptions = {}): Promise<MvccStore> {
    await mkdir(directory, { recursive: true });
    let generation = 1;
    try {
      generation = Number.parseInt((await readFile(join(directory, CURRENT_FILE), 'utf8')).trim(), 10);
      assert(Number.isSafeInteger(generation) && generation >= 1, 'the store CURRENT file is malformed');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      await writeFileSynced(join(directory, CURRENT_FILE), '1\n');
      await syncDirectory(directory);
    }
    await removeStaleDatabases(directory, generation);
    const db: Database = new ClassicLevel(join(directory, `db-${generation}`), { keyEncoding: 'view', valueEncoding: 'view' });
    await db.open();
    try {
      const store = new MvccStore(directory, db, generation, options);
      await store.rebuild();
      return store;
    } catch (error) {
      await db.close(); // bad options or rows that do not rebuild: nothing stays open
      throw error;
    }
  }

  appliedIndex(): number {
    return this.meta.appliedIndex;
  }

  get currentRevision(): number {
    return this.meta.currentRevision;
  }

  get compactRevision(): number {
    return this.meta.compactRevision;
  }

  lease(id: number): LeaseRecord | undefined {
    return this.leaseTable.get(id);
  }

  /** Every lease, by id. */
  leases(): LeaseRecord[] {
    return [...this.leaseTable.values()].sort((left, right) => left.id - right.id);
  }

  get leaseCount(): number {
    return this.leaseTable.size;
  }

  /** The keys attached to a lease, in key order. */
  leaseKeys(id: number): Uint8Array[] {
    const keys = [...(this.attached.get(id) ?? [])].sort();
    return keys.map((key) => (this.index.history(key) as KeyHistory).key);
  }

  status(): MvccStatus {
    return { ...this.meta, keyCount: this.index.keyCount, liveBytes: this.liveBytes };
  }

  /** Approximate bytes on disk. */
  async dbSizeBytes(): Promise<number> {
    this.throwIfUnusable();
    return this.db.approximateSize(ROWS_LOW, LEASES_HIGH);
  }

  /** A range read at the current or a past revision (see RangeRequest). */
  async range(request: RangeRequest): Promise<RangeResponse> {
    validateRangeRequest(request);
    if (this.restoring !== null) await this.restoring;
    this.throwIfUnusable();
    const plan = planRange(this.committedView, request);
    return this.track(this.resolve(plan));
  }

  /**
   * Applies committed requests in order, with the applied index, as one
   * atomic write that lands behind the answer (see queueRows). Items at or below the applied index were applied before
   * (a restart, or a snapshot that got ahead of the log) and are skipped:
   * their response is undefined. With `events: false` the responses carry no
   * events (for a caller with no watcher to feed), and puts skip building them.
   */
  async applyBatch(items: readonly ApplyItem[], options: { readonly events?: boolean } = {}): Promise<(WriteResponse | undefined)[]> {
    if (options.events !== undefined && typeof options.events !== 'boolean') throw new InvalidArgumentError('events must be a boolean');
    this.throwIfUnusable();
    assert(!this.applying && this.restoring === null, 'one apply at a time, never during a restore');
    this.applying = true;
    try {
      return await this.applyExclusive(items, options.events ?? true);
    } finally {
      this.applying = false;
    }
  }

  private async applyExclusive(items: readonly ApplyItem[], events: boolean): Promise<(WriteResponse | undefined)[]> {
    const leases = { table: this.leaseTable, attached: this.attached, leasesMax: this.leasesMax };
    const batch = new BatchState(this.meta.currentRevision, this.meta.compactRevision, this.liveBytes, this.quotaBytes, leases, events);
    const responses: (WriteResponse | undefined)[] = [];
    let appliedIndex = this.meta.appliedIndex;
    let previousIndex = 0;
    for (const item of items) {
      assert(Number.isSafeInteger(item.index) && item.index > previousIndex, 'applied indexes must increase');
      previousIndex = item.index;
      if (item.index <= appliedIndex) {
        responses.push(undefined);
        continue;
      }
      appliedIndex = item.index;
      responses.push(item.request === undefined ? undefined : applyRequest(this.index, batch, item.request));
    }
    if (appliedIndex === this.meta.appliedIndex) return responses;
    const meta: Meta = { appliedIndex, currentRevision: batch.revision, compactRevision: batch.compactRevision };
    const operations = rowOperations(batch.written);
    for (const [id, record] of batch.leaseChanges) {
      operations.push(record === null ? { type: 'del', key: leaseKey(id) } : { type: 'put', key: leaseKey(id), value: encodeLease(record) });
    }
    // Published before its rows land: the Raft log already holds these
    // entries durably, so a crash replays them from the applied index the
    // last landed write recorded. Readers that need rows wait for the queue.
    this.queueRows(operations, meta);
    this.publish(batch, meta);
    if (this.pendingRowBytes > this.pendingRowBytesMax) await this.rowsLanded();
    if (batch.deferred.length > 0) {
      await this.track(
        Promise.all(
          batch.deferred.map(async ({ plan, response }) => {
            const resolved = await this.resolve(plan);
            response.kvs = resolved.kvs;
            response.more = resolved.more;
          }),
        ),
      );
    }
    return responses;
  }

  private publish(batch: BatchState, meta: Meta): void {
    for (const { key, indexKey: keyInIndex, record } of batch.written) {
      const history = this.index.history(keyInIndex);
      const previousLease = history?.latestLiveLease ?? 0;
      if (previousLease !== 0) this.detach(previousLease, keyInIndex);
      this.index.append(keyInIndex, key, record, history);
      if (!record.tombstone && record.lease !== 0) this.attach(record.lease, keyInIndex);
    }
    for (const [id, record] of batch.leaseChanges) {
      if (record === null) {
        assert(this.attached.get(id) === undefined, `revoked lease ${id} has no attached keys left`);
        this.leaseTable.delete(id);
      } else {
        this.leaseTable.set(id, record);
      }
    }
    const compacted = meta.compactRevision > this.meta.compactRevision;
    this.meta = meta;
    this.liveBytes = batch.liveBytes;
    if (compacted) this.schedulePrune();
  }

  /**
   * The changes of revisions fromRevision..toRevision, in order, as events,
   * for watchers catching up from history. Stops after about rowsMax
   * changes but never inside a revision; reports the revision to continue
   * from. With `prevKv`, each event carries the key's previous live
   * key-value when the index still holds it (not once compaction removed it).
   */
  async readEvents(
    fromRevision: number,
    toRevision: number,
    rowsMax: number,
    options: ReadEventsOptions = {},
  ): Promise<{ events: Event[]; nextRevision: number; wideRange?: boolean }> {
    if (!Number.isSafeInteger(fromRevision) || fromRevision < 1 || !Number.isSafeInteger(toRevision) || !Number.isSafeInteger(rowsMax) || rowsMax < 1) {
      throw new InvalidArgumentError('readEvents needs a positive from revision, an integer to revision and a positive row limit');
    }
    if (this.restoring !== null) await this.restoring;
    this.throwIfUnusable();
    if (fromRevision < this.meta.compactRevision) throw new CompactedError(fromRevision, this.meta.compactRevision);
    const last = Math.min(toRevision, this.meta.currentRevision);
    const withPrevious = options.prevKv === true;
    if (options.key !== undefined) {
      const fromIndex = this.readKeyEvents(indexBounds(options.key, options.rangeEnd), fromRevision, last, rowsMax, withPrevious, options.keysMax ?? rowsMax * 4);
      if (fromIndex !== null) return this.track(fromIndex);
      // Too many keys for the index path: say so, so the caller stops offering this range.
      const scanned = await this.track(this.readEventRows(fromRevision, last, rowsMax, withPrevious));
      return { ...scanned, wideRange: true };
    }
    return this.track(this.readEventRows(fromRevision, last, rowsMax, withPrevious));
  }

  /**
   * The events of the keys in bounds, found through the index: cheap for a
   * key or a narrow range however much else changed. Null when the range
   * holds more than keysMax keys (a scan of the rows is cheaper then).
   */
  private readKeyEvents(
    bounds: IndexBounds,
    fromRevision: number,
    last: number,
    rowsMax: number,
    withPrevious: boolean,
    keysMax: number,
  ): Promise<{ events: Event[]; nextRevision: number }> | null {
    interface Pick {
      readonly key: Uint8Array;
      readonly record: RevisionRecord;
      readonly value: Uint8Array | undefined;
      readonly previous: RevisionRecord | undefined;
      readonly previousValue: Uint8Array | undefined;
    }
    const picks: Pick[] = [];
    let keys = 0;
    let tooWide = false;
    this.index.forEachInBounds(bounds, (_, history) => {
      if (++keys > keysMax) {
        tooWide = true;
        return false;
      }
      const first = positionAt(history, fromRevision - 1) + 1;
      let before = first > 0 ? history.at(first - 1) : undefined;
      for (let position = first; position < history.length && history.mainAt(position) <= last; position++) {
        const record = history.at(position);
        const previous = withPrevious && before !== undefined && !before.tombstone ? before : undefined;
        // Values are taken now: a record loses its in-memory value once superseded.
        picks.push({ key: history.key, record, value: record.value, previous, previousValue: previous?.value });
        before = record;
      }
      return true;
    });
    if (tooWide) return null;
    picks.sort((left, right) => left.record.main - right.record.main || left.record.sub - right.record.sub);
    let count = picks.length;
    let nextRevision = last + 1;
    if (count > rowsMax) {
      count = rowsMax;
      const lastMain = (picks[count - 1] as Pick).record.main;
      while (count < picks.length && (picks[count] as Pick).record.main === lastMain) count++;
      if (count < picks.length) nextRevision = (picks[count] as Pick).record.main;
    }
    const chosen = picks.slice(0, count);
    return (async () => {
      const wanted: RevisionRecord[] = [];
      for (const pick of chosen) {
        if (pick.value === undefined && !pick.record.tombstone) wanted.push(pick.record);
        if (pick.previous !== undefined && pick.previousValue === undefined) wanted.push(pick.previous);
      }
      if (wanted.length > 0) await this.rowsLanded();
      const values = wanted.length === 0 ? [] : await this.db.getMany(wanted.map((record) => rowKey(record.main, record.sub)));
      const fetched = new Map<RevisionRecord, Uint8Array>();
      wanted.forEach((record, position) => {
        const bytes = values[position];
        if (bytes !== undefined) fetched.set(record, decodeRow(rowKey(record.main, record.sub), bytes).record.value as Uint8Array);
      });
      const events = chosen.map((pick): Event => {
        const { key, record } = pick;
        if (record.tombstone) {
          const kv: KeyValue = { key, value: EMPTY_BYTES, createRevision: 0, modRevision: record.main, version: 0, lease: 0 };
          return withPreviousKv({ type: 'delete', kv }, pick, fetched);
        }
        const value = pick.value ?? fetched.get(record);
        assert(value !== undefined, `row ${record.main}.${record.sub} is missing from disk`);
        return withPreviousKv({ type: 'put', kv: keyValueOf(key, record, value) }, pick, fetched);
      });
      return { events, nextRevision };
    })();
  }

  private async readEventRows(fromRevision: number, last: number, rowsMax: number, withPrevious: boolean): Promise<{ events: Event[]; nextRevision: number }> {
    const events: Event[] = [];
    const previousRows: { event: number; record: RevisionRecord; key: Uint8Array; value: Uint8Array | undefined }[] = [];
    let nextRevision = last + 1;
    await this.rowsLanded();
    for await (const [keyBytes, valueBytes] of this.db.iterator({ gte: rowKey(fromRevision, 0), lt: rowKey(last + 1, 0) })) {
      if (isMetaRowKey(keyBytes)) continue;
      const { key, record } = decodeRow(keyBytes, valueBytes);
      const previous = events[events.length - 1];
      if (events.length >= rowsMax && previous !== undefined && previous.kv.modRevision !== record.main) {
        nextRevision = record.main;
        break;
      }
      const kv: KeyValue = record.tombstone
        ? { key, value: EMPTY_BYTES, createRevision: 0, modRevision: record.main, version: 0, lease: 0 }
        : keyValueOf(key, record, record.value as Uint8Array);
      events.push({ type: record.tombstone ? 'delete' : 'put', kv });
      if (withPrevious) {
        const before = this.recordBefore(key, record.main, record.sub);
        // The value is taken now: a record loses its in-memory value once superseded.
        if (before !== undefined) previousRows.push({ event: events.length - 1, record: before, key, value: before.value });
      }
    }
    if (previousRows.length > 0) {
      const missing = previousRows.filter((row) => row.value === undefined);
      const values = missing.length === 0 ? [] : await this.db.getMany(missing.map(({ record }) => rowKey(record.main, record.sub)));
      const fetched = new Map<RevisionRecord, Uint8Array>();
      missing.forEach(({ record }, position) => {
        const bytes = values[position];
        // Pruned since the index was read: compaction removed it, so there is no previous key-value to give.
        if (bytes !== undefined) fetched.set(record, decodeRow(rowKey(record.main, record.sub), bytes).record.value as Uint8Array);
      });
      for (const { event, record, key, value: hot } of previousRows) {
        const value = hot ?? fetched.get(record);
        if (value === undefined) continue;
        events[event] = { ...(events[event] as Event), prevKv: keyValueOf(key, record, value) };
      }
    }
    return { events, nextRevision };
  }

  private attach(id: number, keyInIndex: string): void {
    let keys = this.attached.get(id);
    if (keys === undefined) {
      keys = new Set();
      this.attached.set(id, keys);
    }
    keys.add(keyInIndex);
  }

  private detach(id: number, keyInIndex: string): void {
    const keys = this.attached.get(id);
    if (keys === undefined) return;
    keys.delete(keyInIndex);
    if (keys.size === 0) this.attached.delete(id);
  }

  /** The live revision of a key just before (main, sub), if the index still holds it. */
  private recordBefore(key: Uint8Array, main: number, sub: number): RevisionRecord | undefined {
    const history = this.index.history(indexKey(key));
    if (history === undefined) return undefined;
    let position = positionAt(history, main);
    while (position >= 0) {
      const record = history.at(position);
      if (record.main < main || (record.main === main && record.sub < sub)) return record.tombstone ? undefined : record;
      position--;
    }
    return undefined;
  }

  /**
   * Makes every apply published so far durable: it waits for their queued
   * rows, then queues a synced write of the meta row (LevelDB syncs the
   * writes before it with it). Through the queue, not beside it: two writes
   * in flight could land in either order, and the meta must never go back.
   *
   * LevelDB syncs while holding its writer queue, so every apply arriving
   * meanwhile waits for that sync, and the log holds up to a memtable's
   * worth of unsynced writes (4 MiB): 50-100 ms, once per snapshot, on all
   * members at once. So flush first syncs the current log itself, outside
   * the queue; the synced write then has little left to sync.
   */
  async flush(): Promise<void> {
    this.throwIfUnusable();
    await this.rowsLanded();
    await this.syncCurrentLog();
    // Rows an apply queued meanwhile go in the same write, their meta last.
    const queued = this.rowsQueued ?? this.queueRows([], this.meta);
    queued.sync = true;
    await this.rowsLanded();
    await this.syncDatabaseLogs();
  }

  /** fdatasyncs LevelDB's current (newest) log through a descriptor of its own. */
  private async syncCurrentLog(): Promise<void> {
    const generation = this.generation;
    try {
      const names = await this.databaseLogs(generation);
      const newest = names?.[names.length - 1];
      if (newest !== undefined) await syncFileIfPresent(join(this.directory, `db-${generation}`, newest));
    } catch (error) {
      this.fail(error);
      throw this.failure as unknown as Error;
    }
  }

  /** LevelDB's log files of a generation of the database, oldest first; null once a restore replaced it. */
  private async databaseLogs(generation: number): Promise<string[] | null> {
    let names: string[];
    try {
      names = await readdir(join(this.directory, `db-${generation}`));
    } catch (error) {
      // A restore replaced the database meanwhile (its copy was written synced): nothing of the old one matters.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && this.generation !== generation) return null;
      throw error;
    }
    return names.filter((name) => /^\d+\.log$/.test(name)).sort((a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10));
  }

  /**
   * A synced LevelDB write syncs only LevelDB's current log. When its
   * memtable fills, LevelDB (1.20, in classic-level) closes the log without
   * a sync and starts a new one; the older log's writes are durable only once
   * that memtable is written out to a synced table, and LevelDB deletes the
   * log after. So flush waits until only the current log (the newest) is
   * left; syncing the older one instead would write its megabytes a second
   * time, beside the table being built from them, and slow every member's
   * synced log writes. After FLUSH_LOG_WAIT_MS it syncs what is left.
   */
  private async syncDatabaseLogs(): Promise<void> {
    const generation = this.generation;
    const location = join(this.directory, `db-${generation}`);
    const deadline = Date.now() + FLUSH_LOG_WAIT_MS;
    try {
      for (;;) {
        const names = await this.databaseLogs(generation);
        if (names === null) return;
        const older = names.slice(0, -1);
        if (older.length === 0) return;
        if (Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, FLUSH_LOG_POLL_MS));
          continue;
        }
        for (const name of older) await syncFileIfPresent(join(location, name));
        return;
      }
    } catch (error) {
      this.fail(error);
      throw this.failure as unknown as Error;
    }
  }

  /**
   * A hash of the store's content at a revision (etcd's HashKV): every
   * revision still readable at or above the compact revision, up to
   * `revision`, with its key, value and metadata. Equal on every node that
   * applied the same entries, whatever its background compaction progress.
   */
  async hash(revision = this.meta.currentRevision): Promise<{ hash: string; revision: number; compactRevision: number }> {
    for (let attempt = 0; ; attempt++) {
      if (this.restoring !== null) await this.restoring;
      this.throwIfUnusable();
      const compactRevision = this.meta.compactRevision;
      if (revision > this.meta.currentRevision) throw new FutureRevisionError(revision, this.meta.currentRevision);
      if (revision < compactRevision) throw new CompactedError(revision, compactRevision);
      const hash = await this.track(this.hashRows(revision, compactRevision));
      if (this.meta.compactRevision === compactRevision) return { hash, revision, compactRevision };
      assert(attempt < 100, 'hash could not finish between compactions');
    }
  }

  private async hashRows(revision: number, compactRevision: number): Promise<string> {
    const digest = createHash('sha256');
    const header = new DataView(new ArrayBuffer(40));
    await this.rowsLanded();
    for await (const [keyBytes, valueBytes] of this.db.iterator({ gte: ROWS_LOW, lt: rowKey(revision + 1, 0) })) {
      if (isMetaRowKey(keyBytes)) continue;
      const { key, record } = decodeRow(keyBytes, valueBytes);
      if (!this.isReachable(key, record, compactRevision)) continue;
      header.setFloat64(0, record.main);
      header.setFloat64(8, record.sub);
      header.setFloat64(16, record.createRevision);
      header.setFloat64(24, record.version);
      header.setFloat64(32, record.lease);
      digest.update(new Uint8Array(header.buffer));
      digest.update(Uint8Array.of(record.tombstone ? 1 : 0));
      digest.update(lengthPrefixed(key));
      digest.update(lengthPrefixed(record.value ?? EMPTY_BYTES));
    }
    for (const lease of this.leases()) {
      digest.update(leaseKey(lease.id));
      digest.update(encodeLease(lease));
    }
    return digest.digest('hex');
  }

  /** Whether a row is still part of the store's history after a compaction at compactRevision. */
  private isReachable(key: Uint8Array, row: RevisionRecord, compactRevision: number): boolean {
    const history = this.index.history(indexKey(key));
    if (history === undefined) return false;
    for (let position = positionAt(history, row.main); position >= 0 && history.mainAt(position) === row.main; position--) {
      if (history.at(position).sub === row.sub) return position >= unreachableCount(history, compactRevision);
    }
    return false;
  }

  /** The whole store as a stream of chunks, from one point in time; restore() reads it back. */
  async *snapshot(): AsyncGenerator<Uint8Array> {
    if (this.restoring !== null) await this.restoring;
    this.throwIfUnusable();
    await this.rowsLanded();
    const iterator = this.db.iterator({ gte: ROWS_LOW, lt: LEASES_HIGH });
    const digest = createHash('sha256');
    let rows = 0;
    try {
      yield packr.pack({ format: SNAPSHOT_FORMAT });
      let pairs: Uint8Array[][] = [];
      let bytes = 0;
      const add = (key: Uint8Array, value: Uint8Array): void => {
        pairs.push([key, value]);
        digest.update(lengthPrefixed(key));
        digest.update(lengthPrefixed(value));
        rows++;
        bytes += key.length + value.length;
      };
      // The stream keeps the second layout: the newest meta row goes once, as 't' between the rows and the leases.
      let meta: Uint8Array | undefined;
      let metaSent = false;
      for await (const [key, value] of iterator) {
        if (isMetaRowKey(key)) {
          meta = value;
          continue;
        }
        if (key[0] !== ROW_PREFIX && !metaSent) {
          if (meta !== undefined) add(STREAM_META_KEY, meta);
          metaSent = true;
        }
        add(key, value);
        if (bytes >= this.snapshotChunkBytes) {
          yield packr.pack({ pairs });
          pairs = [];
          bytes = 0;
        }
      }
      if (!metaSent && meta !== undefined) add(STREAM_META_KEY, meta);
      if (pairs.length > 0) yield packr.pack({ pairs });
      yield packr.pack({ end: true, rows, sha256: digest.digest('hex') });
    } finally {
      await iterator.close();
    }
  }

  /**
   * Replaces the whole store with a snapshot. The new database is written
   * beside the old one and switched to atomically: a crash at any point
   * leaves either the old store or the new one, whole.
   */
  async restore(chunks: AsyncIterable<Uint8Array>): Promise<void> {
    this.throwIfUnusable();
    assert(!this.applying && this.restoring === null, 'no restore during an apply or another restore');
    let release = (): void => {};
    this.restoring = new Promise<void>((resolve) => (release = resolve));
    try {
      await this.stopPruning();
      await this.readsInFlightSettled();
      await this.rowsLanded();
      const generation = this.generation + 1;
      const location = join(this.directory, `db-${generation}`);
      await rm(location, { recursive: true, force: true });
      const db: Database = new ClassicLevel(location, { keyEncoding: 'view', valueEncoding: 'view' });
      await db.open();
      try {
        await writeSnapshot(db, chunks);
      } catch (error) {
        await db.close();
        await rm(location, { recursive: true, force: true });
        throw error;
      }
      await writeFileSynced(join(this.directory, `${CURRENT_FILE}.tmp`), `${generation}\n`);
      await rename(join(this.directory, `${CURRENT_FILE}.tmp`), join(this.directory, CURRENT_FILE));
      await syncDirectory(this.directory);
      const old = this.db;
      const oldGeneration = this.generation;
      this.db = db;
      this.generation = generation;
      await old.close();
      await rm(join(this.directory, `db-${oldGeneration}`), { recursive: true, force: true });
      await this.rebuild();
      log('restored a snapshot: applied index %d, revision %d', this.meta.appliedIndex, this.meta.currentRevision);
    } finally {
      this.restoring = null;
      release();
      // A refused snapshot left the old store in place: resume its background compaction.
      if (this.meta.compactRevision > this.prunedRevision) this.schedulePrune();
    }
  }

  /** Resolves when background compaction has caught up (for tests and benchmarks). */
  async compactionSettled(): Promise<void> {
    while (this.pruning !== null) await this.pruning;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.stopPruning();
    await this.readsInFlightSettled();
    await this.rowsWrittenNow();
    await this.db.close();
  }

  private async rebuild(): Promise<void> {
    await migrateLegacyLayout(this.db);
    this.index.clear();
    this.staleMetaRevisions = [];
    let metaBytes: Uint8Array | undefined;
    let metaRevision: number | undefined;
    let lastRevision = 0;
    for await (const [keyBytes, valueBytes] of this.db.iterator({ gte: ROWS_LOW, lt: ROWS_HIGH })) {
      assert(keyBytes.length === ROW_KEY_BYTES, 'a row key has the wrong length');
      if (isMetaRowKey(keyBytes)) {
        if (metaRevision !== undefined && this.staleMetaRevisions.length < STALE_META_ROWS_MAX) this.staleMetaRevisions.push(metaRevision);
        metaRevision = mainOfRowKey(keyBytes);
        metaBytes = valueBytes;
        continue;
      }
      const { key, record } = decodeRow(keyBytes, valueBytes);
      // Copy the key: a view would keep the whole row buffer alive for as long as the key is indexed.
      this.index.append(indexKey(key), new Uint8Array(key), record);
      lastRevision = record.main;
    }
    // Every write of rows ends with its meta row, so no row sorts after the last one.
    assert(lastRevision === 0 || (metaRevision !== undefined && lastRevision <= metaRevision), 'the store has rows after its last meta row');
    this.metaRowRevision = metaRevision;
    const meta: Meta = metaBytes === undefined ? { appliedIndex: 0, currentRevision: 0, compactRevision: 0 } : decodeMeta(metaBytes);
    // The revision never goes backwards, even if compaction removed the last rows (etcd #17780).
    meta.currentRevision = Math.max(meta.currentRevision, lastRevision, meta.compactRevision);
    this.meta = meta;
    this.leaseTable.clear();
    this.attached.clear();
    for await (const [keyBytes, valueBytes] of this.db.iterator({ gte: LEASES_LOW, lt: LEASES_HIGH })) {
      const lease = decodeLease(keyBytes, valueBytes);
      this.leaseTable.set(lease.id, lease);
    }
    this.liveBytes = 0;
    this.index.forEachInBounds({ start: '', end: undefined, single: false }, (keyInIndex, history) => {
      const latest = history.latest;
      if (!latest.tombstone) this.liveBytes += history.key.length + (latest.value as Uint8Array).length;
      if (!latest.tombstone && latest.lease !== 0) this.attach(latest.lease, keyInIndex);
      return true;
    });
    this.prunedRevision = 0;
    if (meta.compactRevision > 0) this.schedulePrune();
  }

  private schedulePrune(): void {
    if (this.pruning !== null || this.closed) return;
    this.pruning = this.pruneLoop()
      .catch((error: unknown) => this.fail(error))
      .finally(() => {
        this.pruning = null;
      });
  }

  private stopRequested = false;

  private async stopPruning(): Promise<void> {
    this.stopRequested = true;
    try {
      while (this.pruning !== null) await this.pruning;
    } finally {
      this.stopRequested = false;
    }
  }

  private async pruneLoop(): Promise<void> {
    while (this.prunedRevision < this.meta.compactRevision) {
      const target = this.meta.compactRevision;
      let fromKey: string | undefined = '';
      while (fromKey !== undefined) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (this.pruneMustStop()) return;
        const step = this.index.prune(target, fromKey, this.compactionKeysPerStep, this.compactionRowsPerStep);
        fromKey = step.nextKey;
        if (step.dropped.length === 0) continue;
        // Reads that started before this step may still need the rows, and
        // a row still queued must land before its delete.
        await this.readsInFlightSettled();
        await this.rowsWrittenNow();
        if (this.pruneMustStop()) return;
        await this.write(
          step.dropped.map(({ main, sub }) => ({ type: 'del' as const, key: rowKey(main, sub) })),
          false,
        );
      }
      if (!(await this.deleteStaleMetaRows(target))) return;
      this.prunedRevision = target;
      log('compaction at revision %d done', target);
    }
  }

  /**
   * Deletes the meta rows a newer one superseded below the compact revision
   * `target`, compactionRowsPerStep a batch; false if the prune must stop.
   * Once the queue has landed, the meta row of the compaction's own write is
   * on disk, and any meta row superseded later is at or above the target.
   */
  private async deleteStaleMetaRows(target: number): Promise<boolean> {
    const below = (count: number): boolean => count < this.staleMetaRevisions.length && (this.staleMetaRevisions[count] as number) < target;
    if (!below(0)) return true;
    await this.rowsWrittenNow();
    while (below(0)) {
      if (this.pruneMustStop()) return false;
      let count = 1;
      while (count < this.compactionRowsPerStep && below(count)) count++;
      const stale = this.staleMetaRevisions.splice(0, count);
      await this.write(
        stale.map((revision) => ({ type: 'del' as const, key: metaRowKey(revision) })),
        false,
      );
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return true;
  }

  private pruneMustStop(): boolean {
    return this.stopRequested || this.closed || this.failure !== null;
  }

  /** Fills in the values a plan could not take from memory, then sorts and truncates if it had to wait for them. */
  private async resolve(plan: RangePlan): Promise<RangeResponse> {
    const needValues = !plan.countOnly && (!plan.keysOnly || plan.sortAfterFetch !== null);
    if (needValues) {
      const missing = plan.items.filter((item) => item.value === undefined);
      if (missing.length > 0) {
        await this.rowsLanded();
        const values = await this.db.getMany(missing.map((item) => rowKey(item.record.main, item.record.sub)));
        missing.forEach((item, position) => {
          const bytes = values[position];
          assert(bytes !== undefined, `row ${item.record.main}.${item.record.sub} is missing from disk`);
          item.value = decodeRow(rowKey(item.record.main, item.record.sub), bytes).record.value;
        });
      }
    }
    if (plan.sortAfterFetch !== null) finishPlan(plan, plan.sortAfterFetch.order, plan.sortAfterFetch.target);
    return {
      revision: plan.revision,
      count: plan.count,
      more: plan.more,
      kvs: plan.items.map((item) => keyValueOf(item.key, item.record, plan.keysOnly ? EMPTY_BYTES : (item.value as Uint8Array))),
    };
  }

  private track<T>(promise: Promise<T>): Promise<T> {
    const slot = this.freeReadSlots.pop() ?? this.readSlots.length;
    assert(this.readSlots[slot] === undefined, 'a read slot is taken twice');
    this.readSlots[slot] = promise;
    const forget = (): void => {
      this.readSlots[slot] = undefined;
      this.freeReadSlots.push(slot);
    };
    promise.then(forget, forget);
    return promise;
  }

  /** Settles once every read in flight now has settled (reads started later are not waited for). */
  private readsInFlightSettled(): Promise<unknown> {
    const reads: Promise<unknown>[] = [];
    for (const read of this.readSlots) if (read !== undefined) reads.push(read);
    return Promise.allSettled(reads);
  }

  /**
   * Queues an apply's rows for LevelDB, in apply order: one write in
   * flight, and the operations queued behind it go as one write once it
   * has landed and the queue is released, with the meta row of the last
   * apply among them (writeQueued). The queue is released rowsGatherMs
   * after its first rows, once it holds rowsGatherBytes, or when someone
   * waits for the rows (rowsWrittenNow).
   */
  private queueRows(operations: BatchOperation[], meta: Meta): QueuedRows {
    let bytes = 0;
    for (const operation of operations) bytes += operationBytes(operation);
    this.pendingRowBytes += bytes;
    if (this.rowsQueued !== null) {
      for (const operation of operations) this.rowsQueued.operations.push(operation);
      this.rowsQueued.bytes += bytes;
      this.rowsQueued.meta = meta;
      if (this.rowsQueued.bytes >= this.rowsGatherBytes) this.rowsQueued.release();
      return this.rowsQueued;
    }
    let open!: () => void;
    const released = new Promise<void>((resolve) => (open = resolve));
    const timer = this.rowsGatherMs > 0 && bytes < this.rowsGatherBytes ? setTimeout(open, this.rowsGatherMs) : undefined;
    if (timer === undefined) open();
    const release = (): void => {
      clearTimeout(timer);
      open();
    };
    const queued: QueuedRows = { operations, bytes, meta, sync: false, release };
    this.rowsQueued = queued;
    this.rowsWritten = Promise.all([this.rowsWritten, released]).then(async () => {
      this.rowsQueued = null;
      try {
        // Not write(): close() lets the queue drain before it closes the database.
        if (this.failure === null) await this.writeQueued(queued);
      } catch (error) {
        this.fail(error); // the next apply, read or flush reports it
      } finally {
        this.pendingRowBytes -= queued.bytes;
      }
    });
    return queued;
  }

  /** Writes queued rows with their meta row last: the meta's key sorts after every row in the write. */
  private async writeQueued(queued: QueuedRows): Promise<void> {
    const revision = queued.meta.currentRevision;
    const previous = this.metaRowRevision;
    assert(previous === undefined || revision >= previous, 'meta rows are written in revision order');
    if (previous !== undefined && revision > previous && this.staleMetaRevisions.length < STALE_META_ROWS_MAX) this.staleMetaRevisions.push(previous);
    this.metaRowRevision = revision;
    queued.operations.push({ type: 'put', key: metaRowKey(revision), value: encodeMeta(queued.meta) });
    await this.writeBatch(queued.operations, queued.sync);
  }

  /**
   * Resolves when every row queued so far is in LevelDB; throws if a write
   * failed. Not if the store closed meanwhile: close() lets tracked reads
   * finish before it closes the database.
   */
  private async rowsLanded(): Promise<void> {
    await this.rowsWrittenNow();
    if (this.failure !== null) throw this.failure;
  }

  /** Settles once every row queued so far has landed, releasing the queue now rather than when its gathering ends. */
  private rowsWrittenNow(): Promise<void> {
    this.rowsQueued?.release();
    return this.rowsWritten;
  }

  private async write(
    operations: BatchOperation[],
    sync: boolean,
  ): Promise<void> {
    this.throwIfUnusable();
    try {
      await this.writeBatch(operations, sync);
    } catch (error) {
      this.fail(error);
      throw this.failure as unknown as Error;
    }
  }

  private async writeBatch(operations: readonly BatchOperation[], sync: boolean): Promise<void> {
    // A chained batch: abstract-level's array batch copies and re-validates every operation object.
    const batch = this.db.batch();
    for (const operation of operations) {
      if (operation.type === 'put') batch.put(operation.key, operation.value);
      else batch.del(operation.key);
    }
    await batch.write({ sync });
  }

  private fail(error: unknown): void {
    if (this.failure !== null) return;
    this.failure = new StorageFailedError('a store write failed; the node must stop (never retry a failed sync)', { cause: error });
    log('store failed: %O', error);
  }

  private throwIfUnusable(): void {
    if (this.failure !== null) throw this.failure;
    if (this.closed) throw new StorageFailedError('the store is closed');
  }
}

function lengthPrefixed(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + bytes.length);
  new DataView(out.buffer).setUint32(0, bytes.length);
  out.set(bytes, 4);
  return out;
}

async function removeStaleDatabases(directory: string, generation: number): Promise<void> {
  for (const name of await readdir(directory)) {
    if (/^db-\d+$/.test(name) && name !== `db-${generation}`) {
      await rm(join(directory, name), { recursive: true, force: true });
    }
  }
}

/** Writes a snapshot stream into an empty database, verifying its framing, row count and checksum. */
async function writeSnapshot(db: Database, chunks: AsyncIterable<Uint8Array>): Promise<void> {
  const digest = createHash('sha256');
  let rows = 0;
  let started = false;
  let ended = false;
  let sawMeta = false;
  for await (const chunk of chunks) {
    const frame = packr.unpack(chunk) as { format?: string; pairs?: Uint8Array[][]; end?: boolean; rows?: number; sha256?: string };
    if (!started) {
      if (frame.format !== SNAPSHOT_FORMAT && frame.format !== LEGACY_SNAPSHOT_FORMAT) throw new InvalidArgumentError('not a raftkv store snapshot');
      started = true;
      continue;
    }
    if (ended) throw new InvalidArgumentError('data after the end of a store snapshot');
    if (frame.end === true) {
      if (frame.rows !== rows || frame.sha256 !== digest.digest('hex')) {
        throw new InvalidArgumentError('store snapshot is damaged: row count or checksum mismatch');
      }
      ended = true;
      continue;
    }
    if (!Array.isArray(frame.pairs)) throw new InvalidArgumentError('store snapshot chunk is malformed');
    const operations = frame.pairs.map((pair) => {
      const [key, value] = pair;
      if (!(key instanceof Uint8Array) || !(value instanceof Uint8Array)) throw new InvalidArgumentError('store snapshot row is malformed');
      digest.update(lengthPrefixed(key));
      digest.update(lengthPrefixed(value));
      if (isMetaRowKey(key)) throw new InvalidArgumentError('store snapshot has a meta row among its revision rows');
      if (key.length === 1 && (key[0] === STREAM_META_KEY[0] || key[0] === LEGACY_META_KEY[0])) sawMeta = true;
      return { type: 'put' as const, key, value };
    });
    rows += operations.length;
    await db.batch(operations);
  }
  if (!started || !ended) throw new InvalidArgumentError('store snapshot is truncated');
  if (!sawMeta && rows > 0) throw new InvalidArgumentError('store snapshot has rows but no meta');
  // The stream's meta ('t', or 'm' from a member not yet upgraded) moves among the rows. That write is synced,
  // and one synced write makes every earlier unsynced write of this database durable.
  if (!(await migrateLegacyLayout(db))) {
    await db.put(metaRowKey(0), encodeMeta({ appliedIndex: 0, currentRevision: 0, compactRevision: 0 }), { sync: true });
  }
}

/**
 * Moves an older layout's meta row (the first layout's 'm' or the second's
 * 't') to its place among the revision rows, the first layout's lease rows
 * ('n') to theirs after the rows, and deletes the second layout's sync
 * marker ('z'), in one synced batch. Does nothing to a database in the
 * current layout; reports whether it wrote.
 */
async function migrateLegacyLayout(db: Database): Promise<boolean> {
  const operations: BatchOperation[] = [];
  const first = await db.get(LEGACY_META_KEY);
  const second = await db.get(STREAM_META_KEY);
  assert(first === undefined || second === undefined, 'the store has a meta row in two layouts');
  const meta = first ?? second;
  if (meta !== undefined) {
    // Keyed by the meta's revision, or by the newest row's if one is newer: no row may sort after the meta row.
    let revision = decodeMeta(meta).currentRevision;
    for await (const key of db.keys({ gte: ROWS_LOW, lt: ROWS_HIGH, reverse: true, limit: 1 })) {
      assert(!isMetaRowKey(key), 'the store has a meta row in two layouts');
      revision = Math.max(revision, mainOfRowKey(key));
    }
    operations.push({ type: 'put', key: metaRowKey(revision), value: meta }, { type: 'del', key: first === undefined ? STREAM_META_KEY : LEGACY_META_KEY });
  }
  if ((await db.get(LEGACY_SYNC_MARKER_KEY)) !== undefined) operations.push({ type: 'del', key: LEGACY_SYNC_MARKER_KEY });
  let leases = 0;
  for await (const [key, value] of db.iterator({ gte: Uint8Array.of(LEGACY_LEASE_PREFIX), lt: Uint8Array.of(LEGACY_LEASE_PREFIX + 1) })) {
    const moved = new Uint8Array(key);
    moved[0] = LEASE_PREFIX;
    operations.push({ type: 'put', key: moved, value }, { type: 'del', key });
    leases++;
  }
  if (operations.length === 0) return false;
  await db.batch(operations, { sync: true });
  log('moved the meta row among the revision rows and %d lease rows after them', leases);
  return true;
}

/** fdatasyncs a file unless it is gone (LevelDB removes a log once its memtable is in a synced table). */
async function syncFileIfPresent(path: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof openFile>>;
  try {
    handle = await openFile(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  try {
    await handle.datasync();
  } finally {
    await handle.close();
  }
}
