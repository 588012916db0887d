// Watch: change streams over the MVCC store, with etcd's guarantees — events
// in revision order, no duplicates, no gaps, every revision whole, and
// resumable from any revision still in history.
//
// Like etcd's watchableStore, a member's watchers live in two groups. A
// *synced* watcher has seen everything up to the hub's revision: each
// applied batch is matched once against all synced watchers (exact keys by
// map, prefixes by map per prefix length, other ranges by scan) and its
// events appended to their buffers. An *unsynced* watcher is behind — it
// started in the past, its consumer stalled until its buffer filled, or the
// store was replaced by a snapshot — and is fed from the store's history,
// a bounded read at a time, when its consumer asks for more; once it reaches
// the hub's revision it rejoins the synced group. A stalled consumer
// therefore costs a bounded buffer, then nothing: writes never wait for it.
//
// A watcher's position is a revision: every event below `nextRevision` has
// been handed out (or filtered out), none at or above it. Live dispatch
// skips events below it and history reads start at it, so the two can
// overlap without duplicating and cannot leave a hole between them.

import createDebug from 'debug';
import { InvalidArgumentError, RaftKVError } from '../raft/errors.ts';
import { NodeStoppedError } from '../raft/errors.ts';
import { CompactedError } from '../storage/mvcc/errors.ts';
import { indexKey, prefixEnd } from '../storage/mvcc/keys.ts';
import type { Event } from '../storage/mvcc/types.ts';
import { withBuffers } from './buffers.ts';

const log = createDebug('raftkv:watch');

export type WatchFilter = 'noPut' | 'noDelete';

/** One message of a watch stream. */
export interface WatchResponse {
  /**
   * Every matching event up to this revision has now been delivered (the
   * member's revision when the response was formed).
   */
  readonly revision: number;
  /** Whole revisions, in order; empty for a progress notification. */
  readonly events: readonly Event[];
  /** True for a progress notification: no events, only the revision. */
  readonly progressNotify: boolean;
}

/** Where history comes from: the store's revision-ordered rows. */
export interface EventSource {
  /** Revisions below this one are gone; a watcher that needs them fails with RAFTKV_COMPACTED. */
  readonly compactRevision: number;
  readEvents(
    fromRevision: number,
    toRevision: number,
    rowsMax: number,
    options: {
      readonly prevKv?: boolean;
      /** The watcher's keys, so the source can find their events without reading everything. */
      readonly key?: Uint8Array;
      readonly rangeEnd?: Uint8Array;
    },
  ): Promise<{ events: Event[]; nextRevision: number; wideRange?: boolean }>;
}

export interface WatchHubOptions {
  /** Watchers open on one member, at most. Default 100,000. */
  readonly watchersMax?: number;
  /** Events one watcher buffers for its consumer before it falls back to history. Default 1,024. */
  readonly watchBufferEvents?: number;
  /** Bytes all watchers of a member buffer together before the ones receiving fall back to history. Default 64 MiB. */
  readonly watchBufferBytes?: number;
  /** Events in one response, at most (a single revision larger than this still arrives whole). Default 1,000. */
  readonly watchResponseEvents?: number;
  /** Store rows read per history step of a catching-up watcher. Default 1,000. */
  readonly watchCatchUpRows?: number;
  /** Interval of progress notifications to watchers that asked for them. Default 600,000 ms (etcd's 10 minutes). */
  readonly watchProgressNotifyMs?: number;
  /** Bytes of the most recent events kept in memory, so watchers a little behind catch up without reading the disk. Default 16 MiB. */
  readonly watchRecentBytes?: number;
}

/** Which keys a watcher follows, in the index's string form. */
type Matcher =
  | { readonly kind: 'key'; readonly key: string }
  | { readonly kind: 'prefix'; readonly prefix: string }
  | { readonly kind: 'range'; readonly start: string; readonly end: string | undefined };

