// Three raftkv processes on 127.0.0.1 over plain TCP: writes and reads
// through each, the leader killed with SIGKILL and restarted, and no
// acknowledged write lost (see harness.ts for the scenario).

import { test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killAndRestartScenario, ProcessCluster } from './harness.ts';

test('3 processes over TCP: kill -9 the leader, restart it, no acknowledged write lost', { timeout: 120_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'raftkv-processes-'));
  const cluster = await ProcessCluster.create(root, [1, 2, 3]);
  try {
    await Promise.all(cluster.ids.map((id) => cluster.start(id)));
    await killAndRestartScenario(cluster);
  } finally {
    await cluster.killAll();
    rmSync(root, { recursive: true, force: true });
  }
});
