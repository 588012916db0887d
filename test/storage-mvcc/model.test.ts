// Model-based test of the MVCC store: random puts, deletes, ranges with
// every option, transactions (nested, with compares), compactions,
// historical reads, restarts and snapshot restores, applied in random
// batches to two stores on classic-level (one compacting in tiny steps) and
// to the reference model; every answer must agree, and the two stores'
// hashes must be equal. Lease grants, revokes (deleting attached keys at
// one revision), renewals and checkpoints are mixed in. SEEDS × OPS operations (default 4 × 5,000 = 20,000);
// SEED=n replays one seed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRandom } from '../../src/raft/random.ts';
import type { RandomSource } from '../../src/raft/random.ts';
import { MvccStore } from '../../src/storage/mvcc/store.ts';
import type { Compare, RangeRequest, RequestOp, WriteRequest } from '../../src/storage/mvcc/types.ts';
import { validateWriteRequest } from '../../src/storage/mvcc/validate.ts';
import { errorCodeOf, MvccModel, plainOf } from './model.ts';

const KEYS = ['a', 'a/1', 'a/2', 'a/2/x', 'a0', 'b', 'b/1', 'c', 'c\u00ff', 'd', 'e', 'z'];
const VALUES = ['', 'v1', 'v2', 'v3', 'w', 'zz'];
const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'latin1'));

class Generator {
  constructor(
    private readonly random: RandomSource,
    private readonly model: MvccModel,
  ) {}

  pick<T>(items: readonly T[]): T {
    return items[this.random(items.length)] as T;
  }

  chance(percent: number): boolean {
    return this.random(100) < percent;
  }

  bounds(): { key: Uint8Array; rangeEnd?: Uint8Array } {
    const roll = this.random(100);
    const key = this.pick(KEYS);
    if (roll < 45) return { key: bytes(key) };
    if (roll < 70) {
      const prefix = this.pick(['a', 'a/', 'b', 'c', 'a/2']);
      const end = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
      return { key: bytes(prefix), rangeEnd: bytes(end) };
    }
    if (roll < 88) {
      const other = this.pick(KEYS);
      const [low, high] = key <= other ? [key, other] : [other, key];
      return { key: bytes(low), rangeEnd: bytes(high) };
    }
    return this.chance(50) ? { key: new Uint8Array([0]), rangeEnd: new Uint8Array([0]) } : { key: bytes(key), rangeEnd: new Uint8Array([0]) };
  }

  revision(): number {
    const low = Math.max(0, this.model.compactRevision - 2);
    return low + this.random(this.model.revision + 3 - low);
  }

  range(): RangeRequest {
    const request: { -readonly [K in keyof RangeRequest]: RangeRequest[K] } = { ...this.bounds() };
    if (this.chance(40)) request.limit = this.random(4);
    if (this.chance(35)) request.revision = this.revision();
    if (this.chance(15)) request.keysOnly = true;
    if (this.chance(10)) request.countOnly = true;
    if (this.chance(40)) request.sortOrder = this.pick(['none', 'ascend', 'descend'] as const);
    if (this.chance(40)) request.sortTarget = this.pick(['key', 'version', 'create', 'mod', 'value'] as const);
    if (this.chance(10)) request.minModRevision = this.revision();
    if (this.chance(10)) request.maxModRevision = this.revision();
    if (this.chance(10)) request.minCreateRevision = this.revision();
    if (this.chance(10)) request.maxCreateRevision = this.revision();
    return request;
  }

  put(): WriteRequest & { type: 'put' } {
    const ignoreValue = this.chance(8);
    const ignoreLease = this.chance(8);
    const lease = ignoreLease ? 0 : this.random(3);
    return {
      type: 'put',
      key: bytes(this.pick(KEYS)),
      value: ignoreValue ? new Uint8Array(0) : bytes(this.pick(VALUES)),
      ...(lease > 0 ? { lease } : {}),
      ...(this.chance(50) ? { prevKv: true } : {}),
      ...(ignoreValue ? { ignoreValue } : {}),
      ...(ignoreLease ? { ignoreLease } : {}),
    };
  }

