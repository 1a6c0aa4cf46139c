import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { chmod, link, mkdir, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { isShoalError } from '../../src/protocol/errors.ts';
import { MediaType } from '../../src/protocol/oci.ts';
import { buildLayer, indexLayers } from '../../src/image/layer-build.ts';
import { flattenLayers, unpackLayer } from '../../src/image/layer-unpack.ts';
import { listTar, snapshotTree, withTempDir, type TreeNode } from './layer-fixtures.ts';

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;

/** A small root with every kind of entry the builder handles. */
async function makeSource(dir: string): Promise<void> {
  await mkdir(join(dir, 'etc'), { recursive: true });
  await mkdir(join(dir, 'usr/lib'), { recursive: true });
  await mkdir(join(dir, 'app/static'), { recursive: true });
  await mkdir(join(dir, 'tmp'));
  await mkdir(join(dir, 'gone/deep'), { recursive: true });
  await chmod(join(dir, 'tmp'), 0o1777);
  await writeFile(join(dir, 'etc/passwd'), 'root:x:0:0::/:/bin/false\n');
  await writeFile(join(dir, 'etc/shadow'), 'secret');
  await chmod(join(dir, 'etc/shadow'), isRoot ? 0o000 : 0o400); // only root reads a 0000 file
  await writeFile(join(dir, 'usr/lib/libz.so.1'), Buffer.alloc(2 << 20, 3));
  await symlink('libz.so.1', join(dir, 'usr/lib/libz.so'));
  await symlink('/usr/lib/libz.so.1', join(dir, 'usr/lib/abs.so'));
  await writeFile(join(dir, 'app/server.js'), 'console.log(1)\n');
  await chmod(join(dir, 'app/server.js'), 0o4755);
  await link(join(dir, 'app/server.js'), join(dir, 'app/main.js'));
  await writeFile(join(dir, 'app/static/index.html'), '<p>hi</p>');
  await writeFile(join(dir, 'app/empty'), '');
  await writeFile(join(dir, `app/${'long-name-'.repeat(15)}`), 'long');
  await writeFile(join(dir, 'gone/deep/a'), 'a');
  await writeFile(join(dir, 'gone/b'), 'b');
  await writeFile(join(dir, 'etc/old.conf'), 'old');
}

function comparable(tree: Map<string, TreeNode>): Map<string, Omit<TreeNode, 'ino' | 'mtimeMs' | 'rdev'>> {
  return new Map([...tree].map(([p, n]) => [p, { type: n.type, mode: n.mode, uid: n.uid, gid: n.gid, size: n.size, sha256: n.sha256, linkname: n.linkname }]));
}

const layerFile = (path: string, mediaType: string) => ({ open: () => createReadStream(path), mediaType });

test('a built layer unpacks to the same tree: modes, owners, symlinks, hardlinks, long names', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src');
    await mkdir(src);
    await makeSource(src);
    const built = await buildLayer({ source: src, outFile: join(dir, 'out/layer.tar.gz') });
    assert.equal(built.mediaType, MediaType.ociLayerGzip);
    assert.equal(built.path, join(dir, 'out/layer.tar.gz'));
    const blob = await readFile(built.path);
    assert.equal(built.size, blob.length);
    assert.equal(built.digest, `sha256:${createHash('sha256').update(blob).digest('hex')}`);
    const tar = gunzipSync(blob);
    assert.equal(built.uncompressedSize, tar.length);
    assert.equal(built.diffId, `sha256:${createHash('sha256').update(tar).digest('hex')}`);
    assert.deepEqual(await readdir(join(dir, 'out')), ['layer.tar.gz'], 'no temp file left');

    const entries = await listTar(tar);
    assert.equal(built.entries, entries.length);
    const names = entries.map((e) => e.name.replace(/\/$/, ''));
    assert.deepEqual(names, [...names].sort(), 'entries sorted by path');
    assert.ok(entries.every((e) => e.mtime === 0), 'mtimes fixed to 0');
    const linkEntry = entries.find((e) => e.type === 'link');
    assert.deepEqual([linkEntry?.name, linkEntry?.linkname], ['app/server.js', 'app/main.js']);

    const dest = join(dir, 'unpacked');
    await unpackLayer(createReadStream(built.path), dest, { mediaType: built.mediaType, whiteouts: 'keep', expectDiffId: built.diffId });
    const before = await snapshotTree(src);
    const after = await snapshotTree(dest);
    assert.deepEqual(comparable(after), comparable(before));
    assert.equal(after.get('app/main.js')?.ino, after.get('app/server.js')?.ino, 'hardlink kept');
    assert.equal(after.get('app/server.js')?.mode, 0o4755);
    assert.equal(after.get('etc/shadow')?.mode, isRoot ? 0o000 : 0o400);
    assert.equal(after.get('tmp')?.mode, 0o1777);
  });
});

