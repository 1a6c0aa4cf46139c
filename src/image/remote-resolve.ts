// The client side of ImageStore.resolve: turns an image reference into the RootfsSpec a
// host builds a root from, over the store's /v2/ API (manifest, index → platform, config).
// Every document is checked against the digest that names it.
import { createHash } from 'node:crypto';
import { Value } from '@sinclair/typebox/value';
import type { Digest } from '../protocol/index.ts';
import { COMPONENT_DRIVER_LABEL, ShoalError, formatImageRef, parseImageRef, type ImageRef, ImageConfig, type RootfsSpec } from '../protocol/index.ts';
import { hostPlatform, MAX_MANIFEST_BYTES, resolveImageManifest, type Platform } from './oci-layout.ts';
import type { RegistryClient } from './registry-client.ts';

export interface RemoteImage extends RootfsSpec {
  /** The repository the layers are fetched from. */
  repository: string;
}

export async function resolveRemoteImage(
  client: RegistryClient,
  reference: string | ImageRef,
  platform: Platform = hostPlatform(),
): Promise<RemoteImage> {
  const ref = typeof reference === 'string' ? parseImageRef(reference, 'image') : reference;
  const name = formatImageRef(ref);
  const top = await client.getManifest(ref.repository, ref.digest ?? ref.tag ?? 'latest');
  if (top === undefined) throw new ShoalError('not-found', `image ${name} not found in the store at ${client.baseUrl}`, { field: 'image' });
  const resolved = await resolveImageManifest(
    {
      async readManifest(desc) {
        if (desc.digest === top.digest) return top.bytes;
        const m = await client.getManifest(ref.repository, desc.digest);
        if (m === undefined) throw new ShoalError('not-found', `image ${name}: manifest ${desc.digest} named by its index is missing`, { field: 'image' });
        return m.bytes;
      },
    },
    { mediaType: top.mediaType, digest: top.digest, size: top.bytes.length },
    `image ${name}`,
    platform,
  );
  const manifest = resolved.manifest;
  const configDigest = manifest.config.digest as Digest;
  const configBytes = await readSmallBlob(client, ref.repository, configDigest, `image ${name}: config`);
  let config: unknown;
  try {
    config = JSON.parse(configBytes.toString('utf8'));
  } catch {
    throw new ShoalError('invalid', `image ${name}: config ${configDigest} is not JSON`, { field: 'image' });
  }
  if (!Value.Check(ImageConfig, config)) {
    const first = Value.Errors(ImageConfig, config).First();
    throw new ShoalError('invalid', `image ${name}: config ${configDigest}: ${first?.path ?? ''} ${first?.message ?? 'invalid'}`, { field: 'image' });
  }
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new ShoalError('invalid', `image ${name}: ${manifest.layers.length} layers but ${diffIds.length} diff_ids in the config`, { field: 'image' });
  }
  const c = config.config ?? {};
  return {
    repository: ref.repository,
    manifestDigest: resolved.descriptor.digest,
    configDigest,
    layers: manifest.layers.map((l, i) => ({ digest: l.digest, diffId: diffIds[i]!, size: l.size, mediaType: l.mediaType })),
    process: {
      args: [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])],
      env: c.Env ?? [],
      cwd: c.WorkingDir || '/',
      user: c.User || undefined,
    },
    ...(c.Labels?.[COMPONENT_DRIVER_LABEL] ? { driver: c.Labels[COMPONENT_DRIVER_LABEL] } : {}),
  };
}

async function readSmallBlob(client: RegistryClient, repo: string, digest: Digest, what: string): Promise<Buffer> {
  const stream = await client.fetchBlob(repo, digest);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream) {
    n += (chunk as Buffer).length;
    if (n > MAX_MANIFEST_BYTES) {
      stream.destroy();
      throw new ShoalError('too-large', `${what} is larger than ${MAX_MANIFEST_BYTES} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  const bytes = Buffer.concat(chunks);
  const got = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  if (got !== digest) throw new ShoalError('digest-mismatch', `${what}: the store sent bytes hashing to ${got}, not ${digest}`);
  return bytes;
}
