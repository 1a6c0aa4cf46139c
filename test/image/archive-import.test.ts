import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { importImage } from '../../src/image/archive-import.ts';
import { resolveRemoteImage } from '../../src/image/remote-resolve.ts';
import { digestHex, digestOf, type Digest } from '../../src/protocol/digest.ts';
import { ShoalError } from '../../src/protocol/errors.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import { MediaType } from '../../src/protocol/oci.ts';
import {
  buildImage,
  dirEntries,
  listFiles,
  makeConfig,
  makeTar,
  startTestStore,
  tarOf,
  writeLayout,
  type BuiltImage,
  type TarEntry,
  type TestStore,
} from './archive-fixtures.ts';

let root: string;
let store: TestStore;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'shoal-archive-import-'));
  store = await startTestStore();
});
after(async () => {
  await store.close();
  await rm(root, { recursive: true, force: true });
});

let n = 0;
const fresh = (name = 'x'): string => join(root, `${n++}-${name}`);

async function writeTarFile(entries: TarEntry[], name = 'archive.tar'): Promise<string> {
  const file = fresh(name);
  await writeFile(file, await tarOf(entries));
  return file;
}

/** The entries of an OCI archive holding `image` (optionally altered). */
function ociEntries(image: BuiltImage, opts: { manifestMediaType?: string; dropLayer?: boolean; refName?: string } = {}): TarEntry[] {
  const index = {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [
      {
        mediaType: opts.manifestMediaType ?? MediaType.ociManifest,
        digest: image.manifestDigest,
        size: image.manifest.length,
        annotations: { 'org.opencontainers.image.ref.name': opts.refName ?? 'latest' },
      },
    ],
  };
  const entries: TarEntry[] = [
    { name: 'oci-layout', content: JSON.stringify({ imageLayoutVersion: '1.0.0' }) },
    { name: 'index.json', content: JSON.stringify(index) },
    { name: 'blobs/', type: 'directory' },
    { name: 'blobs/sha256/', type: 'directory' },
    { name: `blobs/sha256/${digestHex(image.manifestDigest)}`, content: image.manifest },
    { name: `blobs/sha256/${digestHex(digestOf(image.config))}`, content: image.config },
  ];
  image.layers.forEach((l, i) => {
    if (opts.dropLayer && i === image.layers.length - 1) return;
    entries.push({ name: `blobs/sha256/${digestHex(l.digest)}`, content: l.gz });
  });
  return entries;
}

/** A `docker save` (before Docker 25) shaped archive: uncompressed layer.tar files. */
async function dockerSaveEntries(layers: Array<Record<string, string>>, opts: { badDiffId?: boolean; duplicateLast?: boolean } = {}) {
  const tars = await Promise.all(layers.map((f) => makeTar(f)));
  if (opts.duplicateLast) tars.push(tars.at(-1)!);
  const diffIds = tars.map((t) => digestOf(t));
  if (opts.badDiffId) diffIds[0] = digestOf('not the layer');
  const config = makeConfig(diffIds, { Cmd: ['/bin/sh', '-c', 'echo hi'], Env: ['PATH=/usr/bin'] });
  const configName = `${digestHex(digestOf(config))}.json`;
  const entries: TarEntry[] = [];
  const layerNames: string[] = [];
  tars.forEach((t, i) => {
    const id = `${String(i).padStart(2, '0')}${'a'.repeat(62)}`;
    entries.push({ name: `${id}/`, type: 'directory' }, { name: `${id}/VERSION`, content: '1.0' });
    if (opts.duplicateLast && i === tars.length - 1) {
      // What old docker save writes for a layer identical to an earlier one.
      const prev = `${String(i - 1).padStart(2, '0')}${'a'.repeat(62)}`;
      entries.push({ name: `${id}/layer.tar`, type: 'symlink', linkname: `../${prev}/layer.tar` });
    } else {
      entries.push({ name: `${id}/layer.tar`, content: t });
    }
    layerNames.push(`${id}/layer.tar`);
  });
  entries.push({ name: configName, content: config });
  entries.push({ name: 'manifest.json', content: JSON.stringify([{ Config: configName, RepoTags: ['example/app:1.0'], Layers: layerNames }]) });
  entries.push({ name: 'repositories', content: JSON.stringify({ 'example/app': { '1.0': 'x' } }) });
  return { entries, config, diffIds, tars };
}

