// Safe, atomic layer unpack. A layer is read once, as a stream: decompressed, hashed
// (the diffId), parsed, each entry checked against everything before it (tar-safety.ts)
// and only then written. The tree is built in a sibling temp directory and renamed into
// place when the whole archive passed, so a refused layer leaves nothing behind.
//
// Nothing is ever written through a symlink: parents are checked with lstat, files are
// created with O_EXCL|O_NOFOLLOW, and an existing path is removed before it is replaced.
// Extended attributes in the archive (PAX SCHILY.xattr.*) are ignored: file capabilities
// and ACLs are not restored. Fifos and device nodes are stored in images (the spec allows
// them) but never created on a host: each is skipped with a log line (`onSkip`), and so
// is a hardlink to one. No driver lets an instance use a device node from its image.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, mkdir, open, readdir, rename, rm, symlink, unlink } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { pipeline, Readable } from 'node:stream';
import { promisify } from 'node:util';
import { createGunzip, createZstdDecompress } from 'node:zlib';
import { extract as tarExtract } from 'tar-stream';
import type { Digest } from '../protocol/index.ts';
import { isShoalError, ShoalError, MediaType } from '../protocol/index.ts';
import {
  ArchiveChecker,
  joinPath,
  parentOf,
  resolveLimits,
  type SafeEntry,
  type UnpackLimits,
} from './tar-safety.ts';

export { defaultUnpackLimits, type UnpackLimits } from './tar-safety.ts';

const run = promisify(execFile);

/**
 * What to do with OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`):
 *   keep     write them as the plain empty files they are (inspection, tests)
 *   overlay  turn them into what overlayfs reads in a lowerdir: a 0:0 character device
 *            named NAME, and the xattr trusted.overlay.opaque=y (needs root)
 *   apply    delete what they name from the tree below (flattening layers into one dir)
 */
export type WhiteoutMode = 'keep' | 'overlay' | 'apply';

export interface LayerStats {
  /** Archive entries, whiteouts and directories included. */
  entries: number;
  /** Bytes of the uncompressed tar stream. */
  bytes: number;
  /** sha256 of the uncompressed tar stream. */
  diffId: Digest;
}

export interface LayerSource {
  open(): Readable;
  mediaType: string;
  /** When given, the layer is refused unless its uncompressed tar hashes to this. */
  diffId?: Digest | string;
}

type Input = NodeJS.ReadableStream | Readable;

/** An entry the unpacker did not create, and why. */
export interface SkippedEntry {
  path: string;
  kind: 'fifo' | 'device' | 'hardlink';
  reason: string;
}
export type OnSkip = (entry: SkippedEntry) => void;

/** The default log line for a skipped entry (callers with a logger pass their own onSkip). */
const logSkip: OnSkip = (s) => {
  process.stderr.write(`${JSON.stringify({ level: 'warn', msg: 'layer entry skipped', entry: s.path, kind: s.kind, reason: s.reason })}\n`);
};

const isRoot = (): boolean => process.getuid?.() === 0;

// ---------------------------------------------------------------------------
// Reading: decompress, hash, parse, check.

function decompressorFor(mediaType: string): (() => NodeJS.ReadWriteStream) | null {
  switch (mediaType) {
    case MediaType.ociLayerTar:
      return null;
    case MediaType.ociLayerGzip:
    case MediaType.dockerLayerGzip:
    case MediaType.dockerLayerForeign:
      return () => createGunzip();
    case MediaType.ociLayerZstd:
      return () => createZstdDecompress();
    default:
      throw new ShoalError('unsupported', `unsupported layer media type ${JSON.stringify(mediaType)}`, {
        field: 'mediaType',
        detail: { mediaType },
      });
  }
}

function corrupt(e: unknown, entry: string | undefined): ShoalError {
  if (isShoalError(e)) return e;
  const message = e instanceof Error ? e.message : String(e);
  const where = entry === undefined ? '' : ` (in or after entry ${JSON.stringify(entry)})`;
  return new ShoalError('invalid', `layer is truncated or corrupt: ${message}${where}`, {
    field: 'layer',
    detail: { entry: entry ?? null },
    cause: e,
  });
}