export interface WatchRequest {
  readonly key: Uint8Array;
  /** etcd's convention: absent = the key alone; [0] = every key >= key; else [key, rangeEnd). */
  readonly rangeEnd?: Uint8Array;
  /** The selector was a prefix (rangeEnd = prefixEnd(key)); matched by prefix lookups. */
  readonly prefix?: boolean;
  readonly startRevision?: number;
  readonly prevKv?: boolean;
  readonly filters?: readonly WatchFilter[];
  readonly progressNotify?: boolean;
  readonly signal?: AbortSignal;
}

const EVENT_OVERHEAD_BYTES = 96;
/** What one buffered reference to a shared event costs a watcher. */
const REFERENCE_BYTES = 16;

function eventBytes(event: Event): number {
  const previous = event.prevKv === undefined ? 0 : event.prevKv.key.length + event.prevKv.value.length;
  return EVENT_OVERHEAD_BYTES + event.kv.key.length + event.kv.value.length + previous;
}

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  const result = value ?? fallback;
  if (!Number.isSafeInteger(result) || result < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${String(value)}`);
  return result;
}

function matcherOf(request: WatchRequest): Matcher {
  const start = indexKey(request.key);
  if (request.prefix === true) return { kind: 'prefix', prefix: start };
  const end = request.rangeEnd;
  if (end === undefined || end.length === 0) return { kind: 'key', key: start };
  if (end.length === 1 && end[0] === 0) return start.length === 0 || start === '\0' ? { kind: 'prefix', prefix: '' } : { kind: 'range', start, end: undefined };
  return { kind: 'range', start, end: indexKey(end) };
}

function matches(matcher: Matcher, key: string): boolean {
  switch (matcher.kind) {
    case 'key':
      return key === matcher.key;
    case 'prefix':
      return key.startsWith(matcher.prefix);
    case 'range':
      return key >= matcher.start && (matcher.end === undefined || key < matcher.end);
  }
}

interface PublicForms {
  readonly bare: Event;
  readonly withPrevious: Event;
}

/** An event with its key in index form and, once needed, its public forms: shared by every watcher that gets it. */
interface Change {
  readonly event: Event;
  readonly key: string;
  forms: PublicForms | null;
}

function formsOf(change: Change): PublicForms {
  change.forms ??= publicForms(change.event);
  return change.forms;
}

/** An event as watchers receive it: Buffers, with and without the previous key-value. */
function publicForms(event: Event): PublicForms {
  const bare: Event = { type: event.type, kv: withBuffers(event.kv) };
  return { bare, withPrevious: event.prevKv === undefined ? bare : { ...bare, prevKv: withBuffers(event.prevKv) } };
}

interface Waiter {
  resolve(): void;
}

/** A member's watchers, fed once per applied batch. */
export class WatchHub {
  private revision: number;
  private readonly byKey = new Map<string, Set<Watch>>();
  private readonly byPrefix = new Map<string, Set<Watch>>();
  /** Prefix length → watchers with a prefix of that length (only lengths in use are probed). */
  private readonly prefixLengths = new Map<number, number>();
  private readonly byRange = new Set<Watch>();
  private readonly all = new Set<Watch>();
  private bufferedBytes = 0;
  /** Buffered events and how many watchers hold each: an event shared by many watchers is counted once. */
  private readonly held = new Map<Event, number>();
  /** The latest dispatched events, whole revisions, from recentStart on (raw, with previous key-values). */
  private recent: Change[] = [];
  private recentHead = 0;
  private recentBytes = 0;
  private recentStart: number;
  private stopped: Error | null = null;
  private nextId = 1;
  private progressTimer: NodeJS.Timeout | undefined;
  readonly watchersMax: number;
  readonly bufferEvents: number;
  readonly bufferBytes: number;
  readonly responseEvents: number;
  readonly catchUpRows: number;
  readonly progressNotifyMs: number;
  readonly recentBytesMax: number;

  constructor(
    private readonly source: EventSource,
    revision: number,
    options: WatchHubOptions = {},
  ) {
    this.revision = revision;
    this.recentStart = revision + 1;
    this.watchersMax = positiveInteger('watchersMax', options.watchersMax, 100_000);
    this.bufferEvents = positiveInteger('watchBufferEvents', options.watchBufferEvents, 1024);
    this.bufferBytes = positiveInteger('watchBufferBytes', options.watchBufferBytes, 64 * 1024 * 1024);
    this.responseEvents = positiveInteger('watchResponseEvents', options.watchResponseEvents, 1000);
    this.catchUpRows = positiveInteger('watchCatchUpRows', options.watchCatchUpRows, 1000);
    this.progressNotifyMs = positiveInteger('watchProgressNotifyMs', options.watchProgressNotifyMs, 600_000);
    this.recentBytesMax = positiveInteger('watchRecentBytes', options.watchRecentBytes, 16 * 1024 * 1024);
  }

  /** The last revision dispatched to watchers. */
  get currentRevision(): number {
    return this.revision;
  }

  get watcherCount(): number {
    return this.all.size;
  }

  /** Bytes buffered for consumers, across all watchers. */
  get bufferedByteCount(): number {
    return this.bufferedBytes;
  }

  /** Watchers currently fed from history rather than live. */
  get unsyncedCount(): number {
    let count = 0;
    for (const watch of this.all) if (!watch.synced) count++;
    return count;
  }

  watch(request: WatchRequest): Watch {
    if (this.stopped !== null) throw this.stopped;
    if (!(request.key instanceof Uint8Array)) throw new InvalidArgumentError('a watch needs a key');
    const start = request.startRevision ?? 0;
    if (!Number.isSafeInteger(start) || start < 0) throw new InvalidArgumentError(`startRevision must be a non-negative integer, got ${String(request.startRevision)}`);
    const filters = request.filters ?? [];
    if (!Array.isArray(filters) || filters.some((filter) => filter !== 'noPut' && filter !== 'noDelete')) {
      throw new InvalidArgumentError("filters must be an array of 'noPut' / 'noDelete'");
    }
    if (request.signal !== undefined && !(request.signal instanceof AbortSignal)) throw new InvalidArgumentError('signal must be an AbortSignal');
    if (this.all.size >= this.watchersMax) {
      throw new RaftKVError('RAFTKV_TOO_MANY_WATCHERS', `this member already has ${this.all.size} watchers (watchersMax)`);
    }
    const bounds: { key: Uint8Array; rangeEnd?: Uint8Array } =
      request.prefix === true
        ? { key: request.key, rangeEnd: request.key.length === 0 ? new Uint8Array([0]) : prefixEnd(request.key) }
        : request.rangeEnd === undefined
          ? { key: request.key }
          : { key: request.key, rangeEnd: request.rangeEnd };
    const watch = new Watch(this, this.nextId++, matcherOf(request), bounds, {
      prevKv: request.prevKv === true,
      noPut: filters.includes('noPut'),
      noDelete: filters.includes('noDelete'),
      progressNotify: request.progressNotify === true,
    });
    // No start revision: from the next change. A start in the past: catch up from history first.
    const from = start === 0 ? this.revision + 1 : start;
    watch.nextRevision = from;
    watch.synced = from > this.revision;
    this.register(watch);
    if (watch.options.progressNotify) this.startProgressTimer();
    if (request.signal !== undefined) watch.bindSignal(request.signal);
    log('watch %d opened at revision %d (%s)', watch.id, from, watch.synced ? 'live' : 'catching up');
    return watch;
  }

  /**
   * Feeds one applied batch: its events in revision order, and the store's
   * revision after it. One pass over the events serves every watcher.
   */
  dispatch(events: readonly Event[], revision: number): void {
    const firstRevision = this.revision + 1;
    this.revision = revision;
    if (this.all.size === 0) {
      // No watcher: nothing to deliver, and nothing kept. A watcher that starts in the past reads the
      // store's history instead; kept here, every event would outlive the young generation's
      // collections (16 MiB of them) only to die in the old one.
      this.restartRecent(revision);
      return;
    }
    const changes = events.map((event): Change => ({ event, key: indexKey(event.kv.key), forms: null }));
    this.remember(changes);
    if (events.length === 0) return;
    const delivery = new Map<Watch, Event[]>();
    // Each event is put in its public form once, however many watchers receive it.
    let current = changes[0] as Change;
    const deliver = (watch: Watch): void => {
      const forms = formsOf(current);
      const event = watch.options.prevKv ? forms.withPrevious : forms.bare;
      const list = delivery.get(watch);
      if (list === undefined) delivery.set(watch, [event]);
      else list.push(event);
    };
    const offer = (watchers: Set<Watch> | undefined): void => {
      if (watchers === undefined) return;
      for (const watch of watchers) if (watch.synced && watch.wants(current.event)) deliver(watch);
    };
    for (const change of changes) {
      current = change;
      const key = change.key;
      if (this.byKey.size > 0) offer(this.byKey.get(key));
      for (const length of this.prefixLengths.keys()) {
        if (length <= key.length) offer(this.byPrefix.get(length === key.length ? key : key.slice(0, length)));
      }
      if (this.byRange.size > 0) {
        for (const watch of this.byRange) if (watch.synced && matches(watch.matcher, key) && watch.wants(change.event)) deliver(watch);
      }
    }
    for (const [watch, list] of delivery) {
      let bytes = 0;
      for (const event of list) bytes += REFERENCE_BYTES + (this.held.has(event) ? 0 : eventBytes(event));
      if (watch.bufferedEvents + list.length > this.bufferEvents || this.bufferedBytes + bytes > this.bufferBytes) {
        // Its consumer is behind: stop feeding it live; it resumes from history at this batch.
        watch.fallBehind(firstRevision);
        continue;
      }
      this.hold(list);
      watch.enqueue(list);
    }
  }

  /** Whether an applied batch needs its events built: only while some watcher exists. */
  get watching(): boolean {
    return this.all.size > 0;
  }

  /**
   * An applied batch whose events were not built (no watcher when it began):
   * a watcher that started since reads the batch from the store's history.
   */
  skip(revision: number): void {
    const previous = this.revision;
    this.revision = revision;
    // The events in between were never dispatched: the recent window restarts here.
    this.restartRecent(revision);
    for (const watch of this.all) if (watch.synced) watch.fallBehind(previous + 1);
  }

  /** The store was replaced by a snapshot: every watcher catches up from the new store's history. */
  resync(revision: number): void {
    const previous = this.revision;
    this.skip(revision);
    log('store replaced at revision %d (was %d): %d watchers catch up', revision, previous, this.all.size);
  }

  /** The member stopped: every watcher ends with `error` once its buffer is drained. */
  close(error: Error = new NodeStoppedError('the member is closed')): void {
    if (this.stopped !== null) return;
    this.stopped = error;
    if (this.progressTimer !== undefined) clearInterval(this.progressTimer);
    this.progressTimer = undefined;
    for (const watch of [...this.all]) watch.fail(error);
  }

  // ---- for Watch ----

  /** @internal A watcher buffers these events. */
  hold(events: readonly Event[]): void {
    for (const event of events) {
      const references = this.held.get(event);
      if (references === undefined) this.bufferedBytes += eventBytes(event);
      this.held.set(event, (references ?? 0) + 1);
      this.bufferedBytes += REFERENCE_BYTES;
    }
  }

  /** @internal A watcher handed these events out (or dropped them). */
  release(events: readonly Event[]): void {
    for (const event of events) {
      const references = this.held.get(event) ?? 0;
      this.bufferedBytes -= REFERENCE_BYTES;
      if (references <= 1) {
        this.held.delete(event);
        this.bufferedBytes -= eventBytes(event);
      } else this.held.set(event, references - 1);
    }
  }

  /** @internal */
  unregister(watch: Watch): void {
    if (!this.all.delete(watch)) return;
    const matcher = watch.matcher;
    if (matcher.kind === 'key') removeFrom(this.byKey, matcher.key, watch);
    else if (matcher.kind === 'prefix') {
      removeFrom(this.byPrefix, matcher.prefix, watch);
      const count = (this.prefixLengths.get(matcher.prefix.length) ?? 1) - 1;
      if (count === 0) this.prefixLengths.delete(matcher.prefix.length);
      else this.prefixLengths.set(matcher.prefix.length, count);
    } else this.byRange.delete(watch);
  }

  /** @internal One bounded step of history for a watcher that is behind. */
  async readHistory(watch: Watch): Promise<{ changes: readonly Change[]; nextRevision: number; revision: number }> {
    const to = this.revision;
    const compactRevision = this.source.compactRevision;
    if (watch.nextRevision < compactRevision) throw new CompactedError(watch.nextRevision, compactRevision);
    if (watch.nextRevision >= this.recentStart) return this.readRecent(watch.nextRevision, to);
    const { events, nextRevision, wideRange } = await this.source.readEvents(watch.nextRevision, to, this.catchUpRows, {
      prevKv: watch.options.prevKv,
      // A range the source found too wide to look up key by key is scanned from then on.
      ...(watch.wideRange ? {} : watch.bounds),
    });
    if (wideRange === true) watch.wideRange = true;
    return { changes: events.map((event) => ({ event, key: indexKey(event.kv.key), forms: null })), nextRevision, revision: to };
  }

  /** @internal */
  get isStopped(): Error | null {
    return this.stopped;
  }

  /** Empties the recent window; it starts again after `revision`. */
  private restartRecent(revision: number): void {
    if (this.recent.length > 0) {
      this.recent = [];
      this.recentHead = 0;
      this.recentBytes = 0;
    }
    this.recentStart = revision + 1;
  }

  /** Keeps the latest events, whole revisions, within recentBytesMax. */
  private remember(changes: readonly Change[]): void {
    for (const change of changes) {
      this.recent.push(change);
      this.recentBytes += eventBytes(change.event);
    }
    while (this.recentBytes > this.recentBytesMax && this.recentHead < this.recent.length) {
      const dropped = (this.recent[this.recentHead] as Change).event.kv.modRevision;
      while (this.recentHead < this.recent.length && (this.recent[this.recentHead] as Change).event.kv.modRevision === dropped) {
        this.recentBytes -= eventBytes((this.recent[this.recentHead] as Change).event);
        this.recentHead++;
      }
      this.recentStart = dropped + 1;
    }
    if (this.recentHead > 1024 && this.recentHead * 2 > this.recent.length) {
      this.recent = this.recent.slice(this.recentHead);
      this.recentHead = 0;
    }
  }

  /** History from memory: the recent events from `from` on, about catchUpRows of them, whole revisions. */
  private readRecent(from: number, to: number): { changes: readonly Change[]; nextRevision: number; revision: number } {
    let low = this.recentHead;
    let high = this.recent.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((this.recent[middle] as Change).event.kv.modRevision < from) low = middle + 1;
      else high = middle;
    }
    let end = Math.min(this.recent.length, low + this.catchUpRows);
    if (end < this.recent.length) {
      const last = (this.recent[end - 1] as Change).event.kv.modRevision;
      while (end < this.recent.length && (this.recent[end] as Change).event.kv.modRevision === last) end++;
    }
    const changes = this.recent.slice(low, end);
    const nextRevision = end < this.recent.length ? (this.recent[end] as Change).event.kv.modRevision : to + 1;
    return { changes, nextRevision, revision: to };
  }

  private register(watch: Watch): void {
    this.all.add(watch);
    const matcher = watch.matcher;
    if (matcher.kind === 'key') addTo(this.byKey, matcher.key, watch);
    else if (matcher.kind === 'prefix') {
      addTo(this.byPrefix, matcher.prefix, watch);
      this.prefixLengths.set(matcher.prefix.length, (this.prefixLengths.get(matcher.prefix.length) ?? 0) + 1);
    } else this.byRange.add(watch);
  }

  private startProgressTimer(): void {
    if (this.progressTimer !== undefined) return;
    this.progressTimer = setInterval(() => {
      for (const watch of this.all) if (watch.options.progressNotify) watch.requestProgress();
    }, this.progressNotifyMs);
    this.progressTimer.unref();
  }
}

function addTo(map: Map<string, Set<Watch>>, key: string, watch: Watch): void {
  let set = map.get(key);
  if (set === undefined) {
    set = new Set();
    map.set(key, set);
  }
  set.add(watch);
}

function removeFrom(map: Map<string, Set<Watch>>, key: string, watch: Watch): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(watch);
  if (set.size === 0) map.delete(key);
}

interface WatchFlags {
  readonly prevKv: boolean;
  readonly noPut: boolean;
  readonly noDelete: boolean;
  readonly progressNotify: boolean;
}

/**
 * One watch stream: `for await (const response of watch)`. Ends when
 * cancelled (cancel(), its AbortSignal, or leaving the loop); fails with
 * RAFTKV_COMPACTED when the revisions it needs were compacted, and with
 * RAFTKV_STOPPED when the member closes (after the buffered events).
 */
export class Watch implements AsyncIterableIterator<WatchResponse> {
  /** @internal */ synced = false;
  /** @internal The store said this range has too many keys for index lookups. */ wideRange = false;
  /** @internal First revision not yet delivered (nor filtered out). */ nextRevision = 1;
  private buffer: Event[] = [];
  /** Revision the buffered events cover up to (for a watcher no longer fed live). */
  private bufferRevision = 0;
  private progressPending = false;
  private error: Error | null = null;
  private cancelled = false;
  private waiter: Waiter | null = null;
  private pulling: Promise<IteratorResult<WatchResponse>> | null = null;
  private detachSignal: (() => void) | null = null;

  /** @internal */
  constructor(
    private readonly hub: WatchHub,
    readonly id: number,
    /** @internal */ readonly matcher: Matcher,
    /** @internal */ readonly bounds: { readonly key: Uint8Array; readonly rangeEnd?: Uint8Array },
    /** @internal */ readonly options: WatchFlags,
  ) {}

  /** Ends the stream; a pending `next()` resolves as done. Safe to call twice. */
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.finish();
  }

  /**
   * Asks for a progress notification: once every event up to the member's
   * revision is delivered, a response with no events carries that revision.
   */
  requestProgress(): void {
    if (this.cancelled || this.error !== null) return;
    this.progressPending = true;
    this.wake();
  }

  get isCancelled(): boolean {
    return this.cancelled;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<WatchResponse>> {
    // Calls are served one at a time, in order, however the consumer makes them.
    const previous = this.pulling ?? Promise.resolve(undefined);
    const current = previous.then(
      () => this.pull(),
      () => this.pull(),
    );
    this.pulling = current;
    return current;
  }

  /** Leaving a `for await` loop (break, return, throw) cancels the watch. */
  async return(): Promise<IteratorResult<WatchResponse>> {
    this.cancel();
    return { done: true, value: undefined };
  }

  // ---- for WatchHub ----

  /** @internal */
  wants(event: Event): boolean {
    if (event.kv.modRevision < this.nextRevision) return false;
    return event.type === 'put' ? !this.options.noPut : !this.options.noDelete;
  }

  /** @internal */
  get bufferedEvents(): number {
    return this.buffer.length;
  }

  /** @internal */
  enqueue(events: Event[]): void {
    for (const event of events) this.buffer.push(event);
    this.wake();
  }

  /** @internal Stops live delivery; history takes over from `fromRevision` (or later, if it started later). */
  fallBehind(fromRevision: number): void {
    if (!this.synced) return;
    this.synced = false;
    this.bufferRevision = fromRevision - 1;
    this.nextRevision = Math.max(this.nextRevision, fromRevision);
    this.wake();
  }

  /** @internal */
  fail(error: Error): void {
    if (this.error !== null || this.cancelled) return;
    this.error = error;
    this.hub.unregister(this);
    this.wake();
  }

  /** @internal */
  bindSignal(signal: AbortSignal): void {
    if (signal.aborted) {
      this.cancel();
      return;
    }
    const onAbort = (): void => this.cancel();
    signal.addEventListener('abort', onAbort, { once: true });
    this.detachSignal = () => signal.removeEventListener('abort', onAbort);
  }

  // ---- the consumer's side ----

  private async pull(): Promise<IteratorResult<WatchResponse>> {
    for (;;) {
      if (this.cancelled) return { done: true, value: undefined };
      if (this.buffer.length > 0) return { done: false, value: this.take() };
      if (this.error !== null) {
        this.finish();
        throw this.error;
      }
      if (!this.synced) {
        const response = await this.catchUp();
        if (response !== null) return { done: false, value: response };
        continue;
      }
      if (this.progressPending) {
        this.progressPending = false;
        // Never below the watch's own start (etcd #20221) nor below what it delivered (#15220).
        const revision = Math.max(this.hub.currentRevision, this.nextRevision - 1);
        return { done: false, value: { revision, events: [], progressNotify: true } };
      }
      await new Promise<void>((resolve) => {
        this.waiter = { resolve };
      });
    }
  }

  /** Hands out buffered events: whole revisions, about `watchResponseEvents` at most. */
  private take(): WatchResponse {
    const limit = this.hub.responseEvents;
    let count = Math.min(limit, this.buffer.length);
    const lastRevision = (this.buffer[count - 1] as Event).kv.modRevision;
    while (count < this.buffer.length && (this.buffer[count] as Event).kv.modRevision === lastRevision) count++;
    const events = count === this.buffer.length ? this.buffer : this.buffer.slice(0, count);
    this.buffer = count === this.buffer.length ? [] : this.buffer.slice(count);
    this.hub.release(events);
    const drained = this.buffer.length === 0;
    const revision = drained ? (this.synced ? this.hub.currentRevision : this.bufferRevision) : lastRevision;
    // Buffered events are already in public form (see dispatch).
    return { revision, events, progressNotify: false };
  }

  /** One step of history; null when it produced nothing to deliver (caught up, or filtered out). */
  private async catchUp(): Promise<WatchResponse | null> {
    if (this.nextRevision > this.hub.currentRevision) {
      // Caught up: from here on, live dispatch feeds it (no batch can land between this check and this line).
      this.synced = true;
      return null;
    }
    let step: { changes: readonly Change[]; nextRevision: number; revision: number };
    try {
      step = await this.hub.readHistory(this);
    } catch (error) {
      if (this.cancelled) return null;
      if (error instanceof CompactedError) {
        log('watch %d: revision %d is compacted (%d)', this.id, this.nextRevision, error.compactRevision);
        this.fail(new CompactedError(this.nextRevision, error.compactRevision));
        return null;
      }
      const stopped = this.hub.isStopped;
      this.fail(stopped ?? (error as Error));
      return null;
    }
    if (this.cancelled || this.error !== null) return null;
    const events: Event[] = [];
    for (const change of step.changes) {
      if (!matches(this.matcher, change.key) || !this.wants(change.event)) continue;
      const forms = formsOf(change);
      events.push(this.options.prevKv ? forms.withPrevious : forms.bare);
    }
    this.nextRevision = Math.max(this.nextRevision, step.nextRevision);
    if (events.length === 0) return null;
    return { revision: step.nextRevision - 1, events, progressNotify: false };
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.resolve();
  }

  private finish(): void {
    this.hub.unregister(this);
    this.hub.release(this.buffer);
    this.buffer = [];
    this.detachSignal?.();
    this.detachSignal = null;
    this.wake();
  }
}
