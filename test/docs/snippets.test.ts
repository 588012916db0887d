// Runs every ```ts example of docs/api.md and docs/embedding.md, so the docs
// cannot drift from the code: each must run to completion (its own
// node:assert checks pass) and type-check with the repository's strict
// compiler options. Imports from 'raftkv' are rewritten to this
// repository's src/index.ts; every example runs in a fresh temporary
// directory that is also its TMPDIR, removed afterwards.
//
// How a block is treated, from the line just above its fence:
//   <!-- snippet: skip (why) -->  not run, for the few examples that cannot run
//                                 alone (a transport over someone's RPC); the reason is required
//   <!-- snippet: prelude -->     the page's setup: a program with one line `// ... the example ...`
//                                 where each fragment goes; it is also run alone
// Otherwise a block with an `import` line is a complete program, run as its
// own process; a block without one is a fragment, run inside the page's
// prelude as `head; try { fragment } finally { tail }`. To save process
// start-ups, the fragments of a page run one after another in a few
// processes (each fragment still gets a fresh prelude, i.e. a fresh cluster).
//
// A failure prints the program that failed, with line numbers.

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repository = fileURLToPath(new URL('../../', import.meta.url));
const pages = ['docs/api.md', 'docs/embedding.md'];
const placeholder = '// ... the example ...';
const processesMax = 2; // the machine's cores
const fragmentsPerProcessMax = 16;
const childTimeoutMs = 120_000;

interface Block {
  readonly page: string;
  readonly line: number; // 1-based line of the opening fence
  readonly heading: string;
  readonly marker: string | null;
  readonly code: string;
}

interface Prelude {
  readonly imports: string;
  readonly head: string;
  readonly tail: string;
}

interface Example {
  readonly name: string;
  /** The whole program, as a user would run it (fragments inside their prelude). */
  readonly program: string;
  /** For fragments: the prelude and the fragment's own code. */
  readonly fragment: { readonly prelude: Prelude; readonly code: string } | null;
}

/** Every ```ts block of a page, with the marker comment above it and the heading it sits under. */
function blocksOf(page: string): Block[] {
  const lines = readFileSync(join(repository, page), 'utf8').split('\n');
  const blocks: Block[] = [];
  let heading = '';
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index] as string;
    if (/^#{1,6} /.test(line)) heading = line.replace(/^#+ /, '');
    const fence = /^```(\S*)\s*$/.exec(line);
    if (fence === null) continue;
    const start = index;
    const body: string[] = [];
    for (index++; index < lines.length && !/^```\s*$/.test(lines[index] as string); index++) body.push(lines[index] as string);
    assert.ok(index < lines.length, `${page}:${start + 1}: a code block is never closed`);
    if (fence[1] !== 'ts') continue;
    let above = start - 1;
    while (above >= 0 && (lines[above] as string).trim() === '') above--;
    const comment = /^<!--\s*snippet:\s*(.*?)\s*-->$/.exec((lines[above] ?? '').trim());
    blocks.push({ page, line: start + 1, heading, marker: comment === null ? null : (comment[1] as string), code: body.join('\n') });
  }
  return blocks;
}

