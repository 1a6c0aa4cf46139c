import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { readLayout, REF_NAME_ANNOTATION } from '../../src/image/oci-layout.ts';
import { createRegistryClient, pullImage, pushImage } from '../../src/image/registry-client.ts';
import { digestOf, type Digest } from '../../src/protocol/digest.ts';
import { ShoalError } from '../../src/protocol/errors.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import { MediaType } from '../../src/protocol/oci.ts';
import { buildImage, listFiles, makeManifest, startTestStore, writeLayout, type TestStore } from './archive-fixtures.ts';

let root: string;
let store: TestStore;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'shoal-registry-client-'));
  store = await startTestStore();
});
after(async () => {
  await store.close();
  await rm(root, { recursive: true, force: true });
});

let n = 0;
const fresh = (): string => join(root, `d${n++}`);

async function collect(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function rejectsWith(code: string, re?: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof ShoalError, `expected a ShoalError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return true;
  };
}

describe('push and pull', () => {
  test('an image pushed from a layout pulls back with identical digests and bytes', async () => {
    const image = await buildImage([{ 'etc/hello': 'hi\n' }, { 'app/main.js': 'console.log(1)\n'.repeat(100) }]);
    const src = fresh();
    await writeLayout(src, image, 'v1');
    const ref = parseImageRef('demo/round-trip:v1');

    const pushed = await pushImage(store.client, { layoutDir: src }, ref);
    assert.equal(pushed.manifestDigest, image.manifestDigest);
    assert.equal(pushed.uploaded, 3);
    assert.equal(pushed.skipped, 0);
    assert.equal(pushed.bytes, image.config.length + image.layers.reduce((s, l) => s + l.size, 0));
    assert.deepEqual(await store.client.listTags('demo/round-trip'), ['v1']);
    assert.ok((await store.client.catalog()).includes('demo/round-trip'));

    const dest = fresh();
    const seen = new Set<string>();
    const pulled = await pullImage(store.client, ref, { layoutDir: dest }, { onProgress: (p) => seen.add(p.digest) });
    assert.equal(pulled.manifestDigest, image.manifestDigest);
    assert.equal(pulled.blobs, 3);
    assert.equal(pulled.skipped, 0);
    assert.equal(seen.size, 3);

    const layout = await readLayout(dest);
    const desc = layout.resolve('v1');
    assert.equal(desc.digest, image.manifestDigest);
    assert.equal(desc.annotations?.[REF_NAME_ANNOTATION], 'v1');
    assert.deepEqual(await readFile(layout.blobPath(image.manifestDigest)), image.manifest);
    assert.deepEqual(await readFile(layout.blobPath(digestOf(image.config))), image.config);
    for (const l of image.layers) assert.deepEqual(await readFile(layout.blobPath(l.digest)), l.gz);
    // Nothing but blobs, index.json and oci-layout: no temp files left.
    assert.deepEqual(
      (await listFiles(dest)).filter((f) => !/^blobs\/sha256\/[a-f0-9]{64}$/.test(f)),
      ['index.json', 'oci-layout'],
    );
  });

  test('blobs already present are skipped on push and on pull', async () => {
    const image = await buildImage([{ a: 'skip me' }]);
    const src = fresh();
    await writeLayout(src, image);
    const ref = parseImageRef('demo/skip:latest');
    assert.equal((await pushImage(store.client, { layoutDir: src }, ref)).uploaded, 2);
    const again = await pushImage(store.client, { layoutDir: src }, ref);
    assert.deepEqual([again.uploaded, again.skipped, again.bytes], [0, 2, 0]);

    const dest = fresh();
    await pullImage(store.client, ref, { layoutDir: dest });
    const second = await pullImage(store.client, ref, { layoutDir: dest });
    assert.deepEqual([second.blobs, second.skipped, second.bytes], [0, 2, 0]);
  });

  test('a blob is mounted from another repository instead of uploaded', async () => {
    const image = await buildImage([{ shared: 'layer shared between repos' }]);
    const src = fresh();
    await writeLayout(src, image);
    await pushImage(store.client, { layoutDir: src }, parseImageRef('demo/mount-a:1'));
    const layer = image.layers[0]!;
    let opened = 0;
    const outcome = await store.client.pushBlob('demo/mount-b', layer.digest, layer.size, () => {
      opened++;
      return Readable.from([layer.gz]);
    }, { mountFrom: 'demo/mount-a' });
    // The store's blobs are global, so it may answer that it has the blob already.
    assert.ok(outcome === 'mounted' || outcome === 'exists', outcome);
    assert.equal(opened, 0, 'a mounted blob is never read');
    assert.equal(await store.client.hasBlob('demo/mount-b', layer.digest), layer.size);
    const whole = await pushImage(store.client, { layoutDir: src }, parseImageRef('demo/mount-c:1'), { mountFrom: 'demo/mount-a' });
    assert.deepEqual([whole.uploaded, whole.skipped], [0, 2]);
  });

  test('a large blob goes up in chunks and comes back by byte range', async () => {
    const bytes = randomBytes(100_000);
    const digest = digestOf(bytes);
    const outcome = await store.client.pushBlob('demo/chunks', digest, bytes.length, () => Readable.from([bytes.subarray(0, 7), bytes.subarray(7)]), {
      chunkSize: 16_384,
    });
    assert.equal(outcome, 'uploaded');
    assert.equal(await store.client.hasBlob('demo/chunks', digest), bytes.length);
    assert.deepEqual(await collect(await store.client.fetchBlob('demo/chunks', digest)), bytes);
    assert.deepEqual(await collect(await store.client.fetchBlob('demo/chunks', digest, { range: [1000, 1999] })), bytes.subarray(1000, 2000));
    // A second push finds it.
    assert.equal(await store.client.pushBlob('demo/chunks', digest, bytes.length, () => Readable.from([bytes])), 'exists');
  });

  test('a source that does not match its digest is refused and the store keeps nothing', async () => {
    const bytes = randomBytes(50_000);
    const claimed = digestOf(Buffer.from('something else'));
    const before = await store.blobFiles();
    await assert.rejects(store.client.pushBlob('demo/liar', claimed, bytes.length, () => Readable.from([bytes])), rejectsWith('digest-mismatch'));
    await assert.rejects(
      store.client.pushBlob('demo/liar', claimed, bytes.length, () => Readable.from([bytes]), { chunkSize: 10_000 }),
      rejectsWith('digest-mismatch'),
    );
    assert.deepEqual(await store.blobFiles(), before);
    assert.equal(await store.client.hasBlob('demo/liar', claimed), undefined);
  });

  test('an index is resolved to the linux/amd64 manifest', async () => {
    const amd = await buildImage([{ arch: 'amd64' }]);
    const arm = await buildImage([{ arch: 'arm64' }]);
    for (const [img, tag] of [[amd, 'amd'], [arm, 'arm']] as const) {
      const dir = fresh();
      await writeLayout(dir, img);
      await pushImage(store.client, { layoutDir: dir }, parseImageRef(`demo/multi:${tag}`));
    }
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociIndex,
        manifests: [
          { mediaType: MediaType.ociManifest, digest: arm.manifestDigest, size: arm.manifest.length, platform: { os: 'linux', architecture: 'arm64' } },
          { mediaType: MediaType.ociManifest, digest: amd.manifestDigest, size: amd.manifest.length, platform: { os: 'linux', architecture: 'amd64' } },
        ],
      }),
    );
    assert.equal(await store.client.putManifest('demo/multi', 'both', index, MediaType.ociIndex), digestOf(index));
    const got = await store.client.getManifest('demo/multi', 'both');
    assert.equal(got?.mediaType, MediaType.ociIndex);
    assert.equal(got?.digest, digestOf(index));
    const pulled = await pullImage(store.client, parseImageRef('demo/multi:both'), { layoutDir: fresh() }, { platform: { os: 'linux', architecture: 'amd64' } });
    assert.equal(pulled.manifestDigest, amd.manifestDigest);
    const armPull = await pullImage(store.client, parseImageRef('demo/multi:both'), { layoutDir: fresh() }, { platform: { os: 'linux', architecture: 'arm64' } });
    assert.equal(armPull.manifestDigest, arm.manifestDigest);
    await assert.rejects(
      pullImage(store.client, parseImageRef('demo/multi:both'), { layoutDir: fresh() }, { platform: { os: 'linux', architecture: 's390x' } }),
      rejectsWith('not-found', /s390x.*arm64, amd64|linux\/arm64/),
    );
  });
});

describe('manifests and errors', () => {
  test('unknown manifests are undefined; unknown images are not-found; deleted manifests are gone', async () => {
    assert.equal(await store.client.getManifest('demo/nothing', 'latest'), undefined);
    await assert.rejects(pullImage(store.client, parseImageRef('demo/nothing:latest'), { layoutDir: fresh() }), rejectsWith('not-found', /demo\/nothing:latest/));
    assert.equal(await store.client.hasBlob('demo/nothing', digestOf('x')), undefined);
    await assert.rejects(store.client.fetchBlob('demo/nothing', digestOf('x')), rejectsWith('not-found'));

    const image = await buildImage([{ del: 'x' }]);
    const dir = fresh();
    await writeLayout(dir, image);
    await pushImage(store.client, { layoutDir: dir }, parseImageRef('demo/del:1'));
    assert.ok(await store.client.getManifest('demo/del', image.manifestDigest));
    await store.client.deleteManifest('demo/del', image.manifestDigest);
    assert.equal(await store.client.getManifest('demo/del', image.manifestDigest), undefined);
  });

  test('a manifest naming blobs the store lacks is refused', async () => {
    const image = await buildImage([{ missing: 'never pushed' }]);
    await assert.rejects(store.client.putManifest('demo/missing', 'x', image.manifest, MediaType.ociManifest), (e: unknown) => {
      assert.ok(e instanceof ShoalError);
      assert.ok(['invalid', 'not-found'].includes(e.code), e.code);
      assert.match(e.message, /demo\/missing/);
      return true;
    });
  });

  test('a store that is not there is unavailable, named by URL', async () => {
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as AddressInfo).port;
    await new Promise<void>((r) => s.close(() => r()));
    const client = createRegistryClient({ baseUrl: `http://127.0.0.1:${port}` });
    await assert.rejects(client.ping(), rejectsWith('unavailable', new RegExp(`cannot reach the store at http://127\\.0\\.0\\.1:${port}`)));
    await store.client.ping();
  });

  test('bad names are refused before any request', async () => {
    await assert.rejects(store.client.getManifest('Bad/Name', 'latest'), rejectsWith('invalid', /repository/));
    await assert.rejects(store.client.getManifest('ok', 'bad tag'), rejectsWith('invalid', /reference/));
    await assert.rejects(store.client.hasBlob('ok', 'sha256:123' as Digest), rejectsWith('invalid', /digest/));
  });
});