  deleteRange(): WriteRequest & { type: 'deleteRange' } {
    return { type: 'deleteRange', ...this.bounds(), ...(this.chance(50) ? { prevKv: true } : {}) };
  }

  compare(): Compare {
    const target = this.pick(['value', 'version', 'create', 'mod', 'lease'] as const);
    const result = this.pick(['=', '!=', '<', '>'] as const);
    const where = this.chance(80) ? { key: bytes(this.pick(KEYS)) } : this.bounds();
    if (target === 'value') return { ...where, target, result, value: bytes(this.pick(VALUES)) };
    const number = target === 'version' ? this.random(4) : target === 'lease' ? this.random(3) : this.revision();
    return { ...where, target, result, number };
  }

  operations(depth: number): RequestOp[] {
    const operations: RequestOp[] = [];
    const count = this.random(4);
    for (let i = 0; i < count; i++) {
      const roll = this.random(100);
      if (roll < 35) operations.push(this.put());
      else if (roll < 55) operations.push(this.deleteRange());
      else if (roll < 85 || depth >= 2) operations.push({ type: 'range', ...this.range() });
      else operations.push(this.txn(depth + 1));
    }
    return operations;
  }

  txn(depth = 0): WriteRequest & { type: 'txn' } {
    const compares: Compare[] = [];
    for (let i = this.random(3); i > 0; i--) compares.push(this.compare());
    return { type: 'txn', compare: compares, success: this.operations(depth), failure: this.operations(depth) };
  }

  lease(): WriteRequest {
    const id = 1 + this.random(3);
    const roll = this.random(100);
    if (roll < 40) return { type: 'leaseGrant', id, ttlSeconds: 1 + this.random(100) };
    if (roll < 65) return { type: 'leaseRevoke', id, ...(this.chance(30) ? { renewals: this.random(3) } : {}) };
    if (roll < 85) return { type: 'leaseKeepAlive', id };
    return { type: 'leaseCheckpoint', checkpoints: [{ id, renewals: this.random(3), remainingMs: 1 + this.random(5000) }] };
  }

  write(): WriteRequest {
    if (this.chance(12)) return this.lease();
    const roll = this.random(100);
    if (roll < 40) return this.put();
    if (roll < 58) return this.deleteRange();
    if (roll < 92) return this.txn();
    return { type: 'compact', revision: Math.max(1, this.model.compactRevision - 1 + this.random(this.model.revision - this.model.compactRevision + 3)) };
  }
}

interface Run {
  main: MvccStore;
  replica: MvccStore;
  directory: string;
  index: number;
}

async function reopen(run: Run, which: 'main' | 'replica'): Promise<void> {
  await run[which].close();
  run[which] = await MvccStore.open(join(run.directory, which), which === 'main' ? { compactionKeysPerStep: 10_000, compactionRowsPerStep: 100_000 } : { compactionKeysPerStep: 1, compactionRowsPerStep: 1 });
}

async function checkAgreement(run: Run, model: MvccModel, context: string): Promise<void> {
  const everything = await run.main.range({ key: new Uint8Array([0]), rangeEnd: new Uint8Array([0]) });
  assert.deepEqual(plainOf(everything), model.range({ key: new Uint8Array([0]), rangeEnd: new Uint8Array([0]) }), `${context}: full range`);
  assert.equal(run.main.currentRevision, model.revision, `${context}: current revision`);
  assert.equal(run.main.compactRevision, model.compactRevision, `${context}: compact revision`);
  assert.equal(run.replica.currentRevision, model.revision, `${context}: replica revision`);
  const modelLeases = [...model.leases].sort(([left], [right]) => left - right).map(([id, lease]) => ({ id, ...lease }));
  assert.deepEqual(run.main.leases(), modelLeases, `${context}: lease table`);
  assert.deepEqual(run.replica.leases(), modelLeases, `${context}: replica lease table`);
  for (const { id } of modelLeases) {
    const attached = [...model.histories.keys()].filter((key) => model.latest(key)?.lease === id).sort();
    assert.deepEqual(run.main.leaseKeys(id).map((key) => Buffer.from(key).toString('latin1')), attached, `${context}: keys of lease ${id}`);
  }
  const [mainHash, replicaHash] = await Promise.all([run.main.hash(), run.replica.hash()]);
  assert.equal(mainHash.hash, replicaHash.hash, `${context}: hashes of the two stores`);
}

