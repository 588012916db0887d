// `raftkv serve --grpc-listen`: the flag parses into the configuration, a bad
// address is refused with a reason naming it, and without it nothing changes.
// (Serving through it is exercised by test/history/process-nemesis.test.ts,
// whose clients use txn and hashkv on the HTTP/JSON endpoint.)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseServeFlags, UsageError } from '../../src/cli.ts';

const base = ['--name', 'n1', '--data-dir', '/tmp/unused', '--listen', '127.0.0.1:0'];

test('--grpc-listen parses into grpcListen; absent, it is undefined; a bad address is refused naming the flag', () => {
  const config = parseServeFlags([...base, '--grpc-listen', '127.0.0.1:0', '--client-listen', '127.0.0.1:0']);
  assert.ok(config !== 'help');
  assert.equal(config.grpcListen, '127.0.0.1:0');
  const without = parseServeFlags(base);
  assert.ok(without !== 'help');
  assert.equal(without.grpcListen, undefined);
  assert.throws(() => parseServeFlags([...base, '--grpc-listen', 'nowhere']), (error: unknown) => error instanceof UsageError && /--grpc-listen/.test(error.message));
});
