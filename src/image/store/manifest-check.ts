// Everything a manifest PUT checks before the store writes anything: size, digest,
// JSON, media type, schema, and that every blob it names is in the store at the size
// its descriptor says. What the image and distribution specs allow is accepted: any
// config and layer media type (OCI 1.1 artifacts: Helm charts, SBOMs, signatures, with
// `artifactType`, the empty config and `subject`). An image config is checked as one,
// since an image may be run; layers are not read here (vetting happens when an image
// is resolved to run: see vetting.ts).
import { Value } from '@sinclair/typebox/value';
import type { TSchema } from '@sinclair/typebox';
import { readBlob, type BlobReader } from '../blob-store.ts';
import {
  digestOf,
  type Digest,
  isShoalError,
  ShoalError,
  Descriptor as DescriptorSchema,
  ImageConfig as ImageConfigSchema,
  ImageIndex as ImageIndexSchema,
  ImageManifest as ImageManifestSchema,
  indexMediaTypes,
  manifestMediaTypes,
  MediaType,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
} from '../../protocol/index.ts';
import type { Reference } from './names.ts';

export const imageConfigTypes: readonly string[] = [MediaType.ociConfig, MediaType.dockerConfig];

export interface CheckLimits {
  maxManifestBytes: number;
  maxConfigBytes: number;
}

export interface CheckedManifest {
  digest: Digest;
  mediaType: string;
  /** Blobs the document names, to look for once more under the store's lock. */
  children: Array<{ desc: Descriptor; field: string; what: string }>;
  /** OCI 1.1: the manifest this one refers to (it need not be in the store). */
  subject: Digest | undefined;
}

export interface CheckDeps {
  blobs: BlobReader;
  limits: CheckLimits;
  /** Whether the repository holds a manifest (an index's children must be in it). */
  holdsManifest(digest: Digest): Promise<boolean>;
}

export function schemaError(schema: TSchema, value: unknown, what: string, prefix = ''): ShoalError | undefined {
  if (Value.Check(schema, value)) return undefined;
  const first = Value.Errors(schema, value).First();
  const path = prefix + (first?.path ?? '').replace(/^\//, '');
  return new ShoalError('invalid', `${what}: ${path || '(root)'}: ${first?.message ?? 'does not match the schema'}`, {
    field: path.replace(/\/$/, '') || prefix.replace(/\/$/, '') || 'manifest',
  });
}

export function blobUnknown(d: string, field: string, what: string): ShoalError {
  return new ShoalError('invalid', `${what} ${d} is not in the store (push it first)`, {
    field,
    detail: { reason: 'blob-unknown', digest: d },
  });
}

export async function checkBlob(blobs: BlobReader, desc: Descriptor, field: string, what: string): Promise<void> {
  const info = await blobs.stat(desc.digest as Digest);
  if (!info) throw blobUnknown(desc.digest, `${field}/digest`, what);
  if (info.size !== desc.size) {
    throw new ShoalError('invalid', `${what} ${desc.digest} is ${info.size} bytes, the descriptor says ${desc.size}`, {
      field: `${field}/size`,
    });
  }
}

/** The document's media type, from its own field or the Content-Type; refuses what is not a manifest or index. */
export function mediaTypeOf(doc: Record<string, unknown>, contentType: string | undefined): string {
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
}

/** Reads and checks an image config: JSON, the schema, one diff_id per layer. Other configs are not read. */
export async function checkImageConfig(blobs: BlobReader, m: ImageManifest, maxConfigBytes: number): Promise<void> {
  if (!imageConfigTypes.includes(m.config.mediaType)) return;
  let bytes: Buffer;
  try {
    bytes = await readBlob(blobs, m.config.digest as Digest, maxConfigBytes);
  } catch (e) {
    if (isShoalError(e) && e.code === 'too-large') throw new ShoalError('too-large', e.message, { field: 'config', cause: e });
    throw e;
  }
  let config: unknown;
  try {
    config = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new ShoalError('invalid', `config ${m.config.digest} is not valid JSON: ${(e as Error).message}`, { field: 'config' });
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new ShoalError('invalid', `config ${m.config.digest} is not a JSON object`, { field: 'config' });
  }
  const err = schemaError(ImageConfigSchema, config, `config ${m.config.digest}`, 'config/');
  if (err) throw err;
  const diffIds = (config as ImageConfig).rootfs.diff_ids;
  if (diffIds.length !== m.layers.length) {
    throw new ShoalError('invalid', `config lists ${diffIds.length} diff_ids for ${m.layers.length} layers`, {
      field: 'config/rootfs/diff_ids',
    });
  }
}

function parseDocument(bytes: Buffer): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new ShoalError('invalid', `manifest is not valid JSON: ${(e as Error).message}`, { field: 'manifest' });
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new ShoalError('invalid', 'manifest is not a JSON object', { field: 'manifest' });
  }
  return doc as Record<string, unknown>;
}

/** Checks a manifest or index for a PUT; reads only the blob store. Throws a ShoalError naming the field. */
export async function checkManifest(deps: CheckDeps, ref: Reference, bytes: Buffer, contentType: string | undefined): Promise<CheckedManifest> {
  const { blobs, limits } = deps;
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
  const doc = parseDocument(bytes);
  const mediaType = mediaTypeOf(doc, contentType);
  const isIndex = indexMediaTypes.includes(mediaType);
  const err = schemaError(isIndex ? ImageIndexSchema : ImageManifestSchema, doc, isIndex ? 'index' : 'manifest');
  if (err) throw err;
  const children: CheckedManifest['children'] = [];
  const subjectDesc = (doc as { subject?: Descriptor }).subject;
  if (subjectDesc !== undefined) {
    const err = schemaError(DescriptorSchema, subjectDesc, 'subject', 'subject/');
    if (err) throw err;
  }
  const subject = subjectDesc?.digest as Digest | undefined;
  if (isIndex) {
    for (const [i, child] of (doc as ImageIndex).manifests.entries()) {
      if (!manifestMediaTypes.includes(child.mediaType) && !indexMediaTypes.includes(child.mediaType)) {
        throw new ShoalError('unsupported', `manifests/${i}: unsupported media type ${JSON.stringify(child.mediaType)}`, {
          field: `manifests/${i}/mediaType`,
        });
      }
      if (!(await deps.holdsManifest(child.digest as Digest))) throw blobUnknown(child.digest, `manifests/${i}/digest`, 'manifest');
      await checkBlob(blobs, child, `manifests/${i}`, 'manifest');
    }
    return { digest, mediaType, children, subject };
  }
  const manifest = doc as ImageManifest;
  children.push({ desc: manifest.config, field: 'config', what: 'config' });
  for (const [i, layer] of manifest.layers.entries()) children.push({ desc: layer, field: `layers/${i}`, what: 'layer' });
  for (const c of children) await checkBlob(blobs, c.desc, c.field, c.what);
  await checkImageConfig(blobs, manifest, limits.maxConfigBytes);
  return { digest, mediaType, children, subject };
}
