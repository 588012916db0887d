// Checks a client history an app recorded (format: test/history/external.ts,
// docs/testing.md "Checking your own histories") with the checker the
// history tests use.
//   node --import tsx scripts/check-history.ts HISTORY.json   (or - for stdin)
// Exit status: 0 linearizable and no revision rule broken; 1 a violation
// (the report shows the smallest failing sub-histories); 2 the checker gave
// up (not a pass); 3 the file is not a valid history.

import { readFileSync } from 'node:fs';
import { checkHistory, parseHistory } from '../test/history/external.ts';

const path = process.argv[2];
if (path === undefined || process.argv.length > 3) {
  console.error('usage: node --import tsx scripts/check-history.ts HISTORY.json   (- reads stdin)');
  process.exit(3);
}
let history;
try {
  history = parseHistory(JSON.parse(readFileSync(path === '-' ? 0 : path, 'utf8')));
} catch (error) {
  const { code, message } = error as { code?: string; message?: string };
  console.error(`not a valid history: ${message ?? String(error)}${code === undefined ? '' : ` (${code})`}`);
  process.exit(3);
}
const verdict = checkHistory(history);
console.log(verdict.summary);
if (verdict.report !== '') console.log(`\n${verdict.report}`);
process.exit(verdict.exitCode);
