// Manifests, tags and repositories on top of the blob store, as plain files (no
// database). This file is the wiring; each job is a module of its own in ./store/:
//
//   layout.ts          where repositories, markers and tags live on disk
//   manifest-check.ts  what a manifest PUT checks before anything is written
//   documents.ts       reading stored manifests and indexes, the blobs they reach
//   referrers.ts       OCI 1.1 referrers of a manifest (its `subject` back-links)
//   images.ts          a reference to a runnable image: RootfsSpec and inspection
//   vetting.ts         vetting the layers of an image that is to run, once per digest
//   gc.ts              removing blobs no manifest reaches
//
//   dir/repositories/…   the layout (layout.ts)
//   dir/vetted/<hex>     a layer's verdict (vetting.ts)
//
// A manifest PUT checks everything before it writes anything, and never deletes: a
// refused manifest leaves the store as it was, so a blob another client's push, an
// upload session or a stored manifest needs is never lost to it. Only gc deletes blobs.
import { join } from 'node:path';
import { createBlobStore, readBlob, writeBlob, type BlobStore } from './blob-store.ts';
import { isDigest, type Digest, ShoalError, isShoalError, layerMediaTypes, type RootfsSpec } from '../protocol/index.ts';
import type { ImageRef, GcResult, ImageInspection, ImageSummary, LayerInfo } from '../protocol/index.ts';
import { createDocumentReader } from './store/documents.ts';
import { collectGarbage } from './store/gc.ts';
import { openImage, toInspection, toRootfsSpec, type Platform, type StoredManifest } from './store/images.ts';
import { createRepoLayout } from './store/layout.ts';
import { createLock } from './store/lock.ts';
import { checkBlob, checkManifest } from './store/manifest-check.ts';
import { checkRepo, checkTag, parseReference } from './store/names.ts';
import { listReferrers, type Referrers } from './store/referrers.ts';
import { createLayerVetting, type VetLayer, type Verdict } from './store/vetting.ts';

export type { GcResult, ImageInspection, ImageSummary, LayerInfo, Referrers, StoredManifest, VetLayer, Verdict };

export interface ImageStoreLimits {
  /** Largest manifest or index accepted (default 4 MiB, as the distribution registry). */
  maxManifestBytes: number;
  /** Largest image config read (default 8 MiB). */
  maxConfigBytes: number;
}

export interface ImageStoreOptions {
  dir: string;
  /** Share a blob store; default: one in `dir`. */
  blobs?: BlobStore;
  limits?: Partial<ImageStoreLimits>;
  /** Vets the layers of an image when it is resolved to run (once per digest). */
  vetLayer?: VetLayer;
  /** The platform picked from an index (default linux/amd64). */
  platform?: Platform;
}

export interface ImageStore {
  readonly blobs: BlobStore;
  readonly limits: ImageStoreLimits;
  /** `reference` is a tag or the manifest's digest. Checks everything, then stores; never deletes. */
  putManifest(repo: string, reference: string, bytes: Buffer, contentType?: string): Promise<PutResult>;
  getManifest(repo: string, reference: string): Promise<StoredManifest | undefined>;
  /** By digest: the manifest leaves the repository with every tag on it. By tag: only the tag goes. */
  deleteManifest(repo: string, reference: string): Promise<void>;
  /** Whether the repository holds anything (a manifest or a tag). */
  hasRepository(repo: string): Promise<boolean>;
  listRepositories(): Promise<string[]>;
  /** Sorted; throws 'not-found' for an unknown repository. */
  listTags(repo: string): Promise<string[]>;
  listManifests(repo: string): Promise<Digest[]>;
  /** The manifests of `repo` whose `subject` is `digest` (OCI 1.1 referrers), optionally of one artifactType. */
  referrers(repo: string, digest: Digest, filter?: { artifactType?: string }): Promise<Referrers>;
  /** Points `tag` at `digest` (moving it if it pointed elsewhere). The manifest may live in another repository. */
  tag(repo: string, digest: Digest, tag: string): Promise<void>;
  /** For a deployment: the image's RootfsSpec, after its layers passed vetting (once per layer digest). */
  resolve(ref: ImageRef): Promise<RootfsSpec>;
  inspect(ref: ImageRef): Promise<ImageInspection>;
  listImages(): Promise<ImageSummary[]>;
  /** Removes blobs no stored manifest reaches. `minAgeMs` spares blobs younger than that (pushes in flight). */
  gc(options?: { minAgeMs?: number }): Promise<GcResult>;
  deleteRepository(repo: string): Promise<void>;
}

