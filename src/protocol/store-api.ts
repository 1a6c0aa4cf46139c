// The store's own control API (/api/v1/): listing, inspecting, tagging, deleting and
// collecting images. TypeBox: each schema is also the static type; the store's OpenAPI
// document embeds them, and the CLI and dashboard read replies with the same types.
import { Type, type Static } from '@sinclair/typebox';
import { ImageConfig, ImageIndex, ImageManifest } from './oci.ts';

const Digest = Type.String({ pattern: '^sha256:[a-f0-9]{64}$' });

export const ImageSummary = Type.Object({
  repository: Type.String(),
  digest: Digest,
  mediaType: Type.String(),
  /** Tags of the repository that point at this manifest. */
  tags: Type.Array(Type.String()),
  /** Bytes of every blob this manifest reaches (itself, configs, layers), each counted once. */
  size: Type.Integer(),
});
export type ImageSummary = Static<typeof ImageSummary>;

export const ImageList = Type.Object({ images: Type.Array(ImageSummary) });
export type ImageList = Static<typeof ImageList>;

export const LayerInfo = Type.Object({
  digest: Digest,
  size: Type.Integer(),
  mediaType: Type.String(),
  diffId: Type.String(),
});
export type LayerInfo = Static<typeof LayerInfo>;

export const ImageInspection = Type.Object({
  repository: Type.String(),
  /** What was asked for, normalised (NAME:TAG, NAME@DIGEST or template://N/V). */
  reference: Type.String(),
  /** What the reference resolves to (an index's digest for a multi-platform image). */
  digest: Digest,
  mediaType: Type.String(),
  tags: Type.Array(Type.String()),
  index: Type.Optional(ImageIndex),
  /** The platform manifest; equal to `digest` unless the image is an index. */
  manifestDigest: Digest,
  manifest: ImageManifest,
  configDigest: Digest,
  config: ImageConfig,
  platform: Type.Object({ os: Type.String(), architecture: Type.String() }),
  created: Type.Optional(Type.String()),
  layers: Type.Array(LayerInfo),
  /** Compressed bytes of config + layers: what a host with an empty cache pulls. */
  totalSize: Type.Integer(),
});
export type ImageInspection = Static<typeof ImageInspection>;

export const RepositoryList = Type.Object({
  repositories: Type.Array(
    Type.Object({
      name: Type.String(),
      tags: Type.Array(Type.Object({ tag: Type.String(), digest: Digest })),
    }),
  ),
});
export type RepositoryList = Static<typeof RepositoryList>;

export const TagRequest = Type.Object(
  {
    /** An image reference: NAME:TAG, NAME@DIGEST or template://N/V. */
    source: Type.String({ minLength: 1, maxLength: 512 }),
    /** Where to point: NAME:TAG or template://N/V (no digest). */
    target: Type.String({ minLength: 1, maxLength: 512 }),
  },
  { additionalProperties: false },
);
export type TagRequest = Static<typeof TagRequest>;

export const TagResult = Type.Object({ repository: Type.String(), tag: Type.String(), digest: Digest });
export type TagResult = Static<typeof TagResult>;

export const DeleteResult = Type.Object({
  repository: Type.String(),
  /** What was removed: a tag, or a manifest (with every tag on it). */
  removed: Type.Union([Type.Object({ tag: Type.String() }), Type.Object({ digest: Digest })]),
});
export type DeleteResult = Static<typeof DeleteResult>;

export const GcRequest = Type.Object(
  {
    /** Spare unreferenced blobs younger than this (pushes still in flight). Default 0. */
    minAgeMs: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);
export type GcRequest = Static<typeof GcRequest>;

export const GcResult = Type.Object({ removedBlobs: Type.Integer(), freedBytes: Type.Integer() });
export type GcResult = Static<typeof GcResult>;

/** src/protocol/oci.ts RootfsSpec as a schema (what a host needs to build a root). */
export const RootfsSpecSchema = Type.Object({
  manifestDigest: Type.String(),
  configDigest: Type.String(),
  layers: Type.Array(Type.Object({ digest: Type.String(), diffId: Type.String(), size: Type.Integer(), mediaType: Type.String() })),
  process: Type.Object({
    args: Type.Array(Type.String()),
    env: Type.Array(Type.String()),
    cwd: Type.String(),
    user: Type.Optional(Type.String()),
  }),
  driver: Type.Optional(Type.String()),
});

export { ErrorBodySchema as ErrorReply } from './error-body.ts';

/**
 * Captured instance states live apart from images, under this repository prefix: a state
 * holds a running service's memory (its secrets included), so reading one needs a deploy
 * token even where anonymous image pulls are open (src/provider/auth/policy.ts).
 */
export const STATE_REPOSITORY_PREFIX = 'shoal-state';

/** The repository holding the states of instances of `imageRepository`. */
export function stateRepository(imageRepository: string): string {
  return `${STATE_REPOSITORY_PREFIX}/${imageRepository}`;
}
