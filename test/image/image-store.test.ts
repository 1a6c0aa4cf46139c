import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { writeBlob } from '../../src/image/blob-store.ts';
import { createImageStore, type ImageStore, type ImageStoreOptions } from '../../src/image/image-store.ts';
import { digestOf, type Digest } from '../../src/protocol/digest.ts';
import { ShoalError } from '../../src/protocol/errors.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import { MediaType } from '../../src/protocol/oci.ts';
import { descriptor, makeConfig, makeIndex, makeLayer, makeManifest, snapshot, type Layer } from './store-fixtures.ts';

let root: string;
let n = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'shoal-image-store-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

function freshStore(options: Partial<ImageStoreOptions> = {}): ImageStore {
  return createImageStore({ dir: join(root, `s${n++}`), ...options });
}

interface Img {
  layers: Layer[];
  config: Buffer;
  manifest: Buffer;
  digest: Digest;
}

async function makeImage(files: Array<Record<string, string>>, extra: Parameters<typeof makeConfig>[1] = {}): Promise<Img> {
  const layers = await Promise.all(files.map((f) => makeLayer(f)));
  const config = makeConfig(
    layers.map((l) => l.diffId),
    extra,
  );
  const manifest = makeManifest(config, layers);
  return { layers, config, manifest, digest: digestOf(manifest) };
}

async function uploadBlobs(store: ImageStore, img: Img) {
  await writeBlob(store.blobs, img.config);
  for (const l of img.layers) await writeBlob(store.blobs, l.gz);
}

/** Asserts the call fails with code/field and that no file of the store changed. */
async function refuses(store: ImageStore, call: () => Promise<unknown>, code: string, field: string | RegExp) {
  const dir = store.blobs.dir;
  const before = await snapshot(dir);
  await assert.rejects(call(), (e: unknown) => {
    assert.ok(e instanceof ShoalError, String(e));
    assert.equal(e.code, code, e.message);
    if (typeof field === 'string') assert.equal(e.field, field, e.message);
    else assert.match(e.field ?? '', field, e.message);
    return true;
  });
  assert.deepEqual(await snapshot(dir), before, 'the store changed');
}

function edit(manifest: Buffer, fn: (doc: any) => void): Buffer {
  const doc = JSON.parse(manifest.toString());
  fn(doc);
  return Buffer.from(JSON.stringify(doc));
}

