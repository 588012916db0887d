import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { logStorageSuite } from '../../src/testing.ts';
import { MemoryLogStorage } from '../../src/storage/log/memory.ts';
import { ClassicLogStorage } from '../../src/storage/log/classic.ts';
import { entryKey } from '../../src/storage/log/codec.ts';
import { WalLogStorage } from '../../src/storage/log/wal.ts';
import type { LogStorage } from '../../src/storage/log/types.ts';

const root = mkdtempSync(join(tmpdir(), 'raftkv-log-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
const directories = new WeakMap<LogStorage, string>();

logStorageSuite({ test, name: 'MemoryLogStorage', factory: async () => new MemoryLogStorage() });

logStorageSuite({
  test,
  name: 'ClassicLogStorage',
  factory: async () => {
    const directory = join(root, `db-${++counter}`);
    const storage = await ClassicLogStorage.open(directory);
    directories.set(storage, directory);
    return storage;
  },
  reopen: async (storage) => {
    const directory = directories.get(storage)!;
    await storage.close();
    const reopened = await ClassicLogStorage.open(directory);
    directories.set(reopened, directory);
    return reopened;
  },
});

// Small segments, so the suite's longer logs span several and compaction deletes some.
for (const segmentBytes of [64 * 1024 * 1024, 4096]) {
  logStorageSuite({
    test,
    name: `WalLogStorage (${segmentBytes} B segments)`,
    factory: async () => {
      const directory = join(root, `wal-${++counter}`);
      const storage = await WalLogStorage.open(directory, { segmentBytes });
      directories.set(storage, directory);
      return storage;
    },
    reopen: async (storage) => {
      const directory = directories.get(storage)!;
      await storage.close();
      const reopened = await WalLogStorage.open(directory, { segmentBytes });
      directories.set(reopened, directory);
      return reopened;
    },
  });
}

/** Rewrites the stored run that starts at `start` (runs are written one per save). */
async function rewriteRun(directory: string, start: number, mutate: (value: Uint8Array) => Uint8Array | null): Promise<void> {
  const db = new ClassicLevel<Uint8Array, Uint8Array>(directory, { keyEncoding: 'view', valueEncoding: 'view' });
  await db.open();
  const value = await db.get(entryKey(start));
  assert.ok(value !== undefined, `a run starts at ${start}`);
  const next = mutate(value);
  if (next === null) await db.del(entryKey(start));
  else await db.put(entryKey(start), next);
  await db.close();
}

/** Entries 2..21 in four saves: runs starting at 2, 7, 12 and 17. */
async function writeLog(directory: string): Promise<void> {
  const storage = await ClassicLogStorage.open(directory);
  await storage.bootstrap({ voters: [1], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false });
  const entries = Array.from({ length: 20 }, (_, i) => ({ index: i + 2, term: 2, type: 0 as const, data: new Uint8Array(100).fill(i) }));
  for (let run = 0; run < 4; run++) {
    await storage.save({ snapshot: null, entries: entries.slice(run * 5, run * 5 + 5), hardState: { term: 2, vote: 1, commit: 10 }, sync: true });
  }
  await storage.close();
}

test('ClassicLogStorage: a flipped byte in a stored entry is detected on open, naming the index', async () => {
  const directory = join(root, 'corrupt-byte');
  await writeLog(directory);
  // Entry 13 is the second of the run at 12; flip a byte in its data.
  await rewriteRun(directory, 12, (value) => {
    const copy = value.slice();
    const firstLength = new DataView(copy.buffer).getUint32(4);
    copy[4 + 4 + firstLength + 4 + 30]! ^= 0x01;
    return copy;
  });
  await assert.rejects(ClassicLogStorage.open(directory), (error: unknown) => {
    const e = error as { code?: string; index?: number };
    return e.code === 'RAFTKV_LOG_CORRUPT' && e.index === 13;
  });
});

test('ClassicLogStorage: a missing entry in the middle is detected on open', async () => {
  const directory = join(root, 'corrupt-gap');
  await writeLog(directory);
  await rewriteRun(directory, 7, () => null);
  await assert.rejects(ClassicLogStorage.open(directory), (error: unknown) => {
    const e = error as { code?: string; index?: number };
    return e.code === 'RAFTKV_LOG_CORRUPT' && e.index === 7;
  });
});

test('ClassicLogStorage: an entry stored under the wrong index is detected', async () => {
  const directory = join(root, 'corrupt-moved');
  await writeLog(directory);
  const db = new ClassicLevel<Uint8Array, Uint8Array>(directory, { keyEncoding: 'view', valueEncoding: 'view' });
  await db.open();
  const twelve = await db.get(entryKey(12));
  await db.put(entryKey(11), twelve!); // the run of 12..16 stored as if it began at 11
  await db.close();
  await assert.rejects(ClassicLogStorage.open(directory), { code: 'RAFTKV_LOG_CORRUPT' });
});