function fsFailure(entry: string, e: unknown): ShoalError {
  if (isShoalError(e)) return e;
  const code = (e as NodeJS.ErrnoException).code;
  const message = e instanceof Error ? e.message : String(e);
  const opts = { field: 'layer', detail: { entry }, cause: e };
  switch (code) {
    case 'ENAMETOOLONG':
    case 'ENOTDIR':
    case 'ELOOP':
      return new ShoalError('invalid', `layer entry ${JSON.stringify(entry)} cannot be written: ${message}`, opts);
    case 'ENOSPC':
    case 'EDQUOT':
      return new ShoalError('unavailable', `no space left to unpack layer entry ${JSON.stringify(entry)}: ${message}`, opts);
    default:
      return new ShoalError('internal', `cannot write layer entry ${JSON.stringify(entry)}: ${message}`, opts);
  }
}

function toReadable(input: Input): Readable {
  return input instanceof Readable ? input : Readable.from(input as AsyncIterable<Buffer>);
}

function destroyInput(input: Input): void {
  const d = (input as { destroy?: () => void }).destroy;
  if (typeof d === 'function') d.call(input);
}

/** Reads an entry's content to the end when the handler did not want it. */
export async function drain(content: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of content) {
    // discard
  }
}

export type EntryHandler = (entry: SafeEntry, content: Readable) => Promise<void>;

/**
 * Streams a layer through every check, calling `onEntry` for each entry in order (it
 * must read or drain `content`). Rejects with a ShoalError; on success returns the
 * counts and the diffId. The input is consumed and destroyed either way.
 */
export async function scanLayer(
  input: Input,
  options: { mediaType: string; limits?: Partial<UnpackLimits> | undefined; expectDiffId?: string | undefined },
  onEntry: EntryHandler,
): Promise<LayerStats> {
  let makeDecompressor: ReturnType<typeof decompressorFor>;
  try {
    makeDecompressor = decompressorFor(options.mediaType);
  } catch (e) {
    destroyInput(input);
    throw e;
  }
  const limits = resolveLimits(options.limits);
  const checker = new ArchiveChecker(limits);
  const hash = createHash('sha256');
  let bytes = 0;
  let failure: ShoalError | undefined;
  const extract = tarExtract();
  // The last header parsed, to say where a corrupt stream or a crossed limit was.
  let current: string | undefined;
  extract.on('entry', (header: { name: string }) => {
    current = header.name;
  });
  let parseError: unknown;
  extract.on('error', (e: unknown) => {
    parseError ??= e;
  });
  const source = toReadable(input);
  const tarBytes: Readable = makeDecompressor
    ? (pipeline(source, makeDecompressor(), () => {}) as unknown as Readable)
    : source;
  const fail = (e: ShoalError): void => {
    if (failure) return;
    failure = e;
    // Stop everything at once, also a producer waiting on a slow input.
    extract.destroy();
    tarBytes.destroy();
    source.destroy();
  };

  // The consumer attaches its listeners synchronously, before any byte is written.
  const consumer = (async () => {
    try {
      for await (const entry of extract) {
        let safe: SafeEntry;
        try {
          safe = checker.check(entry.header as Parameters<ArchiveChecker['check']>[0]);
        } catch (e) {
          fail(corrupt(e, current));
          return;
        }
        try {
          await onEntry(safe, entry as unknown as Readable);
        } catch (e) {
          if (failure) return;
          if (isShoalError(e) || (e as NodeJS.ErrnoException).syscall !== undefined) {
            fail(fsFailure(safe.path, e));
          } else {
            // The entry's stream broke: the archive ended or broke mid-entry. The parser's
            // own error, which says why, comes a tick later.
            await new Promise((r) => setImmediate(r));
            fail(corrupt(parseError ?? e, current));
          }
          return;
        }
        if (failure) return;
      }
    } catch (e) {
      fail(corrupt(e, current));
    }
  })();

  const producer = (async () => {
    try {
      for await (const chunk of tarBytes) {
        if (failure) break;
        const buf = chunk as Buffer;
        bytes += buf.length;
        if (bytes > limits.maxTotalBytes) {
          fail(
            new ShoalError(
              'too-large',
              `layer is over the limit of ${limits.maxTotalBytes} uncompressed bytes` +
                (current === undefined ? '' : ` (at entry ${JSON.stringify(current)})`),
              { field: 'layer', detail: { entry: current ?? null, limit: limits.maxTotalBytes } },
            ),
          );
          break;
        }
        hash.update(buf);
        if (!extract.write(buf)) await writable(extract);
      }
      if (!failure) extract.end(undefined);
    } catch (e) {
      fail(corrupt(e, current));
    }
  })();

  await Promise.all([consumer, producer]);
  if (failure) throw failure;
  const diffId: Digest = `sha256:${hash.digest('hex')}`;
  if (options.expectDiffId !== undefined && options.expectDiffId !== diffId) {
    throw new ShoalError('digest-mismatch', `layer's uncompressed content is ${diffId}, expected diffId ${options.expectDiffId}`, {
      field: 'diffId',
      detail: { expected: options.expectDiffId, actual: diffId },
    });
  }
  return { entries: checker.entries, bytes, diffId };
}