describe('image store: manifest refusals change nothing', () => {
  let store: ImageStore;
  let img: Img;
  before(async () => {
    store = freshStore({ limits: { maxManifestBytes: 64 * 1024 } });
    img = await makeImage([{ 'a.txt': 'a' }, { 'b.txt': 'b' }]);
    await uploadBlobs(store, img);
    // One good image so the repository exists and has a tag.
    await store.putManifest('demo/app', 'good', img.manifest, MediaType.ociManifest);
  });

  test('invalid JSON', async () => {
    await refuses(store, () => store.putManifest('demo/app', 'x', Buffer.from('{"schemaVersion": 2,'), MediaType.ociManifest), 'invalid', 'manifest');
    await refuses(store, () => store.putManifest('demo/app', 'x', Buffer.from('[1,2]'), MediaType.ociManifest), 'invalid', 'manifest');
  });

  test('not a manifest: the failing path is named', async () => {
    const noLayers = edit(img.manifest, (d) => delete d.layers);
    await refuses(store, () => store.putManifest('demo/app', 'x', noLayers, MediaType.ociManifest), 'invalid', 'layers');
    const badDigest = edit(img.manifest, (d) => (d.layers[1].digest = 'sha256:xyz'));
    await refuses(store, () => store.putManifest('demo/app', 'x', badDigest, MediaType.ociManifest), 'invalid', 'layers/1/digest');
    const badVersion = edit(img.manifest, (d) => (d.schemaVersion = 1));
    await refuses(store, () => store.putManifest('demo/app', 'x', badVersion, MediaType.ociManifest), 'invalid', 'schemaVersion');
    const index = edit(makeIndex([{ manifest: img.manifest, architecture: 'amd64' }]), (d) => (d.manifests = 'none'));
    await refuses(store, () => store.putManifest('demo/app', 'x', index, MediaType.ociIndex), 'invalid', 'manifests');
  });

  test('over the size limit', async () => {
    const big = edit(img.manifest, (d) => (d.annotations = { pad: 'x'.repeat(70 * 1024) }));
    await refuses(store, () => store.putManifest('demo/app', 'x', big, MediaType.ociManifest), 'too-large', 'manifest');
  });

  test('unknown manifest media types (config and layer types are free: see artifacts)', async () => {
    const odd = edit(img.manifest, (d) => (d.mediaType = 'application/vnd.example.thing+json'));
    await refuses(store, () => store.putManifest('demo/app', 'x', odd, 'application/vnd.example.thing+json'), 'unsupported', 'mediaType');
    const schema1 = edit(img.manifest, (d) => (d.mediaType = 'application/vnd.docker.distribution.manifest.v1+prettyjws'));
    await refuses(store, () => store.putManifest('demo/app', 'x', schema1, 'application/json'), 'unsupported', 'mediaType');
    const untyped = edit(img.manifest, (d) => delete d.mediaType);
    await refuses(store, () => store.putManifest('demo/app', 'x', untyped, 'application/octet-stream'), 'unsupported', 'mediaType');
  });

  test('Content-Type disagreeing with the body', async () => {
    await refuses(store, () => store.putManifest('demo/app', 'x', img.manifest, MediaType.dockerManifest), 'invalid', 'mediaType');
  });

  test('a config or layer the store lacks (MANIFEST_BLOB_UNKNOWN), naming the digest', async () => {
    const missing = await makeLayer({ 'missing.txt': 'not uploaded' });
    const m = makeManifest(makeConfig([img.layers[0]!.diffId, missing.diffId]), [img.layers[0]!, missing]);
    await writeBlob(store.blobs, makeConfig([img.layers[0]!.diffId, missing.diffId]));
    const before = await snapshot(store.blobs.dir);
    await assert.rejects(store.putManifest('demo/app', 'x', m, MediaType.ociManifest), (e: unknown) => {
      assert.ok(e instanceof ShoalError);
      assert.equal(e.code, 'invalid');
      assert.equal(e.field, 'layers/1/digest');
      assert.deepEqual(e.detail, { reason: 'blob-unknown', digest: missing.digest });
      assert.match(e.message, new RegExp(missing.digest));
      return true;
    });
    assert.deepEqual(await snapshot(store.blobs.dir), before);
    const noConfig = makeManifest(makeConfig([img.layers[0]!.diffId], { User: 'nobody' }), [img.layers[0]!]);
    await refuses(store, () => store.putManifest('demo/app', 'x', noConfig, MediaType.ociManifest), 'invalid', 'config/digest');
    const index = makeIndex([{ manifest: noConfig, architecture: 'amd64' }]);
    await refuses(store, () => store.putManifest('demo/app', 'x', index, MediaType.ociIndex), 'invalid', 'manifests/0/digest');
  });

  test('a descriptor size that disagrees with the blob', async () => {
    const m = edit(img.manifest, (d) => (d.layers[0].size += 1));
    await refuses(store, () => store.putManifest('demo/app', 'x', m, MediaType.ociManifest), 'invalid', 'layers/0/size');
    const c = edit(img.manifest, (d) => (d.config.size -= 1));
    await refuses(store, () => store.putManifest('demo/app', 'x', c, MediaType.ociManifest), 'invalid', 'config/size');
  });

  test('a config that is not valid JSON, or not an image config', async () => {
    const junk = Buffer.from('{"architecture": "amd64", oops');
    await writeBlob(store.blobs, junk);
    const m = edit(img.manifest, (d) => (d.config = descriptor(MediaType.ociConfig, junk)));
    await refuses(store, () => store.putManifest('demo/app', 'x', m, MediaType.ociManifest), 'invalid', 'config');
    const noRootfs = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux' }));
    await writeBlob(store.blobs, noRootfs);
    const m2 = edit(img.manifest, (d) => (d.config = descriptor(MediaType.ociConfig, noRootfs)));
    await refuses(store, () => store.putManifest('demo/app', 'x', m2, MediaType.ociManifest), 'invalid', 'config/rootfs');
    const oneDiff = makeConfig([img.layers[0]!.diffId]);
    await writeBlob(store.blobs, oneDiff);
    const m3 = edit(img.manifest, (d) => (d.config = descriptor(MediaType.ociConfig, oneDiff)));
    await refuses(store, () => store.putManifest('demo/app', 'x', m3, MediaType.ociManifest), 'invalid', 'config/rootfs/diff_ids');
  });

  test('a digest reference the bytes do not hash to; bad names and tags', async () => {
    await refuses(store, () => store.putManifest('demo/app', digestOf('other'), img.manifest, MediaType.ociManifest), 'digest-mismatch', 'reference');
    await refuses(store, () => store.putManifest('Demo/App', 'x', img.manifest, MediaType.ociManifest), 'invalid', 'repository');
    await refuses(store, () => store.putManifest('demo/app', '-bad', img.manifest, MediaType.ociManifest), 'invalid', 'reference');
  });

  test('after all the refusals only the good tag exists', async () => {
    assert.deepEqual(await store.listTags('demo/app'), ['good']);
    assert.deepEqual(await store.listManifests('demo/app'), [img.digest]);
  });
});

