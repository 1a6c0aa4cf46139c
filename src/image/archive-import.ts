// Importing an image from a file: a `docker save` archive, an OCI archive (a tar of an
// OCI layout), or an OCI layout directory. The input is hostile. A tar is unpacked
// into a private temp dir under refused-unless-safe rules; then every blob is
// verified against its digest and every layer is vetted by checkLayer (the same checks
// a host applies before unpacking) and its diffId compared with the config's. Only
// when the whole image passed is anything pushed, so a refused archive leaves nothing
// in the store.
//
// Layers are kept compressed on the wire: an uncompressed layer (docker-archive, or
// the tar layers newer `docker save` puts in its OCI layout) is gzipped and the
// manifest rewritten to an OCI manifest naming the gzip blobs. An archive whose layers
// are all compressed is pushed byte for byte, so its manifest digest is preserved.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline as pipe, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, createGunzip } from 'node:zlib';
import { Value } from '@sinclair/typebox/value';
import { extract as tarExtract } from 'tar-stream';
import {
  digestHex,
  isDigest,
  type Digest,
  isShoalError,
  ShoalError,
  formatImageRef,
  type ImageRef,
  configMediaTypes,
  ImageConfig,
  layerMediaTypes,
  MediaType,
  type Descriptor,
  type ImageManifest,
} from '../protocol/index.ts';
import { checkLayer, type UnpackLimits } from './layer-unpack.ts';
import {
  LAYOUT_FILE,
  MAX_MANIFEST_BYTES,
  parseImageDocument,
  REF_NAME_ANNOTATION,
  resolveImageManifest,
  type Platform,
} from './oci-layout.ts';
import { mapLimit, pushBlobsAndManifest, type RegistryClient } from './registry-client.ts';

export type ArchiveFormat = 'docker-archive' | 'oci-archive' | 'oci-layout';

export interface ImportProgress {
  phase: 'read' | 'vet' | 'push';
  bytes: number;
  total?: number;
  digest?: Digest;
}

export interface ImportOptions {
  /**
   * Which image of an archive that holds several: an OCI ref name
   * (org.opencontainers.image.ref.name) or a docker RepoTag. Default: the only one.
   */
  image?: string;
  platform?: Platform;
  /** Limits for each layer (checkLayer's). */
  layerLimits?: Partial<UnpackLimits>;
  /** Limits for the outer archive. */
  maxArchiveEntries?: number;
  maxArchiveBytes?: number;
  /** gzip level for layers that arrive uncompressed (default 6, zlib's default). */
  compressionLevel?: number;
  concurrency?: number;
  onProgress?(p: ImportProgress): void;
}

export interface ImportResult {
  manifestDigest: Digest;
  layers: number;
  /** Bytes of the image's blobs (config + layers), as stored. */
  bytes: number;
  format: ArchiveFormat;
  /** Blobs the store had already. */
  skipped: number;
}

const DEFAULT_MAX_ENTRIES = 100_000;
const DEFAULT_MAX_BYTES = 64 * 1024 ** 3;
const MAX_LINK_HOPS = 16;

/**
 * Reads an image from `input` (file or directory), vets all of it, then pushes it to
 * `target.ref` through `target.client`.
 */
