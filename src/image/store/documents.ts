// Reading manifests and indexes already in the store, and the blobs they reach. Stored
// documents were checked when they were put and are immutable, so a parsed one is
// cached for as long as the process lives (gc forgets the ones it deletes).
import { readBlob, type BlobReader } from '../blob-store.ts';
import { isDigest, type Digest, isShoalError, ShoalError, MediaType, type Descriptor, type ImageIndex, type ImageManifest } from '../../protocol/index.ts';
import type { RepoLayout } from './layout.ts';

export interface StoredDocument {
  kind: 'manifest' | 'index';
  mediaType: string;
  /** Bytes of the document (what a descriptor of it says as `size`). */
  size: number;
  manifest?: ImageManifest;
  index?: ImageIndex;
  /** OCI 1.1: what the document says it is about, and what kind of artifact it is. */
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface DocumentReader {
  /** Parses a stored manifest or index; `knownType` when the document does not say. */
  read(digest: Digest, knownType?: string): Promise<StoredDocument>;
  /** Adds every blob `digest` reaches, itself included; children not in the store are skipped. */
  reach(digest: Digest, into: Set<Digest>, knownType?: string): Promise<void>;
  forget(digest: Digest): void;
}

export function createDocumentReader(options: { blobs: BlobReader; maxManifestBytes: number }): DocumentReader {
  const cache = new Map<Digest, StoredDocument>();

  const read = async (d: Digest, knownType?: string): Promise<StoredDocument> => {
    const hit = cache.get(d);
    if (hit) return hit;
    const bytes = await readBlob(options.blobs, d, options.maxManifestBytes);
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new ShoalError('internal', `stored manifest ${d} is not JSON: ${(e as Error).message}`, { cause: e });
    }
    const isIndex = Array.isArray(doc.manifests);
    const mediaType = (typeof doc.mediaType === 'string' ? doc.mediaType : knownType) ?? (isIndex ? MediaType.ociIndex : MediaType.ociManifest);
    const parsed: StoredDocument = {
      kind: isIndex ? 'index' : 'manifest',
      mediaType,
      size: bytes.length,
      ...(isIndex ? { index: doc as unknown as ImageIndex } : { manifest: doc as unknown as ImageManifest }),
      ...(isDescriptor(doc.subject) ? { subject: doc.subject } : {}),
      ...(typeof doc.artifactType === 'string' ? { artifactType: doc.artifactType } : {}),
      ...(isStringRecord(doc.annotations) ? { annotations: doc.annotations } : {}),
    };
    cache.set(d, parsed);
    return parsed;
  };

  const reach = async (d: Digest, into: Set<Digest>, knownType?: string): Promise<void> => {
    if (into.has(d)) return;
    into.add(d);
    let p: StoredDocument;
    try {
      p = await read(d, knownType);
    } catch (e) {
      // An index may name a child that is gone; anything else must stop a gc, not shrink what it keeps.
      if (isShoalError(e) && e.code === 'not-found') return;
      throw e;
    }
    if (p.index) {
      for (const m of p.index.manifests) if (isDigest(m.digest)) await reach(m.digest, into, m.mediaType);
    } else if (p.manifest) {
      if (isDigest(p.manifest.config.digest)) into.add(p.manifest.config.digest);
      for (const l of p.manifest.layers) if (isDigest(l.digest)) into.add(l.digest);
    }
  };

  return { read, reach, forget: (d) => cache.delete(d) };
}

/** Every blob reached by any manifest of any repository. */
export async function referencedBlobs(layout: RepoLayout, reader: DocumentReader): Promise<Set<Digest>> {
  const live = new Set<Digest>();
  for (const repo of await layout.listRepositories()) {
    for (const d of await layout.listManifests(repo)) await reader.reach(d, live, await layout.markerType(repo, d));
  }
  return live;
}

function isDescriptor(v: unknown): v is Descriptor {
  if (v === null || typeof v !== 'object') return false;
  const o = v as Record<string, unknown>;
  return typeof o.mediaType === 'string' && typeof o.digest === 'string' && typeof o.size === 'number';
}

function isStringRecord(v: unknown): v is Record<string, string> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');
}
