// Images from other registries: copied once into Shoal's own store, under
// `mirror/<host>/<name>`, and named there by digest from then on (Cloud Run copies
// images the same way). Hosts keep pulling only from the store, so they need no
// credentials for other registries; the store's layer vetting applies to the copy as to
// any push; and a foreign registry that goes away or moves its tag changes nothing that
// runs. Everything read from the other registry is bounded (manifest and config sizes,
// the whole image's size, a deadline per request and per layer) and checked against its
// digest before it reaches the store.
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatImageRef, isShoalError, ShoalError, type Digest, type ImageRef } from '../protocol/index.ts';
import { hostPlatform, resolveImageManifest } from './oci-layout.ts';
import type { Dispatcher } from 'undici';
import { authorizeRegistry, registryBaseUrl, type RegistryCredentials } from './registry-auth.ts';
import { createRegistryClient, mapLimit, type RegistryClient } from './registry-client.ts';

export interface MirrorLimits {
  /** Bytes of all layers and the config together (default 8 GiB). */
  maxImageBytes?: number;
  /** Deadline of each small exchange with the other registry (default 30 s). */
  requestTimeoutMs?: number;
  /** Deadline of each layer's download (default 10 min). */
  blobTimeoutMs?: number;
}

export interface MirrorOptions extends MirrorLimits {
  /** The Shoal store's client (with a token that may push). */
  store: RegistryClient;
  ref: ImageRef;
  credentials: RegistryCredentials | undefined;
  /** Reported as the failing field (default 'image'). */
  field?: string;
  /** Carries every request to the other registry (the provider's egress guard). */
  dispatcher?: Dispatcher;
  /** Where layers wait between the two registries (default the OS temp dir). */
  stagingDir?: string;
}

export interface MirroredImage {
  /** The image manifest's digest (after choosing linux/<arch> from an index). */
  digest: Digest;
  /** The store's name for it: mirror/<host>/<name>@<digest>. */
  storeRef: string;
  /** Bytes copied now (0 when the store had every blob). */
  bytes: number;
}

/** The store repository a foreign image is kept under: mirror/<host, ':' → '-'>/<name>. */
export function mirrorRepository(ref: ImageRef): string {
  if (ref.registry === undefined) throw new ShoalError('internal', `${formatImageRef(ref)} names no other registry`);
  const repo = `mirror/${ref.registry.toLowerCase().replace(':', '-')}/${ref.repository}`;
  if (repo.length > 255) throw new ShoalError('invalid', `${formatImageRef(ref)}: the name is too long to keep in the store`, { field: 'image' });
  return repo;
}

/** The store reference of an already copied, digest-pinned foreign reference. */
export function mirrorRef(ref: ImageRef & { digest: Digest }): string {
  return `${mirrorRepository(ref)}@${ref.digest}`;
}

/**
 * Copies `ref` (its linux/<host arch> image) from its registry into the store, unless the
 * store has it already, and returns its digest. Errors are ShoalError 'invalid' naming the
 * field for what the other registry did (unreachable, credentials refused, no such tag, no
 * image for this platform, too large, wrong digest), so a registration fails with a 400.
 */
export async function mirrorForeignImage(options: MirrorOptions): Promise<MirroredImage> {
  const { ref, store } = options;
  const field = options.field ?? 'image';
  const host = ref.registry;
  if (host === undefined) throw new ShoalError('internal', `${formatImageRef(ref)} names no other registry`);
  const name = formatImageRef(ref);
  const maxImageBytes = options.maxImageBytes ?? 8 * 1024 ** 3;
  const blobTimeoutMs = options.blobTimeoutMs ?? 600_000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  // Anything the other registry does wrong is the registrant's to fix: a 400 naming the field.
  const blame = (e: unknown): never => {
    if (isShoalError(e) && e.field === field) throw e;
    const message = (e as Error).message.replace(/the store/g, `the registry ${host}`);
    throw new ShoalError('invalid', `image ${name}: ${message}`, { field, cause: e });
  };
  const dispatcher = options.dispatcher === undefined ? {} : { dispatcher: options.dispatcher };
  const authorization = await authorizeRegistry({ host, repository: ref.repository, credentials: options.credentials, timeoutMs: requestTimeoutMs, field, ...dispatcher });
  const foreign = createRegistryClient({
    baseUrl: registryBaseUrl(host),
    userAgent: 'shoal-mirror',
    requestTimeoutMs,
    ...dispatcher,
    ...(authorization === undefined ? {} : { authorization }),
  });
  const resolved = await (async () => {
    const top = await foreign.getManifest(ref.repository, ref.digest ?? ref.tag ?? 'latest');
    if (top === undefined) {
      throw new ShoalError('invalid', `image ${name}: the registry ${host} has no ${ref.digest ? `manifest ${ref.digest}` : `tag ${JSON.stringify(ref.tag ?? 'latest')}`} in ${ref.repository}`, { field });
    }
    return resolveImageManifest(
      {
        async readManifest(desc) {
          if (desc.digest === top.digest) return top.bytes;
          const m = await foreign.getManifest(ref.repository, desc.digest);
          if (m === undefined) throw new ShoalError('invalid', `image ${name}: manifest ${desc.digest} named by its index is missing`, { field });
          return m.bytes;
        },
      },
      { mediaType: top.mediaType, digest: top.digest, size: top.bytes.length },
      `image ${name}`,
      hostPlatform(),
    );
  })().catch(blame);
  const digest = resolved.descriptor.digest;
  const repo = mirrorRepository(ref);
  const storeRef = `${repo}@${digest}`;
  if ((await store.getManifest(repo, digest)) !== undefined) return { digest, storeRef, bytes: 0 };

  const blobs = [resolved.manifest.config, ...resolved.manifest.layers];
  const total = blobs.reduce((n, b) => n + b.size, 0);
  if (total > maxImageBytes) throw new ShoalError('invalid', `image ${name}: ${total} bytes, more than the ${maxImageBytes} allowed`, { field });
  if (options.stagingDir !== undefined) await mkdir(options.stagingDir, { recursive: true, mode: 0o700 });
  const scratch = await mkdtemp(join(options.stagingDir ?? tmpdir(), 'shoal-mirror-'));
  let bytes = 0;
  try {
    await mapLimit(blobs, 4, async (blob, signal) => {
      const d = blob.digest as Digest;
      if ((await store.hasBlob(repo, d)) === blob.size) return;
      const file = join(scratch, d.replace(':', '-'));
      // Verified against digest and declared size while it lands; a registry that sends
      // more, or too slowly, is cut off.
      await foreign
        .downloadBlob(ref.repository, d, file, { expectedSize: blob.size, durable: false, signal: AbortSignal.any([signal, AbortSignal.timeout(blobTimeoutMs)]) })
        .catch(blame);
      await store.pushBlob(repo, d, blob.size, () => createReadStream(file), { signal });
      bytes += blob.size;
      await rm(file, { force: true });
    });
    // Tagged by its digest (cosign's form), so the store keeps it until it is deleted.
    await store.putManifest(repo, `sha256-${digest.slice('sha256:'.length)}`, resolved.bytes, resolved.descriptor.mediaType);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  return { digest, storeRef, bytes };
}
