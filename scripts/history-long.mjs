// The long run of the history checks (issue 8): the first N CI seeds (default
// 1,000; profiles known to be broken are left out, as in CI), split over W
// worker processes (default 2) running C scenarios at once each (default 2).
//   node scripts/history-long.mjs [--count N] [--workers W] [--concurrency C]
// Prints a line per seed as it finishes, the report of any failure, and a
// summary; the full output also goes to a log file in the OS temp directory.
// Exits 1 if any seed failed.
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const options = { count: 1000, workers: 2, concurrency: 2 };
const argv = process.argv.slice(2);
for (let position = 0; position < argv.length; position += 2) {
  const name = argv[position]?.replace(/^--/, '');
  const value = Number(argv[position + 1]);
  if (!(name in options) || !Number.isSafeInteger(value) || value < 1) {
    console.error('usage: node scripts/history-long.mjs [--count N] [--workers W] [--concurrency C]');
    process.exit(2);
  }
  options[name] = value;
}

const started = Date.now();
const logPath = join(tmpdir(), `raftkv-history-long-${new Date(started).toISOString().replace(/[:.]/g, '-')}.log`);
const log = createWriteStream(logPath);
const results = [];
let finished = 0;

function runWorker(index) {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'test/history/run-seeds.ts', '--ci', String(options.count), '--part', `${index}/${options.workers}`, '--concurrency', String(options.concurrency)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let buffered = '';
    const onData = (chunk) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        log.write(`${line}\n`);
        const match = /^seed (\d+) (\S+)\s+(PASS|FAIL) .* run (\d+) ms check (\d+) ms/.exec(line);
        if (match !== null) {
          finished += 1;
          results.push({ seed: Number(match[1]), profile: match[2], passed: match[3] === 'PASS', runMs: Number(match[4]), checkMs: Number(match[5]) });
          console.log(`[${finished}/${options.count}] ${line}`);
        } else if (!line.startsWith('done:')) {
          console.log(line);
        }
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (chunk) => {
      log.write(chunk);
      process.stderr.write(chunk);
    });
    child.on('close', (code) => resolve(code));
  });
}

const codes = await Promise.all(Array.from({ length: options.workers }, (_, index) => runWorker(index)));
const failures = results.filter((result) => !result.passed);
const minutes = ((Date.now() - started) / 60_000).toFixed(1);
const byProfile = new Map();
for (const result of results) {
  const entry = byProfile.get(result.profile) ?? { seeds: 0, failed: 0, runMs: 0 };
  entry.seeds += 1;
  entry.failed += result.passed ? 0 : 1;
  entry.runMs += result.runMs;
  byProfile.set(result.profile, entry);
}
const summary = [
  '',
  `history long run: ${results.length} of ${options.count} seeds finished, ${failures.length} failed, in ${minutes} min (${options.workers} workers x ${options.concurrency} scenarios)`,
  ...[...byProfile].sort().map(([profile, entry]) => `  ${profile.padEnd(20)} ${String(entry.seeds).padStart(4)} seeds  ${String(entry.failed).padStart(3)} failed  mean run ${(entry.runMs / entry.seeds / 1000).toFixed(1)} s`),
  failures.length === 0 ? '' : `failed seeds: ${failures.map((result) => result.seed).join(' ')} (replay: SEED=n npm test -- history)`,
  `full output: ${logPath}`,
].join('\n');
console.log(summary);
log.end(`${summary}\n`);
process.exit(failures.length === 0 && results.length === options.count && codes.every((code) => code === 0) ? 0 : 1);