describe('image store: a refused push loses nothing', () => {
  test('client B\'s refused manifest sharing client A\'s fresh layer leaves it: A\'s push completes', async () => {
    const store = freshStore({ vetLayer: hostileVetter(new Set()) });
    // A has uploaded its layer and config; its manifest is not put yet.
    const a = await makeImage([{ 'app.js': 'A' }]);
    await uploadBlobs(store, a);
    // B names A's layer in a manifest whose config is wrong: refused.
    const badConfig = makeConfig([]);
    await writeBlob(store.blobs, badConfig);
    const b = makeManifest(badConfig, a.layers);
    await refuses(store, () => store.putManifest('demo/b', '1', b, MediaType.ociManifest), 'invalid', 'config/rootfs/diff_ids');
    await store.putManifest('demo/a', '1', a.manifest, MediaType.ociManifest);
    assert.equal((await store.resolve(parseImageRef('demo/a:1'))).manifestDigest, a.digest);
  });

  test('client B\'s hostile layer next to A\'s fresh layer: both pushes are stored, only B\'s image is refused at resolve', async () => {
    const bad = await makeLayer({ 'evil.txt': 'evil' });
    const store = freshStore({ vetLayer: hostileVetter(new Set([bad.digest])) });
    const a = await makeImage([{ 'shared.txt': 'shared' }]);
    await uploadBlobs(store, a);
    const shared = a.layers[0]!;
    const config = makeConfig([shared.diffId, bad.diffId]);
    await writeBlob(store.blobs, config);
    await writeBlob(store.blobs, bad.gz);
    // Before: B's PUT was refused at vetting and deleted A's unreferenced layer.
    await store.putManifest('demo/evil', '1', makeManifest(config, [shared, bad]), MediaType.ociManifest);
    await store.putManifest('demo/a', '1', a.manifest, MediaType.ociManifest);
    await assert.rejects(store.resolve(parseImageRef('demo/evil:1')), (e: unknown) => {
      assert.ok(e instanceof ShoalError);
      assert.equal(e.code, 'invalid');
      assert.equal(e.field, 'layers/1');
      assert.match(e.message, /escapes the layer/);
      return true;
    });
    for (const d of [shared.digest, bad.digest, digestOf(config)]) assert.equal(await store.blobs.has(d), true, d);
    assert.equal((await store.resolve(parseImageRef('demo/a:1'))).layers[0]!.digest, shared.digest);
  });

  test('a re-uploaded blob counts as recent for gc, though it was in the store before', async () => {
    const store = freshStore();
    const orphan = Buffer.from('uploaded long ago, pushed again now');
    const info = await writeBlob(store.blobs, orphan);
    const old = new Date(Date.now() - 3_600_000);
    await utimes(store.blobs.path(info.digest), old, old);
    await writeBlob(store.blobs, orphan);
    assert.deepEqual(await store.gc({ minAgeMs: 60_000 }), { removedBlobs: 0, freedBytes: 0 });
    assert.equal(await store.blobs.has(info.digest), true);
  });
});

