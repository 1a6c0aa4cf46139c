// The OCI 1.1 referrers of a manifest: the manifests in a repository whose `subject`
// names it (signatures, SBOMs, attestations). Computed from the stored documents on
// each call, so it can never disagree with them (parsed documents are cached).
import type { Digest } from '../../protocol/index.ts';
import { MediaType, type Descriptor, type ImageIndex } from '../../protocol/index.ts';
import type { DocumentReader } from './documents.ts';
import type { RepoLayout } from './layout.ts';

export interface Referrers {
  index: ImageIndex;
  /** The filters applied (for the OCI-Filters-Applied header). */
  filtersApplied: string[];
}

/** An empty list when the repository or the subject is unknown, as the distribution spec says. */
export async function listReferrers(
  deps: { layout: RepoLayout; reader: DocumentReader },
  repo: string,
  subject: Digest,
  filter: { artifactType?: string | undefined } = {},
): Promise<Referrers> {
  const manifests: Descriptor[] = [];
  for (const d of await deps.layout.listManifests(repo)) {
    const doc = await deps.reader.read(d, await deps.layout.markerType(repo, d));
    if (doc.subject?.digest !== subject) continue;
    // The artifact's type: its own field, else an image manifest's config media type.
    const artifactType = doc.artifactType ?? doc.manifest?.config.mediaType;
    if (filter.artifactType !== undefined && artifactType !== filter.artifactType) continue;
    manifests.push({
      mediaType: doc.mediaType,
      digest: d,
      size: doc.size,
      ...(artifactType === undefined ? {} : { artifactType }),
      ...(doc.annotations ? { annotations: doc.annotations } : {}),
    });
  }
  return {
    index: { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests },
    filtersApplied: filter.artifactType === undefined ? [] : ['artifactType'],
  };
}
