// Removing blobs no stored manifest reaches. Blobs younger than `minAgeMs` are spared:
// they may belong to a push in flight (uploaded, its manifest not yet put).
import { stat } from 'node:fs/promises';
import type { BlobStore } from '../blob-store.ts';
import type { GcResult } from '../../protocol/index.ts';
import { isNoEnt } from '../fs-util.ts';
import { referencedBlobs, type DocumentReader } from './documents.ts';
import type { RepoLayout } from './layout.ts';
import type { LayerVetting } from './vetting.ts';

export interface GcDeps {
  layout: RepoLayout;
  reader: DocumentReader;
  blobs: Pick<BlobStore, 'list' | 'delete' | 'path'>;
  vetting: Pick<LayerVetting, 'forget'>;
}

/** Call under the store's lock: a manifest put while this runs could lose its blobs. */
export async function collectGarbage(deps: GcDeps, options: { minAgeMs?: number | undefined; now: number }): Promise<GcResult> {
  const cutoff = options.now - (options.minAgeMs ?? 0);
  const live = await referencedBlobs(deps.layout, deps.reader);
  let removedBlobs = 0;
  let freedBytes = 0;
  for (const b of await deps.blobs.list()) {
    if (live.has(b.digest)) continue;
    if (options.minAgeMs) {
      let mtimeMs: number;
      try {
        mtimeMs = (await stat(deps.blobs.path(b.digest))).mtimeMs;
      } catch (e) {
        if (isNoEnt(e)) continue; // deleted since it was listed
        throw e;
      }
      if (mtimeMs > cutoff) continue;
    }
    if (await deps.blobs.delete(b.digest)) {
      removedBlobs++;
      freedBytes += b.size;
    }
    deps.reader.forget(b.digest);
    await deps.vetting.forget(b.digest);
  }
  return { removedBlobs, freedBytes };
}
