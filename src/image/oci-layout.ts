// OCI image layout directories (`oci-layout`, `index.json`, `blobs/sha256/<hex>`):
// reading one, writing one, and the few document helpers that pulling, pushing,
// importing and exporting all need (parse a manifest or an index, pick the platform,
// verify bytes against a digest while they stream).
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Value } from '@sinclair/typebox/value';
import {
  digestHex,
  isDigest,
  type Digest,
  ShoalError,
  Descriptor,
  ImageIndex,
  ImageManifest,
  indexMediaTypes,
  manifestMediaTypes,
  MediaType,
} from '../protocol/index.ts';

export const LAYOUT_FILE = 'oci-layout';
export const LAYOUT_VERSION = '1.0.0';
/** The annotation that names an image in an index (what skopeo writes for `oci:DIR:TAG`). */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
/** Manifests and indexes are small; anything bigger is refused before it is parsed. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** The platform this process runs on, in OCI (Go) spelling. */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return { os: 'linux', architecture: arch[process.arch] ?? process.arch };
}

// ---------------------------------------------------------------------------------
// Streaming verification

/**
 * A pass-through that hashes what flows and fails the stream (digest-mismatch) when
 * the content does not hash to `expected.digest`, or is longer or shorter than
 * `expected.size`. `label` names the blob in the error.
 */
export function createDigestVerifier(expected: { digest: Digest; size?: number | undefined }, label: string): Transform & { readonly bytes: number } {
  const hash = createHash('sha256');
  let bytes = 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      bytes += chunk.length;
      if (expected.size !== undefined && bytes > expected.size) {
        cb(new ShoalError('digest-mismatch', `${label}: more than the ${expected.size} bytes its descriptor declares`, { detail: { digest: expected.digest } }));
        return;
      }
      hash.update(chunk);
      cb(null, chunk);
    },
    flush(cb: TransformCallback) {
      if (expected.size !== undefined && bytes !== expected.size) {
        cb(new ShoalError('digest-mismatch', `${label}: ${bytes} bytes, its descriptor declares ${expected.size}`, { detail: { digest: expected.digest } }));
        return;
      }
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== expected.digest) {
        cb(new ShoalError('digest-mismatch', `${label}: content hashes to ${actual}, expected ${expected.digest}`, { detail: { expected: expected.digest, actual } }));
        return;
      }
      cb();
    },
  });
  Object.defineProperty(t, 'bytes', { get: () => bytes });
  return t as Transform & { readonly bytes: number };
}

// ---------------------------------------------------------------------------------
// Documents

export type ParsedDocument =
  | { kind: 'manifest'; mediaType: string; manifest: ImageManifest }
  | { kind: 'index'; mediaType: string; index: ImageIndex };

/**
 * Parses a manifest or an index. `mediaType` is what the descriptor or the registry
 * said; the document's own `mediaType` field is used when that is absent, and the two
 * must agree when both are present. Unknown types are 'unsupported'.
 */
