// Builds an overlay layer: the difference between a directory and the layers below it,
// as a deterministic, compressed OCI layer. Only what the service changed goes in (the
// XenoServer paper's point: Apache's overlay was 1% of its file system), and the same
// tree always gives the same bytes, so the same digest.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, type Stats } from 'node:fs';
import { lstat, mkdir, readdir, readlink, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants as zlibConstants, createGzip, createZstdCompress } from 'node:zlib';
import { pack as tarPack } from 'tar-stream';
import type { Digest } from '../protocol/index.ts';
import { isShoalError, ShoalError, MediaType } from '../protocol/index.ts';
import type { LayerIndex } from './layer-index.ts';
import { ancestorsOf, baseOf, joinPath, parentOf, symlinkClimbs, WHITEOUT_PREFIX } from './tar-safety.ts';
import { lstatIfExists } from './fs-util.ts';

export { indexLayers, type IndexEntry, type LayerIndex } from './layer-index.ts';

export interface BuiltLayer {
  /** The compressed layer (outFile). */
  path: string;
  mediaType: typeof MediaType.ociLayerGzip | typeof MediaType.ociLayerZstd;
  /** sha256 of the compressed bytes: the blob's digest. */
  digest: Digest;
  /** sha256 of the tar: what the image config lists. */
  diffId: Digest;
  size: number;
  uncompressedSize: number;
  /** Tar entries, whiteouts included. */
  entries: number;
  whiteouts: number;
  /** Sockets found in the source and left out (a socket cannot be archived). */
  skipped: string[];
}

export interface BuildLayerOptions {
  /** A directory laid out from `/`. */
  source: string;
  /** The merged tree below the new layer; paths identical to it are left out. */
  base?: LayerIndex;
  /** `source` is the whole root: what `base` has and `source` lacks gets a whiteout. */
  wholeRoot?: boolean;
  outFile: string;
  compression?: 'gzip' | 'zstd';
  /** gzip 1-9 (default 1), zstd 1-19 (default 3). */
  level?: number;
  /** Overrides every entry's owner (the source's stat otherwise). */
  owner?: { uid: number; gid: number };
}

/**
 * gzip level 1 by default. Measured on the node template (132 MB of tar, mostly the node
 * binary; 2 shared vCPUs): level 1 took 2.2-3.5 s for 52.4 MB, level 6 took 7.5-9.6 s for
 * 48.0 MB. Three times the time for 8% fewer bytes is not worth it on a deploy path.
 * (zstd level 3: 2.0-3.5 s for 44.3 MB.)
 */
export const DEFAULT_GZIP_LEVEL = 1;
export const DEFAULT_ZSTD_LEVEL = 3;

interface SourceEntry {
  type: 'file' | 'directory' | 'symlink';
  stat: Stats;
  linkname: string | undefined;
}

const TYPE_BITS = { file: 0o100000, directory: 0o040000, symlink: 0o120000 } as const;

function refuse(path: string, why: string): ShoalError {
  return new ShoalError('invalid', `${JSON.stringify('/' + path)} in the layer source: ${why}`, { field: 'source', detail: { entry: path } });
}

/** Every path below `root` (not following symlinks), with its lstat. Sockets are collected apart. */
async function walk(root: string): Promise<{ entries: Map<string, SourceEntry>; skipped: string[] }> {
  const entries = new Map<string, SourceEntry>();
  const skipped: string[] = [];
  const stack = [''];
  while (stack.length > 0) {
    const dir = stack.pop() as string;
    const names = await readdir(dir === '' ? root : join(root, dir));
    const stats = await Promise.all(
      names.map(async (name) => {
        const path = joinPath(dir, name);
        const abs = join(root, path);
        const stat = await lstat(abs);
        return { path, abs, stat };
      }),
    );
    for (const { path, abs, stat } of stats) {
      if (stat.isDirectory()) {
        entries.set(path, { type: 'directory', stat, linkname: undefined });
        stack.push(path);
      } else if (stat.isFile()) {
        entries.set(path, { type: 'file', stat, linkname: undefined });
      } else if (stat.isSymbolicLink()) {
        const linkname = await readlink(abs);
        if (symlinkClimbs(path, linkname)) {
          throw refuse(path, `symlink target ${JSON.stringify(linkname)} leads out of the root`);
        }
        entries.set(path, { type: 'symlink', stat, linkname });
      } else if (stat.isSocket()) {
        skipped.push('/' + path);
      } else {
        const kind = stat.isFIFO() ? 'a FIFO' : stat.isCharacterDevice() ? 'a character device' : stat.isBlockDevice() ? 'a block device' : 'of an unknown type';
        throw refuse(path, `${kind} cannot go into a layer`);
      }
    }
  }
  skipped.sort();
  return { entries, skipped };
}

