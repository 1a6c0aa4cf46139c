// A runner runs as uid 65534: from a checkout under a 0700 directory it could not load its
// own code or Node. runnerFilesFor copies them once into a root-owned, world-readable place.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { QUICKJS_PACKAGES, QUICKJS_WASM, reachableByOthers, RUNNER_MODULES, runnerFilesFor } from '../../../../src/host/drivers/wasm/runner-files.ts';

test('runner files under a 0700 parent are copied where others can read them; reachable ones are used in place', async (t) => {
  const top = await mkdtemp(join(tmpdir(), 'shoal-runner-files-'));
  t.after(() => rm(top, { recursive: true, force: true }));
  await chmod(top, 0o755);
  const closed = join(top, 'closed');
  const src = join(closed, 'wasm');
  await mkdir(src, { recursive: true });
  for (const m of RUNNER_MODULES) await writeFile(join(src, m), `// ${m}\n`, { mode: 0o644 });
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
  for (const m of RUNNER_MODULES) {
    assert.equal(await reachableByOthers(join(files.dir, m), false), true, m);
    assert.equal(await readFile(join(files.dir, m), 'utf8'), `// ${m}\n`);
    assert.equal((await stat(join(files.dir, m))).mode & 0o777, 0o644);
  }
  assert.deepEqual(await runnerFilesFor(src, join(src, 'node'), base, nm), files, 'made once, then found');

  await chmod(closed, 0o755);
  await chmod(join(nm, QUICKJS_WASM), 0o644);
  assert.deepEqual(await runnerFilesFor(src, join(src, 'node'), base, nm), { dir: src, node: join(src, 'node'), quickjs: nm }, 'reachable: used in place');
});
