// OCI image-spec and Docker schema 2 documents, as TypeBox schemas (the schema and the
// static type are one object). Both families are accepted because `docker save` and
// skopeo produce Docker media types as often as OCI ones.
import { Type, type Static } from '@sinclair/typebox';

export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerTar: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerLayerForeign: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

export const manifestMediaTypes: readonly string[] = [MediaType.ociManifest, MediaType.dockerManifest];
export const indexMediaTypes: readonly string[] = [MediaType.ociIndex, MediaType.dockerManifestList];
export const configMediaTypes: readonly string[] = [MediaType.ociConfig, MediaType.dockerConfig, MediaType.ociEmpty];
export const layerMediaTypes: readonly string[] = [
  MediaType.ociLayerTar,
  MediaType.ociLayerGzip,
  MediaType.ociLayerZstd,
  MediaType.dockerLayerGzip,
  MediaType.dockerLayerForeign,
];

const DigestString = Type.String({ pattern: '^sha256:[a-f0-9]{64}$' });

export const Descriptor = Type.Object({
  mediaType: Type.String({ minLength: 1 }),
  digest: DigestString,
  size: Type.Integer({ minimum: 0 }),
  urls: Type.Optional(Type.Array(Type.String())),
  annotations: Type.Optional(Type.Record(Type.String(), Type.String())),
  platform: Type.Optional(
    Type.Object({
      architecture: Type.String(),
      os: Type.String(),
      variant: Type.Optional(Type.String()),
    }),
  ),
  artifactType: Type.Optional(Type.String()),
});
export type Descriptor = Static<typeof Descriptor>;

export const ImageManifest = Type.Object({
  schemaVersion: Type.Literal(2),
  mediaType: Type.Optional(Type.String()),
  artifactType: Type.Optional(Type.String()),
  config: Descriptor,
  layers: Type.Array(Descriptor),
  subject: Type.Optional(Descriptor),
  annotations: Type.Optional(Type.Record(Type.String(), Type.String())),
});
export type ImageManifest = Static<typeof ImageManifest>;

export const ImageIndex = Type.Object({
  schemaVersion: Type.Literal(2),
  mediaType: Type.Optional(Type.String()),
  manifests: Type.Array(Descriptor),
  annotations: Type.Optional(Type.Record(Type.String(), Type.String())),
});
export type ImageIndex = Static<typeof ImageIndex>;

/** The part of the image config Shoal reads; other fields are kept as they are. */
export const ImageConfig = Type.Object(
  {
    architecture: Type.Optional(Type.String()),
    os: Type.Optional(Type.String()),
    created: Type.Optional(Type.String()),
    config: Type.Optional(
      Type.Object(
        {
          User: Type.Optional(Type.String()),
          Env: Type.Optional(Type.Array(Type.String())),
          Entrypoint: Type.Optional(Type.Union([Type.Array(Type.String()), Type.Null()])),
          Cmd: Type.Optional(Type.Union([Type.Array(Type.String()), Type.Null()])),
          WorkingDir: Type.Optional(Type.String()),
          Labels: Type.Optional(Type.Union([Type.Record(Type.String(), Type.String()), Type.Null()])),
        },
        { additionalProperties: true },
      ),
    ),
    rootfs: Type.Object({
      type: Type.Literal('layers'),
      diff_ids: Type.Array(DigestString),
    }),
    history: Type.Optional(Type.Array(Type.Object({}, { additionalProperties: true }))),
  },
  { additionalProperties: true },
);
export type ImageConfig = Static<typeof ImageConfig>;

/**
 * What the image part hands a host to build a root file system: the layers in order
 * (lowest first) and what the config says to run. The host needs nothing else of OCI.
 */
/** Image config label naming the driver a component image is for (issue 13): `isolate`, `wasm`. */
export const COMPONENT_DRIVER_LABEL = 'dev.shoal.driver';
/** Image config label naming a component image's entry module (also its Cmd). */
export const COMPONENT_ENTRY_LABEL = 'dev.shoal.entry';

export interface RootfsSpec {
  /** Manifest digest: what a deployment records. */
  manifestDigest: string;
  configDigest: string;
  layers: Array<{ digest: string; diffId: string; size: number; mediaType: string }>;
  process: { args: string[]; env: string[]; cwd: string; user: string | undefined };
  /** A component image's driver (its COMPONENT_DRIVER_LABEL): only that driver runs it. Unset for ordinary images. */
  driver?: string;
}
