import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Value } from '@sinclair/typebox/value';
import { writeBlob } from '../../src/image/blob-store.ts';
import { startStore, type RunningStore } from '../../src/image/store-server.ts';
import { digestOf } from '../../src/protocol/digest.ts';
import { MediaType } from '../../src/protocol/oci.ts';
import { GcResult, ImageInspection, ImageList, RepositoryList } from '../../src/protocol/store-api.ts';
import { makeConfig, makeLayer, makeManifest } from './store-fixtures.ts';

let root: string;
let s: RunningStore;
let digest: string;
let layerSize: number;
let configSize: number;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'shoal-control-api-'));
  s = await startStore({ dataDir: join(root, 'data') });
  const layer = await makeLayer({ 'usr/bin/node': 'not really node' });
  const config = makeConfig([layer.diffId], { Entrypoint: ['/usr/bin/node'], WorkingDir: '/app' });
  await writeBlob(s.blobs, layer.gz);
  await writeBlob(s.blobs, config);
  const manifest = makeManifest(config, [layer]);
  digest = (await s.store.putManifest('templates/node', '20', manifest, MediaType.ociManifest)).digest;
  layerSize = layer.size;
  configSize = config.length;
});
after(async () => {
  await s.close();
  await rm(root, { recursive: true, force: true });
});

// Bodies go as JSON, as the store requires (issue 9, item 4).
const api = (path: string, init?: RequestInit) => {
  const headers = new Headers(init?.headers);
  if (init?.body !== undefined && !headers.has('content-type')) headers.set('content-type', 'application/json');
  return fetch(`${s.url}${path}`, { ...init, headers });
};

async function expectError(res: Response, status: number, code: string, field?: string) {
  assert.equal(res.status, status);
  const body = (await res.json()) as { error: { code: string; message: string; field?: string } };
  assert.equal(body.error.code, code);
  assert.ok(body.error.message);
  if (field !== undefined) assert.equal(body.error.field, field);
}

describe('store control API', () => {
  test('healthz and an OpenAPI 3.1 document that embeds the schemas', async () => {
    assert.deepEqual(await (await api('/healthz')).json(), { ok: true });
    const doc = (await (await api('/openapi.json')).json()) as { openapi: string; paths: Record<string, Record<string, any>> };
    assert.equal(doc.openapi, '3.1.0');
    for (const p of ['/api/v1/images', '/api/v1/images/inspect', '/api/v1/tags', '/api/v1/gc', '/api/v1/repositories']) assert.ok(doc.paths[p], p);
    const tagBody = doc.paths['/api/v1/tags']!.post.requestBody.content['application/json'].schema;
    assert.deepEqual(tagBody.required, ['source', 'target']);
  });

  test('images list with tags and sizes', async () => {
    const body = await (await api('/api/v1/images')).json();
    assert.ok(Value.Check(ImageList, body));
    const img = body.images.find((i) => i.digest === digest);
    assert.ok(img);
    assert.equal(img.repository, 'templates/node');
    assert.deepEqual(img.tags, ['20']);
    assert.ok(img.size > layerSize + configSize);
  });

  test('inspect and resolve by template:// reference', async () => {
    let res = await api(`/api/v1/images/inspect?ref=${encodeURIComponent('template://node/20')}`);
    assert.equal(res.status, 200);
    const info = await res.json();
    assert.ok(Value.Check(ImageInspection, info), JSON.stringify([...Value.Errors(ImageInspection, info)].slice(0, 2)));
    assert.equal(info.digest, digest);
    assert.equal(info.reference, 'template://node/20');
    assert.equal(info.totalSize, layerSize + configSize);
    res = await api(`/api/v1/images/resolve?ref=${encodeURIComponent(`templates/node@${digest}`)}`);
    const spec = (await res.json()) as { manifestDigest: string; process: { args: string[]; cwd: string } };
    assert.equal(spec.manifestDigest, digest);
    assert.deepEqual(spec.process.args, ['/usr/bin/node']);
    assert.equal(spec.process.cwd, '/app');
    await expectError(await api('/api/v1/images/inspect?ref=template://node/99'), 404, 'not-found', 'ref');
    await expectError(await api('/api/v1/images/inspect?ref=Bad%20Name'), 400, 'invalid', 'ref');
    await expectError(await api('/api/v1/images/inspect'), 400, 'invalid', 'ref');
  });

  test('tag, repositories, delete a tag, delete by digest', async () => {
    let res = await api('/api/v1/tags', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ source: 'template://node/20', target: 'apps/web:v1' }),
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { repository: 'apps/web', tag: 'v1', digest });
    res = await api('/api/v1/repositories');
    const repos = await res.json();
    assert.ok(Value.Check(RepositoryList, repos));
    assert.deepEqual(repos.repositories, [
      { name: 'apps/web', tags: [{ tag: 'v1', digest }] },
      { name: 'templates/node', tags: [{ tag: '20', digest }] },
    ]);
    await expectError(
      await api('/api/v1/tags', { method: 'POST', body: JSON.stringify({ source: 'template://node/20' }) }),
      400,
      'invalid',
      'target',
    );
    await expectError(
      await api('/api/v1/tags', { method: 'POST', body: JSON.stringify({ source: 'x/y:1', target: `apps/web@${digest}` }) }),
      400,
      'invalid',
      'target',
    );
    await expectError(await api('/api/v1/tags', { method: 'POST', body: '{oops' }), 400, 'invalid', 'body');

    res = await api('/api/v1/images?ref=apps/web:v1', { method: 'DELETE' });
    assert.deepEqual(await res.json(), { repository: 'apps/web', removed: { tag: 'v1' } });
    assert.deepEqual(await s.store.listTags('apps/web'), []);
    res = await api(`/api/v1/images?ref=apps/web@${digest}`, { method: 'DELETE' });
    assert.deepEqual(await res.json(), { repository: 'apps/web', removed: { digest } });
    await expectError(await api(`/api/v1/images?ref=apps/web@${digest}`, { method: 'DELETE' }), 404, 'not-found');
    res = await api('/api/v1/repositories?name=apps/web', { method: 'DELETE' });
    assert.equal(res.status, 200);
    assert.deepEqual(await s.store.listRepositories(), ['templates/node']);
  });

  test('gc frees what nothing references', async () => {
    const orphan = await writeBlob(s.blobs, Buffer.from('left over from a push that never finished'));
    let res = await api('/api/v1/gc', { method: 'POST', body: JSON.stringify({ minAgeMs: 3_600_000 }) });
    assert.deepEqual(await res.json(), { removedBlobs: 0, freedBytes: 0 });
    res = await api('/api/v1/gc', { method: 'POST' });
    const r = await res.json();
    assert.ok(Value.Check(GcResult, r));
    assert.deepEqual(r, { removedBlobs: 1, freedBytes: orphan.size });
    assert.equal(await s.blobs.has(orphan.digest), false);
    assert.equal(await s.blobs.has(digestOf('x')), false);
    await expectError(await api('/api/v1/gc', { method: 'POST', body: JSON.stringify({ minAgeMs: -1 }) }), 400, 'invalid', 'minAgeMs');
  });
});
