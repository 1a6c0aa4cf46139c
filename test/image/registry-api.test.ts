import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat, utimes } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseRange, parseRegistryPath } from '../../src/image/registry-api.ts';
import { startStore, type RunningStore } from '../../src/image/store-server.ts';
import { digestOf, type Digest } from '../../src/protocol/digest.ts';
import { MediaType } from '../../src/protocol/oci.ts';
import { until } from '../fixtures/until.ts';
import { makeConfig, makeLayer, makeManifest, makeTar } from './store-fixtures.ts';
import { gzipSync } from 'node:zlib';

let root: string;
let s: RunningStore;
let url: string;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'shoal-registry-api-'));
  s = await startStore({ dataDir: join(root, 'data'), limits: { maxBlobBytes: 32 * 1024 * 1024 } });
  url = s.url;
});
after(async () => {
  await s.close();
  await rm(root, { recursive: true, force: true });
});

async function errorCode(res: Response): Promise<string> {
  const body = (await res.json()) as { errors: Array<{ code: string; message: string }> };
  assert.equal(body.errors.length, 1);
  assert.ok(body.errors[0]!.message);
  return body.errors[0]!.code;
}

async function pushBlob(repo: string, bytes: Buffer): Promise<Digest> {
  const d = digestOf(bytes);
  const res = await fetch(`${url}/v2/${repo}/blobs/uploads/?digest=${d}`, { method: 'POST', body: bytes });
  assert.equal(res.status, 201, await res.text());
  return d;
}

async function tempFiles(): Promise<string[]> {
  return readdir(join(root, 'data', 'ingest'));
}

/** Sends the head of a body that announces more, then destroys the socket. */
async function interruptedRequest(method: string, path: string, announced: number, sent: Buffer, received: () => Promise<boolean>) {
  const u = new URL(path, url);
  await new Promise<void>((resolve) => {
    const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: { 'Content-Length': String(announced) } });
    req.on('error', () => resolve());
    req.on('response', () => assert.fail('the server answered an incomplete request'));
    req.write(sent);
    until('the server to receive bytes', received, 3000).then(() => {
      req.destroy();
      resolve();
    });
  });
}

describe('path and range parsing', () => {
  test('names with slashes', () => {
    assert.deepEqual(parseRegistryPath('/v2/a/b/c/manifests/latest'), { kind: 'manifest', name: 'a/b/c', reference: 'latest' });
    assert.deepEqual(parseRegistryPath('/v2/a/blobs/uploads/'), { kind: 'uploads', name: 'a', id: '' });
    assert.deepEqual(parseRegistryPath('/v2/a/b/blobs/uploads/x-y'), { kind: 'uploads', name: 'a/b', id: 'x-y' });
    assert.deepEqual(parseRegistryPath('/v2/a/b/blobs/sha256%3Aab'), { kind: 'blob', name: 'a/b', digest: 'sha256:ab' });
    assert.deepEqual(parseRegistryPath('/v2/tags/tags/list'), { kind: 'tags', name: 'tags' });
    assert.deepEqual(parseRegistryPath('/v2/_catalog'), { kind: 'catalog' });
    assert.deepEqual(parseRegistryPath('/v2/a/b/referrers/sha256:ab'), { kind: 'referrers', name: 'a/b', digest: 'sha256:ab' });
    assert.equal(parseRegistryPath('/v2/nothing'), undefined);
  });
  test('ranges', () => {
    assert.deepEqual(parseRange('bytes=0-9', 100), { start: 0, end: 9 });
    assert.deepEqual(parseRange('bytes=90-', 100), { start: 90, end: 99 });
    assert.deepEqual(parseRange('bytes=-10', 100), { start: 90, end: 99 });
    assert.deepEqual(parseRange('bytes=50-500', 100), { start: 50, end: 99 });
    assert.equal(parseRange('bytes=100-', 100), 'unsatisfiable');
    assert.equal(parseRange('bytes=0-1,5-6', 100), undefined);
    assert.equal(parseRange(undefined, 100), undefined);
  });
});