/** A vetLayer that refuses the digests in `hostile`, recording each call. */
function hostileVetter(hostile: Set<string>, calls: string[] = []) {
  return async (d: Digest, mediaType: string) => {
    calls.push(d);
    assert.equal(mediaType, MediaType.ociLayerGzip);
    if (hostile.has(d)) throw new ShoalError('invalid', 'entry ../etc/passwd escapes the layer', { field: 'layer' });
    return {};
  };
}

describe('image store: vetting layers at resolve, once per digest', () => {
  test('push reads no layer; the first resolve vets each layer once; the verdict outlives the process', async () => {
    const calls: string[] = [];
    const dir = join(root, `s${n++}`);
    const bad = await makeLayer({ 'evil.txt': 'evil' });
    const store = createImageStore({ dir, vetLayer: hostileVetter(new Set([bad.digest]), calls) });
    const img = await makeImage([{ 'a': 'a' }, { 'b': 'b' }]);
    await uploadBlobs(store, img);
    await store.putManifest('demo/app', '1', img.manifest, MediaType.ociManifest);
    assert.deepEqual(calls, [], 'a push vets nothing');
    await Promise.all([store.resolve(parseImageRef('demo/app:1')), store.resolve(parseImageRef('demo/app:1'))]);
    assert.deepEqual(calls, img.layers.map((l) => l.digest), 'concurrent resolves vet each layer once');
    await store.resolve(parseImageRef('demo/app:1'));
    assert.equal(calls.length, 2);

    const config = makeConfig([bad.diffId]);
    await writeBlob(store.blobs, config);
    await writeBlob(store.blobs, bad.gz);
    await store.putManifest('demo/evil', '1', makeManifest(config, [bad]), MediaType.ociManifest);
    await assert.rejects(store.resolve(parseImageRef('demo/evil:1')), { code: 'invalid', field: 'layers/0' });
    assert.equal(calls.length, 3);

    // Another store on the same directory (a restart) reads the verdicts, not the layers.
    const again = createImageStore({ dir, vetLayer: hostileVetter(new Set([bad.digest]), calls) });
    await again.resolve(parseImageRef('demo/app:1'));
    await assert.rejects(again.resolve(parseImageRef('demo/evil:1')), { code: 'invalid', field: 'layers/0' });
    assert.equal(calls.length, 3);
    // Inspect is not a deployment: it vets nothing.
    await store.inspect(parseImageRef('demo/evil:1'));
  });

  test('a failure that says nothing about the layer (I/O) is not remembered', async () => {
    let fail = true;
    const store = freshStore({
      vetLayer: async () => {
        if (fail) throw new ShoalError('unavailable', 'disk went away');
        return {};
      },
    });
    const img = await makeImage([{ 'f': '1' }]);
    await uploadBlobs(store, img);
    await store.putManifest('demo/a', '1', img.manifest, MediaType.ociManifest);
    await assert.rejects(store.resolve(parseImageRef('demo/a:1')), { code: 'unavailable' });
    fail = false;
    await store.resolve(parseImageRef('demo/a:1'));
  });

  test('a remembered diffId refuses a config that claims another one for the same blob', async () => {
    const store = freshStore({ vetLayer: async () => ({ diffId: img.layers[0]!.diffId }) });
    const img = await makeImage([{ 'f': '1' }]);
    await uploadBlobs(store, img);
    await store.putManifest('demo/a', '1', img.manifest, MediaType.ociManifest);
    await store.resolve(parseImageRef('demo/a:1'));
    const lying = makeConfig([digestOf('not the tar')]);
    await writeBlob(store.blobs, lying);
    await store.putManifest('demo/a', '2', makeManifest(lying, img.layers), MediaType.ociManifest);
    await assert.rejects(store.resolve(parseImageRef('demo/a:2')), { code: 'invalid', field: 'config/rootfs/diff_ids/0' });
  });
});

