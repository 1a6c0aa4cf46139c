// Manifests, tags and repositories on top of the blob store. Metadata is plain files,
// no database (the distribution registry's storage driver in small):
//
//   dir/repositories/<name>/_manifests/<hex>   membership marker; content: the media type
//   dir/repositories/<name>/_tags/<tag>        content: the manifest digest (atomic rename)
//   dir/vetted/<hex>                           a layer that passed vetLayer; content: its diffId
//
// `_manifests` and `_tags` start with `_`, which no repository name component can, so a
// repository `a/b` and a repository `a/b/tags` never collide in the tree.
//
// A manifest PUT checks everything before it writes anything: a refused manifest leaves
// no tag, no marker, no blob (a layer refused by vetting is deleted too, unless another
// stored manifest uses it).
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Value } from '@sinclair/typebox/value';
import type { TSchema } from '@sinclair/typebox';
import { createBlobStore, readBlob, writeBlob, type BlobStore } from './blob-store.ts';
import { digestHex, digestOf, isDigest, type Digest } from '../protocol/digest.ts';
import { ShoalError, isShoalError } from '../protocol/errors.ts';
import { formatImageRef, isRepositoryName, isTagName, type ImageRef } from '../protocol/image-ref.ts';
import {
  configMediaTypes,
  ImageConfig as ImageConfigSchema,
  ImageIndex as ImageIndexSchema,
  ImageManifest as ImageManifestSchema,
  indexMediaTypes,
  layerMediaTypes,
  manifestMediaTypes,
  MediaType,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type RootfsSpec,
} from '../protocol/oci.ts';
import type { GcResult, ImageInspection, ImageSummary, LayerInfo } from '../protocol/store-api.ts';
import { exists, isNoEnt } from './fs-util.ts';

export type { GcResult, ImageInspection, ImageSummary, LayerInfo };

export interface ImageStoreLimits {
  /** Largest manifest or index accepted (default 4 MiB, as the distribution registry). */
  maxManifestBytes: number;
  /** Largest image config read (default 8 MiB). */
  maxConfigBytes: number;
}

/**
 * Checks a pushed layer before any manifest may use it; throws a ShoalError to refuse.
 * `diffId` is what the image config claims for the layer. It may return the layer's
 * real diffId, which is remembered with the verdict so a later manifest claiming another
 * diffId for the same blob is refused without re-reading the layer.
 */
export type VetLayer = (
  digest: Digest,
  mediaType: string,
  info: { diffId: string | undefined },
) => Promise<void | { diffId?: string }>;

export interface ImageStoreOptions {
  dir: string;
  /** Share a blob store; default: one in `dir`. */
  blobs?: BlobStore;
  limits?: Partial<ImageStoreLimits>;
  vetLayer?: VetLayer;
  /** The platform picked from an index (default linux/amd64). */
  platform?: { os: string; architecture: string };
}

export interface StoredManifest {
  bytes: Buffer;
  mediaType: string;
  digest: Digest;
}

export interface ImageStore {
  readonly blobs: BlobStore;
  readonly limits: ImageStoreLimits;
  /** `reference` is a tag or the manifest's digest. Checks everything, then stores. */
  putManifest(repo: string, reference: string, bytes: Buffer, contentType?: string): Promise<{ digest: Digest; mediaType: string }>;
  getManifest(repo: string, reference: string): Promise<StoredManifest | undefined>;
  /** By digest: the manifest leaves the repository with every tag on it. By tag: only the tag goes. */
  deleteManifest(repo: string, reference: string): Promise<void>;
  /** Whether the repository holds anything (a manifest or a tag). */
  hasRepository(repo: string): Promise<boolean>;
  listRepositories(): Promise<string[]>;
  /** Sorted; throws 'not-found' for an unknown repository. */
  listTags(repo: string): Promise<string[]>;
  listManifests(repo: string): Promise<Digest[]>;
  /** Points `tag` at `digest` (moving it if it pointed elsewhere). The manifest may live in another repository. */
  tag(repo: string, digest: Digest, tag: string): Promise<void>;
  resolve(ref: ImageRef): Promise<RootfsSpec>;
  inspect(ref: ImageRef): Promise<ImageInspection>;
  listImages(): Promise<ImageSummary[]>;
  /** Removes blobs no stored manifest reaches. `minAgeMs` spares blobs younger than that (pushes in flight). */
  gc(options?: { minAgeMs?: number }): Promise<GcResult>;
  deleteRepository(repo: string): Promise<void>;
}