async function runSeed(seed: number, operations: number): Promise<void> {
  const random = createRandom(seed);
  const model = new MvccModel();
  const generate = new Generator(random, model);
  const directory = await mkdtemp(join(tmpdir(), 'raftkv-mvcc-model-'));
  const run: Run = {
    directory,
    index: 1,
    main: await MvccStore.open(join(directory, 'main')),
    replica: await MvccStore.open(join(directory, 'replica'), { compactionKeysPerStep: 1, compactionRowsPerStep: 1 }),
  };
  try {
    let done = 0;
    while (done < operations) {
      const roll = random(1000);
      const context = `seed ${seed}, operation ${done}`;
      if (roll < 5) {
        await reopen(run, random(2) === 0 ? 'main' : 'replica');
        done++;
      } else if (roll < 8) {
        await run.replica.restore(run.main.snapshot());
        assert.equal(run.replica.appliedIndex(), run.main.appliedIndex(), `${context}: restored applied index`);
        done++;
      } else if (roll < 350) {
        const request = generate.range();
        let actual: unknown;
        try {
          actual = plainOf(await run.main.range(request));
        } catch (error) {
          actual = errorCodeOf(error);
        }
        let expected: unknown;
        try {
          expected = model.range(request);
        } catch (error) {
          expected = errorCodeOf(error);
        }
        assert.deepEqual(actual, expected, `${context}: range ${JSON.stringify(plainOf(request))}`);
        done++;
      } else {
        const batch: WriteRequest[] = [];
        for (let size = 1 + random(6); size > 0; size--) {
          const request = generate.write();
          try {
            validateWriteRequest(request);
          } catch (error) {
            assert.equal((error as { code?: string }).code, 'RAFTKV_DUPLICATE_KEY', `${context}: only duplicate puts are generated invalid`);
            continue;
          }
          batch.push(request);
        }
        const items = batch.map((request) => ({ index: ++run.index, request }));
        const [responses] = await Promise.all([run.main.applyBatch(items), run.replica.applyBatch(items)]);
        batch.forEach((request, position) => {
          const expected = model.apply(request);
          assert.deepEqual(plainOf(responses[position]), expected, `${context}: write ${JSON.stringify(plainOf(request))}`);
        });
        done += batch.length;
      }
      if (roll % 97 === 0) await checkAgreement(run, model, context);
    }
    await Promise.all([run.main.compactionSettled(), run.replica.compactionSettled()]);
    await checkAgreement(run, model, `seed ${seed}, end`);
    await reopen(run, 'main');
    await checkAgreement(run, model, `seed ${seed}, after the last restart`);
  } catch (error) {
    (error as Error).message +=
      `\n  replay: SEED=${seed} OPS=${operations} npm test -- storage-mvcc/model`;
    throw error;
  } finally {
    await run.main.close();
    await run.replica.close();
    await rm(directory, { recursive: true, force: true });
  }
}

const operations = Number(process.env['OPS'] ?? 5_000);
const only = process.env['SEED'];
const seeds = only !== undefined ? [Number(only)] : Array.from({ length: Number(process.env['SEEDS'] ?? 4) }, (_, i) => i + 1);

for (const seed of seeds) {
  test(`MVCC store agrees with the reference model: seed ${seed}, ${operations} operations`, async () => {
    await runSeed(seed, operations);
  });
}
