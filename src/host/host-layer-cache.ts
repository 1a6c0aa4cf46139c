// The host's layer cache with the image part's unpacker and flattener, opened (what an
// earlier run left is read back) and logging its evictions and errors.
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { createLayerCache, type LayerCache } from './layer-cache.ts';
import type { Logger } from './ports.ts';
import { flattenLayers, unpackLayer } from '../image/index.ts';

export const DEFAULT_LAYER_CACHE_BYTES = 10 * 1024 ** 3;

export async function openHostLayerCache(dataDir: string, budgetBytes: number, log: Logger): Promise<LayerCache> {
  const layerCache = createLayerCache({
    dir: join(dataDir, 'cache'),
    budgetBytes,
    unpack: async (file, dest, o) => {
      await unpackLayer(createReadStream(file), dest, { mediaType: o.mediaType, whiteouts: 'overlay', expectDiffId: o.expectDiffId });
    },
    flatten: async (layers, dest) => {
      await flattenLayers(
        layers.map((l) => ({ open: () => createReadStream(l.file), mediaType: l.mediaType, diffId: l.diffId })),
        dest,
      );
    },
    onEvict: (e) => log.info({ digest: e.digest, size: e.size }, 'evicted a cached layer'),
    onError: (m, e) => log.error({ err: String(e) }, m),
  });
  await layerCache.open();
  return layerCache;
}
