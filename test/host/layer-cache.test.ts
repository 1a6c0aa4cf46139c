import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLayerCache, type BlobFetcher, type LayerDescriptor, type LayerFlattener, type LayerUnpacker } from '../../src/host/layer-cache.ts';
import { digestOf } from '../../src/protocol/digest.ts';

const layer = (text: string): LayerDescriptor & { text: string } => ({
  digest: digestOf(text),
  diffId: digestOf(`diff:${text}`),
  size: text.length,
  mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
  text,
});

function fakeStore(layers: Array<ReturnType<typeof layer>>, delayMs = 20) {
  const fetches: string[] = [];
  const fetch: BlobFetcher = async (digest, dest, onBytes) => {
    fetches.push(digest);
    const l = layers.find((x) => x.digest === digest);
    await sleep(delayMs);
    if (!l) throw new Error(`blob unknown: ${digest}`);
    await writeFile(dest, l.text);
    onBytes(l.text.length);
  };
  return { fetch, fetches };
}

// "Unpacking" a blob writes a file named after its content; flattening puts all in one dir.
const unpack: LayerUnpacker = async (file, dest, opts) => {
  const text = await readFile(file, 'utf8');
  if (opts.expectDiffId !== digestOf(`diff:${text}`)) throw new Error('diff id mismatch');
  await mkdir(dest);
  await writeFile(join(dest, text.slice(0, 8)), text);
};
const flatten: LayerFlattener = async (layers, dest) => {
  await mkdir(dest);
  for (const l of layers) {
    const text = await readFile(l.file, 'utf8');
    if (l.diffId !== digestOf(`diff:${text}`)) throw new Error('diff id mismatch');
    await writeFile(join(dest, text.slice(0, 8)), text);
  }
};

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'shoal-cache-'));
  t.after(() => rm(d, { recursive: true, force: true }));
  return d;
}

test('concurrent deployments pull and unpack each layer once; bytes count once', async (t) => {
  const dir = await tempDir(t);
  const l1 = layer('template-layer-'.repeat(100));
  const l2 = layer('overlay-layer');
  const store = fakeStore([l1, l2]);
  const cache = createLayerCache({ dir, budgetBytes: 1 << 30, unpack, flatten });
  await cache.open();
  const image = { manifestDigest: digestOf('m'), layers: [l1, l2] };
  const results = await Promise.all([1, 2, 3].map(() => cache.prepare(image, store.fetch, 'overlay')));
  assert.equal(store.fetches.length, 2, 'one fetch per layer');
  const bytes = results.reduce((s, r) => s + r.stats.bytes, 0);
  assert.equal(bytes, l1.text.length + l2.text.length);
  const fetched = results.reduce((s, r) => s + r.stats.layersFetched, 0);
  const cached = results.reduce((s, r) => s + r.stats.layersCached, 0);
  assert.equal(fetched, 2);
  assert.equal(cached, 4);
  for (const r of results) {
    assert.deepEqual(r.lowerDirs, [join(dir, 'layers', l1.digest.slice(7)), join(dir, 'layers', l2.digest.slice(7))]);
    assert.ok(r.timings.pull && r.timings.unpack, 'joiners see the shared work in their timings');
  }
  const again = await cache.prepare(image, store.fetch, 'overlay');
  assert.deepEqual(again.stats, { bytes: 0, layersFetched: 0, layersCached: 2 });
  assert.equal(again.timings.pull, undefined);
  assert.deepEqual(
    cache.entries().map((e) => [e.digest, e.refs]).sort(),
    [
      [l1.digest, 4],
      [l2.digest, 4],
    ].sort(),
  );
});

test('evicts least-recently-used layers that no instance uses, under the budget', async (t) => {
  const dir = await tempDir(t);
  const [a, b, c] = [layer('a'.repeat(3000)), layer('b'.repeat(3000)), layer('c'.repeat(3000))];
  const store = fakeStore([a, b, c], 1);
  // each layer dir is 4096 + 3000 bytes: room for two
  const cache = createLayerCache({ dir, budgetBytes: 15_000, unpack, flatten });
  await cache.open();
  const img = (l: LayerDescriptor) => ({ manifestDigest: digestOf(l.digest), layers: [l] });
  const ra = await cache.prepare(img(a), store.fetch, 'overlay');
  const rb = await cache.prepare(img(b), store.fetch, 'overlay');
  rb.release();
  ra.release(); // a is now the most recently used
  ra.release(); // idempotent
  const rc = await cache.prepare(img(c), store.fetch, 'overlay');
  await cache.settle();
  assert.deepEqual(cache.entries().map((e) => e.digest).sort(), [a.digest, c.digest].sort(), 'b (LRU) evicted');
  assert.deepEqual((await readdir(join(dir, 'layers'))).sort(), [a.digest.slice(7), c.digest.slice(7)].sort());
  assert.ok(cache.totalBytes() <= 15_000);
  // in-use layers are never evicted, even over budget
  const rb2 = await cache.prepare(img(b), store.fetch, 'overlay');
  await cache.settle();
  assert.ok(cache.entries().some((e) => e.digest === c.digest), 'c is in use');
  assert.ok(cache.entries().some((e) => e.digest === b.digest));
  rc.release();
  rb2.release();
  await cache.settle();
  assert.ok(cache.totalBytes() <= 15_000);
});

