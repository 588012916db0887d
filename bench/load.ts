// The load generator shared by every benchmark target (raftkv in-process,
// raftkv over TCP, real etcd): closed-loop concurrent workers for a fixed
// duration after a warm-up, or an open-loop fixed offered rate; latency
// percentiles from a bounded histogram.

export interface BenchTarget {
  readonly name: string;
  put(key: string, value: Uint8Array): Promise<void>;
  get(key: string, serializable: boolean): Promise<void>;
  /** Compare-and-swap txn: put `value` iff the key's value equals `expected` (null: absent). */
  compareAndSwap(key: string, expected: Uint8Array | null, value: Uint8Array): Promise<boolean>;
  close(): Promise<void>;
}

export interface LoadResult {
  readonly operations: number;
  readonly errors: number;
  readonly seconds: number;
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
}

/** Log-linear latency histogram: 1 µs resolution up to 1 ms, then 1% buckets up to 60 s. */
export class LatencyHistogram {
  private readonly counts = new Float64Array(2048);
  private total = 0;

  record(milliseconds: number): void {
    this.counts[LatencyHistogram.bucket(milliseconds)]! += 1;
    this.total += 1;
  }

  percentile(fraction: number): number {
    if (this.total === 0) return 0;
    const target = Math.ceil(this.total * fraction);
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]!;
      if (seen >= target) return LatencyHistogram.upper(i);
    }
    return LatencyHistogram.upper(this.counts.length - 1);
  }

  private static bucket(ms: number): number {
    if (ms < 1) return Math.max(0, Math.floor(ms * 1000)) >> 2; // 4 µs buckets: 0..249
    const index = 250 + Math.floor(Math.log(ms) / Math.log(1.01));
    return Math.min(2047, index);
  }

  private static upper(bucket: number): number {
    if (bucket < 250) return ((bucket + 1) * 4) / 1000;
    return Math.pow(1.01, bucket - 250 + 1);
  }
}

export interface ClosedLoopOptions {
  readonly workers: number;
  readonly warmupSeconds: number;
  readonly seconds: number;
  readonly label: string;
  readonly operation: (worker: number, sequence: number) => Promise<void>;
}

function progress(label: string, operations: number, startMs: number): void {
  if (!process.stderr.isTTY && process.env['BENCH_PROGRESS'] !== '1') return;
  const rate = (operations * 1000) / Math.max(1, performance.now() - startMs);
  process.stderr.write(`\r  ${label}: ${Math.round(rate).toLocaleString('en-US')} ops/s   `);
}

export async function closedLoop(options: ClosedLoopOptions): Promise<LoadResult> {
  const histogram = new LatencyHistogram();
  let measuring = false;
  let stopped = false;
  let operations = 0;
  let errors = 0;
  let firstError: unknown;
  let startMs = 0;
  const worker = async (id: number): Promise<void> => {
    let sequence = 0;
    while (!stopped) {
      const begin = performance.now();
      try {
        await options.operation(id, sequence++);
        if (measuring && !stopped) {
          histogram.record(performance.now() - begin);
          operations += 1;
        }
      } catch (error) {
        if (measuring) errors += 1;
        firstError ??= error;
      }
    }
  };
  const workers = Array.from({ length: options.workers }, (_, i) => worker(i));
  await sleep(options.warmupSeconds * 1000);
  measuring = true;
  startMs = performance.now();
  const ticker = setInterval(() => progress(options.label, operations, startMs), 500);
  await sleep(options.seconds * 1000);
  const elapsed = (performance.now() - startMs) / 1000;
  const counted = operations;
  stopped = true;
  clearInterval(ticker);
  await Promise.all(workers);
  if (process.stderr.isTTY || process.env['BENCH_PROGRESS'] === '1') process.stderr.write('\n');
  if (counted === 0 && firstError !== undefined) throw firstError;
  return {
    operations: counted,
    errors,
    seconds: elapsed,
    perSecond: counted / elapsed,
    p50Ms: histogram.percentile(0.5),
    p99Ms: histogram.percentile(0.99),
    p999Ms: histogram.percentile(0.999),
  };
}

export interface OpenLoopOptions {
  readonly ratePerSecond: number;
  readonly seconds: number;
  readonly inflightMax: number;
  readonly label: string;
  readonly operation: (sequence: number) => Promise<void>;
}

/**
 * Offers a fixed rate regardless of how fast answers come (latency is
 * measured from the intended send time, so queueing delay counts: no
 * coordinated omission). Requests beyond inflightMax are counted as errors.
 */
export async function openLoop(options: OpenLoopOptions): Promise<LoadResult> {
  const histogram = new LatencyHistogram();
  let inflight = 0;
  let operations = 0;
  let errors = 0;
  let sequence = 0;
  const startMs = performance.now();
  const endMs = startMs + options.seconds * 1000;
  // In flight is a count, not a Set of the requests: a Set gaining and losing an entry per request keeps
  // promoting young objects on this thread (see ProposalTracker), and the clients share it with the load.
  let drained: (() => void) | null = null;
  const settle = (): void => {
    inflight -= 1;
    if (inflight === 0) drained?.();
  };
  while (performance.now() < endMs) {
    const now = performance.now();
    const due = Math.floor(((now - startMs) * options.ratePerSecond) / 1000);
    while (sequence < due) {
      const intendedMs = startMs + (sequence * 1000) / options.ratePerSecond;
      const current = sequence++;
      if (inflight >= options.inflightMax) {
        errors += 1;
        continue;
      }
      inflight += 1;
      options.operation(current).then(
        () => {
          histogram.record(performance.now() - intendedMs);
          operations += 1;
          settle();
        },
        () => {
          errors += 1;
          settle();
        },
      );
    }
    progress(options.label, operations, startMs);
    await sleep(1);
  }
  if (inflight > 0) await new Promise<void>((resolve) => (drained = resolve));
  const elapsed = (performance.now() - startMs) / 1000;
  if (process.stderr.isTTY || process.env['BENCH_PROGRESS'] === '1') process.stderr.write('\n');
  return {
    operations,
    errors,
    seconds: elapsed,
    perSecond: operations / elapsed,
    p50Ms: histogram.percentile(0.5),
    p99Ms: histogram.percentile(0.99),
    p999Ms: histogram.percentile(0.999),
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