function refused(code: string, re: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof ShoalError, `expected a ShoalError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    return true;
  };
}

/** Runs `fn`, which must be refused, and proves the store gained no file. */
async function refusedLeavingNothing(fn: () => Promise<unknown>, code: string, re: RegExp): Promise<void> {
  const before = await listFiles(store.dataDir);
  await assert.rejects(fn(), refused(code, re));
  assert.deepEqual(await listFiles(store.dataDir), before, 'the store is unchanged');
}

const target = (name: string) => ({ client: store.client, ref: parseImageRef(name) });

describe('formats', () => {
  test('an OCI layout directory imports with its manifest digest unchanged', async () => {
    const image = await buildImage([{ 'etc/motd': 'hello\n' }, { 'app/x': 'x' }]);
    const dir = fresh('layout');
    await writeLayout(dir, image, 'v1');
    const result = await importImage(dir, target('imp/layout:v1'));
    assert.equal(result.format, 'oci-layout');
    assert.equal(result.manifestDigest, image.manifestDigest);
    assert.equal(result.layers, 2);
    assert.equal(result.bytes, image.config.length + image.layers.reduce((s, l) => s + l.size, 0));
    const got = await store.client.getManifest('imp/layout', 'v1');
    assert.deepEqual(got?.bytes, image.manifest);
  });

  test('an OCI archive (plain or gzipped) imports byte for byte', async () => {
    const image = await buildImage([{ 'a/b': 'oci archive' }]);
    const file = await writeTarFile(ociEntries(image));
    const result = await importImage(file, target('imp/oci:1'));
    assert.equal(result.format, 'oci-archive');
    assert.equal(result.manifestDigest, image.manifestDigest);
    const gz = fresh('archive.tar.gz');
    await writeFile(gz, gzipSync(await readFile(file)));
    assert.equal((await importImage(gz, target('imp/oci:gz'))).manifestDigest, image.manifestDigest);
    assert.equal((await importImage(gz, target('imp/oci:gz'))).skipped, 2, 'a second import uploads nothing');
  });

  test('a docker-save archive is gzipped into an OCI image whose diffIds match its config and resolves', async () => {
    const { entries, config, diffIds, tars } = await dockerSaveEntries([{ 'bin/sh': '#!fake\n' }, { 'etc/hosts': '127.0.0.1 localhost\n' }], { duplicateLast: true });
    const file = await writeTarFile(entries);
    const result = await importImage(file, target('imp/docker:1.0'));
    assert.equal(result.format, 'docker-archive');
    assert.equal(result.layers, 3);

    const got = await store.client.getManifest('imp/docker', '1.0');
    assert.equal(got?.mediaType, MediaType.ociManifest);
    const manifest = JSON.parse(got!.bytes.toString()) as { config: { mediaType: string; digest: string }; layers: Array<{ mediaType: string; digest: string }> };
    assert.equal(manifest.config.mediaType, MediaType.ociConfig);
    assert.equal(manifest.config.digest, digestOf(config), 'the config is kept byte for byte');
    assert.deepEqual(manifest.layers.map((l) => l.mediaType), [MediaType.ociLayerGzip, MediaType.ociLayerGzip, MediaType.ociLayerGzip]);
    // The layers on the store are gzip streams of the very tars docker saved.
    const { gunzipSync } = await import('node:zlib');
    for (const [i, l] of manifest.layers.entries()) {
      const { Readable } = await import('node:stream');
      const chunks: Buffer[] = [];
      for await (const c of (await store.client.fetchBlob('imp/docker', l.digest as Digest)) as InstanceType<typeof Readable>) chunks.push(c as Buffer);
      assert.deepEqual(gunzipSync(Buffer.concat(chunks)), tars[i]);
    }

    const spec = await resolveRemoteImage(store.client, 'imp/docker:1.0');
    assert.equal(spec.manifestDigest, result.manifestDigest);
    assert.deepEqual(spec.layers.map((l) => l.diffId), diffIds);
    assert.deepEqual(spec.process.args, ['/bin/sh', '-c', 'echo hi']);

    // Importing the same archive again gives the same digest (gzip is deterministic).
    assert.equal((await importImage(file, target('imp/docker:again'))).manifestDigest, result.manifestDigest);
  });

  test('a docker archive whose layer files are already gzipped keeps them as they are', async () => {
    const { entries, diffIds } = await dockerSaveEntries([{ 'srv/a': 'compressed layer' }]);
    const layer = entries.find((e) => e.name.endsWith('layer.tar'))!;
    layer.content = gzipSync(layer.content as Buffer);
    const result = await importImage(await writeTarFile(entries), target('imp/dockergz:1'));
    const spec = await resolveRemoteImage(store.client, 'imp/dockergz:1');
    assert.equal(spec.manifestDigest, result.manifestDigest);
    assert.equal(spec.layers[0]!.digest, digestOf(layer.content as Buffer), 'the gzip file is the blob');
    assert.equal(spec.layers[0]!.diffId, diffIds[0]);
  });

  test('a Docker 25+ archive (manifest.json and an OCI layout with tar layers) is read through its index', async () => {
    const tar = await makeTar({ 'usr/bin/tool': 'tool' });
    const config = makeConfig([digestOf(tar)]);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: digestOf(config), size: config.length },
        layers: [{ mediaType: MediaType.ociLayerTar, digest: digestOf(tar), size: tar.length }],
      }),
    );
    const blob = (b: Buffer): TarEntry => ({ name: `blobs/sha256/${digestHex(digestOf(b))}`, content: b });
    const file = await writeTarFile([
      blob(tar),
      blob(config),
      blob(manifest),
      { name: 'index.json', content: JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [{ mediaType: MediaType.ociManifest, digest: digestOf(manifest), size: manifest.length, annotations: { 'io.containerd.image.name': 'docker.io/library/tool:1', 'org.opencontainers.image.ref.name': '1' } }] }) },
      { name: 'manifest.json', content: JSON.stringify([{ Config: `blobs/sha256/${digestHex(digestOf(config))}`, RepoTags: ['tool:1'], Layers: [`blobs/sha256/${digestHex(digestOf(tar))}`] }]) },
      { name: 'oci-layout', content: '{"imageLayoutVersion":"1.0.0"}' },
    ]);
    const result = await importImage(file, target('imp/docker25:1'));
    assert.equal(result.format, 'docker-archive');
    const spec = await resolveRemoteImage(store.client, 'imp/docker25:1');
    assert.equal(spec.layers[0]!.mediaType, MediaType.ociLayerGzip, 'tar layers are compressed for the wire');
    assert.equal(spec.layers[0]!.diffId, digestOf(tar));
    assert.equal(spec.configDigest, digestOf(config));
  });

  test('an archive holding several images needs a name', async () => {
    const a = await buildImage([{ a: '1' }]);
    const b = await buildImage([{ b: '2' }]);
    const dir = fresh('multi');
    await writeLayout(dir, a, 'first');
    await writeLayout(dir, b, 'second');
    await assert.rejects(importImage(dir, target('imp/multi:x')), refused('invalid', /2 images.*first, second/));
    assert.equal((await importImage(dir, target('imp/multi:x'), { image: 'second' })).manifestDigest, b.manifestDigest);
    await assert.rejects(importImage(dir, target('imp/multi:x'), { image: 'third' }), refused('not-found', /third/));
  });
});

describe('hostile and broken archives push nothing', () => {
  test('an outer entry with ".." is refused, naming the entry', async () => {
    const image = await buildImage([{ ok: 'ok' }]);
    const file = await writeTarFile([...ociEntries(image), { name: '../escape', content: 'x' }]);
    await refusedLeavingNothing(() => importImage(file, target('bad/dotdot:1')), 'invalid', /"\.\.\/escape".*"\.\."/);
  });

  test('absolute names, devices and links leading out are refused', async () => {
    const image = await buildImage([{ ok: 'ok' }]);
    for (const [extra, re] of [
      [{ name: '/etc/passwd', content: 'x' }, /"\/etc\/passwd" is an absolute path/],
      [{ name: 'dev/null', type: 'character-device' }, /"dev\/null" is a character-device/],
      [{ name: 'up', type: 'symlink', linkname: '../../etc/shadow' }, /"up" is a symlink leading out/],
      [{ name: 'abs', type: 'symlink', linkname: '/etc/shadow' }, /"abs" is a symlink to an absolute path/],
      [{ name: 'fifo', type: 'fifo' }, /"fifo" is a fifo/],
    ] as Array<[TarEntry, RegExp]>) {
      const file = await writeTarFile([...ociEntries(image), extra]);
      await refusedLeavingNothing(() => importImage(file, target('bad/entries:1')), 'invalid', re);
    }
  });

  test('a layer with a ".." entry is refused by the layer check, and the store gains no file', async () => {
    const image = await buildImage([{ 'fine/file': 'fine' }, { '../../etc/cron.d/evil': '* * * * * root rm -rf /' }]);
    const file = await writeTarFile(ociEntries(image));
    await refusedLeavingNothing(() => importImage(file, target('bad/layer:1')), 'invalid', /layer 1 .*\.\.\/\.\.\/etc\/cron\.d\/evil/);
    assert.equal(await store.client.getManifest('bad/layer', '1'), undefined);
    // The good layer (checked first) was not pushed either.
    assert.equal(await store.client.hasBlob('bad/layer', image.layers[0]!.digest), undefined);
  });

  test('a docker layer whose content is not its diff_id is refused', async () => {
    const { entries } = await dockerSaveEntries([{ a: 'a' }, { b: 'b' }], { badDiffId: true });
    const file = await writeTarFile(entries);
    await refusedLeavingNothing(() => importImage(file, target('bad/diffid:1')), 'digest-mismatch', /layer 0 .*rootfs\.diff_ids\[0\]/);
  });

  test('a blob whose bytes do not match its name is refused', async () => {
    const image = await buildImage([{ a: 'a' }]);
    const entries = ociEntries(image);
    const layerEntry = entries.at(-1)!;
    const other = await buildImage([{ a: 'b' }]);
    layerEntry.content = other.layers[0]!.gz;
    const file = await writeTarFile(entries);
    // The other layer's diffId differs from the config's too; the digest is checked first.
    await refusedLeavingNothing(() => importImage(file, target('bad/tampered:1')), 'digest-mismatch', /hashes to/);
  });

  test('a truncated archive is refused', async () => {
    const image = await buildImage([{ big: 'x'.repeat(20_000) }]);
    const whole = await tarOf(ociEntries(image));
    const file = fresh('truncated.tar');
    await writeFile(file, whole.subarray(0, Math.floor(whole.length * 0.7)));
    await refusedLeavingNothing(() => importImage(file, target('bad/truncated:1')), 'invalid', /truncated or corrupt/);
  });

  test('a blob named by the manifest but missing from the archive is refused', async () => {
    const image = await buildImage([{ a: 'a' }, { b: 'b' }]);
    const file = await writeTarFile(ociEntries(image, { dropLayer: true }));
    await refusedLeavingNothing(() => importImage(file, target('bad/missing:1')), 'invalid', new RegExp(`layer 1 .*${digestHex(image.layers[1]!.digest)}.*missing`));
  });

  test('a docker archive naming a missing layer file or config is refused', async () => {
    const { entries } = await dockerSaveEntries([{ a: 'a' }]);
    const noLayer = entries.filter((e) => !e.name.endsWith('layer.tar'));
    await refusedLeavingNothing(() => writeTarFile(noLayer).then((f) => importImage(f, target('bad/dmissing:1'))), 'invalid', /layer ".*layer\.tar" named by manifest\.json is missing/);
  });

  test('an unknown manifest media type is unsupported', async () => {
    const image = await buildImage([{ a: 'a' }]);
    const file = await writeTarFile(ociEntries(image, { manifestMediaType: 'application/vnd.example.weird+json' }));
    await refusedLeavingNothing(() => importImage(file, target('bad/mediatype:1')), 'invalid', /descriptor says application\/vnd\.example\.weird\+json/);
    // The same document with its own unknown mediaType and no descriptor type clash.
    const odd = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.example.weird+json', config: {}, layers: [] }));
    const entries = ociEntries({ ...image, manifest: odd, manifestDigest: digestOf(odd) }, { manifestMediaType: 'application/vnd.example.weird+json' });
    const f2 = await writeTarFile(entries);
    await refusedLeavingNothing(() => importImage(f2, target('bad/mediatype:2')), 'unsupported', /unknown manifest media type "application\/vnd\.example\.weird\+json"/);
  });

  test('neither format, and missing inputs, are refused clearly', async () => {
    const file = await writeTarFile([{ name: 'hello.txt', content: 'hi' }]);
    await assert.rejects(importImage(file, target('bad/none:1')), refused('invalid', /neither an OCI archive .* nor a docker archive/));
    await assert.rejects(importImage(fresh('nope'), target('bad/none:1')), refused('not-found', /no such file/));
    const notTar = fresh('garbage');
    await writeFile(notTar, 'this is not a tar archive at all, just text'.repeat(20));
    await assert.rejects(importImage(notTar, target('bad/none:1')), (e: unknown) => e instanceof ShoalError && e.code === 'invalid');
  });
});

test('an OCI layout turned into an archive by hand imports the same', async () => {
  const image = await buildImage([{ z: 'z' }]);
  const dir = fresh('layout2');
  await writeLayout(dir, image, 'v');
  const file = await writeTarFile(await dirEntries(dir));
  assert.equal((await importImage(file, target('imp/handmade:v'))).manifestDigest, image.manifestDigest);
});