test('same input → byte-identical layer (mtimes and owners do not leak in)', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src');
    await mkdir(src);
    await makeSource(src);
    const a = await buildLayer({ source: src, outFile: join(dir, 'a.tgz'), owner: { uid: 0, gid: 0 } });
    await utimes(join(src, 'etc/passwd'), new Date(), new Date(5_000_000));
    await utimes(join(src, 'app'), new Date(), new Date(9_000_000));
    const b = await buildLayer({ source: src, outFile: join(dir, 'b.tgz'), owner: { uid: 0, gid: 0 } });
    assert.equal(a.digest, b.digest);
    assert.equal(a.diffId, b.diffId);
    assert.deepEqual(await readFile(a.path), await readFile(b.path));
    // A different owner is a different layer.
    const c = await buildLayer({ source: src, outFile: join(dir, 'c.tgz'), owner: { uid: 1000, gid: 1000 } });
    assert.notEqual(c.diffId, a.diffId);
    assert.ok((await listTar(gunzipSync(await readFile(c.path)))).every((e) => e.uid === 1000 && e.gid === 1000));
  });
});

test('SOURCE_DATE_EPOCH sets the mtimes', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src');
    await mkdir(src);
    await writeFile(join(src, 'f'), 'x');
    const old = process.env.SOURCE_DATE_EPOCH;
    process.env.SOURCE_DATE_EPOCH = '1700000000';
    try {
      const built = await buildLayer({ source: src, outFile: join(dir, 'l.tgz') });
      assert.deepEqual((await listTar(gunzipSync(await readFile(built.path)))).map((e) => e.mtime), [1_700_000_000_000]);
    } finally {
      if (old === undefined) delete process.env.SOURCE_DATE_EPOCH;
      else process.env.SOURCE_DATE_EPOCH = old;
    }
  });
});

test('an overlay over a base holds exactly the changes, and whiteouts for what a whole root lost', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'base');
    await mkdir(src);
    await makeSource(src);
    const baseLayer = await buildLayer({ source: src, outFile: join(dir, 'base.tgz'), owner: { uid: 0, gid: 0 } });
    const base = await indexLayers([layerFile(baseLayer.path, baseLayer.mediaType)]);
    assert.equal(base.get('usr/lib/libz.so')?.linkname, 'libz.so.1');
    assert.equal(base.get('app/main.js')?.sha256, base.get('app/server.js')?.sha256);

    const next = join(dir, 'next');
    await run('cp', ['-a', src, next]); // keeps hardlinks, modes and owners
    await writeFile(join(next, 'app/server.js'), 'console.log(2)\n'); // content (and its hardlink twin)
    await chmod(join(next, 'etc/passwd'), 0o600); // mode only
    await rm(join(next, 'etc/old.conf')); // deleted file
    await rm(join(next, 'gone'), { recursive: true }); // deleted dir with children: one whiteout
    await writeFile(join(next, 'app/static/new.css'), 'p{}'); // new file
    await rm(join(next, 'usr/lib/libz.so'));
    await symlink('abs.so', join(next, 'usr/lib/libz.so')); // symlink target changed

    const overlay = await buildLayer({ source: next, base, wholeRoot: true, outFile: join(dir, 'overlay.tgz'), owner: { uid: 0, gid: 0 } });
    const entries = await listTar(gunzipSync(await readFile(overlay.path)));
    assert.deepEqual(
      entries.map((e) => `${e.type} ${e.name}${e.linkname ? ` -> ${e.linkname}` : ''}`),
      [
        'file .wh.gone',
        'directory app/',
        'file app/main.js',
        'link app/server.js -> app/main.js',
        'directory app/static/',
        'file app/static/new.css',
        'directory etc/',
        'file etc/.wh.old.conf',
        'file etc/passwd',
        'directory usr/',
        'directory usr/lib/',
        'symlink usr/lib/libz.so -> abs.so',
      ],
    );
    assert.equal(overlay.whiteouts, 2);
    assert.equal(overlay.entries, 12);
    assert.ok(overlay.size < baseLayer.size / 10, `the overlay (${overlay.size} B) is a small part of the base (${baseLayer.size} B)`);

    // Base + overlay, flattened, is the new tree.
    const flat = join(dir, 'flat');
    await flattenLayers([layerFile(baseLayer.path, baseLayer.mediaType), layerFile(overlay.path, overlay.mediaType)], flat);
    const want = comparable(await snapshotTree(next));
    const got = comparable(await snapshotTree(flat));
    if (!isRoot) for (const m of [want, got]) for (const n of m.values()) Object.assign(n, { uid: 0, gid: 0 });
    else for (const n of want.values()) Object.assign(n, { uid: 0, gid: 0 });
    assert.deepEqual(got, want);

    // Without wholeRoot nothing is deleted.
    const partial = await buildLayer({ source: next, base, outFile: join(dir, 'partial.tgz'), owner: { uid: 0, gid: 0 } });
    assert.equal(partial.whiteouts, 0);
    assert.ok((await listTar(gunzipSync(await readFile(partial.path)))).every((e) => !e.name.includes('.wh.')));

    // Nothing changed → an empty layer.
    const same = await buildLayer({ source: src, base, wholeRoot: true, outFile: join(dir, 'same.tgz'), owner: { uid: 0, gid: 0 } });
    assert.equal(same.entries, 0);
  });
});