async function hashFile(abs: string): Promise<Digest> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(abs, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return `sha256:${h.digest('hex')}`;
}

function mtimeFromEnv(): Date {
  const raw = process.env.SOURCE_DATE_EPOCH;
  if (raw !== undefined && /^\d+$/.test(raw.trim())) return new Date(Number(raw.trim()) * 1000);
  return new Date(0);
}

/** A pass-through stream that hashes and counts what goes through it. */
class Meter extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    done(null, chunk);
  }
}

/**
 * Writes the layer of `source` over `base` to `outFile` (via a temp file, renamed at the
 * end, so a failed build leaves no outFile). One streaming pass gives digest, diffId
 * and both sizes.
 */
export async function buildLayer(options: BuildLayerOptions): Promise<BuiltLayer> {
  const { source } = options;
  const st = await lstatIfExists(source);
  if (!st?.isDirectory()) throw new ShoalError('not-found', `layer source ${source} is not a directory`, { field: 'source' });
  try {
    return await build(options, options.compression ?? 'gzip');
  } catch (err) {
    if (isShoalError(err)) throw err;
    const e = err as NodeJS.ErrnoException;
    // A file the builder may not read is a problem of the source, not of Shoal.
    throw new ShoalError(e.code === 'EACCES' ? 'invalid' : 'internal', `cannot build layer from ${source}: ${e.message ?? String(err)}`, {
      field: 'source',
      cause: err,
    });
  }
}

