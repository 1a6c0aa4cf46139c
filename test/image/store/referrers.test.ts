import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createBlobStore, writeBlob } from '../../../src/image/blob-store.ts';
import { createDocumentReader } from '../../../src/image/store/documents.ts';
import { createRepoLayout } from '../../../src/image/store/layout.ts';
import { listReferrers } from '../../../src/image/store/referrers.ts';
import { digestOf } from '../../../src/protocol/digest.ts';
import { MediaType } from '../../../src/protocol/oci.ts';

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'shoal-referrers-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

test('referrers come from the stored documents: artifactType, else the config type; annotations kept', async () => {
  const blobs = createBlobStore({ dir: root });
  const layout = createRepoLayout(join(root, 'repositories'));
  const reader = createDocumentReader({ blobs, maxManifestBytes: 1 << 20 });
  const subject = digestOf('the image');
  const put = async (doc: object) => {
    const bytes = Buffer.from(JSON.stringify(doc));
    const { digest } = await writeBlob(blobs, bytes);
    await layout.writeMarker('r', digest, MediaType.ociManifest);
    return { digest, size: bytes.length };
  };
  const desc = { mediaType: 'x', digest: digestOf('c'), size: 1 };
  const sig = await put({ schemaVersion: 2, mediaType: MediaType.ociManifest, artifactType: 'sig', config: desc, layers: [], subject: { ...desc, digest: subject }, annotations: { a: 'b' } });
  const old = await put({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { ...desc, mediaType: 'cfg/type' }, layers: [], subject: { ...desc, digest: subject } });
  await put({ schemaVersion: 2, mediaType: MediaType.ociManifest, artifactType: 'sig', config: desc, layers: [], subject: { ...desc, digest: digestOf('other') } });
  await put({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: desc, layers: [] });
  const r = await listReferrers({ layout, reader }, 'r', subject);
  assert.deepEqual(
    [...r.index.manifests].sort((a, b) => a.digest.localeCompare(b.digest)),
    [
      { mediaType: MediaType.ociManifest, digest: sig.digest, size: sig.size, artifactType: 'sig', annotations: { a: 'b' } },
      { mediaType: MediaType.ociManifest, digest: old.digest, size: old.size, artifactType: 'cfg/type' },
    ].sort((a, b) => a.digest.localeCompare(b.digest)),
  );
  assert.deepEqual(r.filtersApplied, []);
  const f = await listReferrers({ layout, reader }, 'r', subject, { artifactType: 'cfg/type' });
  assert.deepEqual(f.index.manifests.map((m) => m.digest), [old.digest]);
  assert.deepEqual(f.filtersApplied, ['artifactType']);
});