export function parseImageDocument(bytes: Uint8Array, mediaType: string | undefined, label: string): ParsedDocument {
  if (bytes.length > MAX_MANIFEST_BYTES) throw new ShoalError('too-large', `${label}: ${bytes.length} bytes, a manifest may have at most ${MAX_MANIFEST_BYTES}`);
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    throw new ShoalError('invalid', `${label}: not JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new ShoalError('invalid', `${label}: not a JSON object`);
  const own = (doc as { mediaType?: unknown }).mediaType;
  if (own !== undefined && typeof own !== 'string') throw new ShoalError('invalid', `${label}: mediaType is not a string`, { field: 'mediaType' });
  // Some registries answer with a generic content type; trust the document then.
  const declared = mediaType === undefined || mediaType === '' || mediaType === 'application/json' || mediaType === 'application/octet-stream' ? undefined : mediaType;
  if (declared !== undefined && own !== undefined && declared !== own) {
    throw new ShoalError('invalid', `${label}: descriptor says ${declared} but the document says ${own}`, { field: 'mediaType' });
  }
  let type = declared ?? own;
  if (type === undefined) {
    // OCI allows an image manifest without mediaType; tell it apart by shape.
    const d = doc as Record<string, unknown>;
    if (Array.isArray(d['manifests'])) type = MediaType.ociIndex;
    else if (d['config'] !== undefined) type = MediaType.ociManifest;
    else throw new ShoalError('invalid', `${label}: neither an image manifest nor an index (no mediaType, no config, no manifests)`);
  }
  if (manifestMediaTypes.includes(type)) {
    if (!Value.Check(ImageManifest, doc)) throw new ShoalError('invalid', `${label}: malformed image manifest (${firstError(ImageManifest, doc)})`);
    return { kind: 'manifest', mediaType: type, manifest: doc };
  }
  if (indexMediaTypes.includes(type)) {
    if (!Value.Check(ImageIndex, doc)) throw new ShoalError('invalid', `${label}: malformed image index (${firstError(ImageIndex, doc)})`);
    return { kind: 'index', mediaType: type, index: doc };
  }
  throw new ShoalError('unsupported', `${label}: unknown manifest media type ${JSON.stringify(type)}`, { field: 'mediaType' });
}

function firstError(schema: Parameters<typeof Value.Errors>[0], value: unknown): string {
  const e = Value.Errors(schema, value).First();
  return e ? `${e.path || '/'}: ${e.message}` : 'schema mismatch';
}

/**
 * Picks the entry of an index for `platform`. Entries without a platform count only
 * when they are the sole image entry; attestation entries (unknown/unknown) never do.
 */
export function selectPlatform(index: ImageIndex, platform: Platform, label: string): Descriptor {
  const candidates = index.manifests.filter((m) => manifestMediaTypes.includes(m.mediaType) || indexMediaTypes.includes(m.mediaType));
  const match = candidates.find(
    (m) => m.platform?.os === platform.os && m.platform.architecture === platform.architecture && (platform.variant === undefined || m.platform.variant === platform.variant),
  );
  if (match) return match;
  const unplatformed = candidates.filter((m) => m.platform === undefined);
  if (unplatformed.length === 1 && candidates.length === 1) return unplatformed[0]!;
  const have = candidates.map((m) => (m.platform ? `${m.platform.os}/${m.platform.architecture}` : 'unspecified')).join(', ') || 'nothing';
  throw new ShoalError('not-found', `${label}: no ${platform.os}/${platform.architecture} image in the index (it has: ${have})`);
}

/** Where a blob source's bytes come from when resolving an image. */
export interface ManifestSource {
  /** Returns the document's bytes, verified against `desc.digest`. */
  readManifest(desc: Descriptor): Promise<Buffer>;
}

export interface ResolvedImage {
  /** Descriptor of the image manifest (after descending any index). */
  descriptor: Descriptor & { digest: Digest };
  bytes: Buffer;
  manifest: ImageManifest;
  /** Indexes walked through on the way, outermost first. */
  indexes: Array<{ descriptor: Descriptor; bytes: Buffer }>;
}

/** Reads `desc`, and while it is an index descends to the entry for `platform`. */
export async function resolveImageManifest(source: ManifestSource, desc: Descriptor, label: string, platform: Platform = hostPlatform()): Promise<ResolvedImage> {
  const indexes: ResolvedImage['indexes'] = [];
  let current = desc;
  for (let depth = 0; depth < 4; depth++) {
    const bytes = await source.readManifest(current);
    const doc = parseImageDocument(bytes, current.mediaType, `${label} (${current.digest})`);
    if (doc.kind === 'manifest') {
      return { descriptor: { ...current, mediaType: doc.mediaType, digest: current.digest as Digest }, bytes, manifest: doc.manifest, indexes };
    }
    indexes.push({ descriptor: current, bytes });
    current = selectPlatform(doc.index, platform, `${label} (${current.digest})`);
  }
  throw new ShoalError('invalid', `${label}: indexes nested more than 4 deep`);
}

// ---------------------------------------------------------------------------------
// Reading a layout

export function layoutBlobPath(dir: string, digest: Digest): string {
  return join(dir, 'blobs', 'sha256', digestHex(digest));
}

export interface OciLayout {
  readonly dir: string;
  readonly index: ImageIndex;
  /** The ref names the index carries, in order. */
  refNames(): string[];
  /**
   * The index entry named `refName`; without a name, the only entry (an error names
   * the choices when there are several).
   */
  resolve(refName?: string): Descriptor;
  /** Size of the blob, or undefined when the layout lacks it. */
  hasBlob(digest: Digest): Promise<number | undefined>;
  /** The blob's raw bytes as a stream (not verified: pipe through createDigestVerifier). */
  openBlob(digest: Digest): Readable;
  /** Reads a small blob (a manifest, a config) whole, verifying its digest and size. */
  readBlob(desc: { digest: string; size?: number }, maxBytes?: number): Promise<Buffer>;
  blobPath(digest: Digest): string;
  /** readManifest for resolveImageManifest. */
  readManifest(desc: Descriptor): Promise<Buffer>;
}

export async function readLayout(dir: string): Promise<OciLayout> {
  let marker: unknown;
  try {
    marker = JSON.parse(await readFile(join(dir, LAYOUT_FILE), 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new ShoalError('not-found', `${dir} is not an OCI layout: it has no ${LAYOUT_FILE} file`);
    throw new ShoalError('invalid', `${join(dir, LAYOUT_FILE)}: not valid JSON`, { cause: e });
  }
  const version = (marker as { imageLayoutVersion?: unknown } | null)?.imageLayoutVersion;
  if (typeof version !== 'string' || !version.startsWith('1.')) {
    throw new ShoalError('unsupported', `${join(dir, LAYOUT_FILE)}: imageLayoutVersion ${JSON.stringify(version)} (only 1.x)`);
  }
  let indexBytes: Buffer;
  try {
    indexBytes = await readFile(join(dir, 'index.json'));
  } catch (e) {
    throw new ShoalError('invalid', `${dir}: the OCI layout has no readable index.json`, { cause: e });
  }
  const parsed = parseImageDocument(indexBytes, MediaType.ociIndex, `${join(dir, 'index.json')}`);
  if (parsed.kind !== 'index') throw new ShoalError('invalid', `${join(dir, 'index.json')}: not an image index`);
  const index = parsed.index;
  for (const [i, m] of index.manifests.entries()) {
    if (!isDigest(m.digest)) throw new ShoalError('invalid', `${join(dir, 'index.json')}: manifests[${i}].digest is not a sha256 digest`, { field: `manifests/${i}/digest` });
  }

  const blobPath = (digest: Digest): string => layoutBlobPath(dir, digest);
  const readBlob = async (desc: { digest: string; size?: number }, maxBytes = MAX_MANIFEST_BYTES): Promise<Buffer> => {
    if (!isDigest(desc.digest)) throw new ShoalError('invalid', `not a sha256 digest: ${JSON.stringify(desc.digest)}`);
    const label = `blob ${desc.digest} in ${dir}`;
    let size: number;
    try {
      size = (await stat(blobPath(desc.digest))).size;
    } catch {
      throw new ShoalError('not-found', `${label} is missing`);
    }
    if (size > maxBytes) throw new ShoalError('too-large', `${label}: ${size} bytes, more than the ${maxBytes} allowed here`);
    const bytes = await readFile(blobPath(desc.digest));
    const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (actual !== desc.digest) throw new ShoalError('digest-mismatch', `${label}: content hashes to ${actual}`);
    if (desc.size !== undefined && desc.size !== bytes.length) {
      throw new ShoalError('digest-mismatch', `${label}: ${bytes.length} bytes, its descriptor declares ${desc.size}`);
    }
    return bytes;
  };

  const refNames = (): string[] =>
    index.manifests.map((m) => m.annotations?.[REF_NAME_ANNOTATION]).filter((n): n is string => n !== undefined);
  return {
    dir,
    index,
    refNames,
    resolve(refName?: string): Descriptor {
      if (refName !== undefined) {
        const found = index.manifests.filter((m) => m.annotations?.[REF_NAME_ANNOTATION] === refName);
        if (found.length === 0) {
          const names = refNames();
          throw new ShoalError('not-found', `${dir}: no image named ${JSON.stringify(refName)} in the layout (it has: ${names.length ? names.join(', ') : 'no named images'})`);
        }
        return found.at(-1)!;
      }
      if (index.manifests.length === 1) return index.manifests[0]!;
      if (index.manifests.length === 0) throw new ShoalError('not-found', `${dir}: the layout's index.json lists no image`);
      const names = refNames();
      throw new ShoalError('invalid', `${dir}: the layout holds ${index.manifests.length} images; name one (${names.join(', ') || 'they carry no ref names'})`);
    },
    async hasBlob(digest: Digest): Promise<number | undefined> {
      try {
        const s = await stat(blobPath(digest));
        return s.isFile() ? s.size : undefined;
      } catch {
        return undefined;
      }
    },
    openBlob: (digest: Digest): Readable => createReadStream(blobPath(digest), { highWaterMark: 1024 * 1024 }),
    readBlob,
    blobPath,
    readManifest: (desc: Descriptor) => readBlob(desc),
  };
}