/** Resolves when a stream that refused a write wants more, or is gone. */
function writable(stream: NodeJS.WritableStream & { destroyed?: boolean }): Promise<void> {
  if (stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      stream.off('error', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    stream.on('error', done);
  });
}

// ---------------------------------------------------------------------------
// Writing: one tree, built entry by entry, never following a symlink.

interface DirMeta {
  mode: number;
  uid: number;
  gid: number;
  mtime: Date | undefined;
  /** false when only the mode is to be restored (a lower dir made writable for us). */
  owned: boolean;
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** rm -rf that also works without root through directories without write permission. */
export async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw e;
    await makeWritable(path);
    await rm(path, { recursive: true, force: true });
  }
}

async function makeWritable(path: string): Promise<void> {
  const st = await lstatOrUndefined(path);
  if (!st?.isDirectory()) return;
  await chmod(path, (st.mode & 0o7777) | 0o700).catch(() => {});
  for (const name of await readdir(path).catch(() => [] as string[])) await makeWritable(join(path, name));
}

const MKNOD_SCRIPT = 'for p do mknod -- "$p" c 0 0 || exit 1; done';
const BATCH = 500;
const WRITE_BATCH = 1 << 20;
const SMALL_FILE = 1 << 20;
const MAX_INFLIGHT = 64;
const MAX_INFLIGHT_BYTES = 32 << 20;

class TreeWriter {
  readonly root: string;
  readonly mode: WhiteoutMode;
  readonly asRoot = isRoot();
  /** Paths known to be real directories (not symlinks) in the tree, with their known subdirectories. */
  readonly #dirs = new Set<string>(['']);
  readonly #dirKids = new Map<string, Set<string>>();
  readonly #dirMeta = new Map<string, DirMeta>();
  /** Directories we may write into during this layer (non-root only). */
  readonly #opened = new Set<string>();
  // apply mode, per layer
  #touched = new Set<string>();
  #whiteouts: string[] = [];
  #opaque: string[] = [];
  // overlay mode, per layer
  /** Whiteout devices to make, by parent directory. */
  readonly #devices = new Map<string, Set<string>>();
  readonly #opaqueXattr = new Set<string>();
  /** Fifos and device nodes not created (hardlinks to them are skipped too). */
  readonly #skipped = new Set<string>();
  readonly #onSkip: OnSkip;
  // small files finishing in the background (see #file)
  readonly #inflight = new Map<string, Promise<void>>();
  #inflightBytes = 0;
  #failed: ShoalError | undefined;

  constructor(root: string, mode: WhiteoutMode, onSkip: OnSkip = logSkip) {
    this.root = root;
    this.mode = mode;
    this.#onSkip = onSkip;
  }

