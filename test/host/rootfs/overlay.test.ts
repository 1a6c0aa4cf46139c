import assert from 'node:assert/strict';
import { open, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isShoalError } from '../../../src/protocol/errors.ts';
import { listMounts, mountOverlay, unmountOverlay } from '../../../src/host/rootfs/overlay.ts';
import { skipUnless } from '../fixtures/requirements.ts';

const skip = skipUnless(['root']);

describe('overlay root', { skip }, () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-ovl-'));
  });
  after(async () => {
    for (const m of (await listMounts(dir)).reverse()) await unmountOverlay(m);
    assert.deepEqual(await listMounts(dir), []);
    await rm(dir, { recursive: true, force: true });
  });

  async function layer(name: string, files: Record<string, string>): Promise<string> {
    const d = join(dir, name);
    await mkdir(d, { recursive: true });
    for (const [f, text] of Object.entries(files)) await writeFile(join(d, f), text);
    return d;
  }

  async function instanceDirs(name: string): Promise<{ upperDir: string; workDir: string; target: string }> {
    const base = join(dir, name);
    const d = { upperDir: join(base, 'upper'), workDir: join(base, 'work'), target: join(base, 'root') };
    for (const p of Object.values(d)) await mkdir(p, { recursive: true });
    return d;
  }

  it('stacks layers top-most first and sends writes to the upper dir only', async () => {
    const top = await layer('top', { 'a.txt': 'top', 'only-top': '1' });
    const bottom = await layer('bottom', { 'a.txt': 'bottom', 'only-bottom': '1' });
    const inst = await instanceDirs('i1');
    await mountOverlay({ lowerDirs: [top, bottom], ...inst });
    assert.deepEqual(await listMounts(inst.target), [inst.target]);
    assert.equal(await readFile(join(inst.target, 'a.txt'), 'utf8'), 'top');
    assert.deepEqual((await readdir(inst.target)).sort(), ['a.txt', 'only-bottom', 'only-top']);
    await writeFile(join(inst.target, 'a.txt'), 'changed');
    await writeFile(join(inst.target, 'new'), 'n');
    assert.equal(await readFile(join(top, 'a.txt'), 'utf8'), 'top');
    assert.equal(await readFile(join(inst.upperDir, 'a.txt'), 'utf8'), 'changed');
    assert.deepEqual((await readdir(inst.upperDir)).sort(), ['a.txt', 'new']);
    await unmountOverlay(inst.target);
    assert.deepEqual(await listMounts(inst.target), []);
    await unmountOverlay(inst.target); // idempotent
  });

  it('mounts 60 layers with long paths (past the one-page option limit)', async () => {
    const deep = join(dir, 'layers', 'a-rather-long-directory-name-to-push-past-the-page-limit');
    const lowers: string[] = [];
    for (let i = 0; i < 60; i++) {
      // Digest-like names: the relative form alone is 60 × 65 bytes, so this exercises
      // the symlink fallback as well as the relative one.
      const d = join(deep, `${String(i).padStart(2, '0')}${'f'.repeat(62)}`);
      await mkdir(d, { recursive: true });
      await writeFile(join(d, `file-${i}`), String(i));
      await writeFile(join(d, 'shadowed'), String(i));
      lowers.push(d);
    }
    assert.ok(`lowerdir=${lowers.join(':')}`.length > 4096);
    const inst = await instanceDirs('i60');
    await mountOverlay({ lowerDirs: lowers, ...inst });
    assert.equal((await readdir(inst.target)).length, 61);
    assert.equal(await readFile(join(inst.target, 'shadowed'), 'utf8'), '0');
    assert.equal(await readFile(join(inst.target, 'file-59'), 'utf8'), '59');
    // The scratch symlink dir is gone once mounted.
    assert.deepEqual((await readdir(join(dir, 'i60'))).sort(), ['root', 'upper', 'work']);
    await unmountOverlay(inst.target);
    assert.deepEqual(await listMounts(inst.target), []);
  });

  it('mounts 30 layers through relative paths from their common parent', async () => {
    const lowers: string[] = [];
    for (let i = 0; i < 30; i++) {
      const d = join(dir, 'rel-layers', `${'x'.repeat(100)}-${i}`, 'fs');
      await mkdir(d, { recursive: true });
      await writeFile(join(d, `f${i}`), String(i));
      lowers.push(d);
    }
    const inst = await instanceDirs('i30');
    await mountOverlay({ lowerDirs: lowers, ...inst });
    assert.equal((await readdir(inst.target)).length, 30);
    await unmountOverlay(inst.target);
  });

  it('mounts a single layer with no upper read-only', async () => {
    const only = await layer('only', { 'x': 'x' });
    const target = join(dir, 'ro-root');
    await mkdir(target);
    await mountOverlay({ lowerDirs: [only], target });
    assert.equal(await readFile(join(target, 'x'), 'utf8'), 'x');
    await assert.rejects(writeFile(join(target, 'y'), 'y'), { code: 'EROFS' });
    await unmountOverlay(target);
    assert.deepEqual(await listMounts(target), []);
  });

  it('mounts two layers with no upper read-only', async () => {
    const a = await layer('ro-a', { 'a': 'a' });
    const b = await layer('ro-b', { 'b': 'b' });
    const target = join(dir, 'ro2-root');
    await mkdir(target);
    await mountOverlay({ lowerDirs: [a, b], target });
    assert.deepEqual((await readdir(target)).sort(), ['a', 'b']);
    await assert.rejects(writeFile(join(target, 'c'), 'c'), { code: 'EROFS' });
    await unmountOverlay(target);
  });

  it('detaches a busy mount lazily', async () => {
    const a = await layer('busy-a', { 'held': 'h' });
    const inst = await instanceDirs('busy');
    await mountOverlay({ lowerDirs: [a], ...inst });
    const fh = await open(join(inst.target, 'held'), 'r');
    try {
      await unmountOverlay(inst.target);
      assert.deepEqual(await listMounts(inst.target), []);
      assert.equal((await fh.readFile('utf8')), 'h');
    } finally {
      await fh.close();
    }
  });

  it('refuses bad input with the field named', async () => {
    const inst = await instanceDirs('bad');
    const cases: Array<[Parameters<typeof mountOverlay>[0], string]> = [
      [{ lowerDirs: [], ...inst }, 'lowerDirs'],
      [{ lowerDirs: ['relative/dir'], ...inst }, 'lowerDirs[0]'],
      [{ lowerDirs: [join(dir, 'a:b')], ...inst }, 'lowerDirs[0]'],
      [{ lowerDirs: [join(dir, 'top')], upperDir: inst.upperDir, target: inst.target }, 'workDir'],
    ];
    for (const [opts, field] of cases) {
      await assert.rejects(mountOverlay(opts), (e: unknown) => isShoalError(e) && e.code === 'invalid' && e.field === field);
    }
    await assert.rejects(mountOverlay({ lowerDirs: [join(dir, 'missing')], ...inst }), (e: unknown) => isShoalError(e) && /mounting/.test(e.message));
    assert.deepEqual(await listMounts(inst.target), []);
  });

  it('lists mounts under a dir and nothing outside it', async () => {
    const a = await layer('l-a', { 'a': 'a' });
    const one = await instanceDirs('list/one');
    const two = await instanceDirs('list/two');
    await mountOverlay({ lowerDirs: [a], ...one });
    await mountOverlay({ lowerDirs: [a], ...two });
    assert.deepEqual((await listMounts(join(dir, 'list'))).sort(), [one.target, two.target].sort());
    assert.deepEqual(await listMounts(join(dir, 'list', 'one')), [one.target]);
    assert.deepEqual(await listMounts(join(dir, 'lis')), []);
    await unmountOverlay(one.target);
    await unmountOverlay(two.target);
    assert.deepEqual(await listMounts(join(dir, 'list')), []);
  });

  it('bounds the writable layer, shows the layers id-mapped, names no host path, and unmounts as one', { skip: skipUnless(['cc']) }, async () => {
    const top = await layer('b-top', { 'a.txt': 'top' });
    const bottom = await layer('b-bottom', { 'b.txt': 'bottom' });
    const inst = await instanceDirs('bounded');
    const idmap = { hostId: 0x10000000, count: 65536 };
    await mountOverlay({ lowerDirs: [top, bottom], ...inst, sizeBytes: 2 * 1024 * 1024, idmap, helperDir: join(dir, 'helper') });
    const { stat } = await import('node:fs/promises');
    // Root-owned layer files show as the range's root; the root dir (the upper) too.
    assert.equal((await stat(join(inst.target, 'a.txt'))).uid, idmap.hostId);
    assert.equal((await stat(inst.target)).uid, idmap.hostId);
    // Past the size: ENOSPC.
    await assert.rejects(writeFile(join(inst.target, 'big'), Buffer.alloc(4 * 1024 * 1024)), (e: NodeJS.ErrnoException) => e.code === 'ENOSPC');
    const line = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.includes(` ${inst.target} `) && l.includes(' - overlay '));
    assert.ok(line, 'the overlay is mounted');
    const superOptions = line.split(' - ')[1] ?? '';
    assert.ok(!superOptions.includes(dir), `the overlay's options name a host path: ${superOptions}`);
    assert.match(line, /nosuid,nodev/);
    assert.equal((await listMounts(inst.target)).length, 2, 'overlay on its tmpfs');
    await unmountOverlay(inst.target);
    assert.deepEqual(await listMounts(inst.target), []);
    // The layers were not written.
    assert.deepEqual((await readdir(top)).sort(), ['a.txt']);
  });
});