test('a failed pull fails every deployment waiting on it and leaves nothing', async (t) => {
  const dir = await tempDir(t);
  const good = layer('good');
  const missing = layer('missing');
  const store = fakeStore([good]);
  const cache = createLayerCache({ dir, budgetBytes: 1 << 30, unpack, flatten });
  await cache.open();
  const image = { manifestDigest: digestOf('m'), layers: [good, missing] };
  const results = await Promise.allSettled([cache.prepare(image, store.fetch, 'overlay'), cache.prepare(image, store.fetch, 'overlay')]);
  for (const r of results) assert.ok(r.status === 'rejected' && /blob unknown/.test(String(r.reason)));
  assert.equal(store.fetches.filter((d) => d === missing.digest).length, 1);
  assert.deepEqual(
    cache.entries().map((e) => [e.digest, e.refs]),
    [[good.digest, 0]],
    'the good layer is cached but not held',
  );
  assert.deepEqual(await readdir(join(dir, 'tmp')), []);
});

test('flat mode applies the layers in order into one tree per image, from cached blobs', async (t) => {
  const dir = await tempDir(t);
  const base = layer('base-layer-bytes');
  const top1 = layer('top-one-bytes');
  const top2 = layer('top-two-bytes');
  const store = fakeStore([base, top1, top2]);
  const cache = createLayerCache({ dir, budgetBytes: 1 << 30, unpack, flatten });
  await cache.open();
  const [x, y] = await Promise.all([
    cache.prepare({ manifestDigest: digestOf('m1'), layers: [base, top1] }, store.fetch, 'flat'),
    cache.prepare({ manifestDigest: digestOf('m1'), layers: [base, top1] }, store.fetch, 'flat'),
  ]);
  assert.equal(x.flatDir, y.flatDir);
  assert.deepEqual((await readdir(x.flatDir!)).sort(), ['base-lay', 'top-one-']);
  assert.equal(x.stats.bytes + y.stats.bytes, base.text.length + top1.text.length);
  const z = await cache.prepare({ manifestDigest: digestOf('m2'), layers: [base, top2] }, store.fetch, 'flat');
  assert.deepEqual(z.stats, { bytes: top2.text.length, layersFetched: 1, layersCached: 1 }, 'the shared base blob is not pulled again');
  assert.equal(store.fetches.length, 3);
});

test('open() keeps complete entries and drops partial ones', async (t) => {
  const dir = await tempDir(t);
  const l = layer('persisted');
  const store = fakeStore([l], 1);
  const first = createLayerCache({ dir, budgetBytes: 1 << 30, unpack, flatten });
  await first.open();
  const r = await first.prepare({ manifestDigest: digestOf('m'), layers: [l] }, store.fetch, 'overlay');
  await mkdir(join(dir, 'layers', 'f'.repeat(64))); // partial: no meta
  await writeFile(join(dir, 'tmp', 'leftover'), 'x');
  const second = createLayerCache({ dir, budgetBytes: 1 << 30, unpack, flatten });
  await second.open();
  assert.deepEqual(second.entries().map((e) => e.digest), [l.digest]);
  assert.deepEqual(await readdir(join(dir, 'layers')), [l.digest.slice(7)]);
  assert.deepEqual(await readdir(join(dir, 'tmp')), []);
  const held = second.retain({ manifestDigest: digestOf('m'), layers: [l] }, 'overlay');
  assert.deepEqual(held?.lowerDirs, r.lowerDirs);
  assert.equal(second.entries()[0]?.refs, 1);
  assert.equal(second.retain({ manifestDigest: digestOf('m'), layers: [layer('other')] }, 'overlay'), undefined);
});