  #abs(path: string): string {
    return path === '' ? this.root : join(this.root, path);
  }

  beginLayer(): void {
    this.#opened.clear();
    this.#skipped.clear();
    this.#touched = new Set();
    this.#whiteouts = [];
    this.#opaque = [];
  }

  async entry(e: SafeEntry, content: Readable): Promise<void> {
    if (this.#failed) throw this.#failed;
    let kind = e.kind;
    if (this.mode === 'keep' && (kind === 'whiteout' || kind === 'opaque' || kind === 'meta')) kind = 'file';
    if (kind !== 'file') await drain(content);
    if (this.mode === 'apply') this.#touch(e.path, kind === 'directory' || kind === 'file' || kind === 'symlink' || kind === 'hardlink');
    switch (kind) {
      case 'directory':
        return this.#directory(e);
      case 'file':
        return this.#file(e, content);
      case 'symlink': {
        const abs = this.#abs(e.path);
        await this.#create(e.path, () => symlink(e.linkname, abs));
        if (this.asRoot) await lchown(abs, e.uid, e.gid);
        await lutimes(abs, e.mtime, e.mtime);
        return;
      }
      case 'hardlink': {
        if (this.#skipped.has(e.linkname)) {
          this.#skipped.add(e.path);
          this.#onSkip({ path: e.path, kind: 'hardlink', reason: `its target ${e.linkname} is a fifo or device node, which are not created on a host` });
          return;
        }
        await this.#settle();
        // The checker saw the target as a file or symlink; make sure the tree agrees.
        // link(2) does not follow a symlink: the new name is a second link to the symlink.
        const st = (await this.#parentsAreDirs(e.linkname)) ? await lstatOrUndefined(this.#abs(e.linkname)) : undefined;
        if (!st?.isFile() && !st?.isSymbolicLink()) {
          throw new ShoalError('invalid', `layer entry ${JSON.stringify(e.path)}: hardlink target ${JSON.stringify(e.linkname)} is not a regular file or symlink`, {
            field: 'layer',
            detail: { entry: e.path },
          });
        }
        await this.#create(e.path, () => link(this.#abs(e.linkname), this.#abs(e.path)));
        return;
      }
      case 'fifo':
      case 'device':
        this.#skipped.add(e.path);
        this.#onSkip({ path: e.path, kind, reason: `${kind === 'fifo' ? 'fifos' : 'device nodes'} from an image are not created on a host` });
        return;
      case 'whiteout':
        if (this.mode === 'overlay') {
          // The device is made at the end of the layer, in one batch.
          await this.#ensureParents(e.target);
          await this.#settleIf(e.target);
          const st = await lstatOrUndefined(this.#abs(e.target));
          if (st) await this.#remove(e.target, st);
          const dir = parentOf(e.target);
          let set = this.#devices.get(dir);
          if (!set) this.#devices.set(dir, (set = new Set()));
          set.add(e.target);
        } else {
          await this.#ensureParents(e.path);
          this.#whiteouts.push(e.target);
        }
        return;
      case 'opaque':
        await this.#ensureParents(e.path);
        if (this.mode === 'overlay') this.#opaqueXattr.add(e.target);
        else this.#opaque.push(e.target);
        return;
      case 'meta':
        return;
      default: {
        const never: never = kind;
        return never;
      }
    }
  }

  async #directory(e: SafeEntry): Promise<void> {
    if (e.path !== '') {
      await this.#ensureParents(e.path);
      await this.#settleIf(e.path);
      const abs = this.#abs(e.path);
      const st = await lstatOrUndefined(abs);
      if (!st?.isDirectory()) {
        if (st) await this.#remove(e.path, st);
        await mkdir(abs, { mode: 0o700 });
      }
      this.#addDir(e.path);
    }
    this.#dirMeta.set(e.path, { mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, owned: true });
  }

  async #file(e: SafeEntry, content: Readable): Promise<void> {
    const abs = this.#abs(e.path);
    const fh = await this.#create(e.path, () =>
      open(abs, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600),
    );
    const finish = async (chunks: Buffer[]): Promise<void> => {
      try {
        if (chunks.length > 0) await fh.writev(chunks);
        await Promise.all([
          // chown first: it clears setuid bits that chmod then sets.
          (async () => {
            if (this.asRoot) await fh.chown(e.uid, e.gid);
            await fh.chmod(e.mode);
          })(),
          fh.utimes(e.mtime, e.mtime),
        ]);
      } finally {
        await fh.close();
      }
    };
    let chunks: Buffer[] = [];
    let bytes = 0;
    try {
      for await (const chunk of content) {
        chunks.push(chunk as Buffer);
        bytes += (chunk as Buffer).length;
        // Gather chunks into few large writes: each write is a trip to the thread pool.
        if (e.size > SMALL_FILE && bytes >= WRITE_BATCH) {
          await fh.writev(chunks);
          chunks = [];
          bytes = 0;
        }
      }
    } catch (err) {
      await fh.close();
      throw err;
    }
    if (e.size > SMALL_FILE) return finish(chunks);
    // A small file is in memory: finish it in the background while the next entries are
    // read (most of a layer's cost is waiting on these round trips, one file at a time).
    await this.#background(e.path, bytes, finish(chunks));
  }

  async #background(path: string, bytes: number, task: Promise<void>): Promise<void> {
    const tracked = task.then(
      () => {
        this.#inflight.delete(path);
        this.#inflightBytes -= bytes;
      },
      (err: unknown) => {
        this.#inflight.delete(path);
        this.#inflightBytes -= bytes;
        this.#failed ??= fsFailure(path, err);
      },
    );
    this.#inflight.set(path, tracked);
    this.#inflightBytes += bytes;
    while (this.#inflight.size >= MAX_INFLIGHT || this.#inflightBytes > MAX_INFLIGHT_BYTES) {
      await Promise.race(this.#inflight.values());
    }
    if (this.#failed) throw this.#failed;
  }

  /** Waits for every background file; throws the first failure. */
  async #settle(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.all(this.#inflight.values());
    if (this.#failed) throw this.#failed;
  }

  /** After a failure: let background writes finish (their errors no longer matter). */
  async abandon(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled(this.#inflight.values());
  }

  async #settleIf(path: string): Promise<void> {
    if (this.#inflight.has(path)) await this.#settle();
  }

  /**
   * Creates something at `path` with `make`, after its parents; if something is already
   * there (a lower layer's, or an earlier entry's: the later one wins, as in tar), it is
   * removed first. Trying first saves an lstat per entry in the common case.
   */
  async #create<T>(path: string, make: () => Promise<T>): Promise<T> {
    await this.#ensureParents(path);
    try {
      return await make();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const st = await lstatOrUndefined(this.#abs(path));
    if (st) await this.#remove(path, st);
    return make();
  }

  /** Marks a path and its ancestors as this layer's (apply mode: whiteouts spare them). */
  #touch(path: string, self: boolean): void {
    if (self) this.#touched.add(path);
    // Ancestors are added as whole chains, so the first one already there ends the walk.
    for (let a = parentOf(path); path !== '' && !this.#touched.has(a); a = parentOf(a)) {
      this.#touched.add(a);
      if (a === '') break;
    }
  }

  /**
   * Unknown ancestors of `path`, outermost first. Every known directory's ancestors are
   * known too, so the walk stops at the nearest one (no quadratic cost for deep paths).
   */
  #unknownAncestors(path: string): string[] {
    const out: string[] = [];
    for (let a = parentOf(path); path !== '' && !this.#dirs.has(a); a = parentOf(a)) out.push(a);
    return out.reverse();
  }

  #addDir(path: string): void {
    this.#dirs.add(path);
    const parent = parentOf(path);
    let kids = this.#dirKids.get(parent);
    if (!kids) this.#dirKids.set(parent, (kids = new Set()));
    kids.add(path);
  }

  /** Forgets a removed directory and everything known below it. */
  #forgetDir(path: string): void {
    for (const child of this.#dirKids.get(path) ?? []) this.#forgetDir(child);
    this.#dirKids.delete(path);
    this.#dirKids.get(parentOf(path))?.delete(path);
    this.#dirs.delete(path);
    this.#dirMeta.delete(path);
    this.#opened.delete(path);
    this.#opaqueXattr.delete(path);
    this.#devices.delete(path);
  }

  async #ensureParents(path: string): Promise<void> {
    for (const a of this.#unknownAncestors(path)) {
      const abs = this.#abs(a);
      const st = await lstatOrUndefined(abs);
      if (st === undefined) {
        if (!this.asRoot) await this.#openUp(parentOf(a));
        await mkdir(abs, { mode: 0o755 });
        await chmod(abs, 0o755); // not the umask's choice
        this.#opened.add(a);
      } else if (st.isSymbolicLink()) {
        throw new ShoalError('invalid', `layer entry ${JSON.stringify(path)}: path passes through the symlink ${JSON.stringify(a)}`, {
          field: 'layer',
          detail: { entry: path },
        });
      } else if (!st.isDirectory()) {
        throw new ShoalError('invalid', `layer entry ${JSON.stringify(path)}: parent ${JSON.stringify(a)} is not a directory`, {
          field: 'layer',
          detail: { entry: path },
        });
      }
      this.#addDir(a);
    }
    if (!this.asRoot) await this.#openUp(parentOf(path));
  }

  /**
   * Without root, a directory (of a lower layer, or the layer's own after its mode was
   * set) may not let us add or remove entries: give ourselves rwx until the end of the
   * layer, when its mode is restored.
   */
  async #openUp(dir: string): Promise<void> {
    if (this.#opened.has(dir)) return;
    const abs = this.#abs(dir);
    const st = await lstat(abs);
    if ((st.mode & 0o700) !== 0o700) {
      await chmod(abs, (st.mode & 0o7777) | 0o700);
      if (!this.#dirMeta.has(dir)) this.#dirMeta.set(dir, { mode: st.mode & 0o7777, uid: 0, gid: 0, mtime: undefined, owned: false });
    }
    this.#opened.add(dir);
  }

  /** Whether every ancestor of `path` is a real directory (never a symlink). */
  async #parentsAreDirs(path: string): Promise<boolean> {
    for (const a of this.#unknownAncestors(path)) {
      const st = await lstatOrUndefined(this.#abs(a));
      if (!st?.isDirectory()) return false;
      this.#addDir(a);
    }
    return true;
  }

  /** Removes what is at `path` (which exists) and forgets everything known below it. */
  async #remove(path: string, st: Stats): Promise<void> {
    await this.#settle();
    if (!this.asRoot) await this.#openUp(parentOf(path));
    if (st.isDirectory()) {
      await removeTree(this.#abs(path));
      if (this.#dirs.has(path)) this.#forgetDir(path);
    } else {
      await unlink(this.#abs(path));
      this.#devices.get(parentOf(path))?.delete(path);
    }
  }

  /** apply mode: remove `path` from the lower layers, sparing what this layer wrote. */
  async #removeLower(path: string): Promise<void> {
    if (!(await this.#parentsAreDirs(path))) return;
    const st = await lstatOrUndefined(this.#abs(path));
    if (!st) return;
    if (!this.#touched.has(path)) {
      await this.#remove(path, st);
      return;
    }
    if (st.isDirectory()) {
      for (const name of await readdir(this.#abs(path))) await this.#removeLower(joinPath(path, name));
    }
  }

  async endLayer(): Promise<void> {
    await this.#settle();
    if (this.mode === 'apply') {
      for (const target of this.#whiteouts) await this.#removeLower(target);
      for (const dir of this.#opaque) {
        if (!(await this.#parentsAreDirs(joinPath(dir, 'x')))) continue;
        const st = await lstatOrUndefined(this.#abs(dir));
        if (!st?.isDirectory()) continue;
        for (const name of await readdir(this.#abs(dir))) await this.#removeLower(joinPath(dir, name));
      }
    }
    if (this.mode === 'overlay') {
      // A later entry of the layer may have taken a whiteout's place (it wins, as in tar).
      const devices: string[] = [];
      for (const p of [...this.#devices.values()].flatMap((set) => [...set])) {
        if ((await this.#parentsAreDirs(p)) && !(await lstatOrUndefined(this.#abs(p)))) devices.push(this.#abs(p));
      }
      for (let i = 0; i < devices.length; i += BATCH) {
        await run('sh', ['-c', MKNOD_SCRIPT, 'sh', ...devices.slice(i, i + BATCH)]);
      }
      this.#devices.clear();
      const dirs = [...this.#opaqueXattr].map((p) => this.#abs(p));
      for (let i = 0; i < dirs.length; i += BATCH) {
        try {
          await run('setfattr', ['-h', '-n', 'trusted.overlay.opaque', '-v', 'y', ...dirs.slice(i, i + BATCH)]);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
            throw new ShoalError('unsupported', 'setfattr is not installed: install the Debian package "attr" to unpack layers with opaque directories for overlayfs', { cause: e });
          }
          throw e;
        }
      }
      this.#opaqueXattr.clear();
    }
    // Directories last, deepest first: writing their children changed their mtimes.
    const metas = [...this.#dirMeta].sort((a, b) => depth(b[0]) - depth(a[0]));
    for (const [path, m] of metas) {
      const abs = this.#abs(path);
      // chmod follows symlinks; make sure this is still the directory it was.
      if (!(await lstatOrUndefined(abs))?.isDirectory()) continue;
      if (m.owned && this.asRoot) await lchown(abs, m.uid, m.gid);
      await chmod(abs, m.mode);
      if (m.mtime) await lutimes(abs, m.mtime, m.mtime);
    }
    this.#dirMeta.clear();
  }
}

function depth(path: string): number {
  if (path === '') return 0;
  let n = 1;
  for (let i = path.indexOf('/'); i >= 0; i = path.indexOf('/', i + 1)) n += 1;
  return n;
}

// ---------------------------------------------------------------------------
// Public entry points.

async function freshTemp(dest: string): Promise<string> {
  if (await lstatOrUndefined(dest)) {
    throw new ShoalError('conflict', `${dest} already exists`, { field: 'dest', detail: { dest } });
  }
  await mkdir(dirname(dest), { recursive: true });
  const tmp = `${dest}.partial-${randomBytes(6).toString('hex')}`;
  await mkdir(tmp, { mode: 0o755 });
  await chmod(tmp, 0o755);
  return tmp;
}

async function publish(tmp: string, dest: string): Promise<void> {
  try {
    // rename() would silently replace an empty directory; look once more.
    if (await lstatOrUndefined(dest)) throw Object.assign(new Error('exists'), { code: 'EEXIST' });
    await rename(tmp, dest);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTEMPTY') {
      throw new ShoalError('conflict', `${dest} already exists`, { field: 'dest', detail: { dest } });
    }
    throw e;
  }
}

function checkMode(mode: WhiteoutMode): void {
  if (mode === 'overlay' && !isRoot()) {
    throw new ShoalError('unsupported', "whiteouts: 'overlay' writes character devices and trusted.* xattrs, which needs root", {
      field: 'whiteouts',
    });
  }
}

/**
 * Unpacks one layer into `dest`, which must not exist. The layer is refused whole (and
 * nothing is left behind) if any entry is unsafe, a limit is crossed, the stream is
 * corrupt, or the diffId differs from `expectDiffId`.
 */
export async function unpackLayer(
  input: Input,
  dest: string,
  options: { mediaType: string; limits?: Partial<UnpackLimits>; whiteouts: WhiteoutMode; expectDiffId?: string; onSkip?: OnSkip },
): Promise<LayerStats> {
  let tmp: string | undefined;
  let writer: TreeWriter | undefined;
  try {
    checkMode(options.whiteouts);
    decompressorFor(options.mediaType);
    tmp = await freshTemp(dest);
    writer = new TreeWriter(tmp, options.whiteouts, options.onSkip);
    writer.beginLayer();
    const w = writer;
    const stats = await scanLayer(input, options, (e, content) => w.entry(e, content));
    await writer.endLayer();
    await publish(tmp, dest);
    return stats;
  } catch (e) {
    destroyInput(input);
    await writer?.abandon();
    if (tmp !== undefined) await removeTree(tmp);
    throw e;
  }
}

/**
 * Applies one layer, whiteouts included, on top of the existing tree `dest` (whiteouts
 * 'apply'). Not atomic: on failure `dest` is half-changed, so callers apply into a
 * directory of their own and discard it on error (flattenLayers does).
 */
export async function applyLayer(
  input: Input,
  dest: string,
  options: { mediaType: string; limits?: Partial<UnpackLimits>; expectDiffId?: string; onSkip?: OnSkip },
): Promise<LayerStats> {
  const st = await lstatOrUndefined(dest);
  if (!st?.isDirectory()) {
    destroyInput(input);
    throw new ShoalError('not-found', `${dest} is not a directory`, { field: 'dest', detail: { dest } });
  }
  const writer = new TreeWriter(dest, 'apply', options.onSkip);
  try {
    writer.beginLayer();
    const stats = await scanLayer(input, options, (e, content) => writer.entry(e, content));
    await writer.endLayer();
    return stats;
  } catch (e) {
    await writer.abandon();
    throw e;
  }
}

/** Every check unpackLayer makes, writing nothing (vets a pushed layer). */
export async function checkLayer(
  input: Input,
  options: { mediaType: string; limits?: Partial<UnpackLimits>; expectDiffId?: string },
): Promise<LayerStats> {
  return scanLayer(input, options, (_e, content) => drain(content));
}

/**
 * Applies `layers` in order (lowest first), whiteouts and opaque directories included,
 * into the fresh directory `dest`: the merged tree of an image without overlayfs.
 * Atomic like unpackLayer. Limits apply to each layer.
 */
export async function flattenLayers(
  layers: LayerSource[],
  dest: string,
  limits?: Partial<UnpackLimits>,
  onSkip?: OnSkip,
): Promise<{ layers: LayerStats[] }> {
  const tmp = await freshTemp(dest);
  const writer = new TreeWriter(tmp, 'apply', onSkip);
  try {
    const out: LayerStats[] = [];
    for (const layer of layers) {
      writer.beginLayer();
      out.push(
        await scanLayer(layer.open(), { mediaType: layer.mediaType, limits, expectDiffId: layer.diffId }, (e, content) =>
          writer.entry(e, content),
        ),
      );
      await writer.endLayer();
    }
    await publish(tmp, dest);
    return { layers: out };
  } catch (e) {
    await writer.abandon();
    await removeTree(tmp);
    throw e;
  }
}
