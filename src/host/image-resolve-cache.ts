// The host's image-resolve cache: a digest-pinned reference names immutable content, so
// its resolution is kept (bounded, oldest out first); a tag may move and is resolved
// every time. A failed resolution is not kept. One function is its whole interface, so
// the shared resolver (src/image, createImageResolver) can take its place.
import type { RemoteImage } from '../image/index.ts';
import { parseImageRef } from '../protocol/image-ref.ts';

export interface ImageResolve {
  resolve(ref: string): Promise<RemoteImage>;
}

export interface PinnedResolveCacheOptions {
  /** Resolves a reference against the store. */
  resolveWith(ref: string): Promise<RemoteImage>;
  /** Resolutions kept. Default 256. */
  max?: number;
}

export function createPinnedResolveCache(options: PinnedResolveCacheOptions): ImageResolve {
  const max = options.max ?? 256;
  const resolved = new Map<string, RemoteImage>();
  return {
    async resolve(ref) {
      const hit = resolved.get(ref);
      if (hit) return hit;
      const image = await options.resolveWith(ref);
      if (parseImageRef(ref).digest !== undefined) {
        if (resolved.size >= max) resolved.delete(resolved.keys().next().value!);
        resolved.set(ref, image);
      }
      return image;
    },
  };
}
