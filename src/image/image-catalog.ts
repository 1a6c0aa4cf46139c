// Client-side views of a store for the CLI: list, inspect, tag. They speak only the OCI
// distribution API, so they work against any registry, not just Shoal's store.
import type { Digest, ImageConfig } from '../protocol/index.ts';
import { ShoalError, formatImageRef, TEMPLATE_PREFIX, type ImageRef } from '../protocol/index.ts';
import { resolveImageManifest } from './oci-layout.ts';
import { mapLimit, type RegistryClient } from './registry-client.ts';

export interface ImageListEntry {
  /** NAME, or template://NAME for templates. */
  name: string;
  repository: string;
  tag: string;
  digest: Digest;
  /** Compressed bytes of config and layers. */
  size: number;
}

export interface ImageDetails {
  reference: string;
  digest: Digest;
  mediaType: string;
  size: number;
  layers: Array<{ digest: string; size: number; mediaType: string }>;
  process: { cmd?: string[] | null | undefined; entrypoint?: string[] | null | undefined; env?: string[] | undefined; workdir?: string | undefined; user?: string | undefined };
  config: ImageConfig;
}

async function resolveRemote(client: RegistryClient, ref: ImageRef) {
  const reference = ref.digest ?? ref.tag ?? 'latest';
  const top = await client.getManifest(ref.repository, reference);
  if (!top) throw new ShoalError('not-found', `image ${formatImageRef(ref)} not found in the store at ${client.baseUrl}`);
  return resolveImageManifest(
    {
      async readManifest(desc) {
        if (desc.digest === top.digest) return top.bytes;
        const m = await client.getManifest(ref.repository, desc.digest);
        if (!m) throw new ShoalError('not-found', `manifest ${desc.digest} of ${formatImageRef(ref)} is missing`);
        return m.bytes;
      },
    },
    { mediaType: top.mediaType, digest: top.digest, size: top.bytes.length },
    `image ${formatImageRef(ref)}`,
  );
}

async function readConfig(client: RegistryClient, repository: string, digest: Digest): Promise<ImageConfig> {
  const stream = await client.fetchBlob(repository, digest);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of stream) {
    chunks.push(c as Buffer);
    n += (c as Buffer).length;
    if (n > 4 * 1024 * 1024) throw new ShoalError('too-large', `config ${digest} is over 4 MiB`);
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as ImageConfig;
}

export async function inspectImage(client: RegistryClient, ref: ImageRef): Promise<ImageDetails> {
  const resolved = await resolveRemote(client, ref);
  const config = await readConfig(client, ref.repository, resolved.manifest.config.digest as Digest);
  const layers = resolved.manifest.layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType }));
  return {
    reference: formatImageRef(ref),
    digest: resolved.descriptor.digest,
    mediaType: resolved.descriptor.mediaType,
    size: resolved.manifest.config.size + layers.reduce((s, l) => s + l.size, 0),
    layers,
    process: {
      cmd: config.config?.Cmd,
      entrypoint: config.config?.Entrypoint,
      env: config.config?.Env,
      workdir: config.config?.WorkingDir,
      user: config.config?.User,
    },
    config,
  };
}

export async function listImages(client: RegistryClient): Promise<ImageListEntry[]> {
  const repositories = await client.catalog();
  const pairs: Array<{ repository: string; tag: string }> = [];
  for (const list of await mapLimit(repositories, 8, async (repository) =>
    (await client.listTags(repository)).map((tag) => ({ repository, tag })),
  )) {
    pairs.push(...list);
  }
  const entries = await mapLimit(pairs, 8, async ({ repository, tag }) => {
    const resolved = await resolveRemote(client, { repository, tag, digest: undefined });
    const size = resolved.manifest.config.size + resolved.manifest.layers.reduce((s, l) => s + l.size, 0);
    const name = repository.startsWith(TEMPLATE_PREFIX) ? `template://${repository.slice(TEMPLATE_PREFIX.length)}` : repository;
    return { name, repository, tag, digest: resolved.descriptor.digest, size };
  });
  return entries.sort((a, b) => a.name.localeCompare(b.name) || a.tag.localeCompare(b.tag));
}

/** Points `target` at the manifest `source` names; blobs are mounted across repositories. */
export async function tagImage(client: RegistryClient, source: ImageRef, target: ImageRef): Promise<Digest> {
  if (!target.tag) throw new ShoalError('invalid', 'the target needs a tag', { field: 'target' });
  const top = await client.getManifest(source.repository, source.digest ?? source.tag ?? 'latest');
  if (!top) throw new ShoalError('not-found', `image ${formatImageRef(source)} not found`);
  if (target.repository !== source.repository) {
    const resolved = await resolveRemote(client, source);
    for (const blob of [resolved.manifest.config, ...resolved.manifest.layers]) {
      await client.pushBlob(target.repository, blob.digest as Digest, blob.size, () => {
        throw new ShoalError('internal', `blob ${blob.digest} could not be mounted from ${source.repository}`);
      }, { mountFrom: source.repository });
    }
  }
  return client.putManifest(target.repository, target.tag, top.bytes, top.mediaType);
}
