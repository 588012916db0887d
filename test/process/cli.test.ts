// `raftkv serve`'s command line: flags parse into a configuration, every
// mistake is a one-line UsageError naming the flag, and the launcher turns
// one into exit code 2 with that line on stderr.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseServeFlags } from '../../src/cli.ts';

const base = ['--name', 'n1', '--data-dir', '/tmp/raftkv-n1', '--listen', '127.0.0.1:7001'];

test('serve flags parse into a configuration; a name n<id> is member id <id>', () => {
  const config = parseServeFlags([...base, '--peers', 'n2=127.0.0.1:7002, 3=[::1]:7003', '--client-listen', '127.0.0.1:0', '--tick-ms', '20']);
  assert.notEqual(config, 'help');
  if (config === 'help') return;
  assert.equal(config.id, 1);
  assert.deepEqual([...config.peers], [[2, '127.0.0.1:7002'], [3, '[::1]:7003']]);
  assert.equal(config.join, false);
  assert.equal(config.tickMs, 20);
  assert.equal(config.tlsFiles, undefined);
  assert.equal(parseServeFlags(['--id', '4', '--data-dir', 'd', '--listen', '127.0.0.1:1', '--peers', 'n1=127.0.0.1:2', '--join']) !== 'help', true);
  assert.equal(parseServeFlags(['--help']), 'help');
});

test('every bad flag is refused with a reason naming it', () => {
  const cases: [string[], RegExp][] = [
    [['--data-dir', 'd', '--listen', '127.0.0.1:1'], /--name \(or --id\) is required/],
    [[...base, '--name', 'x1'], /--name must be n<id>/],
    [['--name', 'n0', '--data-dir', 'd', '--listen', '127.0.0.1:1'], /--name must be n<id>/],
    [[...base, '--id', '2'], /--name says member 1 but --id says 2/],
    [['--name', 'n1', '--listen', '127.0.0.1:1'], /--data-dir is required/],
    [['--name', 'n1', '--data-dir', 'd'], /--listen is required/],
    [['--name', 'n1', '--data-dir', 'd', '--listen', 'localhost'], /listen must be "host:port"/],
    [[...base, '--peers', 'n2:127.0.0.1:7002'], /name=host:port/],
    [[...base, '--peers', 'n1=127.0.0.1:7002'], /names this member/],
    [[...base, '--peers', 'n2=127.0.0.1:1,2=127.0.0.1:2'], /member 2 twice/],
    [[...base, '--peers', 'n2=127.0.0.1:0'], /port 0 is out of range/],
    [[...base, '--tls-ca', 'ca.pem'], /go together/],
    [[...base, '--tick-ms', 'fast'], /--tick-ms must be a positive integer/],
    [[...base, '--join'], /--join needs --peers/],
    [[...base, '--verbose'], /Unknown option '--verbose'/],
    [[...base, 'extra'], /positional/],
  ];
  for (const [args, reason] of cases) {
    assert.throws(() => parseServeFlags(args), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'RAFTKV_USAGE', args.join(' '));
      assert.match(error.message, reason, args.join(' '));
      return true;
    });
  }
});

test('the launcher prints the reason and exits with code 2 on a bad flag', () => {
  const launcher = fileURLToPath(new URL('../../bin/raftkv.mjs', import.meta.url));
  const result = spawnSync(process.execPath, [launcher, 'serve', '--name', 'n1', '--data-dir', 'd', '--listen', 'nowhere'], { encoding: 'utf8' });
  assert.equal(result.status, 2);
  assert.match(result.stderr, /^raftkv: --listen must be "host:port"/);
  assert.match(result.stderr, /raftkv serve --help/);
});