interface Parsed {
  kind: 'manifest' | 'index';
  mediaType: string;
  manifest?: ImageManifest;
  index?: ImageIndex;
}

const DEFAULT_LIMITS: ImageStoreLimits = { maxManifestBytes: 4 * 1024 * 1024, maxConfigBytes: 8 * 1024 * 1024 };
const imageConfigTypes: readonly string[] = [MediaType.ociConfig, MediaType.dockerConfig];

export function createImageStore(options: ImageStoreOptions): ImageStore {
  const dir = options.dir;
  const blobs = options.blobs ?? createBlobStore({ dir });
  const limits: ImageStoreLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const platform = options.platform ?? { os: 'linux', architecture: 'amd64' };
  const vetLayer = options.vetLayer;
  const repoRoot = join(dir, 'repositories');
  const vettedDir = join(dir, 'vetted');
  const lock = createLock();
  // Manifests are immutable: a parsed one is good for as long as the process lives.
  const parsedCache = new Map<Digest, Parsed>();

  const repoDir = (repo: string) => join(repoRoot, ...repo.split('/'));
  const markerPath = (repo: string, d: Digest) => join(repoDir(repo), '_manifests', digestHex(d));
  const tagPath = (repo: string, tag: string) => join(repoDir(repo), '_tags', tag);

  const checkRepo = (repo: string) => {
    if (!isRepositoryName(repo)) {
      throw new ShoalError('invalid', `bad repository name ${JSON.stringify(repo)} (lowercase letters, digits, . _ - and /)`, {
        field: 'repository',
      });
    }
  };
  const checkTag = (tag: string) => {
    if (!isTagName(tag)) throw new ShoalError('invalid', `bad tag ${JSON.stringify(tag)}`, { field: 'tag' });
  };
  const parseReference = (reference: string): { digest?: Digest; tag?: string } => {
    if (isDigest(reference)) return { digest: reference };
    if (isTagName(reference)) return { tag: reference };
    throw new ShoalError('invalid', `bad reference ${JSON.stringify(reference)}: neither a tag nor a sha256 digest`, {
      field: 'reference',
    });
  };

  const markerType = async (repo: string, d: Digest): Promise<string | undefined> => {
    try {
      return (await readFile(markerPath(repo, d), 'utf8')).trim();
    } catch (e) {
      if (isNoEnt(e)) return undefined;
      throw e;
    }
  };

  const readTag = async (repo: string, tag: string): Promise<Digest | undefined> => {
    try {
      const d = (await readFile(tagPath(repo, tag), 'utf8')).trim();
      return isDigest(d) ? d : undefined;
    } catch (e) {
      if (isNoEnt(e)) return undefined;
      throw e;
    }
  };

  const writeAtomic = async (path: string, content: string) => {
    const tmp = join(path, '..', `.${randomBytes(8).toString('hex')}.tmp`);
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(tmp, content);
    await rename(tmp, path);
  };

  /** Parses a manifest or index blob already in the store. */
  const parseStored = async (d: Digest, knownType?: string): Promise<Parsed> => {
    const hit = parsedCache.get(d);
    if (hit) return hit;
    const bytes = await readBlob(blobs, d, limits.maxManifestBytes);
    const doc = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    const mediaType = (typeof doc.mediaType === 'string' ? doc.mediaType : knownType) ?? (Array.isArray(doc.manifests) ? MediaType.ociIndex : MediaType.ociManifest);
    const parsed: Parsed = Array.isArray(doc.manifests)
      ? { kind: 'index', mediaType, index: doc as unknown as ImageIndex }
      : { kind: 'manifest', mediaType, manifest: doc as unknown as ImageManifest };
    parsedCache.set(d, parsed);
    return parsed;
  };

  /** Every blob a manifest reaches, itself included (missing children are skipped). */
  const reach = async (d: Digest, into: Set<Digest>, knownType?: string) => {
    if (into.has(d)) return;
    into.add(d);
    let p: Parsed;
    try {
      p = await parseStored(d, knownType);
    } catch {
      return;
    }
    if (p.index) {
      for (const m of p.index.manifests) if (isDigest(m.digest)) await reach(m.digest, into, m.mediaType);
    } else if (p.manifest) {
      if (isDigest(p.manifest.config.digest)) into.add(p.manifest.config.digest);
      for (const l of p.manifest.layers) if (isDigest(l.digest)) into.add(l.digest);
    }
  };

  const listRepositories = async (): Promise<string[]> => {
    const out: string[] = [];
    const walk = async (path: string, name: string) => {
      let entries;
      try {
        entries = await readdir(path, { withFileTypes: true });
      } catch (e) {
        if (isNoEnt(e)) return;
        throw e;
      }
      if (name && entries.some((e) => e.name === '_manifests' || e.name === '_tags')) out.push(name);
      for (const e of entries) {
        if (e.isDirectory() && !e.name.startsWith('_') && !e.name.startsWith('.')) {
          await walk(join(path, e.name), name ? `${name}/${e.name}` : e.name);
        }
      }
    };
    await walk(repoRoot, '');
    return out.sort();
  };

  const listManifests = async (repo: string): Promise<Digest[]> => {
    checkRepo(repo);
    try {
      return (await readdir(join(repoDir(repo), '_manifests')))
        .map((h) => `sha256:${h}`)
        .filter(isDigest)
        .sort();
    } catch (e) {
      if (isNoEnt(e)) return [];
      throw e;
    }
  };

  const tagsOf = async (repo: string): Promise<Map<string, Digest>> => {
    const out = new Map<string, Digest>();
    let names: string[];
    try {
      names = await readdir(join(repoDir(repo), '_tags'));
    } catch (e) {
      if (isNoEnt(e)) return out;
      throw e;
    }
    for (const t of names.sort()) {
      if (!isTagName(t)) continue;
      const d = await readTag(repo, t);
      if (d) out.set(t, d);
    }
    return out;
  };

  const hasRepository = async (repo: string) => {
    if (!isRepositoryName(repo)) return false;
    const d = repoDir(repo);
    return (await exists(join(d, '_manifests'))) || (await exists(join(d, '_tags')));
  };

  /** Every blob reached by any manifest of any repository. */
  const referencedBlobs = async (): Promise<Set<Digest>> => {
    const live = new Set<Digest>();
    for (const repo of await listRepositories()) {
      for (const d of await listManifests(repo)) await reach(d, live, await markerType(repo, d));
    }
    return live;
  };

  const getManifest = async (repo: string, reference: string): Promise<StoredManifest | undefined> => {
    checkRepo(repo);
    const ref = parseReference(reference);
    const digest = ref.digest ?? (await readTag(repo, ref.tag!));
    if (!digest) return undefined;
    const mediaType = await markerType(repo, digest);
    if (mediaType === undefined) return undefined;
    let bytes: Buffer;
    try {
      bytes = await readBlob(blobs, digest, limits.maxManifestBytes);
    } catch (e) {
      if (isShoalError(e) && e.code === 'not-found') return undefined;
      throw e;
    }
    return { bytes, mediaType, digest };
  };

  // ---- manifest PUT: checks -----------------------------------------------------------

  const schemaError = (schema: TSchema, value: unknown, what: string, prefix = ''): ShoalError | undefined => {
    if (Value.Check(schema, value)) return undefined;
    const first = Value.Errors(schema, value).First();
    const path = prefix + (first?.path ?? '').replace(/^\//, '');
    return new ShoalError('invalid', `${what}: ${path || '(root)'}: ${first?.message ?? 'does not match the schema'}`, {
      field: path.replace(/\/$/, '') || prefix.replace(/\/$/, '') || 'manifest',
    });
  };

  const blobUnknown = (d: string, field: string, what: string) =>
    new ShoalError('invalid', `${what} ${d} is not in the store (push it first)`, {
      field,
      detail: { reason: 'blob-unknown', digest: d },
    });

  const checkBlob = async (desc: Descriptor, field: string, what: string) => {
    const info = await blobs.stat(desc.digest as Digest);
    if (!info) throw blobUnknown(desc.digest, `${field}/digest`, what);
    if (info.size !== desc.size) {
      throw new ShoalError('invalid', `${what} ${desc.digest} is ${info.size} bytes, the descriptor says ${desc.size}`, {
        field: `${field}/size`,
      });
    }
  };

  const mediaTypeOf = (doc: Record<string, unknown>, contentType: string | undefined): string => {
    const own = doc.mediaType;
    if (own !== undefined && typeof own !== 'string') {
      throw new ShoalError('invalid', 'manifest mediaType is not a string', { field: 'mediaType' });
    }
    const ct = contentType?.split(';')[0]?.trim().toLowerCase() || undefined;
    const ctIsManifest = ct !== undefined && (manifestMediaTypes.includes(ct) || indexMediaTypes.includes(ct));
    if (own !== undefined && ctIsManifest && own !== ct) {
      throw new ShoalError('invalid', `Content-Type ${ct} disagrees with the manifest's mediaType ${own}`, { field: 'mediaType' });
    }
    const type = own ?? (ctIsManifest ? ct : undefined);
    if (type === undefined) {
      throw new ShoalError('unsupported', `manifest media type unknown: no mediaType in the body and Content-Type is ${ct ?? 'absent'}`, {
        field: 'mediaType',
      });
    }
    if (!manifestMediaTypes.includes(type) && !indexMediaTypes.includes(type)) {
      throw new ShoalError('unsupported', `unsupported manifest media type ${JSON.stringify(type)}`, { field: 'mediaType' });
    }
    return type;
  };

  /** Reads and checks the config of an image manifest; returns its diff_ids (if it is an image config). */
  const checkConfig = async (m: ImageManifest): Promise<string[] | undefined> => {
    const bytes = await readBlob(blobs, m.config.digest as Digest, limits.maxConfigBytes).catch((e: unknown) => {
      if (isShoalError(e) && e.code === 'too-large') throw new ShoalError('too-large', e.message, { field: 'config' });
      throw e;
    });
    let config: unknown;
    try {
      config = JSON.parse(bytes.toString('utf8'));
    } catch (e) {
      throw new ShoalError('invalid', `config ${m.config.digest} is not valid JSON: ${(e as Error).message}`, { field: 'config' });
    }
    if (config === null || typeof config !== 'object' || Array.isArray(config)) {
      throw new ShoalError('invalid', `config ${m.config.digest} is not a JSON object`, { field: 'config' });
    }
    if (!imageConfigTypes.includes(m.config.mediaType)) return undefined;
    const err = schemaError(ImageConfigSchema, config, `config ${m.config.digest}`, 'config/');
    if (err) throw err;
    const diffIds = (config as ImageConfig).rootfs.diff_ids;
    if (diffIds.length !== m.layers.length) {
      throw new ShoalError('invalid', `config lists ${diffIds.length} diff_ids for ${m.layers.length} layers`, {
        field: 'config/rootfs/diff_ids',
      });
    }
    return diffIds;
  };

  const vettedMarker = (d: Digest) => join(vettedDir, digestHex(d));

  /** Runs vetLayer on layers not vetted before; on refusal, removes this image's orphan blobs. */
  const vet = async (m: ImageManifest, diffIds: string[] | undefined) => {
    if (!vetLayer) return;
    for (const [i, layer] of m.layers.entries()) {
      const d = layer.digest as Digest;
      const claimed = diffIds?.[i];
      let remembered: string | undefined;
      try {
        remembered = (await readFile(vettedMarker(d), 'utf8')).trim();
      } catch (e) {
        if (!isNoEnt(e)) throw e;
      }
      if (remembered !== undefined) {
        if (remembered && claimed && remembered !== claimed) {
          throw new ShoalError('invalid', `layer ${d}: the config says diffId ${claimed}, the layer's is ${remembered}`, {
            field: `config/rootfs/diff_ids/${i}`,
          });
        }
        continue;
      }
      let verdict: void | { diffId?: string };
      try {
        verdict = await vetLayer(d, layer.mediaType, { diffId: claimed });
      } catch (e) {
        if (!isShoalError(e)) throw e;
        await lock(() => removeOrphans(m));
        throw new ShoalError(e.code, `layer ${i} (${d}) refused: ${e.message}`, {
          field: `layers/${i}`,
          detail: e.field === undefined ? e.detail : { field: e.field, detail: e.detail },
          cause: e,
        });
      }
      await mkdir(vettedDir, { recursive: true });
      await writeAtomic(vettedMarker(d), verdict?.diffId ?? '');
    }
  };

  /** Deletes this manifest's config and layers unless a stored manifest reaches them. (Under the lock.) */
  const removeOrphans = async (m: ImageManifest) => {
    const live = await referencedBlobs();
    for (const desc of [m.config, ...m.layers]) {
      const d = desc.digest as Digest;
      if (!live.has(d)) {
        await blobs.delete(d);
        await rm(vettedMarker(d), { force: true });
      }
    }
  };

  const putManifest = async (repo: string, reference: string, bytes: Buffer, contentType?: string) => {
    checkRepo(repo);
    const ref = parseReference(reference);
    if (bytes.length > limits.maxManifestBytes) {
      throw new ShoalError('too-large', `manifest is ${bytes.length} bytes (limit ${limits.maxManifestBytes})`, { field: 'manifest' });
    }
    const digest = digestOf(bytes);
    if (ref.digest && ref.digest !== digest) {
      throw new ShoalError('digest-mismatch', `manifest hashes to ${digest}, not ${ref.digest}`, {
        field: 'reference',
        detail: { expected: ref.digest, actual: digest },
      });
    }
    let doc: unknown;
    try {
      doc = JSON.parse(bytes.toString('utf8'));
    } catch (e) {
      throw new ShoalError('invalid', `manifest is not valid JSON: ${(e as Error).message}`, { field: 'manifest' });
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
      throw new ShoalError('invalid', 'manifest is not a JSON object', { field: 'manifest' });
    }
    const mediaType = mediaTypeOf(doc as Record<string, unknown>, contentType);
    const isIndex = indexMediaTypes.includes(mediaType);
    const err = schemaError(isIndex ? ImageIndexSchema : ImageManifestSchema, doc, isIndex ? 'index' : 'manifest');
    if (err) throw err;

    let manifest: ImageManifest | undefined;
    if (isIndex) {
      const index = doc as ImageIndex;
      for (const [i, child] of index.manifests.entries()) {
        if (!manifestMediaTypes.includes(child.mediaType) && !indexMediaTypes.includes(child.mediaType)) {
          throw new ShoalError('unsupported', `manifests/${i}: unsupported media type ${JSON.stringify(child.mediaType)}`, {
            field: `manifests/${i}/mediaType`,
          });
        }
        if ((await markerType(repo, child.digest as Digest)) === undefined) {
          throw blobUnknown(child.digest, `manifests/${i}/digest`, `manifest`);
        }
        await checkBlob(child, `manifests/${i}`, 'manifest');
      }
    } else {
      manifest = doc as ImageManifest;
      if (!configMediaTypes.includes(manifest.config.mediaType)) {
        throw new ShoalError('unsupported', `unsupported config media type ${JSON.stringify(manifest.config.mediaType)}`, {
          field: 'config/mediaType',
        });
      }
      for (const [i, layer] of manifest.layers.entries()) {
        if (!layerMediaTypes.includes(layer.mediaType)) {
          throw new ShoalError('unsupported', `layers/${i}: unsupported layer media type ${JSON.stringify(layer.mediaType)}`, {
            field: `layers/${i}/mediaType`,
          });
        }
      }
      await checkBlob(manifest.config, 'config', 'config');
      for (const [i, layer] of manifest.layers.entries()) await checkBlob(layer, `layers/${i}`, 'layer');
      const diffIds = await checkConfig(manifest);
      await vet(manifest, diffIds);
    }

    return lock(async () => {
      // gc may have run while we vetted: check the children once more, under the lock.
      if (manifest) {
        await checkBlob(manifest.config, 'config', 'config');
        for (const [i, layer] of manifest.layers.entries()) await checkBlob(layer, `layers/${i}`, 'layer');
      }
      await writeBlob(blobs, bytes, digest);
      await mkdir(join(repoDir(repo), '_manifests'), { recursive: true });
      await writeAtomic(markerPath(repo, digest), mediaType);
      if (ref.tag) await writeAtomic(tagPath(repo, ref.tag), digest);
      return { digest, mediaType };
    });
  };

  // ---- resolve / inspect ----------------------------------------------------------------

  const open = async (ref: ImageRef) => {
    checkRepo(ref.repository);
    const reference = ref.digest ?? ref.tag ?? 'latest';
    const top = await getManifest(ref.repository, reference);
    if (!top) {
      throw new ShoalError('not-found', `image ${formatImageRef(ref)} not found`, { field: 'reference' });
    }
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
      const bytes = await readBlob(blobs, manifestDigest, limits.maxManifestBytes);
      manifest = JSON.parse(bytes.toString('utf8')) as ImageManifest;
    } else {
      manifest = doc as ImageManifest;
    }
    if (!imageConfigTypes.includes(manifest.config.mediaType)) {
      throw new ShoalError('unsupported', `image ${formatImageRef(ref)} is not a runnable image (config type ${manifest.config.mediaType})`, {
        field: 'reference',
      });
    }
    const configDigest = manifest.config.digest as Digest;
    const config = JSON.parse((await readBlob(blobs, configDigest, limits.maxConfigBytes)).toString('utf8')) as ImageConfig;
    const layers: LayerInfo[] = manifest.layers.map((l, i) => ({
      digest: l.digest as Digest,
      size: l.size,
      mediaType: l.mediaType,
      diffId: config.rootfs.diff_ids[i] ?? '',
    }));
    return { top, index, manifestDigest, manifest, configDigest, config, layers };
  };

  const resolve = async (ref: ImageRef): Promise<RootfsSpec> => {
    const { manifestDigest, configDigest, config, layers } = await open(ref);
    const c = config.config ?? {};
    return {
      manifestDigest,
      configDigest,
      layers: layers.map((l) => ({ digest: l.digest, diffId: l.diffId, size: l.size, mediaType: l.mediaType })),
      process: {
        args: [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])],
        env: c.Env ?? [],
        cwd: c.WorkingDir || '/',
        user: c.User || undefined,
      },
    };
  };

  const inspect = async (ref: ImageRef): Promise<ImageInspection> => {
    const o = await open(ref);
    const tags = [...(await tagsOf(ref.repository))].filter(([, d]) => d === o.top.digest).map(([t]) => t);
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
  };

  // ---- the rest -------------------------------------------------------------------------

  const store: ImageStore = {
    blobs,
    limits,
    putManifest,
    getManifest,
    hasRepository,
    listRepositories,
    listManifests,
    resolve,
    inspect,

    async deleteManifest(repo, reference) {
      checkRepo(repo);
      const ref = parseReference(reference);
      await lock(async () => {
        if (ref.tag) {
          if (!(await readTag(repo, ref.tag))) {
            throw new ShoalError('not-found', `tag ${repo}:${ref.tag} not found`, { field: 'reference' });
          }
          await rm(tagPath(repo, ref.tag), { force: true });
          return;
        }
        const d = ref.digest!;
        if ((await markerType(repo, d)) === undefined) {
          throw new ShoalError('not-found', `manifest ${repo}@${d} not found`, { field: 'reference' });
        }
        for (const [t, td] of await tagsOf(repo)) if (td === d) await rm(tagPath(repo, t), { force: true });
        await rm(markerPath(repo, d), { force: true });
      });
    },

    async listTags(repo) {
      checkRepo(repo);
      if (!(await hasRepository(repo))) throw new ShoalError('not-found', `repository ${repo} not found`, { field: 'repository' });
      return [...(await tagsOf(repo)).keys()];
    },

    async tag(repo, digest, tag) {
      checkRepo(repo);
      checkTag(tag);
      if (!isDigest(digest)) throw new ShoalError('invalid', `not a sha256 digest: ${JSON.stringify(digest)}`, { field: 'digest' });
      await lock(async () => {
        if ((await markerType(repo, digest)) === undefined) {
          // Tagging across repositories: adopt the manifest (and an index's children).
          let found: string | undefined;
          for (const r of await listRepositories()) {
            if ((await markerType(r, digest)) !== undefined) {
              found = r;
              break;
            }
          }
          const from = found;
          if (!from) throw new ShoalError('not-found', `manifest ${digest} is not in the store`, { field: 'digest' });
          const adopt = async (d: Digest) => {
            const type = (await markerType(from, d)) ?? (await parseStored(d)).mediaType;
            const p = await parseStored(d, type);
            if (p.index) for (const m of p.index.manifests) await adopt(m.digest as Digest);
            await mkdir(join(repoDir(repo), '_manifests'), { recursive: true });
            await writeAtomic(markerPath(repo, d), type);
          };
          await adopt(digest);
        }
        await writeAtomic(tagPath(repo, tag), digest);
      });
    },

    async listImages() {
      const out: ImageSummary[] = [];
      for (const repo of await listRepositories()) {
        const tags = await tagsOf(repo);
        for (const d of await listManifests(repo)) {
          const mediaType = (await markerType(repo, d)) ?? '';
          const reached = new Set<Digest>();
          await reach(d, reached, mediaType);
          let size = 0;
          for (const b of reached) size += (await blobs.stat(b))?.size ?? 0;
          out.push({
            repository: repo,
            digest: d,
            mediaType,
            tags: [...tags].filter(([, td]) => td === d).map(([t]) => t),
            size,
          });
        }
      }
      return out;
    },

    async gc(opts = {}) {
      const cutoff = Date.now() - (opts.minAgeMs ?? 0);
      return lock(async () => {
        const live = await referencedBlobs();
        let removedBlobs = 0;
        let freedBytes = 0;
        for (const b of await blobs.list()) {
          if (live.has(b.digest)) continue;
          if (opts.minAgeMs) {
            const st = await stat(blobs.path(b.digest)).catch(() => undefined);
            if (!st || st.mtimeMs > cutoff) continue;
          }
          if (await blobs.delete(b.digest)) {
            removedBlobs++;
            freedBytes += b.size;
          }
          parsedCache.delete(b.digest);
          await rm(vettedMarker(b.digest), { force: true });
        }
        return { removedBlobs, freedBytes };
      });
    },

    async deleteRepository(repo) {
      checkRepo(repo);
      await lock(async () => {
        if (!(await hasRepository(repo))) throw new ShoalError('not-found', `repository ${repo} not found`, { field: 'repository' });
        const d = repoDir(repo);
        await rm(join(d, '_tags'), { recursive: true, force: true });
        await rm(join(d, '_manifests'), { recursive: true, force: true });
        // Remove now-empty parents, but never a directory another repository lives under.
        let path = d;
        while (path !== repoRoot && path.startsWith(repoRoot)) {
          try {
            await rmdir(path);
          } catch {
            break;
          }
          path = join(path, '..');
        }
      });
    },
  };
  return store;
}

/** One mutation at a time (put's final write, delete, tag, gc): a promise chain. */
function createLock() {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn);
    tail = run.catch(() => {});
    return run;
  };
}