export interface PutResult {
  digest: Digest;
  mediaType: string;
  /** The manifest's `subject`, when it has one (the registry answers with OCI-Subject). */
  subject?: Digest;
}

const DEFAULT_LIMITS: ImageStoreLimits = { maxManifestBytes: 4 * 1024 * 1024, maxConfigBytes: 8 * 1024 * 1024 };

export function createImageStore(options: ImageStoreOptions): ImageStore {
  const blobs = options.blobs ?? createBlobStore({ dir: options.dir });
  const limits: ImageStoreLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const platform = options.platform ?? { os: 'linux', architecture: 'amd64' };
  const layout = createRepoLayout(join(options.dir, 'repositories'));
  const reader = createDocumentReader({ blobs, maxManifestBytes: limits.maxManifestBytes });
  const vetting = createLayerVetting({ dir: join(options.dir, 'vetted'), vetLayer: options.vetLayer });
  const lock = createLock();

  const getManifest = async (repo: string, reference: string): Promise<StoredManifest | undefined> => {
    checkRepo(repo);
    const ref = parseReference(reference);
    const digest = ref.tag === undefined ? ref.digest : await layout.readTag(repo, ref.tag);
    if (!digest) return undefined;
    const mediaType = await layout.markerType(repo, digest);
    if (mediaType === undefined) return undefined;
    try {
      return { bytes: await readBlob(blobs, digest, limits.maxManifestBytes), mediaType, digest };
    } catch (e) {
      if (isShoalError(e) && e.code === 'not-found') return undefined;
      throw e;
    }
  };

  const open = (ref: ImageRef) => {
    checkRepo(ref.repository);
    return openImage({ blobs, limits, platform, getManifest }, ref);
  };

  return {
    blobs,
    limits,
    getManifest,
    listRepositories: () => layout.listRepositories(),
    hasRepository: (repo) => layout.hasRepository(repo),

    async putManifest(repo, reference, bytes, contentType) {
      checkRepo(repo);
      const ref = parseReference(reference);
      const holdsManifest = async (d: Digest) => (await layout.markerType(repo, d)) !== undefined;
      const checked = await checkManifest({ blobs, limits, holdsManifest }, ref, bytes, contentType);
      return lock(async () => {
        // gc may have run since the checks: look for the children once more, under the lock.
        for (const c of checked.children) await checkBlob(blobs, c.desc, c.field, c.what);
        await writeBlob(blobs, bytes, checked.digest);
        await layout.writeMarker(repo, checked.digest, checked.mediaType);
        if (ref.tag) await layout.writeTag(repo, ref.tag, checked.digest);
        return { digest: checked.digest, mediaType: checked.mediaType, ...(checked.subject ? { subject: checked.subject } : {}) };
      });
    },

    async listManifests(repo) {
      checkRepo(repo);
      return layout.listManifests(repo);
    },

    async referrers(repo, digest, filter = {}) {
      checkRepo(repo);
      if (!isDigest(digest)) throw new ShoalError('invalid', `not a sha256 digest: ${JSON.stringify(digest)}`, { field: 'digest' });
      return listReferrers({ layout, reader }, repo, digest, filter);
    },

    async resolve(ref) {
      const o = await open(ref);
      for (const [i, l] of o.layers.entries()) {
        if (!layerMediaTypes.includes(l.mediaType)) {
          throw new ShoalError('unsupported', `layer ${i} has media type ${JSON.stringify(l.mediaType)}, which is not a layer a host can unpack`, {
            field: `layers/${i}/mediaType`,
          });
        }
      }
      await vetting.check(o.layers.map((l) => ({ digest: l.digest as Digest, mediaType: l.mediaType, diffId: l.diffId })));
      return toRootfsSpec(o);
    },

    async inspect(ref) {
      const o = await open(ref);
      const tags = [...(await layout.tagsOf(ref.repository))].filter(([, d]) => d === o.top.digest).map(([t]) => t);
      return toInspection(o, ref, tags, platform);
    },

    async deleteManifest(repo, reference) {
      checkRepo(repo);
      const ref = parseReference(reference);
      await lock(async () => {
        if (ref.tag !== undefined) {
          if (!(await layout.readTag(repo, ref.tag))) {
            throw new ShoalError('not-found', `tag ${repo}:${ref.tag} not found`, { field: 'reference' });
          }
          await layout.removeTag(repo, ref.tag);
          return;
        }
        const d = ref.digest;
        if ((await layout.markerType(repo, d)) === undefined) {
          throw new ShoalError('not-found', `manifest ${repo}@${d} not found`, { field: 'reference' });
        }
        for (const [t, td] of await layout.tagsOf(repo)) if (td === d) await layout.removeTag(repo, t);
        await layout.removeMarker(repo, d);
      });
    },

    async listTags(repo) {
      checkRepo(repo);
      if (!(await layout.hasRepository(repo))) throw new ShoalError('not-found', `repository ${repo} not found`, { field: 'repository' });
      return [...(await layout.tagsOf(repo)).keys()];
    },

    async tag(repo, digest, tag) {
      checkRepo(repo);
      checkTag(tag);
      if (!isDigest(digest)) throw new ShoalError('invalid', `not a sha256 digest: ${JSON.stringify(digest)}`, { field: 'digest' });
      await lock(async () => {
        if ((await layout.markerType(repo, digest)) === undefined) await adopt(repo, digest);
        await layout.writeTag(repo, tag, digest);
      });
    },

    async listImages() {
      const out: ImageSummary[] = [];
      for (const repo of await layout.listRepositories()) {
        const tags = await layout.tagsOf(repo);
        for (const d of await layout.listManifests(repo)) {
          const mediaType = (await layout.markerType(repo, d)) ?? '';
          const reached = new Set<Digest>();
          await reader.reach(d, reached, mediaType);
          let size = 0;
          for (const b of reached) size += (await blobs.stat(b))?.size ?? 0;
          out.push({ repository: repo, digest: d, mediaType, tags: [...tags].filter(([, td]) => td === d).map(([t]) => t), size });
        }
      }
      return out;
    },

    gc(opts = {}) {
      return lock(() => collectGarbage({ layout, reader, blobs, vetting }, { minAgeMs: opts.minAgeMs, now: Date.now() }));
    },

    async deleteRepository(repo) {
      checkRepo(repo);
      await lock(async () => {
        if (!(await layout.hasRepository(repo))) throw new ShoalError('not-found', `repository ${repo} not found`, { field: 'repository' });
        await layout.removeRepository(repo);
      });
    },
  };

  /** Tagging across repositories: `repo` adopts the manifest (and an index's children) from the repository holding it. Under the lock. */
  async function adopt(repo: string, digest: Digest): Promise<void> {
    let from: string | undefined;
    for (const r of await layout.listRepositories()) {
      if ((await layout.markerType(r, digest)) !== undefined) {
        from = r;
        break;
      }
    }
    if (!from) throw new ShoalError('not-found', `manifest ${digest} is not in the store`, { field: 'digest' });
    const source = from;
    const walk = async (d: Digest) => {
      const type = (await layout.markerType(source, d)) ?? (await reader.read(d)).mediaType;
      const doc = await reader.read(d, type);
      if (doc.index) for (const m of doc.index.manifests) await walk(m.digest as Digest);
      await layout.writeMarker(repo, d, type);
    };
    await walk(digest);
  }
}
