// A runner runs as uid 65534: from a checkout under a 0700 directory it could not load its
// own code or Node. runnerFilesFor copies them once into a root-owned, world-readable place.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { reachableByOthers, RUNNER_MODULES, runnerFilesFor } from '../../../../src/host/drivers/wasm/runner-files.ts';

test('runner files under a 0700 parent are copied where others can read them; reachable ones are used in place', async (t) => {
  const top = await mkdtemp(join(tmpdir(), 'shoal-runner-files-'));
  t.after(() => rm(top, { recursive: true, force: true }));
  await chmod(top, 0o755);
  const closed = join(top, 'closed');
  const src = join(closed, 'wasm');
  await mkdir(src, { recursive: true });
  for (const m of RUNNER_MODULES) await writeFile(join(src, m), `// ${m}\n`, { mode: 0o644 });
  await writeFile(join(src, 'node'), '#!/bin/sh\n', { mode: 0o755 });
  await chmod(closed, 0o700);
  assert.equal(await reachableByOthers(join(src, RUNNER_MODULES[0]!), false), false);

  const base = join(top, 'base');
  const files = await runnerFilesFor(src, join(src, 'node'), base);
  assert.ok(files.dir.startsWith(base + '/'), files.dir);
  assert.equal(await reachableByOthers(files.node, true), true);
  for (const m of RUNNER_MODULES) {
    assert.equal(await reachableByOthers(join(files.dir, m), false), true, m);
    assert.equal(await readFile(join(files.dir, m), 'utf8'), `// ${m}\n`);
    assert.equal((await stat(join(files.dir, m))).mode & 0o777, 0o644);
  }
  assert.deepEqual(await runnerFilesFor(src, join(src, 'node'), base), files, 'made once, then found');

  await chmod(closed, 0o755);
  assert.deepEqual(await runnerFilesFor(src, join(src, 'node'), base), { dir: src, node: join(src, 'node') }, 'reachable: used in place');
});
