// Kill -9 a process that appends synced batches (and now and then compacts),
// at random moments, 50 times over the same directory, for each log engine;
// after every kill, every batch it reported synced must be there from the
// log's first index on, in order, with valid checksums (open verifies them).
// Replay: SEED=<n> npm test -- storage-log/crash
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLogStorage } from '../../src/storage/log/classic.ts';
import { WalLogStorage } from '../../src/storage/log/wal.ts';
import { createRandom } from '../../src/raft/random.ts';

const seed = Number(process.env['SEED'] ?? 20261124);
const kills = Number(process.env['KILLS'] ?? 50);

type Batch = { first: number; count: number; term: number };
type Engine = 'classic' | 'wal';

function applyBatch(model: Map<number, number>, batch: Batch): void {
  for (const index of [...model.keys()]) if (index >= batch.first) model.delete(index);
  for (let i = 0; i < batch.count; i++) model.set(batch.first + i, batch.term);
}

function runChild(engine: Engine, directory: string, childSeed: number, killAfterMs: number): Promise<{ synced: Batch[]; inFlight: Batch | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/storage-log/crash-child.ts', directory, String(childSeed), engine], { stdio: ['ignore', 'pipe', 'inherit'] });
    const synced: Batch[] = [];
    let inFlight: Batch | null = null;
    let buffered = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        const [kind, first, count, term] = line.split(' ');
        if (kind === 'ready') setTimeout(() => child.kill('SIGKILL'), killAfterMs);
        const batch = { first: Number(first), count: Number(count), term: Number(term) };
        if (kind === 'begin') inFlight = batch;
        if (kind === 'synced') {
          synced.push(batch);
          inFlight = null;
        }
      }
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`child exited with ${code ?? signal} before it was killed`));
      else resolve({ synced, inFlight });
    });
  });
}

for (const engine of ['classic', 'wal'] as const) test(`crash test (${engine}): ${kills} SIGKILLs while appending synced batches lose nothing reported synced (seed ${seed})`, async () => {
  const directory = mkdtempSync(join(tmpdir(), 'raftkv-crash-'));
  const random = createRandom(seed);
  const model = new Map<number, number>(); // index → term, from reported batches
  let totalSynced = 0;
  try {
    for (let round = 0; round < kills; round++) {
      const { synced, inFlight } = await runChild(engine, directory, random(2 ** 31), 5 + random(120));
      for (const batch of synced) applyBatch(model, batch);
      totalSynced += synced.length;
      const storage = engine === 'wal' ? await WalLogStorage.open(directory, { segmentBytes: 16 * 1024 }) : await ClassicLogStorage.open(directory); // verifies checksums and continuity
      try {
        const withInFlight = new Map(model);
        if (inFlight !== null) applyBatch(withInFlight, inFlight);
        const matches = (expected: Map<number, number>): boolean => {
          for (const [index, term] of expected) {
            if (index < storage.firstIndex()) continue; // compacted away by the child
            if (index > storage.lastIndex() || storage.term(index) !== term) return false;
          }
          const last = Math.max(1, ...expected.keys());
          return storage.lastIndex() === last;
        };
        const context = `${engine} round ${round} (replay: SEED=${seed} npm test -- storage-log/crash)`;
        assert.ok(matches(model) || matches(withInFlight), `${context}: the log lost or changed a synced batch (last ${storage.lastIndex()})`);
        // Whatever the disk holds is the truth from now on (an in-flight batch may have landed).
        model.clear();
        for (let index = storage.firstIndex(); index <= storage.lastIndex(); index++) model.set(index, storage.term(index));
        for (const entry of storage.entries(Math.max(storage.firstIndex(), storage.lastIndex() - 5), storage.lastIndex() + 1, Infinity)) {
          assert.ok(new TextDecoder().decode(entry.data).startsWith(`i${entry.index}t${entry.term}.`), `${context}: entry ${entry.index} holds the wrong data`);
        }
      } finally {
        await storage.close();
      }
    }
    assert.ok(totalSynced > kills, `the children synced ${totalSynced} batches in ${kills} rounds`);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});
