// The classic etcd client walkthrough, on an embedded 3-member raftkv
// cluster: connect, put sample_key, get it, delete it, get it again.
// Run: node --import tsx examples/kv.ts

import { createCluster } from '../src/index.ts';

const cluster = await createCluster({ size: 3 });
try {
  const kv = await cluster.waitForLeader(); // any member works; writes are forwarded to the leader
  console.log('connected to a 3-member cluster');

  const put = await kv.put('sample_key', 'sample_value');
  console.log(`put sample_key at revision ${put.revision}`);

  const found = await kv.get('sample_key');
  console.log(`get sample_key -> ${found?.value.toString()} (version ${found?.version})`);

  const deleted = await kv.delete('sample_key');
  console.log(`deleted ${deleted.deleted} key at revision ${deleted.revision}`);

  const missing = await kv.get('sample_key');
  console.log(missing === undefined ? 'get sample_key -> not found' : `unexpected: ${missing.value.toString()}`);
} finally {
  await cluster.close();
}
