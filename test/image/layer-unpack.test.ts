import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { isShoalError, type ErrorCode } from '../../src/protocol/errors.ts';
import { MediaType } from '../../src/protocol/oci.ts';
import { applyLayer, checkLayer, flattenLayers, unpackLayer, type WhiteoutMode } from '../../src/image/layer-unpack.ts';
import { indexLayers } from '../../src/image/layer-index.ts';
import type { UnpackLimits } from '../../src/image/tar-safety.ts';
import { gnuLongNameFile, makeTar, snapshotTree, streamOf, withTempDir, type TarEntry } from './layer-fixtures.ts';

const run = promisify(execFile);
const GZ = MediaType.ociLayerGzip;
const TAR = MediaType.ociLayerTar;
const isRoot = process.getuid?.() === 0;

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * Unpacks `blob` and expects it refused: the error code, the message naming `entry`,
 * and nothing at all left in the parent of dest.
 */
async function expectRefused(
  blob: Buffer,
  expected: { code: ErrorCode; entry?: string; message?: RegExp },
  options: { mediaType?: string; limits?: Partial<UnpackLimits>; expectDiffId?: string; whiteouts?: WhiteoutMode; unpackOnly?: boolean } = {},
): Promise<void> {
  await withTempDir(async (parent) => {
    const dest = join(parent, 'layer');
    const err = await unpackLayer(streamOf(blob), dest, {
      mediaType: options.mediaType ?? GZ,
      whiteouts: options.whiteouts ?? 'keep',
      ...(options.limits ? { limits: options.limits } : {}),
      ...(options.expectDiffId ? { expectDiffId: options.expectDiffId } : {}),
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(isShoalError(err), `expected a ShoalError, got ${String(err)}`);
    assert.equal(err.code, expected.code, err.message);
    if (expected.entry !== undefined) assert.ok(err.message.includes(JSON.stringify(expected.entry)), `message should name ${expected.entry}: ${err.message}`);
    if (expected.message) assert.match(err.message, expected.message);
    assert.deepEqual(await readdir(parent), [], 'a refused layer leaves nothing behind');
    if (options.unpackOnly) return;
    // checkLayer makes the same decision without writing.
    const checked = await checkLayer(streamOf(blob), {
      mediaType: options.mediaType ?? GZ,
      ...(options.limits ? { limits: options.limits } : {}),
      ...(options.expectDiffId ? { expectDiffId: options.expectDiffId } : {}),
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(isShoalError(checked), 'checkLayer refuses it too');
    assert.equal(checked.code, expected.code);
  });
}

const fine: TarEntry[] = [
  { name: 'ok/', type: 'directory' },
  { name: 'ok/file', content: 'fine' },
];

// ---- hostile archives: each refused whole --------------------------------------------

test('refuses a ".." entry', async () => {
  await expectRefused(gzipSync(await makeTar([...fine, { name: 'ok/../../evil', content: 'x' }])), { code: 'invalid', entry: 'ok/../../evil', message: /\.\./ });
});

test('refuses an absolute path', async () => {
  await expectRefused(gzipSync(await makeTar([...fine, { name: '/etc/evil', content: 'x' }])), { code: 'invalid', entry: '/etc/evil', message: /absolute/ });
});

test('refuses a NUL byte in a name', async () => {
  await expectRefused(gzipSync(await makeTar([...fine, { name: 'a\0b', content: 'x', pax: {} }])), { code: 'invalid', entry: 'a\0b', message: /NUL/ });
});

test('a symlink whose relative target climbs above the root is kept, resolved inside the root', async () => {
  // The image spec allows it (in the container `..` at `/` stays at `/`); on the host the
  // link is written with its in-root target, so following it from the tree stays inside.
  const tar = await makeTar([
    ...fine,
    { name: 'ok/a', type: 'symlink', linkname: '../../etc' },
    { name: 'ok/deep', type: 'symlink', linkname: '../../../../ok/file' },
    { name: 'abs', type: 'symlink', linkname: '/../etc' },
  ]);
  assert.deepEqual(await checkLayer(streamOf(gzipSync(tar)), { mediaType: GZ }), { entries: 5, bytes: tar.length, diffId: sha(tar) });
  await withTempDir(async (parent) => {
    const dest = join(parent, 'layer');
    await unpackLayer(streamOf(gzipSync(tar)), dest, { mediaType: GZ, whiteouts: 'keep' });
    const tree = await snapshotTree(dest);
    assert.equal(tree.get('ok/a')?.linkname, '../etc');
    assert.equal(tree.get('ok/deep')?.linkname, 'file');
    assert.equal(tree.get('abs')?.linkname, '/etc');
    assert.equal(await readFile(join(dest, 'ok/deep'), 'utf8'), 'fine', 'the clamped link reaches the file inside the root');
  });
});

test('still refuses an entry written through a climbing symlink', async () => {
  await expectRefused(
    gzipSync(await makeTar([...fine, { name: 'up', type: 'symlink', linkname: '../../..' }, { name: 'up/etc/evil', content: 'x' }])),
    { code: 'invalid', entry: 'up/etc/evil', message: /symlink "up"/ },
  );
});

test('refuses a hardlink that escapes the layer', async () => {
  await expectRefused(gzipSync(await makeTar([...fine, { name: 'h', type: 'link', linkname: '../../etc/passwd' }])), { code: 'invalid', entry: 'h', message: /hardlink/ });
});

test('refuses a hardlink to an absolute path', async () => {
  await expectRefused(gzipSync(await makeTar([...fine, { name: 'h', type: 'link', linkname: '/etc/passwd' }])), { code: 'invalid', entry: 'h' });
});

test('refuses a hardlink to a path that is not an earlier file of the archive', async () => {
  await expectRefused(gzipSync(await makeTar([...fine, { name: 'h', type: 'link', linkname: 'later' }, { name: 'later', content: 'x' }])), {
    code: 'invalid',
    entry: 'h',
    message: /not an earlier regular file, symlink or special file/,
  });
  await expectRefused(gzipSync(await makeTar([...fine, { name: 'h', type: 'link', linkname: 'ok' }])), { code: 'invalid', entry: 'h' });
  await expectRefused(gzipSync(await makeTar([...fine, { name: 'w/.wh.x' }, { name: 'h', type: 'link', linkname: 'w/.wh.x' }])), { code: 'invalid', entry: 'h' });
});

test('refuses an entry through an earlier symlink', async () => {
  await expectRefused(
    gzipSync(await makeTar([...fine, { name: 'link', type: 'symlink', linkname: '/tmp' }, { name: 'link/evil', content: 'x' }])),
    { code: 'invalid', entry: 'link/evil', message: /symlink "link"/ },
  );
});

test('refuses a hardlink whose target passes through a symlink', async () => {
  await expectRefused(
    gzipSync(
      await makeTar([
        { name: 'd/f', content: 'x' },
        { name: 'd', type: 'symlink', linkname: '/' },
        { name: 'h', type: 'link', linkname: 'd/f' },
      ]),
    ),
    { code: 'invalid', entry: 'h' },
  );
});

test('fifos, device nodes and hardlinks to them are accepted and skipped on unpack with a log line', async () => {
  const tar = await makeTar([
    ...fine,
    { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3 },
    { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 },
    { name: 'pipe', type: 'fifo' },
    { name: 'pipe2', type: 'link', linkname: 'pipe' },
    { name: 'after', content: 'still unpacked' },
  ]);
  assert.equal((await checkLayer(streamOf(gzipSync(tar)), { mediaType: GZ })).entries, 7);
  await withTempDir(async (parent) => {
    const skipped: Array<{ path: string; kind: string }> = [];
    const dest = join(parent, 'layer');
    await unpackLayer(streamOf(gzipSync(tar)), dest, {
      mediaType: GZ,
      whiteouts: 'keep',
      onSkip: (e) => skipped.push({ path: e.path, kind: e.kind }),
    });
    assert.deepEqual(skipped, [
      { path: 'dev/null', kind: 'device' },
      { path: 'dev/sda', kind: 'device' },
      { path: 'pipe', kind: 'fifo' },
      { path: 'pipe2', kind: 'hardlink' },
    ]);
    const tree = await snapshotTree(dest);
    for (const p of ['dev/null', 'dev/sda', 'pipe', 'pipe2']) assert.equal(tree.has(p), false, `${p} is not created`);
    assert.equal(await readFile(join(dest, 'after'), 'utf8'), 'still unpacked');
  });
});

test('a hardlink to a symlink is a second link to the symlink, never to what it points at', async () => {
  const tar = await makeTar([...fine, { name: 'sl', type: 'symlink', linkname: '/etc/shadow' }, { name: 'hl', type: 'link', linkname: 'sl' }]);
  await withTempDir(async (parent) => {
    const dest = join(parent, 'layer');
    await unpackLayer(streamOf(tar), dest, { mediaType: TAR, whiteouts: 'keep' });
    const tree = await snapshotTree(dest);
    assert.equal(tree.get('hl')?.type, 'symlink');
    assert.equal(tree.get('hl')?.linkname, '/etc/shadow');
    assert.equal(tree.get('hl')?.ino, tree.get('sl')?.ino);
  });
  // A path through the hardlinked symlink is refused like one through the symlink.
  await expectRefused(
    await makeTar([...fine, { name: 'sl', type: 'symlink', linkname: '/' }, { name: 'hl', type: 'link', linkname: 'sl' }, { name: 'hl/etc/evil', content: 'x' }]),
    { code: 'invalid', entry: 'hl/etc/evil' },
    { mediaType: TAR },
  );
});

test('refuses an entry over the size limit', async () => {
  await expectRefused(
    gzipSync(await makeTar([...fine, { name: 'big', content: Buffer.alloc(100, 1) }])),
    { code: 'too-large', entry: 'big', message: /100 bytes/ },
    { limits: { maxEntryBytes: 50 } },
  );
});

test('refuses too many entries', async () => {
  const many = Array.from({ length: 10 }, (_, i) => ({ name: `f${i}`, content: 'x' }));
  await expectRefused(gzipSync(await makeTar(many)), { code: 'too-large', entry: 'f5', message: /more than 5 entries/ }, { limits: { maxEntries: 5 } });
});

test('refuses a name longer than PATH_MAX', async () => {
  const name = 'x/'.repeat(2100) + 'f';
  await expectRefused(gzipSync(await makeTar([...fine, { name, content: 'x' }])), { code: 'invalid', message: /longer than 4096 bytes/ });
});

test('counts the directories an entry implies against maxEntries', async () => {
  await expectRefused(
    gzipSync(await makeTar([{ name: 'a/b/c/d/e/f', content: 'x' }])),
    { code: 'too-large', entry: 'a/b/c/d/e/f', message: /counting the directories they imply/ },
    { limits: { maxEntries: 4 } },
  );
});

test('deep paths and replaced subtrees cost linear time, not quadratic', async () => {
  // 2000 files at depth ~1000 (names near PATH_MAX), then 2000 directories each replaced
  // by a file: checks that rescanned every ancestor would take tens of seconds.
  const deep = 'd/'.repeat(1000);
  const entries: TarEntry[] = [];
  for (let i = 0; i < 2000; i++) entries.push({ name: `${deep}f${i}`, content: '' });
  for (let i = 0; i < 2000; i++) entries.push({ name: `r${i}/x`, content: '' }, { name: `r${i}`, content: '' });
  const tar = await makeTar(entries);
  const t0 = performance.now();
  const r = await checkLayer(streamOf(tar, 1 << 16), { mediaType: TAR });
  assert.equal(r.entries, 6000);
  assert.ok(performance.now() - t0 < 10_000, `checked in ${Math.round(performance.now() - t0)} ms`);
  // The same shapes, smaller, on disk (there the kernel's path walks dominate).
  await withTempDir(async (parent) => {
    const small: TarEntry[] = [];
    for (let i = 0; i < 100; i++) small.push({ name: `${deep}f${i}`, content: 'x' });
    for (let i = 0; i < 100; i++) small.push({ name: `r${i}/x`, content: '' }, { name: `r${i}`, content: 'file' });
    await unpackLayer(streamOf(await makeTar(small)), join(parent, 'l'), { mediaType: TAR, whiteouts: 'apply' });
    assert.equal((await readdir(join(parent, 'l', deep))).length, 100);
    assert.equal(await readFile(join(parent, 'l/r7'), 'utf8'), 'file');
  });
});

test('refuses a gzip bomb (total bytes over the limit)', async () => {
  // 64 MiB of zeros compress to ~64 KiB.
  const bomb = gzipSync(await makeTar([{ name: 'bomb', content: Buffer.alloc(64 << 20) }]));
  assert.ok(bomb.length < 200_000);
  await expectRefused(bomb, { code: 'too-large', entry: 'bomb', message: /over the limit of 1048576 uncompressed bytes/ }, { limits: { maxTotalBytes: 1 << 20 } });
});

test('refuses a stream of zero blocks over the total limit (no entry at all)', async () => {
  await expectRefused(gzipSync(Buffer.alloc(8 << 20)), { code: 'too-large', message: /uncompressed bytes/ }, { limits: { maxTotalBytes: 1 << 20 } });
});

test('refuses a truncated gzip', async () => {
  const gz = gzipSync(await makeTar([...fine, { name: 'data.bin', content: randomBytes(200_000) }]));
  await expectRefused(gz.subarray(0, gz.length >> 1), { code: 'invalid', entry: 'data.bin', message: /layer is truncated or corrupt: unexpected end of file/ });
});

test('refuses a truncated plain tar', async () => {
  const tar = await makeTar([...fine, { name: 'data.bin', content: randomBytes(20_000) }]);
  await expectRefused(tar.subarray(0, 10_000), { code: 'invalid', entry: 'data.bin', message: /truncated or corrupt/ }, { mediaType: TAR });
});

test('refuses a corrupt gzip', async () => {
  const gz = Buffer.from(gzipSync(await makeTar([...fine, { name: 'data.bin', content: randomBytes(200_000) }])));
  for (let i = gz.length - 2000; i < gz.length - 1000; i++) gz[i] = (gz[i] as number) ^ 0xff;
  await expectRefused(gz, { code: 'invalid', entry: 'data.bin', message: /layer is truncated or corrupt/ });
});

test('refuses garbage bytes', async () => {
  const garbage = randomBytes(10_000);
  await expectRefused(garbage, { code: 'invalid', message: /layer is truncated or corrupt: incorrect header check/ });
  await expectRefused(garbage, { code: 'invalid', message: /layer is truncated or corrupt: Invalid tar header/ }, { mediaType: TAR });
});

test('refuses an unknown media type', async () => {
  await expectRefused(gzipSync(await makeTar(fine)), { code: 'unsupported', message: /application\/x-rar/ }, { mediaType: 'application/x-rar' });
});

test('refuses a layer whose diffId differs', async () => {
  const tar = await makeTar(fine);
  await expectRefused(gzipSync(tar), { code: 'digest-mismatch', message: new RegExp(sha(tar).slice(7)) }, { expectDiffId: `sha256:${'0'.repeat(64)}` });
});

test('refuses a whiteout that names ".."', async () => {
  await expectRefused(gzipSync(await makeTar([...fine, { name: 'ok/.wh...' }])), { code: 'invalid', entry: 'ok/.wh...' }, { whiteouts: 'apply' });
});

test('refuses a whiteout through a symlink', async () => {
  await expectRefused(
    gzipSync(await makeTar([{ name: 'l', type: 'symlink', linkname: '/etc' }, { name: 'l/.wh.passwd' }])),
    { code: 'invalid', entry: 'l/.wh.passwd' },
    { whiteouts: 'apply' },
  );
});

test('refuses a dest that exists', async () => {
  await withTempDir(async (parent) => {
    const dest = join(parent, 'layer');
    await mkdir(dest);
    await assert.rejects(unpackLayer(streamOf(gzipSync(await makeTar(fine))), dest, { mediaType: GZ, whiteouts: 'keep' }), (e: unknown) => isShoalError(e) && e.code === 'conflict');
    assert.deepEqual(await readdir(parent), ['layer']);
    assert.deepEqual(await readdir(dest), []);
  });
});

// ---- what a good layer becomes ------------------------------------------------------

test('unpacks a layer: modes, owners, mtimes, symlinks, hardlinks, long names, dirs after their children', async () => {
  await withTempDir(async (parent) => {
    const long = `${'deep/'.repeat(30)}${'n'.repeat(120)}`;
    const gnuLong = `gnu/${'g'.repeat(150)}`;
    const mtime = new Date(1_600_000_000_000);
    const tar = await makeTar([
      { name: './' , type: 'directory', mode: 0o755 },
      { name: './etc/passwd', content: 'root:x:0:0::/:/bin/false\n', mode: 0o644 },
      { name: 'etc/', type: 'directory', mode: 0o750, uid: 1000, gid: 1001, mtime },
      { name: 'bin/tool', content: '#!/bin/sh\n', mode: 0o4755, uid: 0, gid: 0 },
      { name: 'bin/secret', content: 'no', mode: 0o000 },
      { name: 'bin/alias', type: 'link', linkname: 'bin/tool' },
      { name: 'usr/lib/libz.so', type: 'symlink', linkname: '/lib/libz.so.1' },
      { name: 'usr/lib/rel', type: 'symlink', linkname: '../../etc/passwd' },
      { name: 'tmp/', type: 'directory', mode: 0o1777 },
      { name: long, content: 'long', uid: 65534, gid: 65534 },
      { name: 'big', content: Buffer.alloc(3 << 20, 7) },
      { name: 'ünïcode', content: 'u' },
    ]);
    const blob = Buffer.concat([gzipSync(tar)]);
    const dest = join(parent, 'layer');
    const r = await unpackLayer(streamOf(blob, 1000), dest, { mediaType: GZ, whiteouts: 'keep', expectDiffId: sha(tar) });
    assert.equal(r.diffId, sha(tar));
    assert.equal(r.bytes, tar.length);
    assert.equal(r.entries, 12);
    assert.deepEqual((await readdir(parent)).sort(), ['layer']);
    const tree = await snapshotTree(dest);
    const etc = tree.get('etc');
    assert.equal(etc?.mode, 0o750);
    assert.equal(etc?.mtimeMs, mtime.getTime(), 'a directory keeps its mtime although its children came first');
    if (isRoot) assert.deepEqual([etc?.uid, etc?.gid], [1000, 1001]);
    assert.equal(tree.get('bin/tool')?.mode, 0o4755);
    assert.equal(tree.get('bin/secret')?.mode, 0o000);
    assert.equal(tree.get('bin/alias')?.ino, tree.get('bin/tool')?.ino, 'hardlink shares the inode');
    assert.equal(tree.get('usr/lib/libz.so')?.linkname, '/lib/libz.so.1');
    assert.equal(tree.get('usr/lib/rel')?.linkname, '../../etc/passwd');
    assert.equal(tree.get('tmp')?.mode, 0o1777);
    assert.equal(tree.get('usr')?.mode, 0o755, 'implicit parents are 0755');
    assert.equal(await readFile(join(dest, long), 'utf8'), 'long');
    if (isRoot) assert.equal(tree.get(long)?.uid, 65534);
    assert.equal(tree.get('big')?.size, 3 << 20);
    assert.equal(tree.get('ünïcode')?.sha256, createHash('sha256').update('u').digest('hex'));
    assert.equal(tree.get('etc/passwd')?.mtimeMs, 1_700_000_000_000);
  });
});

test('unpacks GNU long names', async () => {
  await withTempDir(async (parent) => {
    const name = `gnu/${'g'.repeat(150)}`;
    const dest = join(parent, 'layer');
    await unpackLayer(streamOf(gnuLongNameFile(name, 'hello')), dest, { mediaType: TAR, whiteouts: 'keep' });
    assert.equal(await readFile(join(dest, name), 'utf8'), 'hello');
  });
});

test('unpacks zstd layers', async () => {
  await withTempDir(async (parent) => {
    const tar = await makeTar(fine);
    const r = await unpackLayer(streamOf(zstdCompressSync(tar)), join(parent, 'layer'), { mediaType: MediaType.ociLayerZstd, whiteouts: 'keep' });
    assert.equal(r.diffId, sha(tar));
    assert.equal(await readFile(join(parent, 'layer/ok/file'), 'utf8'), 'fine');
  });
});

test('a later entry replaces an earlier one at the same path', async () => {
  await withTempDir(async (parent) => {
    const dest = join(parent, 'layer');
    await unpackLayer(
      streamOf(
        await makeTar([
          { name: 'a', content: 'first' },
          { name: 'a', content: 'second' },
          { name: 'b/c', content: 'x' },
          { name: 'b', type: 'symlink', linkname: 'a' },
          { name: 'd', type: 'symlink', linkname: 'a' },
          { name: 'd/', type: 'directory' },
        ]),
      ),
      dest,
      { mediaType: TAR, whiteouts: 'keep' },
    );
    const tree = await snapshotTree(dest);
    assert.equal(await readFile(join(dest, 'a'), 'utf8'), 'second');
    assert.equal(tree.get('b')?.type, 'symlink');
    assert.equal(tree.has('b/c'), false);
    assert.equal(tree.get('d')?.type, 'directory');
  });
});

test('checkLayer writes nothing and agrees with unpackLayer', async () => {
  const tar = await makeTar([...fine, { name: 'x', type: 'symlink', linkname: 'ok/file' }]);
  const checked = await checkLayer(streamOf(gzipSync(tar)), { mediaType: GZ });
  assert.deepEqual(checked, { entries: 3, bytes: tar.length, diffId: sha(tar) });
});

const whiteoutLayer = async (): Promise<Buffer> =>
  makeTar([
    { name: 'a/', type: 'directory' },
    { name: 'a/.wh.gone' },
    { name: 'a/kept', content: 'k' },
    { name: 'o/', type: 'directory', mode: 0o700 },
    { name: 'o/.wh..wh..opq' },
    { name: 'o/new', content: 'n' },
    { name: '.wh.top' },
    { name: 'm/.wh..wh.plnk/' , type: 'directory' },
  ]);

test("whiteouts 'keep': written as plain empty files", async () => {
  await withTempDir(async (parent) => {
    const dest = join(parent, 'layer');
    await unpackLayer(streamOf(await whiteoutLayer()), dest, { mediaType: TAR, whiteouts: 'keep' });
    const tree = await snapshotTree(dest);
    for (const p of ['a/.wh.gone', 'o/.wh..wh..opq', '.wh.top']) {
      assert.equal(tree.get(p)?.type, 'file', p);
      assert.equal(tree.get(p)?.size, 0);
    }
  });
});

test("whiteouts 'apply' on a single layer: nothing of them is written", async () => {
  await withTempDir(async (parent) => {
    const dest = join(parent, 'layer');
    await unpackLayer(streamOf(await whiteoutLayer()), dest, { mediaType: TAR, whiteouts: 'apply' });
    const tree = await snapshotTree(dest);
    assert.deepEqual([...tree.keys()].sort(), ['a', 'a/kept', 'm', 'm/.wh..wh.plnk', 'o', 'o/new']);
    assert.equal(tree.get('o')?.mode, 0o700);
  });
});

test("whiteouts 'overlay': character devices and the opaque xattr, read by a real overlayfs mount", async (t) => {
  if (!isRoot) {
    if (process.env.CI === 'true') assert.fail("whiteouts 'overlay' needs root, and CI must run it");
    t.skip('not root: overlay whiteouts need mknod and trusted.* xattrs');
    return;
  }
  await withTempDir(async (parent) => {
    const lower = join(parent, 'lower');
    const upper = join(parent, 'upper');
    await unpackLayer(
      streamOf(
        await makeTar([
          { name: 'a/gone', content: 'old' },
          { name: 'a/stay', content: 'old' },
          { name: 'o/hidden', content: 'old' },
          { name: 'top', content: 'old' },
        ]),
      ),
      lower,
      { mediaType: TAR, whiteouts: 'overlay' },
    );
    await unpackLayer(streamOf(await whiteoutLayer()), upper, { mediaType: TAR, whiteouts: 'overlay' });
    const gone = await lstat(join(upper, 'a/gone'));
    assert.ok(gone.isCharacterDevice());
    assert.equal(gone.rdev, 0);
    assert.ok((await lstat(join(upper, 'top'))).isCharacterDevice());
    const { stdout } = await run('getfattr', ['-h', '--only-values', '-n', 'trusted.overlay.opaque', join(upper, 'o')]);
    assert.equal(stdout, 'y');
    assert.equal((await stat(join(upper, 'o'))).mode & 0o7777, 0o700);
    await assert.rejects(lstat(join(upper, 'a/.wh.gone')));
    // The proof: overlayfs reads them as whiteouts.
    const merged = join(parent, 'merged');
    await mkdir(merged);
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${upper}:${lower}`, merged]);
    try {
      assert.deepEqual((await readdir(merged)).sort(), ['a', 'm', 'o']);
      assert.deepEqual((await readdir(join(merged, 'a'))).sort(), ['kept', 'stay']);
      assert.deepEqual(await readdir(join(merged, 'o')), ['new']);
    } finally {
      await run('umount', [merged]);
    }
  });
});

test("whiteouts 'overlay' without root is refused up front", async () => {
  const getuid = process.getuid;
  process.getuid = () => 1000;
  try {
    // checkLayer has no whiteout mode: only the unpack is refused.
    await expectRefused(await makeTar(fine), { code: 'unsupported', message: /needs root/ }, { mediaType: TAR, whiteouts: 'overlay', unpackOnly: true });
  } finally {
    process.getuid = getuid;
  }
});

test("whiteouts 'overlay' says to install attr when setfattr is missing", async (t) => {
  if (!isRoot) {
    if (process.env.CI === 'true') assert.fail("whiteouts 'overlay' needs root, and CI must run it");
    t.skip('not root');
    return;
  }
  const path = process.env.PATH;
  process.env.PATH = '/nonexistent';
  try {
    await withTempDir(async (parent) => {
      await assert.rejects(
        unpackLayer(streamOf(await makeTar([{ name: 'o/.wh..wh..opq' }])), join(parent, 'l'), { mediaType: TAR, whiteouts: 'overlay' }),
        (e: unknown) => isShoalError(e) && e.code === 'unsupported' && /package "attr"/.test(e.message),
      );
      assert.deepEqual(await readdir(parent), []);
    });
  } finally {
    process.env.PATH = path;
  }
});

// ---- flattening a stack --------------------------------------------------------------

const layerOf = (tar: Buffer, mediaType: string = TAR) => ({ open: () => streamOf(tar), mediaType, diffId: sha(tar) });

test('flattenLayers applies whiteouts and opaque directories in order', async () => {
  await withTempDir(async (parent) => {
    const l1 = await makeTar([
      { name: 'a/x', content: '1' },
      { name: 'a/y', content: '1' },
      { name: 'b/z', content: '1' },
      { name: 'c/1', content: '1' },
      { name: 'c/sub/2', content: '1' },
      { name: 'c/sub/3', content: '1' },
      { name: 'd', type: 'symlink', linkname: 'a' },
      { name: 'f', content: 'file then dir' },
    ]);
    const l2 = await makeTar([
      { name: 'a/.wh.x' },
      { name: 'c/sub/4', content: '2' }, // before the opaque marker: still this layer's
      { name: 'c/.wh..wh..opq' },
      { name: 'c/3', content: '2' },
      { name: '.wh.b' },
      { name: '.wh.d' },
      { name: 'd/', type: 'directory' },
      { name: 'd/inside', content: '2' },
      { name: 'f/', type: 'directory' },
      { name: 'e', content: '2' },
    ]);
    const l3 = await makeTar([{ name: 'a/x', content: '3' }, { name: 'c/.wh.sub' }]);
    const layers = [layerOf(gzipSync(l1), GZ), layerOf(l2), layerOf(l3)];
    layers[0]!.diffId = sha(l1);
    const dest = join(parent, 'flat');
    const r = await flattenLayers(layers, dest);
    assert.deepEqual(
      r.layers.map((l) => l.diffId),
      [sha(l1), sha(l2), sha(l3)],
    );
    const tree = await snapshotTree(dest);
    assert.deepEqual([...tree.keys()].sort(), ['a', 'a/x', 'a/y', 'c', 'c/3', 'd', 'd/inside', 'e', 'f']);
    assert.equal(await readFile(join(dest, 'a/x'), 'utf8'), '3');
    assert.equal(tree.get('d')?.type, 'directory');
    assert.deepEqual(await readdir(parent), ['flat']);

    // The index of the same stack says the same.
    const index = await indexLayers(layers);
    assert.deepEqual([...index.keys()].sort(), [...tree.keys()].sort());
    for (const [path, node] of tree) {
      const e = index.get(path);
      assert.equal(e?.type, node.type, path);
      if (node.type === 'file') assert.equal(e?.sha256, `sha256:${node.sha256}`, path);
    }
  });
});

test('flattenLayers leaves nothing when a later layer is refused', async () => {
  await withTempDir(async (parent) => {
    const good = await makeTar([...fine, { name: 'ro/', type: 'directory', mode: 0o555 }, { name: 'ro/f', content: 'x' }]);
    const bad = await makeTar([{ name: '../evil', content: 'x' }]);
    await assert.rejects(flattenLayers([layerOf(good), layerOf(bad)], join(parent, 'flat')), (e: unknown) => isShoalError(e) && e.code === 'invalid' && e.message.includes('../evil'));
    assert.deepEqual(await readdir(parent), []);
  });
});

test('flattenLayers writes into and deletes from a read-only directory of a lower layer, keeping its mode', async () => {
  await withTempDir(async (parent) => {
    const l1 = await makeTar([{ name: 'ro/', type: 'directory', mode: 0o555 }, { name: 'ro/a', content: '1' }]);
    const l2 = await makeTar([{ name: 'ro/.wh.a' }, { name: 'ro/b', content: '2' }]);
    const dest = join(parent, 'flat');
    await flattenLayers([layerOf(l1), layerOf(l2)], dest);
    assert.deepEqual(await readdir(join(dest, 'ro')), ['b']);
    assert.equal((await stat(join(dest, 'ro'))).mode & 0o7777, 0o555);
  });
});

test('flattenLayers refuses a later entry that passes through a lower layer symlink', async () => {
  await withTempDir(async (parent) => {
    const outside = join(parent, 'outside');
    await mkdir(outside);
    const l1 = await makeTar([{ name: 'l', type: 'symlink', linkname: '/' }]);
    await writeFile(join(outside, 'marker'), '');
    const l2 = await makeTar([{ name: 'l/evil', content: 'x' }]);
    await assert.rejects(flattenLayers([layerOf(l1), layerOf(l2)], join(parent, 'flat')), (e: unknown) => isShoalError(e) && e.code === 'invalid' && e.message.includes('l/evil'));
    assert.deepEqual(await readdir(parent), ['outside']);
  });
});

test('applyLayer applies onto an existing tree', async () => {
  await withTempDir(async (parent) => {
    const tree = join(parent, 'tree');
    await mkdir(join(tree, 'etc'), { recursive: true });
    await writeFile(join(tree, 'etc/old'), 'x');
    await applyLayer(Readable.from([await makeTar([{ name: 'etc/.wh.old' }, { name: 'etc/new', content: 'y' }])]), tree, { mediaType: TAR });
    assert.deepEqual(await readdir(join(tree, 'etc')), ['new']);
  });
});
