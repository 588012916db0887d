// RaftKV's choice of Raft log engine: 'wal' by default, 'classic' on
// request, and a data directory keeps the engine it was created with.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCluster, RaftKV } from '../../src/index.ts';

const text = (kv: { value: Uint8Array } | undefined): string | undefined => (kv === undefined ? undefined : new TextDecoder().decode(kv.value));

for (const engine of [undefined, 'classic'] as const) {
  const directoryName = engine === 'classic' ? 'log' : 'wal';
  test(`a member created with logEngine ${String(engine)} keeps its '${directoryName}' log when reopened asking for the other`, async () => {
    const cluster = await createCluster({ seed: 31, ...(engine === undefined ? {} : { memberOptions: { logEngine: engine } }) });
    let reopened: RaftKV | undefined;
    try {
      const leader = await cluster.waitForLeader();
      await leader.put('a', '1');
      const follower = cluster.nodes().find((kv) => kv.id !== leader.id)!;
      const id = follower.id;
      const dataDir = join(cluster.dataDir, `member-${id}`);
      assert.deepEqual((await readdir(dataDir)).sort(), ['kv', directoryName, 'snap'].sort());
      await follower.get('a'); // applied here
      await cluster.stop(id);
      await leader.put('b', '2');
      reopened = await RaftKV.open({ tickMs: 20, id, dataDir, transport: cluster.network.endpoint(id), logEngine: engine === 'classic' ? 'wal' : 'classic' });
      assert.equal(text(await reopened.get('b')), '2', 'the reopened member rejoined and caught up');
      assert.equal(text(await reopened.get('a', { serializable: true })), '1');
      assert.deepEqual((await readdir(dataDir)).sort(), ['kv', directoryName, 'snap'].sort(), 'no second log was created');
    } finally {
      await reopened?.close();
      await cluster.close();
    }
  });
}

test('logEngine is validated; a directory holding both logs, or with a file where a directory belongs, is refused', async () => {
  const cluster = await createCluster({ seed: 32 });
  try {
    const dataDir = join(cluster.dataDir, 'extra');
    const transport = cluster.network.endpoint(9);
    await assert.rejects(RaftKV.open({ id: 9, dataDir, transport, logEngine: 'lsm' as 'wal' }), { code: 'RAFTKV_INVALID_ARGUMENT' });
    await mkdir(join(dataDir, 'log'), { recursive: true });
    await mkdir(join(dataDir, 'wal'), { recursive: true });
    await assert.rejects(RaftKV.open({ id: 9, dataDir, transport }), (error: unknown) => {
      const e = error as { code?: string; message?: string };
      return e.code === 'RAFTKV_INVALID_ARGUMENT' && /both a 'log' and a 'wal'/.test(e.message ?? '');
    });
    // The refusal closed the store it had opened: a second try gets the same answer, not LevelDB's lock error.
    await assert.rejects(RaftKV.open({ id: 9, dataDir, transport }), { code: 'RAFTKV_INVALID_ARGUMENT' });
    // A data directory, or a part of one, that is a file is refused with a typed error, and nothing is created.
    for (const part of ['', 'kv', 'wal', 'log', 'snap']) {
      const other = join(cluster.dataDir, `file-${part || 'root'}`);
      if (part === '') await writeFile(other, 'not a directory');
      else {
        await mkdir(other, { recursive: true });
        await writeFile(join(other, part), 'not a directory');
      }
      const before = part === '' ? [] : await readdir(other);
      await assert.rejects(RaftKV.open({ id: 9, dataDir: other, transport }), (error: unknown) => {
        const e = error as { code?: string; message?: string };
        return e.code === 'RAFTKV_INVALID_ARGUMENT' && /is not a directory/.test(e.message ?? '');
      }, `dataDir with ${part || 'itself'} a file`);
      if (part !== '') assert.deepEqual(await readdir(other), before, 'nothing was created');
    }
  } finally {
    await cluster.close();
  }
});
