// A runner runs as uid 65534: from a checkout under a 0700 directory it could not load its
// own code or Node. runnerFilesFor copies them once into a root-owned, world-readable place.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { QUICKJS_PACKAGES, QUICKJS_WASM, reachableByOthers, RUNNER_MODULES, runnerFilesFor, toJavaScript } from '../../../../src/host/drivers/wasm/runner-files.ts';

test('runner files under a 0700 parent are copied where others can read them; reachable ones are used in place', async (t) => {
  const top = await mkdtemp(join(tmpdir(), 'shoal-runner-files-'));
  t.after(() => rm(top, { recursive: true, force: true }));
  await chmod(top, 0o755);
  const closed = join(top, 'closed');
  const src = join(closed, 'wasm');
  await mkdir(src, { recursive: true });
  const source = (m: string) => `// ${m}\nimport type { T } from './types.ts';\nimport { x } from './engine.ts';\nexport const y: number = x;\n`;
  for (const m of RUNNER_MODULES) await writeFile(join(src, m), source(m), { mode: 0o644 });
  await writeFile(join(src, 'node'), '#!/bin/sh\n', { mode: 0o755 });
  // QuickJS's packages (JS components), in a node_modules under the same closed parent.
  const nm = join(closed, 'node_modules');
  for (const p of QUICKJS_PACKAGES) {
    await mkdir(join(nm, p), { recursive: true });
    await writeFile(join(nm, p, 'package.json'), `{"name":"${p}"}`, { mode: 0o644 });
    await writeFile(join(nm, p, 'index.mjs.map'), '{}', { mode: 0o644 });
  }
  await mkdir(dirname(join(nm, QUICKJS_WASM)), { recursive: true });
  await writeFile(join(nm, QUICKJS_WASM), 'wasm', { mode: 0o600 });
  await chmod(closed, 0o700);
  assert.equal(await reachableByOthers(join(src, RUNNER_MODULES[0]!), false), false);

  const base = join(top, 'base');
  const files = await runnerFilesFor(src, join(src, 'node'), base, nm);
  assert.equal(files.quickjs, join(files.dir, 'node_modules'));
  assert.equal(await readFile(join(files.quickjs, QUICKJS_WASM), 'utf8'), 'wasm');
  assert.equal(await reachableByOthers(join(files.quickjs, QUICKJS_WASM), false), true, 'the copy is readable by others');
  for (const p of QUICKJS_PACKAGES) assert.equal(await reachableByOthers(join(files.quickjs, p, 'package.json'), false), true, p);
  await assert.rejects(stat(join(files.quickjs, QUICKJS_PACKAGES[0], 'index.mjs.map')), 'source maps are not copied');
  assert.ok(files.dir.startsWith(base + '/'), files.dir);
  assert.equal(await reachableByOthers(files.node, true), true);
  // The copy is JavaScript: types stripped once, sibling imports renamed.
  assert.equal(files.ext, '.js');
  for (const m of RUNNER_MODULES) {
    const js = join(files.dir, m.replace(/\.ts$/, '.js'));
    assert.equal(await reachableByOthers(js, false), true, m);
    const text = await readFile(js, 'utf8');
    assert.match(text, /import \{ x \} from '\.\/engine\.js';/);
    assert.doesNotMatch(text, /import type|: number/);
    assert.equal((await stat(js)).mode & 0o777, 0o644);
  }
  assert.deepEqual(await runnerFilesFor(src, join(src, 'node'), base, nm), files, 'made once, then found');

  // Reachable TypeScript sources are still compiled into the copy (only the published
  // package's JavaScript is used in place).
  await chmod(closed, 0o755);
  await chmod(join(nm, QUICKJS_WASM), 0o644);
  assert.deepEqual(await runnerFilesFor(src, join(src, 'node'), base, nm), files, 'TypeScript: the compiled copy');
});

test('toJavaScript strips the types of a runner module and renames its sibling imports', async () => {
  const { readFile: read } = await import('node:fs/promises');
  const { fileURLToPath } = await import('node:url');
  const runner = await read(fileURLToPath(new URL('../../../../src/host/drivers/wasm/runner.ts', import.meta.url)), 'utf8');
  const js = toJavaScript(runner);
  assert.match(js, /from '\.\/engine\.js'/);
  assert.match(js, /from '\.\/quickjs-engine\.js'/);
  assert.doesNotMatch(js, /from '\.\/[\w-]+\.ts'/);
});