test('zstd layers build and unpack', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src');
    await mkdir(src);
    await makeSource(src);
    const built = await buildLayer({ source: src, outFile: join(dir, 'l.tar.zst'), compression: 'zstd' });
    assert.equal(built.mediaType, MediaType.ociLayerZstd);
    const r = await unpackLayer(createReadStream(built.path), join(dir, 'u'), { mediaType: built.mediaType, whiteouts: 'keep' });
    assert.equal(r.diffId, built.diffId);
    assert.equal(r.bytes, built.uncompressedSize);
  });
});

test('sockets are skipped and reported', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src');
    await mkdir(join(src, 'run'), { recursive: true });
    await writeFile(join(src, 'f'), 'x');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(src, 'run/app.sock'), resolve));
    try {
      const built = await buildLayer({ source: src, outFile: join(dir, 'l.tgz') });
      assert.deepEqual(built.skipped, ['/run/app.sock']);
      assert.deepEqual(
        (await listTar(gunzipSync(await readFile(built.path)))).map((e) => e.name),
        ['f', 'run/'],
      );
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

test('a FIFO in the source fails the build, names it, and leaves no outFile', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src');
    await mkdir(join(src, 'var'), { recursive: true });
    await writeFile(join(src, 'a'), 'x');
    await run('mkfifo', [join(src, 'var/pipe')]);
    const out = join(dir, 'out');
    await mkdir(out);
    await assert.rejects(buildLayer({ source: src, outFile: join(out, 'l.tgz') }), (e: unknown) => isShoalError(e) && e.code === 'invalid' && e.message.includes('"/var/pipe"') && /FIFO/.test(e.message));
    assert.deepEqual(await readdir(out), []);
  });
});

test('an unreadable file fails the build with its path', { skip: isRoot ? 'root reads every file' : false }, async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src');
    await mkdir(src);
    await writeFile(join(src, 'secret'), 'x');
    await chmod(join(src, 'secret'), 0o000);
    await assert.rejects(buildLayer({ source: src, outFile: join(dir, 'l.tgz') }), (e: unknown) => isShoalError(e) && e.code === 'invalid' && e.message.includes('secret'));
    assert.deepEqual(await readdir(dir), ['src']);
  });
});

test('a symlink in the source that leads out of the root fails the build', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src');
    await mkdir(src);
    await symlink('../../etc/passwd', join(src, 'evil'));
    await assert.rejects(buildLayer({ source: src, outFile: join(dir, 'l.tgz') }), (e: unknown) => isShoalError(e) && e.code === 'invalid' && e.message.includes('"/evil"'));
    assert.deepEqual(await readdir(dir), ['src']);
  });
});