describe('image store: OCI 1.1 artifacts and referrers', () => {
  const EMPTY = Buffer.from('{}');
  const artifact = (subject: Buffer | undefined, artifactType: string, blob: Buffer, annotations?: Record<string, string>) =>
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        artifactType,
        config: descriptor(MediaType.ociEmpty, EMPTY),
        layers: [descriptor('application/vnd.example.sbom+json', blob)],
        ...(subject ? { subject: descriptor(MediaType.ociManifest, subject) } : {}),
        ...(annotations ? { annotations } : {}),
      }),
    );

  test('artifacts with the empty config, custom config and layer types are stored; they do not resolve', async () => {
    const store = freshStore();
    const sbom = Buffer.from('{"sbom":true}');
    await writeBlob(store.blobs, EMPTY);
    await writeBlob(store.blobs, sbom);
    const m = artifact(undefined, 'application/vnd.example.sbom', sbom);
    const { digest } = await store.putManifest('demo/art', 'sbom', m, MediaType.ociManifest);
    assert.deepEqual((await store.getManifest('demo/art', 'sbom'))?.bytes, m);
    // A Helm-like chart: its own config type and layer type.
    const chartConfig = Buffer.from('{"name":"demo","version":"1.0.0"}');
    const chart = Buffer.from('not really a tgz');
    await writeBlob(store.blobs, chartConfig);
    await writeBlob(store.blobs, chart);
    const helm = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: descriptor('application/vnd.cncf.helm.config.v1+json', chartConfig),
        layers: [descriptor('application/vnd.cncf.helm.chart.content.v1.tar+gzip', chart)],
      }),
    );
    await store.putManifest('demo/chart', '1.0.0', helm, MediaType.ociManifest);
    await assert.rejects(store.resolve(parseImageRef('demo/art:sbom')), { code: 'unsupported', message: /artifact \(application\/vnd\.example\.sbom\)/ });
    await assert.rejects(store.resolve(parseImageRef('demo/chart:1.0.0')), { code: 'unsupported', message: /helm\.config/ });
    // gc keeps what artifacts reach.
    assert.deepEqual(await store.gc(), { removedBlobs: 0, freedBytes: 0 });
    assert.equal(await store.blobs.has(digest), true);
  });

  test('an image config with a layer type no host unpacks is stored, and refused at resolve', async () => {
    const store = freshStore();
    const img = await makeImage([{ 'a': 'a' }]);
    await uploadBlobs(store, img);
    const odd = edit(img.manifest, (d) => (d.layers[0].mediaType = 'application/x-tar+bzip2'));
    await store.putManifest('demo/odd', '1', odd, MediaType.ociManifest);
    await assert.rejects(store.resolve(parseImageRef('demo/odd:1')), { code: 'unsupported', field: 'layers/0/mediaType' });
  });

  test('referrers: the manifests whose subject is a digest, filtered by artifactType', async () => {
    const store = freshStore();
    const img = await makeImage([{ 'a': 'a' }]);
    await uploadBlobs(store, img);
    await store.putManifest('demo/app', '1', img.manifest, MediaType.ociManifest);
    await writeBlob(store.blobs, EMPTY);
    const sig = Buffer.from('signature');
    const sbom = Buffer.from('sbom');
    await writeBlob(store.blobs, sig);
    await writeBlob(store.blobs, sbom);
    const sigM = artifact(img.manifest, 'application/vnd.example.signature', sig, { 'org.example.signer': 'me' });
    const sbomM = artifact(img.manifest, 'application/vnd.example.sbom', sbom);
    // A referrer may arrive before its subject exists, and by digest only.
    await store.putManifest('demo/app', digestOf(sigM), sigM, MediaType.ociManifest);
    await store.putManifest('demo/app', digestOf(sbomM), sbomM, MediaType.ociManifest);
    const all = await store.referrers('demo/app', img.digest);
    assert.deepEqual(all.filtersApplied, []);
    assert.equal(all.index.mediaType, MediaType.ociIndex);
    assert.deepEqual(
      all.index.manifests.map((m) => [m.digest, m.artifactType, m.size]).sort(),
      [
        [digestOf(sigM), 'application/vnd.example.signature', sigM.length],
        [digestOf(sbomM), 'application/vnd.example.sbom', sbomM.length],
      ].sort(),
    );
    assert.deepEqual(all.index.manifests.find((m) => m.digest === digestOf(sigM))?.annotations, { 'org.example.signer': 'me' });
    const only = await store.referrers('demo/app', img.digest, { artifactType: 'application/vnd.example.sbom' });
    assert.deepEqual(only.filtersApplied, ['artifactType']);
    assert.deepEqual(only.index.manifests.map((m) => m.digest), [digestOf(sbomM)]);
    assert.deepEqual((await store.referrers('demo/app', digestOf('nothing'))).index.manifests, []);
    assert.deepEqual((await store.referrers('demo/none', img.digest)).index.manifests, []);
    await store.deleteManifest('demo/app', digestOf(sigM));
    assert.deepEqual((await store.referrers('demo/app', img.digest)).index.manifests.map((m) => m.digest), [digestOf(sbomM)]);
  });
});

