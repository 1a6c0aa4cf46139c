// Building images: a template from a whole file tree, and a service image as its
// template's layers plus ONE overlay layer holding only what the service adds or
// changes (XenoServer's templates and overlays). Both are pushed to a store through
// the registry client, so the CLI and `shoal up` build the same way against any store.
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { digestOf, type Digest, ShoalError, MediaType, type Descriptor, type ImageConfig, type ImageManifest } from '../protocol/index.ts';
import type { ImageRef } from '../protocol/index.ts';
import { buildLayer, indexLayers, type BuiltLayer, type LayerIndex } from './layer-build.ts';
import { readLayout, resolveImageManifest } from './oci-layout.ts';
import { pullImage, type RegistryClient } from './registry-client.ts';
import { statIfExists } from './fs-util.ts';

export interface ProcessConfig {
  cmd?: string[];
  entrypoint?: string[];
  env?: string[];
  workdir?: string;
  user?: string;
  labels?: Record<string, string>;
}

export interface BuildResult {
  manifestDigest: Digest;
  reference: string;
  layer: Pick<BuiltLayer, 'digest' | 'diffId' | 'size' | 'uncompressedSize' | 'entries' | 'whiteouts'>;
  /** Compressed bytes of every layer of the image (template layers + overlay). */
  imageSize: number;
  /** Uncompressed bytes, the file-system view (what XenoServer's Table 1 compares). */
  imageUncompressedSize: number;
  templateLayers: number;
}

/** Pulls an image into a scratch OCI layout and reads back its manifest and config. */
async function fetchImage(client: RegistryClient, ref: ImageRef, layoutDir: string) {
  await pullImage(client, ref, { layoutDir }, { refName: 'image' });
  const layout = await readLayout(layoutDir);
  const resolved = await resolveImageManifest(layout, layout.resolve('image'), `template ${ref.repository}`);
  const configBytes = await layout.readBlob(resolved.manifest.config, 4 * 1024 * 1024);
  const config = JSON.parse(configBytes.toString('utf8')) as ImageConfig;
  return { manifest: resolved.manifest, config, openBlob: (d: Digest) => layout.openBlob(d) };
}

const DEFAULT_PATH = 'PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin';

function applyProcessConfig(base: ImageConfig['config'], p: ProcessConfig): NonNullable<ImageConfig['config']> {
  const config = { ...(base ?? {}) };
  if (p.entrypoint) config.Entrypoint = p.entrypoint;
  if (p.cmd) config.Cmd = p.cmd;
  if (p.workdir) config.WorkingDir = p.workdir;
  if (p.user) config.User = p.user;
  if (p.env?.length) {
    const env = new Map((config.Env ?? [DEFAULT_PATH]).map((e) => [e.split('=')[0] ?? e, e] as const));
    for (const e of p.env) {
      if (!e.includes('=')) throw new ShoalError('invalid', `environment entry ${JSON.stringify(e)} must be NAME=VALUE`, { field: 'env' });
      env.set(e.slice(0, e.indexOf('=')), e);
    }
    config.Env = [...env.values()];
  }
  if (p.labels) config.Labels = { ...(config.Labels ?? {}), ...p.labels };
  return config;
}

async function pushLayerAndImage(
  client: RegistryClient,
  ref: ImageRef,
  layers: Descriptor[],
  config: ImageConfig,
  newLayer: { built: BuiltLayer } | undefined,
): Promise<Digest> {
  if (newLayer) {
    const { built } = newLayer;
    await client.pushBlob(ref.repository, built.digest, built.size, () => createReadStream(built.path));
  }
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = digestOf(configBytes);
  await client.pushBlob(ref.repository, configDigest, configBytes.length, () => Readable.from([configBytes]));
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: configDigest, size: configBytes.length },
    layers,
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  return client.putManifest(ref.repository, ref.tag ?? digestOf(bytes), bytes, MediaType.ociManifest);
}