async function build(options: BuildLayerOptions, compression: 'gzip' | 'zstd'): Promise<BuiltLayer> {
  const { source, base, wholeRoot = false, outFile, owner } = options;
  const { entries: tree, skipped } = await walk(source);

  const uidOf = (e: SourceEntry): number => owner?.uid ?? e.stat.uid;
  const gidOf = (e: SourceEntry): number => owner?.gid ?? e.stat.gid;

  // What goes in: every path that is new or differs from base…
  const include = new Set<string>();
  for (const [path, e] of tree) {
    const b = base?.get(path);
    if (
      b === undefined ||
      b.type !== e.type ||
      b.mode !== (e.stat.mode & 0o7777) ||
      b.uid !== uidOf(e) ||
      b.gid !== gidOf(e) ||
      (e.type === 'symlink' && b.linkname !== e.linkname) ||
      (e.type === 'file' && (b.size !== e.stat.size || b.sha256 !== (await hashFile(join(source, path)))))
    ) {
      include.add(path);
    }
  }
  // …a whiteout for what a whole root no longer has (one per missing subtree)…
  const whiteouts = new Set<string>();
  if (wholeRoot && base) {
    for (const path of base.keys()) {
      if (tree.has(path)) continue;
      const parent = parentOf(path);
      if (parent === '' || tree.get(parent)?.type === 'directory') whiteouts.add(joinPath(parent, WHITEOUT_PREFIX + baseOf(path)));
    }
  }
  // …and the directories that hold them, so the archive is well formed.
  for (const path of [...include, ...whiteouts]) for (const a of ancestorsOf(path)) include.add(a);

  const order = [...include, ...whiteouts].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const mtime = mtimeFromEnv();

  await mkdir(dirname(outFile), { recursive: true });
  const tmp = `${outFile}.partial-${randomBytes(6).toString('hex')}`;
  const pack = tarPack();
  const tarMeter = new Meter();
  const zMeter = new Meter();
  const level = options.level ?? (compression === 'zstd' ? DEFAULT_ZSTD_LEVEL : DEFAULT_GZIP_LEVEL);
  const compressor =
    compression === 'zstd'
      ? createZstdCompress({ params: { [zlibConstants.ZSTD_c_compressionLevel]: level } })
      : createGzip({ level });
  const writing = pipeline(
    Readable.from(pack as unknown as AsyncIterable<Buffer>),
    tarMeter,
    compressor,
    zMeter,
    createWriteStream(tmp, { flags: 'wx' }),
  );
  // The pipeline's failure also surfaces through the entries; keep it from going unhandled.
  writing.catch(() => {});

  try {
    const firstPathOfInode = new Map<string, string>();
    for (const path of order) {
      if (whiteouts.has(path)) {
        await addEntry(pack, { name: path, type: 'file', mode: TYPE_BITS.file | 0o644, uid: owner?.uid ?? 0, gid: owner?.gid ?? 0, mtime }, undefined);
        continue;
      }
      const e = tree.get(path) as SourceEntry;
      const header = {
        name: e.type === 'directory' ? `${path}/` : path, // the trailing slash tar tools write
        type: e.type,
        mode: TYPE_BITS[e.type] | (e.stat.mode & 0o7777), // never 0: tar-stream would pick a default
        uid: uidOf(e),
        gid: gidOf(e),
        mtime,
        uname: '',
        gname: '',
      };
      if (e.type === 'directory') {
        await addEntry(pack, header, undefined);
      } else if (e.type === 'symlink') {
        await addEntry(pack, { ...header, linkname: e.linkname }, undefined);
      } else {
        // Hardlinks in the source stay hardlinks among the entries that go in.
        const inode = `${e.stat.dev}:${e.stat.ino}`;
        const first = e.stat.nlink > 1 ? firstPathOfInode.get(inode) : undefined;
        if (first !== undefined) {
          await addEntry(pack, { ...header, type: 'link', linkname: first }, undefined);
        } else {
          if (e.stat.nlink > 1) firstPathOfInode.set(inode, path);
          await addEntry(pack, { ...header, size: e.stat.size }, join(source, path));
        }
      }
    }
    pack.finalize();
    await writing;
    await rename(tmp, outFile);
  } catch (err) {
    pack.destroy();
    await writing.catch(() => {});
    await rm(tmp, { force: true });
    throw err;
  }
  return {
    path: outFile,
    mediaType: compression === 'zstd' ? MediaType.ociLayerZstd : MediaType.ociLayerGzip,
    digest: `sha256:${zMeter.hash.digest('hex')}`,
    diffId: `sha256:${tarMeter.hash.digest('hex')}`,
    size: zMeter.bytes,
    uncompressedSize: tarMeter.bytes,
    entries: order.length,
    whiteouts: whiteouts.size,
    skipped,
  };
}

type PackHeader = Parameters<ReturnType<typeof tarPack>['entry']>[0];

/** Adds one entry; for a file, streams exactly `size` bytes of `file` (a file that changed size fails the build). */
function addEntry(pack: ReturnType<typeof tarPack>, header: PackHeader, file: string | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const size = header.size ?? 0;
    if (file === undefined || size === 0) {
      pack.entry({ ...header, size: 0 }, Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
      return;
    }
    const sink = pack.entry(header, (err) => (err ? reject(changed(file, err)) : resolve()));
    sink.on('error', () => {}); // the failure is reported through the promise
    (async () => {
      for await (const chunk of createReadStream(file, { start: 0, end: size - 1, highWaterMark: 1 << 20 })) {
        if (!sink.write(chunk)) await new Promise<void>((r) => {
          const done = (): void => {
            sink.off('drain', done);
            sink.off('close', done);
            r();
          };
          sink.on('drain', done);
          sink.on('close', done);
        });
      }
      sink.end(undefined);
    })().catch((err: unknown) => reject(err)); // the caller destroys the pack
  });
}

function changed(file: string, err: Error): Error {
  if (err.message === 'Size mismatch') return new ShoalError('conflict', `${file} changed size while the layer was built`, { field: 'source' });
  return err;
}
