import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { spawnSync } from 'node:child_process';
import { ensureShim } from '../../../../src/host/drivers/shared/native.ts';
import { skipUnless } from '../../fixtures/requirements.ts';

describe('shim build', { skip: skipUnless(['cc']) }, () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-shim-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('compiles once per source version and reuses the binary', async () => {
    const cacheDir = join(dir, 'cache');
    const [a, b] = await Promise.all([ensureShim({ cacheDir }), ensureShim({ cacheDir })]);
    assert.equal(a, b);
    assert.match(a, /shoal-shim-[0-9a-f]{16}$/);
    const first = await stat(a);
    assert.ok(first.mode & 0o111, 'executable');
    assert.equal(await ensureShim({ cacheDir }), a);
    assert.equal((await stat(a)).mtimeMs, first.mtimeMs);
    assert.deepEqual(await readdir(cacheDir), [a.split('/').pop()]);
  });

  it('prints its usage when called wrongly, and reports runc failures', async () => {
    const shim = await ensureShim({ cacheDir: join(dir, 'cache') });
    const usage = spawnSync(shim, []);
    assert.equal(usage.status, 2);
    assert.match(usage.stderr.toString(), /usage/);
    // "runc" that fails: the shim reports `failed <status>` on fd 3.
    const r = spawnSync(shim, [join(dir, 'exit'), join(dir, 'pid'), 'sh', '-c', 'exit 5'], { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] });
    assert.equal(r.status, 1);
    assert.equal(r.output[3]?.toString(), 'failed 5\n');
  });

  it('reports the exit of the process its "runc" leaves behind', async () => {
    const shim = await ensureShim({ cacheDir: join(dir, 'cache') });
    const pidFile = join(dir, 'pid2');
    const exitFile = join(dir, 'exit2');
    // Plays runc create: starts a background "init", writes its pid, exits 0.
    const fake = `sh -c 'sleep 0.2; exit 9' & echo $! > ${pidFile}`;
    const r = spawnSync(shim, [exitFile, pidFile, 'sh', '-c', fake], { stdio: ['ignore', 'ignore', 'inherit', 'pipe'] });
    assert.equal(r.status, 0);
    const lines = r.output[3]?.toString().split('\n') ?? [];
    assert.match(lines[0] ?? '', /^created \d+$/);
    assert.equal(lines[1], 'exit 9 0');
    const { readFile } = await import('node:fs/promises');
    assert.equal(await readFile(exitFile, 'utf8'), 'exit 9 0\n');
  });

  it('fails clearly without a compiler', async () => {
    await assert.rejects(ensureShim({ cacheDir: join(dir, 'nocc'), cc: '/nonexistent/cc' }), (e: { code?: string; message: string }) => e.code === 'unavailable' && /cannot build the runc shim/.test(e.message));
  });
});