/** Bytes of file content in a merged tree: the file-system view of the template. */
function treeBytes(index: LayerIndex): number {
  let n = 0;
  for (const e of index.values()) n += e.size;
  return n;
}

function layerDescriptor(built: BuiltLayer): Descriptor {
  return { mediaType: built.mediaType, digest: built.digest, size: built.size };
}

/** A template: one layer holding the whole tree `rootfs`. */
export async function buildTemplate(options: {
  client: RegistryClient;
  rootfs: string;
  ref: ImageRef;
  process?: ProcessConfig;
  workDir?: string;
}): Promise<BuildResult> {
  const work = await mkdtemp(join(options.workDir ?? tmpdir(), 'shoal-build-'));
  try {
    const built = await buildLayer({ source: options.rootfs, outFile: join(work, 'layer.tar.gz') });
    const config: ImageConfig = {
      architecture: 'amd64',
      os: 'linux',
      created: new Date(0).toISOString(),
      config: applyProcessConfig({ Env: [DEFAULT_PATH] }, options.process ?? {}),
      rootfs: { type: 'layers', diff_ids: [built.diffId] },
      history: [{ created_by: 'shoal template', comment: 'template' }],
    };
    const manifestDigest = await pushLayerAndImage(options.client, options.ref, [layerDescriptor(built)], config, { built });
    return {
      manifestDigest,
      reference: `${options.ref.repository}@${manifestDigest}`,
      layer: built,
      imageSize: built.size,
      imageUncompressedSize: built.uncompressedSize,
      templateLayers: 0,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * A service image: the template's layers plus an overlay of what `source` adds or
 * changes relative to the template. With `wholeRoot`, `source` is a complete root and
 * what it lacks of the template is deleted with OCI whiteouts.
 */
export async function buildImage(options: {
  client: RegistryClient;
  source: string;
  template: ImageRef;
  ref: ImageRef;
  wholeRoot?: boolean;
  owner?: { uid: number; gid: number };
  process?: ProcessConfig;
  workDir?: string;
}): Promise<BuildResult> {
  const sourceStat = await statIfExists(options.source);
  if (!sourceStat?.isDirectory()) {
    throw new ShoalError('invalid', `build source ${options.source} is not a directory`, { field: 'source' });
  }
  const work = await mkdtemp(join(options.workDir ?? tmpdir(), 'shoal-build-'));
  try {
    // The template's blobs come down once into a scratch layout; its merged tree is
    // indexed from the layer archives themselves (content hashes), never unpacked.
    const template = await fetchImage(options.client, options.template, join(work, 'template'));
    const base = await indexLayers(
      template.manifest.layers.map((l) => ({ open: () => template.openBlob(l.digest as Digest), mediaType: l.mediaType })),
    );
    const built = await buildLayer({
      source: options.source,
      base,
      wholeRoot: options.wholeRoot ?? false,
      outFile: join(work, 'overlay.tar.gz'),
      ...(options.owner ? { owner: options.owner } : {}),
    });
    const tconfig = template.config;
    const config: ImageConfig = {
      ...tconfig,
      created: new Date(0).toISOString(),
      config: applyProcessConfig(tconfig.config, options.process ?? {}),
      rootfs: { type: 'layers', diff_ids: [...tconfig.rootfs.diff_ids, built.diffId] },
      history: [...(tconfig.history ?? []), { created_by: 'shoal image build', comment: 'overlay' }],
    };
    const layers = [...template.manifest.layers, layerDescriptor(built)];
    const manifestDigest = await pushLayerAndImage(options.client, options.ref, layers, config, { built });
    const templateSize = template.manifest.layers.reduce((n, l) => n + l.size, 0);
    return {
      manifestDigest,
      reference: `${options.ref.repository}@${manifestDigest}`,
      layer: built,
      imageSize: templateSize + built.size,
      imageUncompressedSize: treeBytes(base) + built.uncompressedSize,
      templateLayers: template.manifest.layers.length,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