describe('against a lying peer', () => {
  // A tiny registry that serves wrong bytes for a blob, registry errors as JSON and
  // paginated tag lists: what the real store never does.
  let server: Server;
  let url: string;
  const truth = Buffer.from('the bytes the digest names');
  const digest = digestOf(truth);
  const lie = Buffer.from('other bytes, same length!!');
  const mounts: string[] = [];
  before(async () => {
    server = createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (u.pathname === `/v2/liar/blobs/${digest}`) {
        res.writeHead(200, { 'content-length': String(lie.length), 'docker-content-digest': digest });
        res.end(lie);
      } else if (u.pathname === `/v2/liar/blobs/${digestOf('long')}`) {
        res.writeHead(200);
        res.end(Buffer.alloc(10_000));
      } else if (u.pathname.startsWith('/v2/mounter/blobs/') && req.method === 'HEAD') {
        res.writeHead(404);
        res.end();
      } else if (u.pathname === '/v2/mounter/blobs/uploads/' && req.method === 'POST') {
        mounts.push(`${u.searchParams.get('mount')} from ${u.searchParams.get('from')}`);
        res.writeHead(201, { location: `/v2/mounter/blobs/${u.searchParams.get('mount')}` });
        res.end();
      } else if (u.pathname === '/v2/liar/tags/list') {
        const last = u.searchParams.get('last');
        const page = last === null ? ['a', 'b'] : last === 'b' ? ['c', 'd'] : ['e'];
        if (last !== 'd') res.setHeader('link', `</v2/liar/tags/list?n=2&last=${page.at(-1)}>; rel="next"`);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ name: 'liar', tags: page }));
      } else if (u.pathname.startsWith('/v2/liar/manifests/')) {
        res.writeHead(200, { 'content-type': MediaType.ociManifest, 'docker-content-digest': digestOf('not this') });
        res.end(makeManifest(Buffer.from('{}'), []));
      } else {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'NAME_UNKNOWN', message: 'repository name not known to registry' }] }));
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  test('a blob whose bytes do not match its digest leaves no file', async () => {
    const client = createRegistryClient({ baseUrl: url });
    const dir = fresh();
    await (await import('node:fs/promises')).mkdir(dir);
    const dest = join(dir, 'blob');
    await assert.rejects(client.downloadBlob('liar', digest, dest, { expectedSize: truth.length }), rejectsWith('digest-mismatch', /hash to sha256:/));
    assert.deepEqual(await readdir(dir), []);
    // More bytes than declared is refused as it streams.
    await assert.rejects(client.downloadBlob('liar', digestOf('long'), dest, { expectedSize: 10 }), rejectsWith('digest-mismatch', /10/));
    assert.deepEqual(await readdir(dir), []);
  });

  test('a layer the store does not have: its JSON error keeps its code and message; an unreachable store is unavailable', async () => {
    const client = createRegistryClient({ baseUrl: url });
    const dir = fresh();
    await (await import('node:fs/promises')).mkdir(dir);
    const dest = join(dir, 'blob');
    await assert.rejects(client.downloadBlob('other', digest, dest), rejectsWith('not-found', /NAME_UNKNOWN: repository name not known/));
    assert.deepEqual(await readdir(dir), []);
    const gone = createRegistryClient({ baseUrl: 'http://127.0.0.1:9' });
    await assert.rejects(gone.downloadBlob('other', digest, dest), rejectsWith('unavailable', /cannot reach the store/));
  });

  test('a registry that can mount a blob is asked to, and nothing is read', async () => {
    const client = createRegistryClient({ baseUrl: url });
    const outcome = await client.pushBlob('mounter', digest, truth.length, () => assert.fail('a mounted blob is never read'), { mountFrom: 'elsewhere/repo' });
    assert.equal(outcome, 'mounted');
    assert.deepEqual(mounts, [`${digest} from elsewhere/repo`]);
  });

  test('a manifest whose digest header lies is refused', async () => {
    const client = createRegistryClient({ baseUrl: url });
    await assert.rejects(client.getManifest('liar', 'latest'), rejectsWith('digest-mismatch'));
  });

  test('tag lists follow Link pagination; registry errors keep their message', async () => {
    const client = createRegistryClient({ baseUrl: url });
    assert.deepEqual(await client.listTags('liar'), ['a', 'b', 'c', 'd', 'e']);
    await assert.rejects(client.listTags('other'), rejectsWith('not-found', /NAME_UNKNOWN: repository name not known/));
  });
});
