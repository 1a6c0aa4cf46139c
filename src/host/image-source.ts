// Where a host gets images: the plan's store, one registry client per store URL, its
// resolutions cached by the shared image resolver, layers fetched by digest and counted.
import { createImageResolver, createRegistryClient, type ImageResolver, type RegistryClient } from '../image/index.ts';
import type { ImageSource } from './ports.ts';
import type { BlobFetcher } from './layer-cache.ts';
import type { RemoteImage } from '../image/index.ts';
import type { Digest } from '../protocol/index.ts';
import { ShoalError } from '../protocol/index.ts';

export interface StoreImageSourceOptions {
  userAgent: string;
  /** A read token for stores that refuse anonymous pulls. */
  token?: string;
  /** Bytes and blobs fetched (metrics). */
  onPulled?: (bytes: number, blobs: number) => void;
  /** The store's client (tests). Default: a registry client for the URL. */
  clientFor?: (store: string) => RegistryClient;
  /** The resolver in front of a store's client. Default: the shared image resolver (plans name digest-pinned images, resolved once). */
  resolverFor?: (client: RegistryClient) => Pick<ImageResolver, 'resolve'>;
}

export function createStoreImageSource(options: StoreImageSourceOptions): ImageSource {
  const clientFor = options.clientFor ?? ((store: string) => createRegistryClient({ baseUrl: store, userAgent: options.userAgent, ...(options.token === undefined ? {} : { token: options.token }) }));
  const resolverFor = options.resolverFor ?? ((client: RegistryClient) => createImageResolver({ client, refreshAfterMs: 10_000, maxStaleMs: 600_000 }));
  const stores = new Map<string, { client: RegistryClient; resolver: Pick<ImageResolver, 'resolve'> }>();
  const storeOf = (url: string): { client: RegistryClient; resolver: Pick<ImageResolver, 'resolve'> } => {
    let s = stores.get(url);
    if (!s) {
      const client = clientFor(url);
      s = { client, resolver: resolverFor(client) };
      stores.set(url, s);
    }
    return s;
  };
  return {
    async resolve(store, image) {
      const { client, resolver } = storeOf(store);
      const rootfs = await resolver.resolve(image).catch((e: unknown) => {
        if (e instanceof ShoalError) throw e;
        throw new ShoalError('unavailable', `the store at ${store} did not answer: ${(e as Error).message}`, { field: 'store', cause: e });
      });
      return { rootfs, fetchBlob: blobFetcher(client, rootfs, options.onPulled) };
    },
  };
}

function blobFetcher(client: RegistryClient, image: RemoteImage, onPulled?: (bytes: number, blobs: number) => void): BlobFetcher {
  const sizes = new Map(image.layers.map((l) => [l.digest, l.size]));
  return async (digest, destFile, onBytes) => {
    const size = sizes.get(digest);
    await client.downloadBlob(image.repository, digest as Digest, destFile, {
      onBytes: (n) => {
        onBytes(n);
        onPulled?.(n, 0);
      },
      ...(size === undefined ? {} : { expectedSize: size }),
    });
    onPulled?.(0, 1);
  };
}