function rewriteImports(code: string): string {
  return code.replace(/(from\s+|import\s*\(\s*)(['"])raftkv(\/testing)?\2/g, (_, lead: string, quote: string, testing: string | undefined) => {
    const target = join(repository, 'src', testing === undefined ? 'index.ts' : 'testing.ts');
    return `${lead}${quote}${target}${quote}`;
  });
}

function preludeOf(block: Block): Prelude {
  const where = `${block.page}:${block.line}`;
  const parts = block.code.split(`\n${placeholder}\n`);
  assert.equal(parts.length, 2, `${where}: the prelude needs exactly one line "${placeholder}"`);
  const headLines = (parts[0] as string).split('\n');
  const imports = headLines.filter((line) => /^import\s/.test(line));
  const rest = headLines.filter((line) => !/^import\s/.test(line));
  assert.ok(imports.every((line) => line.trimEnd().endsWith(';')), `${where}: write each prelude import on one line`);
  return { imports: rewriteImports(imports.join('\n')), head: rest.join('\n'), tail: parts[1] as string };
}

function wrapped(prelude: Prelude, code: string): string {
  return `${prelude.head}\ntry {\n${code}\n} finally {\n${prelude.tail}\n}\n`;
}

/** The examples of a page, in order; fails on a malformed page (unknown marker, missing prelude). */
function examplesOf(page: string): Example[] {
  const examples: Example[] = [];
  let prelude: Prelude | null = null;
  for (const block of blocksOf(page)) {
    const where = `${block.page}:${block.line}`;
    const name = `${where} (${block.heading})`;
    if (block.marker !== null && block.marker.startsWith('skip')) {
      assert.match(block.marker, /^skip \(.+\)$/, `${where}: say why a block is skipped: <!-- snippet: skip (why) -->`);
      continue;
    }
    if (block.marker === 'prelude') {
      prelude = preludeOf(block);
      examples.push({ name, program: `${prelude.imports}\n${wrapped(prelude, '')}`, fragment: { prelude, code: '' } });
      continue;
    }
    assert.equal(block.marker, null, `${where}: unknown marker "${block.marker}" (use "skip (why)" or "prelude")`);
    if (/^import\s/m.test(block.code)) {
      examples.push({ name, program: rewriteImports(`${block.code}\n`), fragment: null });
      continue;
    }
    assert.ok(prelude !== null, `${where}: a fragment (a block without an import line) needs a prelude above it on its page`);
    examples.push({ name, program: `${prelude.imports}\n${wrapped(prelude, block.code)}`, fragment: { prelude, code: block.code } });
  }
  return examples;
}

const examples = pages.flatMap(examplesOf);
const workRoot = await mkdtemp(join(tmpdir(), 'raftkv-docs-'));
const tsxLoader = import.meta.resolve('tsx');
const tsxCache = join(tmpdir(), `tsx-${userInfo().uid}`);
after(() => rm(workRoot, { recursive: true, force: true }));

// ---- Running children, at most processesMax at a time ----

let running = 0;
const waiting: (() => void)[] = [];

async function limited<T>(work: () => Promise<T>): Promise<T> {
  while (running >= processesMax) await new Promise<void>((resolve) => waiting.push(resolve));
  running++;
  try {
    return await work();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

let directories = 0;

/** Runs `node args` in a fresh directory that is also its TMPDIR (sharing tsx's transform cache). */
function runNode(args: (directory: string) => Promise<string[]>): Promise<{ code: number | null; signal: string | null; output: string }> {
  return limited(async () => {
    const directory = join(workRoot, `run-${directories++}`);
    await mkdir(directory, { recursive: true });
    // tsx keeps its cache in $TMPDIR/tsx-<uid>: point it at the usual one, or every child recompiles src/.
    await symlink(tsxCache, join(directory, `tsx-${userInfo().uid}`)).catch(() => undefined);
    const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: directory };
    delete env.NODE_TEST_CONTEXT;
    delete env.NODE_OPTIONS;
    const argv = await args(directory);
    try {
      return await new Promise((resolve, reject) => {
        const child = spawn(process.execPath, argv, { cwd: directory, env, stdio: ['ignore', 'pipe', 'pipe'], timeout: childTimeoutMs, killSignal: 'SIGKILL' });
        let output = '';
        const keep = (chunk: Buffer): void => {
          output = (output + chunk.toString()).slice(-1_000_000);
        };
        child.stdout.on('data', keep);
        child.stderr.on('data', keep);
        child.on('error', reject);
        child.on('close', (code, signal) => resolve({ code, signal, output }));
      });
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
}

function numbered(program: string): string {
  return program
    .split('\n')
    .map((text, index) => `${String(index + 1).padStart(4)}  ${text}`)
    .join('\n');
}

function runProgram(program: string): ReturnType<typeof runNode> {
  return runNode(async (directory) => {
    const file = join(directory, 'example.mts');
    await writeFile(file, program);
    return ['--import', tsxLoader, file];
  });
}

// ---- Fragments: a few per process ----

interface FragmentOutcome {
  readonly ok: boolean;
  readonly output: string;
  /** The fragment's code, numbered as in the process's program (so stack traces point into it). */
  readonly listing: string;
}

/** Runs fragments that share a prelude one after another; resolves with each one's outcome. */
async function runFragments(prelude: Prelude, fragments: readonly string[]): Promise<FragmentOutcome[]> {
  const token = randomUUID();
  const lines: string[] = [...prelude.imports.split('\n'), 'const examples: (() => Promise<void>)[] = ['];
  const listings: string[] = [];
  for (const code of fragments) {
    lines.push('async () => {', ...prelude.head.split('\n'), 'try {');
    const first = lines.length + 1;
    lines.push(...code.split('\n'));
    listings.push(code.split('\n').map((text, index) => `${String(first + index).padStart(4)}  ${text}`).join('\n'));
    lines.push('} finally {', ...prelude.tail.split('\n'), '}', '},');
  }
  lines.push(
    '];',
    'for (const [position, example] of examples.entries()) {',
    `  console.log('\\n${token} start ' + position);`,
    '  try {',
    '    await example();',
    `    console.log('\\n${token} ok ' + position);`,
    '  } catch (error) {',
    '    console.log(error);',
    `    console.log('\\n${token} failed ' + position);`,
    '  }',
    '}',
    'process.exit(0);',
  );
  const result = await runProgram(lines.join('\n'));
  const outcomes: FragmentOutcome[] = fragments.map((_, index) => ({
    ok: false,
    output: `not run: the process ended first (exit ${result.code}, signal ${result.signal})\n${result.output.slice(-4_000)}`,
    listing: listings[index] as string,
  }));
  let current: number | null = null;
  let collected = '';
  for (const section of result.output.split(`\n${token} `)) {
    const [, verb, position, rest] = /^(start|ok|failed) (\d+)\n?([\s\S]*)$/.exec(section) ?? [];
    if (verb === undefined || position === undefined) {
      collected += section;
      continue;
    }
    const index = Number(position);
    if (verb === 'start') {
      current = index;
    } else {
      outcomes[index] = { ok: verb === 'ok', output: collected, listing: listings[index] as string };
      current = null;
    }
    collected = rest ?? '';
  }
  if (current !== null) {
    const output = `${collected}\nthe process ended inside this example (exit ${result.code}, signal ${result.signal})`;
    outcomes[current] = { ok: false, output, listing: listings[current] as string };
  }
  return outcomes;
}

/** Fragments grouped into the runs that will execute them; each run starts on first demand. */
const fragmentRuns = new Map<Example, () => Promise<FragmentOutcome>>();
{
  const groups = new Map<Prelude, Example[]>();
  for (const example of examples) {
    if (example.fragment === null) continue;
    const group = groups.get(example.fragment.prelude) ?? [];
    group.push(example);
    groups.set(example.fragment.prelude, group);
  }
  for (const [prelude, members] of groups) {
    const runCount = Math.max(processesMax, Math.ceil(members.length / fragmentsPerProcessMax));
    const size = Math.ceil(members.length / runCount);
    for (let start = 0; start < members.length; start += size) {
      const chunk = members.slice(start, start + size);
      let outcomes: Promise<FragmentOutcome[]> | null = null;
      chunk.forEach((example, position) => {
        fragmentRuns.set(example, async () => {
          outcomes ??= runFragments(prelude, chunk.map((member) => member.fragment?.code ?? ''));
          return (await outcomes)[position] as FragmentOutcome;
        });
      });
    }
  }
}

describe('docs examples', { concurrency: true }, () => {
  it('finds the examples', () => {
    // A guard against a parser that silently finds nothing (e.g. after a change of fence style).
    assert.ok(examples.length >= 50, `only ${examples.length} runnable examples found in ${pages.join(', ')}`);
  });

  it('type-check with the repository settings', async () => {
    const files = examples.map((example, position) => ({ file: `example-${position}.mts`, example }));
    const result = await runNode(async (directory) => {
      for (const { file, example } of files) await writeFile(join(directory, file), example.program);
      const compilerOptions = {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        lib: ['ES2023'],
        types: ['node'],
        typeRoots: [join(repository, 'node_modules', '@types')],
        strict: true,
        noUncheckedIndexedAccess: true,
        exactOptionalPropertyTypes: true,
        noImplicitReturns: true,
        noFallthroughCasesInSwitch: true,
        verbatimModuleSyntax: true,
        skipLibCheck: true,
        allowImportingTsExtensions: true,
        noEmit: true,
        // A prelude imports what all its page's fragments use, so one fragment alone leaves some unused.
        noUnusedLocals: false,
      };
      await writeFile(join(directory, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: files.map((entry) => entry.file) }));
      return [join(repository, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(directory, 'tsconfig.json'), '--pretty', 'false'];
    });
    let report = result.output;
    for (const { file, example } of files) report = report.split(`${file}(`).join(`${example.name} line (`);
    assert.equal(result.code, 0, `the docs examples do not type-check (line numbers are those of the whole program):\n${report}`);
  });

  for (const example of examples) {
    it(example.name, async () => {
      const fragmentRun = fragmentRuns.get(example);
      if (fragmentRun !== undefined) {
        const outcome = await fragmentRun();
        assert.ok(outcome.ok, `${example.name} failed:\n${outcome.output.slice(-8_000)}\n--- the fragment, numbered as in the program that ran it ---\n${outcome.listing}`);
        return;
      }
      const result = await runProgram(example.program);
      assert.equal(
        result.code,
        0,
        `${example.name} failed (exit ${result.code}, signal ${result.signal}):\n${result.output.slice(-8_000)}\n--- the program ---\n${numbered(example.program)}`,
      );
    });
  }
});
