// From a reference to a runnable image: the top manifest (an index picks the platform),
// the image manifest, its config and layers; and the two views callers want of it, the
// host's RootfsSpec and the control API's inspection.
import { readBlob, type BlobReader } from '../blob-store.ts';
import type { Digest, ImageInspection, LayerInfo } from '../../protocol/index.ts';
import { COMPONENT_DRIVER_LABEL } from '../../protocol/index.ts';
import {
  ShoalError,
  formatImageRef,
  type ImageRef,
  indexMediaTypes,
  manifestMediaTypes,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type RootfsSpec,
} from '../../protocol/index.ts';
import { imageConfigTypes } from './manifest-check.ts';

export interface StoredManifest {
  bytes: Buffer;
  mediaType: string;
  digest: Digest;
}

export interface Platform {
  os: string;
  architecture: string;
}

export interface OpenedImage {
  top: StoredManifest;
  index: ImageIndex | undefined;
  manifestDigest: Digest;
  manifest: ImageManifest;
  configDigest: Digest;
  config: ImageConfig;
  layers: LayerInfo[];
}

export interface OpenDeps {
  blobs: BlobReader;
  limits: { maxManifestBytes: number; maxConfigBytes: number };
  platform: Platform;
  getManifest(repo: string, reference: string): Promise<StoredManifest | undefined>;
}

/** Opens an image to run or inspect; 'not-found', or 'unsupported' for an artifact or a missing platform. */
export async function openImage(deps: OpenDeps, ref: ImageRef): Promise<OpenedImage> {
  const { platform } = deps;
  const top = await deps.getManifest(ref.repository, ref.digest ?? ref.tag ?? 'latest');
  if (!top) throw new ShoalError('not-found', `image ${formatImageRef(ref)} not found`, { field: 'reference' });
  const doc = JSON.parse(top.bytes.toString('utf8')) as unknown;
  let index: ImageIndex | undefined;
  let manifestDigest = top.digest;
  let manifest: ImageManifest;
  if (indexMediaTypes.includes(top.mediaType)) {
    index = doc as ImageIndex;
    const pick = index.manifests.find(
      (m) => m.platform?.os === platform.os && m.platform.architecture === platform.architecture && manifestMediaTypes.includes(m.mediaType),
    );
    if (!pick) {
      throw new ShoalError('unsupported', `image ${formatImageRef(ref)} has no ${platform.os}/${platform.architecture} manifest`, {
        field: 'reference',
      });
    }
    manifestDigest = pick.digest as Digest;
    manifest = JSON.parse((await readBlob(deps.blobs, manifestDigest, deps.limits.maxManifestBytes)).toString('utf8')) as ImageManifest;
  } else {
    manifest = doc as ImageManifest;
  }
  if (!imageConfigTypes.includes(manifest.config.mediaType)) {
    const what = manifest.artifactType ?? manifest.config.mediaType;
    throw new ShoalError('unsupported', `${formatImageRef(ref)} is an artifact (${what}), not a runnable image`, { field: 'reference' });
  }
  const configDigest = manifest.config.digest as Digest;
  const config = JSON.parse((await readBlob(deps.blobs, configDigest, deps.limits.maxConfigBytes)).toString('utf8')) as ImageConfig;
  const layers: LayerInfo[] = manifest.layers.map((l, i) => ({
    digest: l.digest as Digest,
    size: l.size,
    mediaType: l.mediaType,
    diffId: config.rootfs.diff_ids[i] ?? '',
  }));
  return { top, index, manifestDigest, manifest, configDigest, config, layers };
}

export function toRootfsSpec(o: OpenedImage): RootfsSpec {
  const c = o.config.config ?? {};
  return {
    manifestDigest: o.manifestDigest,
    configDigest: o.configDigest,
    layers: o.layers.map((l) => ({ digest: l.digest, diffId: l.diffId, size: l.size, mediaType: l.mediaType })),
    process: {
      args: [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])],
      env: c.Env ?? [],
      cwd: c.WorkingDir || '/',
      user: c.User || undefined,
    },
    ...(c.Labels?.[COMPONENT_DRIVER_LABEL] ? { driver: c.Labels[COMPONENT_DRIVER_LABEL] } : {}),
  };
}

export function toInspection(o: OpenedImage, ref: ImageRef, tags: string[], platform: Platform): ImageInspection {
  return {
    repository: ref.repository,
    reference: formatImageRef(ref),
    digest: o.top.digest,
    mediaType: o.top.mediaType,
    tags,
    index: o.index,
    manifestDigest: o.manifestDigest,
    manifest: o.manifest,
    configDigest: o.configDigest,
    config: o.config,
    platform: { os: o.config.os ?? platform.os, architecture: o.config.architecture ?? platform.architecture },
    created: o.config.created,
    layers: o.layers,
    totalSize: o.manifest.config.size + o.layers.reduce((n, l) => n + l.size, 0),
  };
}