describe('registry API', () => {
  test('GET /v2/ answers with the API version', async () => {
    const res = await fetch(`${url}/v2/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
    assert.deepEqual(await res.json(), {});
  });

  test('monolithic upload, HEAD and GET', async () => {
    const bytes = randomBytes(200_000);
    const d = digestOf(bytes);
    const res = await fetch(`${url}/v2/demo/mono/blobs/uploads/?digest=${d}`, { method: 'POST', body: bytes });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('location'), `/v2/demo/mono/blobs/${d}`);
    assert.equal(res.headers.get('docker-content-digest'), d);
    const head = await fetch(`${url}/v2/demo/mono/blobs/${d}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), '200000');
    assert.equal(head.headers.get('docker-content-digest'), d);
    assert.equal(head.headers.get('docker-distribution-api-version'), 'registry/2.0');
    const get = await fetch(`${url}/v2/demo/mono/blobs/${d}`);
    assert.equal(get.status, 200);
    assert.deepEqual(Buffer.from(await get.arrayBuffer()), bytes);
  });

  test('a monolithic upload with the wrong digest stores nothing', async () => {
    const bytes = randomBytes(1000);
    const wrong = digestOf('not these bytes');
    const res = await fetch(`${url}/v2/demo/mono/blobs/uploads/?digest=${wrong}`, { method: 'POST', body: bytes });
    assert.equal(res.status, 400);
    assert.equal(await errorCode(res), 'DIGEST_INVALID');
    assert.equal(await s.blobs.has(wrong), false);
    assert.equal(await s.blobs.has(digestOf(bytes)), false);
  });

  test('unknown blobs, bad digests, bad names', async () => {
    let res = await fetch(`${url}/v2/demo/mono/blobs/${digestOf('absent')}`);
    assert.equal(res.status, 404);
    assert.equal(await errorCode(res), 'BLOB_UNKNOWN');
    res = await fetch(`${url}/v2/demo/mono/blobs/sha256:zz`);
    assert.equal(res.status, 400);
    assert.equal(await errorCode(res), 'DIGEST_INVALID');
    res = await fetch(`${url}/v2/Demo/blobs/uploads/`, { method: 'POST' });
    assert.equal(res.status, 400);
    assert.equal(await errorCode(res), 'NAME_INVALID');
  });

  test('chunked upload: PATCH in order, status, out-of-order → 416, PUT with the last chunk', async () => {
    const bytes = randomBytes(300_000);
    const d = digestOf(bytes);
    const start = await fetch(`${url}/v2/demo/chunked/blobs/uploads/`, { method: 'POST' });
    assert.equal(start.status, 202);
    const location = start.headers.get('location')!;
    const id = start.headers.get('docker-upload-uuid')!;
    assert.equal(location, `/v2/demo/chunked/blobs/uploads/${id}`);
    assert.equal(start.headers.get('range'), '0-0');

    let res = await fetch(url + location, {
      method: 'PATCH',
      body: bytes.subarray(0, 100_000),
      headers: { 'Content-Range': '0-99999', 'Content-Type': 'application/octet-stream' },
    });
    assert.equal(res.status, 202);
    assert.equal(res.headers.get('range'), '0-99999');
    // Without Content-Range: a streamed chunk appended at the end.
    res = await fetch(url + res.headers.get('location')!, { method: 'PATCH', body: bytes.subarray(100_000, 200_000) });
    assert.equal(res.status, 202);
    assert.equal(res.headers.get('range'), '0-199999');

    res = await fetch(url + location, { method: 'PATCH', body: bytes.subarray(150_000, 250_000), headers: { 'Content-Range': '150000-249999' } });
    assert.equal(res.status, 416);
    assert.equal(res.headers.get('range'), '0-199999');
    await res.body?.cancel();

    res = await fetch(url + location);
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('range'), '0-199999');
    assert.equal(res.headers.get('docker-upload-uuid'), id);
    assert.equal(await s.blobs.has(d), false);

    res = await fetch(`${url}${location}?digest=${d}`, { method: 'PUT', body: bytes.subarray(200_000), headers: { 'Content-Range': '200000-299999' } });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('location'), `/v2/demo/chunked/blobs/${d}`);
    assert.equal(res.headers.get('docker-content-digest'), d);
    const get = await fetch(`${url}/v2/demo/chunked/blobs/${d}`);
    assert.deepEqual(Buffer.from(await get.arrayBuffer()), bytes);

    res = await fetch(url + location);
    assert.equal(res.status, 404);
    assert.equal(await errorCode(res), 'BLOB_UPLOAD_UNKNOWN');
  });

  test('PUT with a wrong digest fails and the upload is gone; DELETE cancels', async () => {
    let res = await fetch(`${url}/v2/demo/chunked/blobs/uploads/`, { method: 'POST' });
    const location = res.headers.get('location')!;
    await fetch(url + location, { method: 'PATCH', body: Buffer.from('abc') });
    res = await fetch(`${url}${location}?digest=${digestOf('abd')}`, { method: 'PUT' });
    assert.equal(res.status, 400);
    assert.equal(await errorCode(res), 'DIGEST_INVALID');
    assert.equal(await s.blobs.has(digestOf('abc')), false);
    assert.equal((await fetch(url + location)).status, 404);

    res = await fetch(`${url}/v2/demo/chunked/blobs/uploads/`, { method: 'POST' });
    const second = res.headers.get('location')!;
    assert.equal((await fetch(url + second, { method: 'DELETE' })).status, 204);
    assert.equal((await fetch(url + second)).status, 404);
    res = await fetch(`${url}/v2/demo/chunked/blobs/uploads/00000000-0000-4000-8000-000000000000`, { method: 'PATCH', body: 'x' });
    assert.equal(res.status, 404);
    assert.equal(await errorCode(res), 'BLOB_UPLOAD_UNKNOWN');
  });

  test('Range reads: 206 with Content-Range, 416 past the end', async () => {
    const bytes = randomBytes(10_000);
    const d = await pushBlob('demo/range', bytes);
    let res = await fetch(`${url}/v2/demo/range/blobs/${d}`, { headers: { Range: 'bytes=100-199' } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get('content-range'), 'bytes 100-199/10000');
    assert.equal(res.headers.get('content-length'), '100');
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), bytes.subarray(100, 200));
    res = await fetch(`${url}/v2/demo/range/blobs/${d}`, { headers: { Range: 'bytes=-10' } });
    assert.equal(res.status, 206);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), bytes.subarray(9990));
    res = await fetch(`${url}/v2/demo/range/blobs/${d}`, { headers: { Range: 'bytes=10000-' } });
    assert.equal(res.status, 416);
    assert.equal(res.headers.get('content-range'), 'bytes */10000');
    await res.body?.cancel();
  });

  test('cross-repository mount: 201 when present, a new session when not', async () => {
    const d = await pushBlob('demo/source', randomBytes(5000));
    const old = new Date(Date.now() - 3_600_000);
    await utimes(s.blobs.path(d), old, old);
    let res = await fetch(`${url}/v2/demo/target/blobs/uploads/?mount=${d}&from=demo/source`, { method: 'POST' });
    assert.equal(res.status, 201);
    // A mount is an upload: gc sparing recent blobs spares the mounted one until a manifest names it.
    assert.deepEqual(await s.store.gc({ minAgeMs: 600_000 }), { removedBlobs: 0, freedBytes: 0 });
    assert.equal(await s.blobs.has(d), true);
    assert.equal(res.headers.get('location'), `/v2/demo/target/blobs/${d}`);
    assert.equal(res.headers.get('docker-content-digest'), d);
    res = await fetch(`${url}/v2/demo/target/blobs/uploads/?mount=${digestOf('absent')}&from=demo/source`, { method: 'POST' });
    assert.equal(res.status, 202);
    assert.match(res.headers.get('location')!, /^\/v2\/demo\/target\/blobs\/uploads\/[0-9a-f-]{36}$/);
    await fetch(url + res.headers.get('location')!, { method: 'DELETE' });
  });

  test('manifests: PUT, GET and HEAD by tag and digest, DELETE', async () => {
    const layer = await makeLayer({ 'hello.txt': 'hello' });
    const config = makeConfig([layer.diffId], { Cmd: ['/hello'] });
    await pushBlob('demo/m', layer.gz);
    await pushBlob('demo/m', config);
    const manifest = makeManifest(config, [layer]);
    const d = digestOf(manifest);
    let res = await fetch(`${url}/v2/demo/m/manifests/v1`, { method: 'PUT', body: manifest, headers: { 'Content-Type': MediaType.ociManifest } });
    assert.equal(res.status, 201, await res.clone().text());
    assert.equal(res.headers.get('location'), `/v2/demo/m/manifests/${d}`);
    assert.equal(res.headers.get('docker-content-digest'), d);
    for (const ref of ['v1', d]) {
      res = await fetch(`${url}/v2/demo/m/manifests/${ref}`, { headers: { Accept: MediaType.ociManifest } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), MediaType.ociManifest);
      assert.equal(res.headers.get('docker-content-digest'), d);
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), manifest);
      res = await fetch(`${url}/v2/demo/m/manifests/${ref}`, { method: 'HEAD' });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-length'), String(manifest.length));
    }
    res = await fetch(`${url}/v2/demo/m/manifests/v2`);
    assert.equal(res.status, 404);
    assert.equal(await errorCode(res), 'MANIFEST_UNKNOWN');
    res = await fetch(`${url}/v2/demo/m/manifests/${d}`, { method: 'PUT', body: manifest, headers: { 'Content-Type': MediaType.ociManifest } });
    assert.equal(res.status, 201);
    res = await fetch(`${url}/v2/demo/m/manifests/${d}`, { method: 'DELETE' });
    assert.equal(res.status, 202);
    res = await fetch(`${url}/v2/demo/m/manifests/v1`);
    assert.equal(res.status, 404);
    res = await fetch(`${url}/v2/demo/m/manifests/${d}`, { method: 'DELETE' });
    assert.equal(res.status, 404);
    assert.equal(await errorCode(res), 'MANIFEST_UNKNOWN');
  });

  test('manifest refusals carry the distribution error codes', async () => {
    const layer = await makeLayer({ 'x': 'x' });
    const config = makeConfig([layer.diffId]);
    await pushBlob('demo/bad', config);
    const missing = makeManifest(config, [layer]);
    const put = (body: Buffer | string, type: string = MediaType.ociManifest, ref = 'v1') =>
      fetch(`${url}/v2/demo/bad/manifests/${ref}`, { method: 'PUT', body, headers: { 'Content-Type': type } });
    let res = await put(missing);
    assert.equal(res.status, 400);
    const body = (await res.json()) as { errors: Array<{ code: string; detail: { digest: string } }> };
    assert.equal(body.errors[0]!.code, 'MANIFEST_BLOB_UNKNOWN');
    assert.equal(body.errors[0]!.detail.digest, layer.digest);
    res = await put('{not json');
    assert.equal(res.status, 400);
    assert.equal(await errorCode(res), 'MANIFEST_INVALID');
    res = await put(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.example+json' }), 'application/vnd.example+json');
    assert.equal(res.status, 415);
    assert.equal(await errorCode(res), 'UNSUPPORTED');
    res = await put(missing, MediaType.ociManifest, digestOf('other'));
    assert.equal(res.status, 400);
    assert.equal(await errorCode(res), 'DIGEST_INVALID');
    res = await put(missing, MediaType.ociManifest, '-bad');
    assert.equal(res.status, 400);
    assert.equal(await errorCode(res), 'TAG_INVALID');
    res = await put(Buffer.alloc(4 * 1024 * 1024 + 1, 32));
    assert.equal(res.status, 413);
    assert.equal(await errorCode(res), 'SIZE_INVALID');
    assert.equal(await s.store.hasRepository('demo/bad'), false);
  });

  test('the race: client B\'s push with a hostile layer next to client A\'s fresh layer loses A nothing', async () => {
    // Client A uploads its layer and config; its manifest comes later.
    const shared = await makeLayer({ 'app.js': 'console.log(1)' });
    const aConfig = makeConfig([shared.diffId]);
    await pushBlob('demo/a', shared.gz);
    await pushBlob('demo/a', aConfig);
    // Client B pushes an image naming A's layer and a hostile one.
    const evil = await makeTar({ '../../etc/evil': 'owned' });
    const gz = gzipSync(evil);
    const bad = { tar: evil, gz, digest: digestOf(gz), diffId: digestOf(evil), size: gz.length };
    const bConfig = makeConfig([shared.diffId, bad.diffId]);
    await pushBlob('demo/b', bad.gz);
    await pushBlob('demo/b', bConfig);
    const putB = await fetch(`${url}/v2/demo/b/manifests/v1`, {
      method: 'PUT',
      body: makeManifest(bConfig, [shared, bad]),
      headers: { 'Content-Type': MediaType.ociManifest },
    });
    // Stored: the spec allows any bytes in a layer; vetting waits until the image is to run.
    assert.equal(putB.status, 201, await putB.text());
    const putA = await fetch(`${url}/v2/demo/a/manifests/v1`, {
      method: 'PUT',
      body: makeManifest(aConfig, [shared]),
      headers: { 'Content-Type': MediaType.ociManifest },
    });
    assert.equal(putA.status, 201, await putA.text());
    assert.equal(await s.blobs.has(shared.digest), true);
    // Resolving for a deployment vets the layers: B's image is refused, A's is not.
    const resolveB = await fetch(`${url}/api/v1/images/resolve?ref=${encodeURIComponent('demo/b:v1')}`);
    assert.equal(resolveB.status, 400);
    const err = (await resolveB.json()) as { error: { code: string; field: string; message: string } };
    assert.equal(err.error.field, 'layers/1');
    assert.match(err.error.message, /\.\./);
    const resolveA = await fetch(`${url}/api/v1/images/resolve?ref=${encodeURIComponent('demo/a:v1')}`);
    assert.equal(resolveA.status, 200);
    assert.equal(((await resolveA.json()) as { layers: Array<{ digest: string }> }).layers[0]!.digest, shared.digest);
  });

  test('OCI 1.1: an artifact with the empty config and a subject; the referrers API with its filter', async () => {
    const layer = await makeLayer({ 'r': 'r' });
    const config = makeConfig([layer.diffId]);
    await pushBlob('demo/ref', layer.gz);
    await pushBlob('demo/ref', config);
    const image = makeManifest(config, [layer]);
    let res = await fetch(`${url}/v2/demo/ref/manifests/v1`, { method: 'PUT', body: image, headers: { 'Content-Type': MediaType.ociManifest } });
    assert.equal(res.status, 201);
    const empty = Buffer.from('{}');
    const sig = Buffer.from('a signature');
    await pushBlob('demo/ref', empty);
    await pushBlob('demo/ref', sig);
    const artifact = (artifactType: string) =>
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.ociManifest,
          artifactType,
          config: { mediaType: MediaType.ociEmpty, digest: digestOf(empty), size: 2 },
          layers: [{ mediaType: 'application/vnd.example.signature.v1', digest: digestOf(sig), size: sig.length }],
          subject: { mediaType: MediaType.ociManifest, digest: digestOf(image), size: image.length },
        }),
      );
    for (const type of ['application/vnd.example.signature', 'application/spdx+json']) {
      const m = artifact(type);
      res = await fetch(`${url}/v2/demo/ref/manifests/${digestOf(m)}`, { method: 'PUT', body: m, headers: { 'Content-Type': MediaType.ociManifest } });
      assert.equal(res.status, 201, await res.text());
      assert.equal(res.headers.get('oci-subject'), digestOf(image));
    }
    res = await fetch(`${url}/v2/demo/ref/referrers/${digestOf(image)}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), MediaType.ociIndex);
    assert.equal(res.headers.get('oci-filters-applied'), null);
    const all = (await res.json()) as { schemaVersion: number; manifests: Array<{ digest: string; artifactType: string }> };
    assert.equal(all.schemaVersion, 2);
    assert.deepEqual(all.manifests.map((m) => m.artifactType).sort(), ['application/spdx+json', 'application/vnd.example.signature']);
    res = await fetch(`${url}/v2/demo/ref/referrers/${digestOf(image)}?artifactType=${encodeURIComponent('application/spdx+json')}`);
    assert.equal(res.headers.get('oci-filters-applied'), 'artifactType');
    const some = (await res.json()) as { manifests: Array<{ digest: string }> };
    assert.deepEqual(some.manifests.map((m) => m.digest), [digestOf(artifact('application/spdx+json'))]);
    res = await fetch(`${url}/v2/demo/ref/referrers/${digestOf('none')}`);
    assert.deepEqual(((await res.json()) as { manifests: unknown[] }).manifests, []);
    res = await fetch(`${url}/v2/demo/ref/referrers/latest`);
    assert.equal(res.status, 400);
    assert.equal(await errorCode(res), 'DIGEST_INVALID');
  });

  test('tags/list with n and last, Link header; unknown repository', async () => {
    const layer = await makeLayer({ 't': 't' });
    const config = makeConfig([layer.diffId]);
    await pushBlob('demo/tags', layer.gz);
    await pushBlob('demo/tags', config);
    const manifest = makeManifest(config, [layer]);
    for (const t of ['e', 'a', 'c', 'b', 'd']) {
      const res = await fetch(`${url}/v2/demo/tags/manifests/${t}`, { method: 'PUT', body: manifest, headers: { 'Content-Type': MediaType.ociManifest } });
      assert.equal(res.status, 201);
    }
    let res = await fetch(`${url}/v2/demo/tags/tags/list`);
    assert.deepEqual(await res.json(), { name: 'demo/tags', tags: ['a', 'b', 'c', 'd', 'e'] });
    assert.equal(res.headers.get('link'), null);
    const seen: string[] = [];
    let next: string | undefined = '/v2/demo/tags/tags/list?n=2';
    let pages = 0;
    while (next) {
      res = await fetch(url + next);
      const body = (await res.json()) as { tags: string[] };
      seen.push(...body.tags);
      pages++;
      const link = res.headers.get('link');
      next = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1] : undefined;
    }
    assert.deepEqual(seen, ['a', 'b', 'c', 'd', 'e']);
    assert.equal(pages, 3);
    res = await fetch(`${url}/v2/demo/tags/tags/list?n=2&last=b`);
    assert.deepEqual(((await res.json()) as { tags: string[] }).tags, ['c', 'd']);
    res = await fetch(`${url}/v2/demo/nothing/tags/list`);
    assert.equal(res.status, 404);
    assert.equal(await errorCode(res), 'NAME_UNKNOWN');
  });

  test('catalog with pagination', async () => {
    const res = await fetch(`${url}/v2/_catalog`);
    const all = ((await res.json()) as { repositories: string[] }).repositories;
    assert.ok(all.includes('demo/tags'));
    assert.deepEqual([...all].sort(), all);
    const first = await fetch(`${url}/v2/_catalog?n=1`);
    assert.deepEqual(await first.json(), { repositories: [all[0]] });
    assert.equal(first.headers.get('link'), `</v2/_catalog?n=1&last=${encodeURIComponent(all[0]!)}>; rel="next"`);
  });

  test('a client that hangs up mid-upload leaves no blob and no temp file', async () => {
    const bytes = randomBytes(4 * 1024 * 1024);
    const d = digestOf(bytes);
    await interruptedRequest('POST', `/v2/demo/cut/blobs/uploads/?digest=${d}`, bytes.length, bytes.subarray(0, 1024 * 1024), async () => {
      const files = await tempFiles();
      for (const f of files) if ((await stat(join(root, 'data', 'ingest', f)).catch(() => undefined))?.size) return true;
      return false;
    });
    await until('the temp file to go', async () => (await tempFiles()).length === 0, 3000);
    assert.equal(await s.blobs.has(d), false);
  });

  test('a client that hangs up mid-PUT of a chunked upload: no blob, the upload rolls back', async () => {
    const bytes = randomBytes(3 * 1024 * 1024);
    const d = digestOf(bytes);
    let res = await fetch(`${url}/v2/demo/cut/blobs/uploads/`, { method: 'POST' });
    const location = res.headers.get('location')!;
    const id = res.headers.get('docker-upload-uuid')!;
    res = await fetch(url + location, { method: 'PATCH', body: bytes.subarray(0, 1000) });
    assert.equal(res.headers.get('range'), '0-999');
    await interruptedRequest('PUT', `${location}?digest=${d}`, bytes.length - 1000, bytes.subarray(1000, 2 * 1024 * 1024), async () => {
      return ((await stat(join(root, 'data', 'ingest', id))).size ?? 0) > 1000;
    });
    await until('the upload to roll back', async () => (await stat(join(root, 'data', 'ingest', id))).size === 1000, 3000);
    assert.equal(await s.blobs.has(d), false);
    res = await fetch(url + location);
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('range'), '0-999');
    // The client can resume from where the server says it is.
    res = await fetch(`${url}${location}?digest=${d}`, { method: 'PUT', body: bytes.subarray(1000) });
    assert.equal(res.status, 201);
    assert.equal(await s.blobs.verify(d), true);
  });

  test('concurrent pushes of the same blob both succeed and store it once', async () => {
    const bytes = randomBytes(5 * 1024 * 1024);
    const d = digestOf(bytes);
    const results = await Promise.all(
      [1, 2, 3].map((i) => fetch(`${url}/v2/demo/same${i}/blobs/uploads/?digest=${d}`, { method: 'POST', body: bytes })),
    );
    for (const r of results) assert.equal(r.status, 201);
    assert.equal((await s.blobs.list()).filter((b) => b.digest === d).length, 1);
    assert.equal(await s.blobs.verify(d), true);
    assert.deepEqual(await tempFiles(), []);
  });

  test('a blob over the size limit is refused (413) and leaves nothing', async () => {
    // Announced too big: refused before a byte is read.
    const announced = 33 * 1024 * 1024;
    const status = await new Promise<number>((resolve, reject) => {
      const u = new URL(`${url}/v2/demo/big/blobs/uploads/?digest=${digestOf('x')}`);
      const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: 'POST', headers: { 'Content-Length': String(announced) } });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode!);
        req.destroy();
      });
      req.on('error', reject);
      req.write(Buffer.alloc(1024));
    });
    assert.equal(status, 413);
    // Streamed without a length: refused once the limit is passed.
    let res = await fetch(`${url}/v2/demo/big/blobs/uploads/`, { method: 'POST' });
    const location = res.headers.get('location')!;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 33; i++) controller.enqueue(new Uint8Array(1024 * 1024));
        controller.close();
      },
    });
    res = await fetch(url + location, { method: 'PATCH', body, duplex: 'half' } as RequestInit).catch(() => undefined as unknown as Response);
    if (res) assert.equal(res.status, 413);
    res = await fetch(url + location);
    assert.equal(res.headers.get('range'), '0-0', 'the refused chunk was rolled back');
    await fetch(url + location, { method: 'DELETE' });
    await until('no temp file', async () => (await tempFiles()).length === 0, 3000);
  });

  test('unsupported methods and unknown paths', async () => {
    let res = await fetch(`${url}/v2/demo/m/blobs/${digestOf('x')}`, { method: 'DELETE' });
    assert.equal(res.status, 405);
    assert.equal(await errorCode(res), 'UNSUPPORTED');
    res = await fetch(`${url}/v2/nothing-here`);
    assert.equal(res.status, 404);
    await res.body?.cancel();
  });
});