// ---------------------------------------------------------------------------------
// Writing a layout

export interface LayoutWriter {
  readonly dir: string;
  blobPath(digest: Digest): string;
  /** True when the layout has the blob (with `size` bytes, when given). */
  hasBlob(digest: Digest, size?: number): Promise<boolean>;
  /**
   * Stores a blob, verifying it against `expected` as it streams; written to a temp
   * name and renamed, so a failed or lying source leaves no blob behind. A blob
   * already present is not rewritten (a stream source is then discarded).
   */
  addBlob(source: Readable | Uint8Array, expected?: { digest?: Digest | undefined; size?: number | undefined }): Promise<{ digest: Digest; size: number }>;
  /**
   * Lists `desc` in index.json. With a name, the entry gets the ref-name annotation
   * and replaces any entry of that name; without, it is added unless already listed.
   */
  setRef(name: string | undefined, desc: Descriptor): void;
  /** Writes `oci-layout` and `index.json` (temp + rename). */
  finish(): Promise<void>;
}

/**
 * Opens `dir` for writing, creating it when missing and keeping the index it has.
 * With `durable` (default true) files are fsynced before they are renamed into place.
 */
export async function createLayoutWriter(dir: string, options: { durable?: boolean } = {}): Promise<LayoutWriter> {
  const durable = options.durable ?? true;
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  let manifests: Descriptor[] = [];
  let indexExtras: Record<string, unknown> = {};
  try {
    const existing = await readLayout(dir);
    manifests = [...existing.index.manifests];
    const { manifests: _m, schemaVersion: _s, mediaType: _t, ...rest } = existing.index;
    indexExtras = rest;
  } catch (e) {
    if (!(e instanceof ShoalError && e.code === 'not-found')) throw e;
  }

  const blobPath = (digest: Digest): string => layoutBlobPath(dir, digest);
  const hasBlob = async (digest: Digest, size?: number): Promise<boolean> => {
    try {
      const s = await stat(blobPath(digest));
      return s.isFile() && (size === undefined || s.size === size);
    } catch {
      return false;
    }
  };

  return {
    dir,
    blobPath,
    hasBlob,
    async addBlob(source, expected = {}) {
      if (expected.digest !== undefined && (await hasBlob(expected.digest, expected.size))) {
        if (source instanceof Readable) source.destroy();
        return { digest: expected.digest, size: (await stat(blobPath(expected.digest))).size };
      }
      const tmp = join(dir, 'blobs', 'sha256', `.tmp-${randomBytes(8).toString('hex')}`);
      const hash = createHash('sha256');
      let size = 0;
      try {
        if (source instanceof Readable) {
          const counter = new Transform({
            transform(chunk: Buffer, _e, cb) {
              size += chunk.length;
              if (expected.size !== undefined && size > expected.size) {
                cb(new ShoalError('digest-mismatch', `blob ${expected.digest ?? ''}: more than the ${expected.size} bytes declared`));
                return;
              }
              hash.update(chunk);
              cb(null, chunk);
            },
          });
          await pipeline(source, counter, createWriteStream(tmp, { flush: durable }));
        } else {
          size = source.length;
          hash.update(source);
          await writeFile(tmp, source, { flush: durable });
        }
        const digest: Digest = `sha256:${hash.digest('hex')}`;
        if (expected.digest !== undefined && digest !== expected.digest) {
          throw new ShoalError('digest-mismatch', `blob ${expected.digest}: content hashes to ${digest}`, { detail: { expected: expected.digest, actual: digest } });
        }
        if (expected.size !== undefined && size !== expected.size) {
          throw new ShoalError('digest-mismatch', `blob ${digest}: ${size} bytes, ${expected.size} declared`);
        }
        await rename(tmp, blobPath(digest));
        return { digest, size };
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
    },
    setRef(name, desc) {
      const entry: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
      if (desc.platform) entry.platform = desc.platform;
      const annotations = { ...(desc.annotations ?? {}) };
      if (name !== undefined) annotations[REF_NAME_ANNOTATION] = name;
      else delete annotations[REF_NAME_ANNOTATION];
      if (Object.keys(annotations).length > 0) entry.annotations = annotations;
      if (name !== undefined) {
        manifests = manifests.filter((m) => m.annotations?.[REF_NAME_ANNOTATION] !== name);
        manifests.push(entry);
      } else if (!manifests.some((m) => m.digest === desc.digest && m.annotations?.[REF_NAME_ANNOTATION] === undefined)) {
        manifests.push(entry);
      }
    },
    async finish() {
      await writeAtomic(join(dir, LAYOUT_FILE), JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION }), durable);
      const index = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests, ...indexExtras };
      await writeAtomic(join(dir, 'index.json'), JSON.stringify(index), durable);
    },
  };
}

async function writeAtomic(path: string, text: string, durable: boolean): Promise<void> {
  const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    await writeFile(tmp, text, { flush: durable });
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
