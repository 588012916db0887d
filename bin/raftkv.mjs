#!/usr/bin/env node
// The `raftkv` command. A development checkout (src/ present) runs the
// TypeScript source through tsx, so a stale build never answers; an
// installed package, which ships only dist/, runs its built CLI.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = new URL('../src/cli.ts', import.meta.url);
let cli;
if (existsSync(fileURLToPath(source))) {
  const { register } = await import('tsx/esm/api');
  register();
  cli = await import(source.href);
} else {
  cli = await import(new URL('../dist/src/cli.js', import.meta.url).href);
}
process.exit(await cli.main(process.argv.slice(2)));