export async function importImage(
  input: string,
  target: { client: RegistryClient; ref: ImageRef },
  opts: ImportOptions = {},
): Promise<ImportResult> {
  let st;
  try {
    st = await stat(input);
  } catch {
    throw new ShoalError('not-found', `${input}: no such file or directory`, { field: 'input' });
  }
  const work = await mkdtemp(join(tmpdir(), 'shoal-import-'));
  try {
    let view: FileView;
    let format: ArchiveFormat;
    if (st.isDirectory()) {
      view = directoryView(input);
      if ((await view.size(LAYOUT_FILE)) === undefined) {
        throw new ShoalError('invalid', `${input}: a directory to import must be an OCI layout (it has no ${LAYOUT_FILE} file)`, { field: 'input' });
      }
      format = 'oci-layout';
    } else if (st.isFile()) {
      view = await extractArchive(input, join(work, 'files'), opts);
      const hasOci = (await view.size(LAYOUT_FILE)) !== undefined && (await view.size('index.json')) !== undefined;
      const hasDocker = (await view.size('manifest.json')) !== undefined;
      if (!hasOci && !hasDocker) {
        throw new ShoalError('invalid', `${input}: neither an OCI archive (oci-layout + index.json) nor a docker archive (manifest.json)`, { field: 'input' });
      }
      format = hasDocker ? 'docker-archive' : 'oci-archive';
    } else {
      throw new ShoalError('invalid', `${input}: neither a file nor a directory`, { field: 'input' });
    }

    const label = input;
    const usesOci = (await view.size(LAYOUT_FILE)) !== undefined && (await view.size('index.json')) !== undefined;
    const plan = usesOci ? await planFromOciLayout(view, label, opts) : await planFromDockerArchive(view, label, opts);
    const prepared = await vetAndPrepare(plan, view, join(work, 'layers'), label, opts);

    if (target.ref.digest !== undefined && target.ref.digest !== prepared.manifestDigest) {
      throw new ShoalError('digest-mismatch', `${label}: the image's manifest is ${prepared.manifestDigest}, not ${target.ref.digest} as ${formatImageRef(target.ref)} says`, { field: 'reference' });
    }
    const pushed = await pushBlobsAndManifest(
      target.client,
      target.ref,
      prepared.blobs,
      (d) => prepared.open(d),
      prepared.manifestBytes,
      prepared.manifestMediaType,
      {
        ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
        onProgress: (p) => opts.onProgress?.({ phase: 'push', digest: p.digest, bytes: p.bytes, total: p.total }),
      },
    );
    return {
      manifestDigest: pushed.manifestDigest,
      layers: prepared.layerCount,
      bytes: prepared.blobs.reduce((n, b) => n + b.size, 0),
      format,
      skipped: pushed.skipped,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------
// A read-only view of the input's files, by archive path

interface FileView {
  /** Size of the regular file at this archive path (after links), or undefined. */
  size(name: string): Promise<number | undefined>;
  open(name: string): Readable;
  read(name: string, maxBytes: number): Promise<Buffer>;
  /** First bytes of the file, to sniff compression. */
  head(name: string, n: number): Promise<Buffer>;
}

/** Refuses names that could reach outside the archive; returns the normalised path. */
function normalizeArchiveName(name: string, label: string, what = 'archive entry'): string {
  const bad = (why: string): ShoalError => new ShoalError('invalid', `${label}: ${what} ${JSON.stringify(name)} ${why}`, { field: 'input', detail: { entry: name } });
  if (name.includes('\0')) throw bad('contains a NUL byte');
  if (name.startsWith('/')) throw bad('is an absolute path');
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw bad('has a ".." component');
    parts.push(part);
  }
  return parts.join('/');
}

function directoryView(dir: string): FileView {
  const pathOf = (name: string): string => join(dir, normalizeArchiveName(name, dir, 'path'));
  return {
    async size(name) {
      try {
        const s = await stat(pathOf(name));
        return s.isFile() ? s.size : undefined;
      } catch {
        return undefined;
      }
    },
    open: (name) => createReadStream(pathOf(name), { highWaterMark: 1024 * 1024 }),
    read: (name, maxBytes) => readBounded(pathOf(name), maxBytes, `${dir}: ${name}`),
    head: (name, n) => readHead(pathOf(name), n),
  };
}

async function readBounded(path: string, maxBytes: number, label: string): Promise<Buffer> {
  const s = await stat(path);
  if (s.size > maxBytes) throw new ShoalError('too-large', `${label}: ${s.size} bytes, at most ${maxBytes} allowed`);
  return readFile(path);
}

async function readHead(path: string, n: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * Unpacks a (possibly gzipped) tar into `dir`, each regular file under a numbered name
 * so no archive name ever becomes a path. Links are kept only as aliases: a symlink or
 * hard link is followed lexically to another entry of the archive (old `docker save`
 * writes symlinks between identical layers) and never created on disk. Devices, fifos
 * and names with `..` or a leading `/` refuse the archive.
 */
async function extractArchive(file: string, dir: string, opts: ImportOptions): Promise<FileView> {
  await mkdir(dir, { recursive: true });
  const maxEntries = opts.maxArchiveEntries ?? DEFAULT_MAX_ENTRIES;
  const maxBytes = opts.maxArchiveBytes ?? DEFAULT_MAX_BYTES;
  const files = new Map<string, { path: string; size: number }>();
  const links = new Map<string, string>(); // name -> target archive path
  const dirs = new Set<string>();
  const seen = new Set<string>();
  let entries = 0;
  let total = 0;

  const gz = (await readHead(file, 2)).equals(Buffer.from([0x1f, 0x8b]));
  const extract = tarExtract();
  const source = createReadStream(file, { highWaterMark: 1024 * 1024 });
  const feeding = (gz ? pipeline(source, createGunzip(), extract) : pipeline(source, extract)).then(
    () => undefined,
    (e: unknown) => e,
  );
  try {
    for await (const entry of extract) {
      const h = entry.header;
      const name = normalizeArchiveName(h.name, file);
      if (++entries > maxEntries) throw new ShoalError('too-large', `${file}: more than ${maxEntries} archive entries`, { field: 'input' });
      const type = h.type ?? 'file';
      if (type === 'directory') {
        dirs.add(name);
        entry.resume();
        continue;
      }
      if (name === '') throw new ShoalError('invalid', `${file}: archive entry ${JSON.stringify(h.name)} has an empty name`, { field: 'input' });
      if (seen.has(name)) throw new ShoalError('invalid', `${file}: archive entry ${JSON.stringify(h.name)} appears twice`, { field: 'input', detail: { entry: h.name } });
      seen.add(name);
      if (type === 'symlink' || type === 'link') {
        const linkname = h.linkname ?? '';
        let targetPath: string;
        if (type === 'link') {
          targetPath = normalizeArchiveName(linkname, file, `hard link ${JSON.stringify(h.name)} to`);
        } else {
          if (linkname.startsWith('/')) throw new ShoalError('invalid', `${file}: archive entry ${JSON.stringify(h.name)} is a symlink to an absolute path`, { field: 'input', detail: { entry: h.name } });
          const base = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : '';
          const stack = base === '' ? [] : base.split('/');
          for (const part of linkname.split('/')) {
            if (part === '' || part === '.') continue;
            if (part === '..') {
              if (stack.length === 0) throw new ShoalError('invalid', `${file}: archive entry ${JSON.stringify(h.name)} is a symlink leading out of the archive`, { field: 'input', detail: { entry: h.name } });
              stack.pop();
            } else stack.push(part);
          }
          targetPath = stack.join('/');
        }
        links.set(name, targetPath);
        entry.resume();
        continue;
      }
      if (type !== 'file' && type !== 'contiguous-file') {
        throw new ShoalError('invalid', `${file}: archive entry ${JSON.stringify(h.name)} is a ${type}; only regular files, directories and links are allowed`, { field: 'input', detail: { entry: h.name } });
      }
      const size = h.size ?? 0;
      total += size;
      if (total > maxBytes) throw new ShoalError('too-large', `${file}: more than ${maxBytes} bytes of files`, { field: 'input' });
      const path = join(dir, String(files.size));
      await pipeline(entry, createWriteStream(path));
      files.set(name, { path, size });
      opts.onProgress?.({ phase: 'read', bytes: total });
    }
  } catch (e) {
    source.destroy();
    extract.destroy();
    await feeding;
    if (isShoalError(e)) throw e;
    throw new ShoalError('invalid', `${file}: the archive is truncated or corrupt: ${(e as Error).message}`, { field: 'input', cause: e });
  }
  const fed = await feeding;
  if (fed !== undefined) {
    throw new ShoalError('invalid', `${file}: the archive is truncated or corrupt: ${(fed as Error).message}`, { field: 'input', cause: fed });
  }

  const lookup = (raw: string): { path: string; size: number } | undefined => {
    let name = normalizeArchiveName(raw, file, 'path');
    for (let hop = 0; hop <= MAX_LINK_HOPS; hop++) {
      const f = files.get(name);
      if (f) return f;
      const next = links.get(name);
      if (next === undefined) return undefined;
      name = next;
    }
    throw new ShoalError('invalid', `${file}: more than ${MAX_LINK_HOPS} links lead from ${JSON.stringify(raw)}`, { field: 'input' });
  };
  const must = (name: string): { path: string; size: number } => {
    const f = lookup(name);
    if (!f) throw new ShoalError('invalid', `${file}: the archive has no file ${JSON.stringify(name)}`, { field: 'input' });
    return f;
  };
  return {
    size: async (name) => lookup(name)?.size,
    open: (name) => createReadStream(must(name).path, { highWaterMark: 1024 * 1024 }),
    read: (name, maxBytes) => readBounded(must(name).path, maxBytes, `${file}: ${name}`),
    head: (name, n) => readHead(must(name).path, n),
  };
}

// ---------------------------------------------------------------------------------
// Plans: what the image is, before anything is verified

interface PlannedLayer {
  /** Archive path of the layer file. */
  name: string;
  /** Compressed digest and size when the archive names them (OCI); else computed. */
  digest: Digest | undefined;
  size: number | undefined;
  mediaType: string | undefined; // undefined: sniff (docker-archive)
  diffId: Digest;
  /** Descriptor fields to keep (annotations, urls) when the layer is unchanged. */
  original: Descriptor | undefined;
}

interface Plan {
  configName: string;
  configBytes: Buffer;
  configDigest: Digest;
  configMediaType: string;
  layers: PlannedLayer[];
  /** The archive's own manifest, when it has one (OCI); reused when no layer changes. */
  manifest: { bytes: Buffer; mediaType: string; digest: Digest; doc: ImageManifest } | undefined;
}

const blobName = (digest: string): string => `blobs/sha256/${digestHex(digest as Digest)}`;

async function readVerifiedBlob(view: FileView, desc: { digest: string; size: number }, label: string, what: string): Promise<Buffer> {
  if (!isDigest(desc.digest)) throw new ShoalError('invalid', `${label}: ${what} has a bad digest ${JSON.stringify(desc.digest)}`);
  const size = await view.size(blobName(desc.digest));
  if (size === undefined) throw new ShoalError('invalid', `${label}: ${what} ${desc.digest} is missing from the archive`, { field: 'input', detail: { digest: desc.digest } });
  if (size !== desc.size) throw new ShoalError('digest-mismatch', `${label}: ${what} ${desc.digest} has ${size} bytes, its descriptor declares ${desc.size}`);
  const bytes = await view.read(blobName(desc.digest), MAX_MANIFEST_BYTES);
  const actual = sha256(bytes);
  if (actual !== desc.digest) throw new ShoalError('digest-mismatch', `${label}: ${what} ${desc.digest} hashes to ${actual}`, { field: 'input', detail: { digest: desc.digest, actual } });
  return bytes;
}

function sha256(bytes: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

function parseConfig(bytes: Buffer, label: string, layerCount: number): ImageConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new ShoalError('invalid', `${label}: the image config is not JSON`, { cause: e });
  }
  if (!Value.Check(ImageConfig, doc)) {
    const err = Value.Errors(ImageConfig, doc).First();
    throw new ShoalError('invalid', `${label}: malformed image config (${err ? `${err.path || '/'}: ${err.message}` : 'schema mismatch'})`);
  }
  if (doc.rootfs.diff_ids.length !== layerCount) {
    throw new ShoalError('invalid', `${label}: the config lists ${doc.rootfs.diff_ids.length} diff_ids for ${layerCount} layers`, { field: 'rootfs.diff_ids' });
  }
  return doc;
}

async function planFromOciLayout(view: FileView, label: string, opts: ImportOptions): Promise<Plan> {
  const marker = await view.read(LAYOUT_FILE, 4096);
  let version: unknown;
  try {
    version = (JSON.parse(marker.toString('utf8')) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
  } catch {
    throw new ShoalError('invalid', `${label}: ${LAYOUT_FILE} is not JSON`);
  }
  if (typeof version !== 'string' || !version.startsWith('1.')) throw new ShoalError('unsupported', `${label}: OCI layout version ${JSON.stringify(version)} (only 1.x)`);
  const indexDoc = parseImageDocument(await view.read('index.json', MAX_MANIFEST_BYTES), MediaType.ociIndex, `${label}: index.json`);
  if (indexDoc.kind !== 'index') throw new ShoalError('invalid', `${label}: index.json is not an image index`);
  const entries = indexDoc.index.manifests;
  const nameOf = (m: Descriptor): string[] =>
    [m.annotations?.[REF_NAME_ANNOTATION], m.annotations?.['io.containerd.image.name']].filter((n): n is string => n !== undefined);
  let top: Descriptor;
  if (opts.image !== undefined) {
    const wanted = opts.image;
    const found = entries.filter((m) => nameOf(m).some((n) => n === wanted || n.endsWith(`/${wanted}`) || n.endsWith(`:${wanted}`)));
    if (found.length !== 1) {
      throw new ShoalError(found.length === 0 ? 'not-found' : 'invalid', `${label}: ${found.length === 0 ? 'no' : 'more than one'} image named ${JSON.stringify(wanted)} (it has: ${entries.flatMap(nameOf).join(', ') || 'no named images'})`, { field: 'image' });
    }
    top = found[0]!;
  } else if (entries.length === 1) {
    top = entries[0]!;
  } else if (entries.length === 0) {
    throw new ShoalError('invalid', `${label}: index.json lists no image`);
  } else {
    throw new ShoalError('invalid', `${label}: the archive holds ${entries.length} images; name one (${entries.flatMap(nameOf).join(', ') || 'they carry no names'})`, { field: 'image' });
  }
  const resolved = await resolveImageManifest(
    { readManifest: (d) => readVerifiedBlob(view, d, label, 'manifest') },
    top,
    label,
    opts.platform,
  );
  const m = resolved.manifest;
  if (!configMediaTypes.includes(m.config.mediaType)) {
    throw new ShoalError('unsupported', `${label}: unknown config media type ${JSON.stringify(m.config.mediaType)}`, { field: 'config.mediaType' });
  }
  for (const [i, l] of m.layers.entries()) {
    if (!layerMediaTypes.includes(l.mediaType)) throw new ShoalError('unsupported', `${label}: layer ${i} has unknown media type ${JSON.stringify(l.mediaType)}`, { field: `layers/${i}/mediaType` });
  }
  const configBytes = await readVerifiedBlob(view, m.config, label, 'config');
  const config = parseConfig(configBytes, label, m.layers.length);
  for (const [i, l] of m.layers.entries()) {
    if (!isDigest(l.digest)) throw new ShoalError('invalid', `${label}: layer ${i} has a bad digest ${JSON.stringify(l.digest)}`, { field: `layers/${i}/digest` });
    if ((await view.size(blobName(l.digest))) === undefined) {
      throw new ShoalError('invalid', `${label}: layer ${i} ${l.digest} named by the manifest is missing from the archive`, { field: 'input', detail: { digest: l.digest } });
    }
  }
  return {
    configName: blobName(m.config.digest),
    configBytes,
    configDigest: m.config.digest as Digest,
    configMediaType: m.config.mediaType,
    layers: m.layers.map((l, i) => ({
      name: blobName(l.digest),
      digest: l.digest as Digest,
      size: l.size,
      mediaType: l.mediaType,
      diffId: config.rootfs.diff_ids[i] as Digest,
      original: l,
    })),
    manifest: { bytes: resolved.bytes, mediaType: resolved.descriptor.mediaType, digest: resolved.descriptor.digest, doc: m },
  };
}

interface DockerManifestEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

async function planFromDockerArchive(view: FileView, label: string, opts: ImportOptions): Promise<Plan> {
  let list: unknown;
  try {
    list = JSON.parse((await view.read('manifest.json', MAX_MANIFEST_BYTES)).toString('utf8'));
  } catch (e) {
    if (isShoalError(e)) throw e;
    throw new ShoalError('invalid', `${label}: manifest.json is not JSON`);
  }
  const ok = (e: unknown): e is DockerManifestEntry =>
    typeof e === 'object' && e !== null && typeof (e as DockerManifestEntry).Config === 'string' &&
    Array.isArray((e as DockerManifestEntry).Layers) && (e as DockerManifestEntry).Layers.every((l) => typeof l === 'string');
  if (!Array.isArray(list) || !list.every(ok)) throw new ShoalError('invalid', `${label}: manifest.json is not a list of {Config, RepoTags, Layers}`);
  const images = list as DockerManifestEntry[];
  let entry: DockerManifestEntry;
  const tags = (e: DockerManifestEntry): string[] => (Array.isArray(e.RepoTags) ? e.RepoTags.filter((t) => typeof t === 'string') : []);
  if (opts.image !== undefined) {
    const wanted = opts.image;
    const found = images.filter((e) => tags(e).some((t) => t === wanted || t.endsWith(`/${wanted}`) || t.endsWith(`:${wanted}`)));
    if (found.length !== 1) throw new ShoalError(found.length === 0 ? 'not-found' : 'invalid', `${label}: ${found.length === 0 ? 'no' : 'more than one'} image tagged ${JSON.stringify(wanted)} (it has: ${images.flatMap(tags).join(', ') || 'no tags'})`, { field: 'image' });
    entry = found[0]!;
  } else if (images.length === 1) {
    entry = images[0]!;
  } else {
    throw new ShoalError('invalid', `${label}: the archive holds ${images.length} images; name one (${images.flatMap(tags).join(', ') || 'they carry no tags'})`, { field: 'image' });
  }
  const configName = normalizeArchiveName(entry.Config, label, 'Config path');
  if ((await view.size(configName)) === undefined) throw new ShoalError('invalid', `${label}: the config ${JSON.stringify(entry.Config)} named by manifest.json is missing`, { field: 'input' });
  const configBytes = await view.read(configName, MAX_MANIFEST_BYTES);
  const config = parseConfig(configBytes, label, entry.Layers.length);
  const layers: PlannedLayer[] = [];
  for (const [i, raw] of entry.Layers.entries()) {
    const name = normalizeArchiveName(raw, label, 'layer path');
    const size = await view.size(name);
    if (size === undefined) throw new ShoalError('invalid', `${label}: layer ${JSON.stringify(raw)} named by manifest.json is missing`, { field: 'input', detail: { entry: raw } });
    layers.push({ name, digest: undefined, size, mediaType: undefined, diffId: config.rootfs.diff_ids[i] as Digest, original: undefined });
  }
  return { configName, configBytes, configDigest: sha256(configBytes), configMediaType: MediaType.ociConfig, layers, manifest: undefined };
}

// ---------------------------------------------------------------------------------
// Vetting: every layer through checkLayer, every digest checked, tar layers gzipped

interface Prepared {
  blobs: Descriptor[];
  open(digest: Digest): Readable;
  manifestBytes: Buffer;
  manifestMediaType: string;
  manifestDigest: Digest;
  layerCount: number;
}

/** A pass-through that hashes and counts, never failing the stream itself. */
function tap(): Transform & { result(): { digest: Digest; size: number } } {
  const hash = createHash('sha256');
  let size = 0;
  const t = new Transform({
    transform(chunk: Buffer, _e, cb) {
      hash.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  }) as Transform & { result(): { digest: Digest; size: number } };
  t.result = () => ({ digest: `sha256:${hash.digest('hex')}`, size });
  return t;
}

function sniffMediaType(head: Buffer): string {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return MediaType.ociLayerGzip;
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return MediaType.ociLayerZstd;
  return MediaType.ociLayerTar;
}

function layerError(e: unknown, label: string, i: number, layer: PlannedLayer): ShoalError {
  const where = `${label}: layer ${i} (${layer.name})`;
  if (isShoalError(e)) {
    return new ShoalError(e.code, `${where}: ${e.message}`, { field: e.field ?? 'layer', detail: { layer: layer.name, ...(typeof e.detail === 'object' && e.detail !== null ? e.detail : {}) }, cause: e });
  }
  return new ShoalError('invalid', `${where}: ${(e as Error).message}`, { field: 'layer', cause: e });
}

async function vetAndPrepare(plan: Plan, view: FileView, workDir: string, label: string, opts: ImportOptions): Promise<Prepared> {
  await mkdir(workDir, { recursive: true });
  const level = opts.compressionLevel ?? 6;
  const sources = new Map<string, () => Readable>();
  sources.set(plan.configDigest, () => view.open(plan.configName));
  const concurrency = Math.max(1, Math.min(opts.concurrency ?? 2, 4));

  const layerDescs = await mapLimit(plan.layers.map((l, i) => ({ l, i })), concurrency, async ({ l, i }): Promise<{ desc: Descriptor; changed: boolean }> => {
    try {
      const mediaType = l.mediaType ?? sniffMediaType(await view.head(l.name, 4));
      // One read: the bytes as stored are hashed (their digest) and fed to checkLayer.
      const t = tap();
      const stats = await checkLayer(pipe(view.open(l.name), t, () => undefined), {
        mediaType,
        ...(opts.layerLimits !== undefined ? { limits: opts.layerLimits } : {}),
      });
      const stored = t.result();
      if (l.digest !== undefined && stored.digest !== l.digest) {
        throw new ShoalError('digest-mismatch', `content hashes to ${stored.digest}, the manifest names ${l.digest}`, { detail: { expected: l.digest, actual: stored.digest } });
      }
      if (l.size !== undefined && stored.size !== l.size) {
        throw new ShoalError('digest-mismatch', `${stored.size} bytes, the manifest declares ${l.size}`);
      }
      if (stats.diffId !== l.diffId) {
        throw new ShoalError('digest-mismatch', `uncompressed content is ${stats.diffId}, the config's rootfs.diff_ids[${i}] is ${l.diffId}`, { field: `rootfs.diff_ids/${i}`, detail: { expected: l.diffId, actual: stats.diffId } });
      }
      opts.onProgress?.({ phase: 'vet', digest: stored.digest, bytes: stored.size, total: stored.size });
      if (mediaType !== MediaType.ociLayerTar) {
        sources.set(stored.digest, () => view.open(l.name));
        const desc: Descriptor = l.original ? { ...l.original } : { mediaType, digest: stored.digest, size: stored.size };
        return { desc, changed: l.original === undefined };
      }
      // Uncompressed: gzip it once into the work dir (zlib writes mtime 0, so the same
      // input and level always give the same blob).
      const out = join(workDir, `${i}.tar.gz`);
      const gzTap = tap();
      await pipeline(view.open(l.name), createGzip({ level }), gzTap, createWriteStream(out));
      const gz = gzTap.result();
      sources.set(gz.digest, () => createReadStream(out, { highWaterMark: 1024 * 1024 }));
      const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: gz.digest, size: gz.size };
      if (l.original?.annotations) desc.annotations = l.original.annotations;
      return { desc, changed: true };
    } catch (e) {
      throw layerError(e, label, i, l);
    }
  });

  const configDesc: Descriptor = { mediaType: plan.configMediaType, digest: plan.configDigest, size: plan.configBytes.length };
  let manifestBytes: Buffer;
  let manifestMediaType: string;
  if (plan.manifest !== undefined && !layerDescs.some((d) => d.changed)) {
    manifestBytes = plan.manifest.bytes;
    manifestMediaType = plan.manifest.mediaType;
  } else {
    const doc: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: plan.manifest ? { ...plan.manifest.doc.config, mediaType: ociConfigType(plan.configMediaType) } : configDesc,
      layers: layerDescs.map((d) => d.desc),
    };
    if (plan.manifest?.doc.annotations) doc.annotations = plan.manifest.doc.annotations;
    manifestBytes = Buffer.from(JSON.stringify(doc));
    manifestMediaType = MediaType.ociManifest;
  }
  return {
    blobs: [configDesc, ...layerDescs.map((d) => d.desc)],
    open(digest) {
      const s = sources.get(digest);
      if (!s) throw new ShoalError('internal', `no source for blob ${digest}`);
      return s();
    },
    manifestBytes,
    manifestMediaType,
    manifestDigest: sha256(manifestBytes),
    layerCount: plan.layers.length,
  };
}

/** A rewritten manifest is OCI; a docker config type becomes its OCI equivalent. */
function ociConfigType(mediaType: string): string {
  return mediaType === MediaType.dockerConfig ? MediaType.ociConfig : mediaType;
}