describe('image store: manifests, tags, repositories', () => {
  test('put by tag, get by tag and digest, with the media type', async () => {
    const store = freshStore();
    const img = await makeImage([{ 'a': 'a' }]);
    await uploadBlobs(store, img);
    assert.deepEqual(await store.putManifest('demo/app', 'v1', img.manifest, `${MediaType.ociManifest}; charset=utf-8`), {
      digest: img.digest,
      mediaType: MediaType.ociManifest,
    });
    for (const ref of ['v1', img.digest]) {
      const got = await store.getManifest('demo/app', ref);
      assert.ok(got);
      assert.deepEqual(got.bytes, img.manifest);
      assert.equal(got.digest, img.digest);
      assert.equal(got.mediaType, MediaType.ociManifest);
    }
    assert.equal(await store.getManifest('demo/app', 'v2'), undefined);
    assert.equal(await store.getManifest('demo/other', 'v1'), undefined);
    assert.equal(await store.getManifest('demo/other', img.digest), undefined);
    assert.equal((await readFile(join(store.blobs.dir, 'repositories/demo/app/_tags/v1'), 'utf8')).trim(), img.digest);
    await stat(join(store.blobs.dir, 'repositories/demo/app/_manifests', img.digest.slice(7)));
  });

  test('an OCI manifest without mediaType takes it from Content-Type; Docker types work', async () => {
    const store = freshStore();
    const img = await makeImage([{ 'a': 'a' }]);
    await uploadBlobs(store, img);
    const untyped = edit(img.manifest, (d) => delete d.mediaType);
    await store.putManifest('demo/app', 'oci', untyped, MediaType.ociManifest);
    assert.equal((await store.getManifest('demo/app', 'oci'))?.mediaType, MediaType.ociManifest);
    const docker = makeManifest(img.config, img.layers, MediaType.dockerManifest);
    // Docker config media type on the same bytes.
    await store.putManifest('demo/app', 'docker', docker, MediaType.dockerManifest);
    assert.equal((await store.getManifest('demo/app', 'docker'))?.mediaType, MediaType.dockerManifest);
  });

  test('re-tagging moves the tag; deleting by digest removes its tags; deleting a tag keeps the manifest', async () => {
    const store = freshStore();
    const a = await makeImage([{ 'a': 'a' }]);
    const b = await makeImage([{ 'b': 'b' }]);
    await uploadBlobs(store, a);
    await uploadBlobs(store, b);
    await store.putManifest('demo/app', 'latest', a.manifest, MediaType.ociManifest);
    await store.tag('demo/app', a.digest, 'stable');
    await store.putManifest('demo/app', 'latest', b.manifest, MediaType.ociManifest);
    assert.equal((await store.getManifest('demo/app', 'latest'))?.digest, b.digest);
    assert.equal((await store.getManifest('demo/app', 'stable'))?.digest, a.digest);
    await store.tag('demo/app', b.digest, 'stable');
    assert.equal((await store.getManifest('demo/app', 'stable'))?.digest, b.digest);
    assert.deepEqual(await store.listTags('demo/app'), ['latest', 'stable']);

    await store.deleteManifest('demo/app', b.digest);
    assert.deepEqual(await store.listTags('demo/app'), []);
    assert.deepEqual(await store.listManifests('demo/app'), [a.digest]);
    await store.tag('demo/app', a.digest, 'x');
    await store.deleteManifest('demo/app', 'x');
    assert.deepEqual(await store.listTags('demo/app'), []);
    assert.deepEqual(await store.listManifests('demo/app'), [a.digest]);
    await assert.rejects(store.deleteManifest('demo/app', 'x'), { code: 'not-found' });
    await assert.rejects(store.deleteManifest('demo/app', b.digest), { code: 'not-found' });
    await assert.rejects(store.tag('demo/app', digestOf('nothing'), 'y'), { code: 'not-found' });
  });

  test('repositories with slashes, nested ones, and names like "tags"', async () => {
    const store = freshStore();
    const img = await makeImage([{ 'a': 'a' }]);
    await uploadBlobs(store, img);
    for (const repo of ['a/b', 'a/b/tags', 'a/b/c/manifests', 'z']) {
      await store.putManifest(repo, 't', img.manifest, MediaType.ociManifest);
    }
    assert.deepEqual(await store.listRepositories(), ['a/b', 'a/b/c/manifests', 'a/b/tags', 'z']);
    assert.deepEqual(await store.listTags('a/b'), ['t']);
    await store.deleteRepository('a/b');
    assert.deepEqual(await store.listRepositories(), ['a/b/c/manifests', 'a/b/tags', 'z']);
    assert.equal(await store.getManifest('a/b/tags', 't').then((m) => m?.digest), img.digest);
    await assert.rejects(store.listTags('a/b'), { code: 'not-found' });
    await assert.rejects(store.deleteRepository('a/b'), { code: 'not-found' });
    await store.deleteRepository('z');
    assert.deepEqual(await store.listRepositories(), ['a/b/c/manifests', 'a/b/tags']);
  });

  test('tagging a manifest into another repository (template names)', async () => {
    const store = freshStore();
    const img = await makeImage([{ 'a': 'a' }], { Cmd: ['node'] });
    await uploadBlobs(store, img);
    await store.putManifest('build/node', 'abc', img.manifest, MediaType.ociManifest);
    await store.tag('templates/node', img.digest, '20');
    const spec = await store.resolve(parseImageRef('template://node/20'));
    assert.equal(spec.manifestDigest, img.digest);
  });

  test('resolve: layers in order with diffIds and the process from the config', async () => {
    const store = freshStore();
    const img = await makeImage([{ 'a': 'a' }, { 'b': 'b' }, { 'c': 'c' }], {
      Entrypoint: ['/bin/app', '--serve'],
      Cmd: ['--port', '0'],
      Env: ['PATH=/bin', 'A=1'],
      WorkingDir: '/srv',
      User: '1000:1000',
    });
    await uploadBlobs(store, img);
    await store.putManifest('demo/app', '1', img.manifest, MediaType.ociManifest);
    const spec = await store.resolve(parseImageRef('demo/app:1'));
    assert.deepEqual(spec, {
      manifestDigest: img.digest,
      configDigest: digestOf(img.config),
      layers: img.layers.map((l) => ({ digest: l.digest, diffId: l.diffId, size: l.size, mediaType: MediaType.ociLayerGzip })),
      process: { args: ['/bin/app', '--serve', '--port', '0'], env: ['PATH=/bin', 'A=1'], cwd: '/srv', user: '1000:1000' },
    });
    const byDigest = await store.resolve(parseImageRef(`demo/app@${img.digest}`));
    assert.deepEqual(byDigest, spec);
    const bare = await makeImage([{ 'x': 'x' }]);
    await uploadBlobs(store, bare);
    await store.putManifest('demo/bare', 'latest', bare.manifest, MediaType.ociManifest);
    assert.deepEqual((await store.resolve(parseImageRef('demo/bare'))).process, { args: [], env: [], cwd: '/', user: undefined });
    await assert.rejects(store.resolve(parseImageRef('demo/app:2')), { code: 'not-found', field: 'reference' });
  });

  test('an index resolves to its linux/amd64 manifest; inspect reports sizes', async () => {
    const store = freshStore();
    const arm = await makeImage([{ 'arm': 'arm' }], { architecture: 'arm64', Cmd: ['arm'] });
    const amd = await makeImage([{ 'amd': 'amd64' }, { 'more': 'more' }], { Cmd: ['amd'] });
    await uploadBlobs(store, arm);
    await uploadBlobs(store, amd);
    await store.putManifest('demo/multi', arm.digest, arm.manifest, MediaType.ociManifest);
    await store.putManifest('demo/multi', amd.digest, amd.manifest, MediaType.ociManifest);
    const index = makeIndex([
      { manifest: arm.manifest, architecture: 'arm64' },
      { manifest: amd.manifest, architecture: 'amd64' },
    ]);
    const { digest } = await store.putManifest('demo/multi', 'latest', index, MediaType.ociIndex);
    const spec = await store.resolve(parseImageRef('demo/multi'));
    assert.equal(spec.manifestDigest, amd.digest);
    assert.deepEqual(spec.process.args, ['amd']);
    const info = await store.inspect(parseImageRef('demo/multi:latest'));
    assert.equal(info.digest, digest);
    assert.equal(info.mediaType, MediaType.ociIndex);
    assert.deepEqual(info.tags, ['latest']);
    assert.equal(info.manifestDigest, amd.digest);
    assert.deepEqual(info.platform, { os: 'linux', architecture: 'amd64' });
    assert.equal(info.layers.length, 2);
    assert.equal(info.totalSize, amd.config.length + amd.layers[0]!.size + amd.layers[1]!.size);
    const images = await store.listImages();
    const top = images.find((i) => i.digest === digest);
    assert.ok(top);
    assert.deepEqual(top.tags, ['latest']);
    const all = [index, arm.manifest, arm.config, ...arm.layers.map((l) => l.gz), amd.manifest, amd.config, ...amd.layers.map((l) => l.gz)];
    assert.equal(top.size, all.reduce((s, b) => s + b.length, 0));
    assert.equal(images.length, 3);
  });

  test('gc removes what no manifest reaches and keeps what an index reaches', async () => {
    const store = freshStore();
    const kept = await makeImage([{ 'k': 'k' }]);
    const child = await makeImage([{ 'c': 'c' }]);
    const gone = await makeImage([{ 'g': 'g' }, { 'k': 'k' }]);
    for (const i of [kept, child, gone]) await uploadBlobs(store, i);
    await store.putManifest('demo/kept', '1', kept.manifest, MediaType.ociManifest);
    await store.putManifest('demo/idx', child.digest, child.manifest, MediaType.ociManifest);
    await store.putManifest('demo/idx', 'i', makeIndex([{ manifest: child.manifest, architecture: 'amd64' }]), MediaType.ociIndex);
    await store.putManifest('demo/gone', '1', gone.manifest, MediaType.ociManifest);
    const orphan = await writeBlob(store.blobs, Buffer.from('orphan upload'));
    assert.deepEqual(await store.gc({ minAgeMs: 60_000 }), { removedBlobs: 0, freedBytes: 0 });
    assert.deepEqual(await store.gc(), { removedBlobs: 1, freedBytes: orphan.size });
    await store.deleteRepository('demo/gone');
    const r = await store.gc();
    // gone's manifest, config and its own layer; the layer it shares with `kept` stays.
    assert.equal(r.removedBlobs, 3);
    assert.equal(r.freedBytes, gone.manifest.length + gone.config.length + gone.layers[0]!.size);
    for (const d of [kept.digest, digestOf(kept.config), kept.layers[0]!.digest, child.digest, child.layers[0]!.digest, digestOf(child.config)]) {
      assert.equal(await store.blobs.has(d), true, d);
    }
    assert.equal((await store.resolve(parseImageRef('demo/idx:i'))).manifestDigest, child.digest);
    assert.deepEqual(await store.gc(), { removedBlobs: 0, freedBytes: 0 });
  });

  test('an index needs its child manifests in the same repository', async () => {
    const store = freshStore();
    const child = await makeImage([{ 'c': 'c' }]);
    await uploadBlobs(store, child);
    await store.putManifest('demo/one', child.digest, child.manifest, MediaType.ociManifest);
    const index = makeIndex([{ manifest: child.manifest, architecture: 'amd64' }]);
    await refuses(store, () => store.putManifest('demo/two', 'i', index, MediaType.ociIndex), 'invalid', 'manifests/0/digest');
  });
});
