import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createRepoLayout } from '../../../src/image/store/layout.ts';
import { digestOf } from '../../../src/protocol/digest.ts';

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'shoal-layout-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

test('markers, tags and repositories are files; names like "tags" do not collide', async () => {
  const layout = createRepoLayout(join(root, 'a'));
  const d1 = digestOf('one');
  const d2 = digestOf('two');
  assert.deepEqual(await layout.listRepositories(), []);
  await layout.writeMarker('x/y', d1, 'application/vnd.oci.image.manifest.v1+json');
  await layout.writeMarker('x/y/tags', d2, 'm');
  await layout.writeTag('x/y', 'v1', d1);
  await layout.writeTag('x/y', 'v2', d1);
  assert.deepEqual(await layout.listRepositories(), ['x/y', 'x/y/tags']);
  assert.equal(await layout.markerType('x/y', d1), 'application/vnd.oci.image.manifest.v1+json');
  assert.equal(await layout.markerType('x/y', d2), undefined);
  assert.deepEqual([...(await layout.tagsOf('x/y'))], [['v1', d1], ['v2', d1]]);
  assert.deepEqual(await layout.listManifests('x/y'), [d1]);
  await layout.removeTag('x/y', 'v2');
  assert.equal(await layout.readTag('x/y', 'v2'), undefined);
  assert.equal(await layout.hasRepository('x/y'), true);
  assert.equal(await layout.hasRepository('NOT/valid'), false);
});

test('a tag file holding something else than a digest reads as no tag', async () => {
  const layout = createRepoLayout(join(root, 'b'));
  await mkdir(join(root, 'b', 'r', '_tags'), { recursive: true });
  await writeFile(join(root, 'b', 'r', '_tags', 'junk'), 'not a digest');
  assert.equal(await layout.readTag('r', 'junk'), undefined);
  assert.deepEqual([...(await layout.tagsOf('r'))], []);
});

test('removing a repository keeps one nested under it, and removes empty parents', async () => {
  const layout = createRepoLayout(join(root, 'c'));
  const d = digestOf('x');
  await layout.writeMarker('a/b', d, 'm');
  await layout.writeMarker('a/b/c', d, 'm');
  await layout.writeMarker('z/deep/repo', d, 'm');
  await layout.removeRepository('a/b');
  assert.deepEqual(await layout.listRepositories(), ['a/b/c', 'z/deep/repo']);
  await layout.removeRepository('z/deep/repo');
  assert.deepEqual(await layout.listRepositories(), ['a/b/c']);
  assert.equal(await layout.hasRepository('z/deep/repo'), false);
});
