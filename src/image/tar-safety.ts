// Checks that make a layer archive safe to extract. Every archive is hostile: names are
// normalised and refused when they could reach outside the layer root, links are
// resolved lexically (never by asking the file system), and the archive is bounded in
// entries and bytes. The checks are pure and hold their own memory of the archive so
// far, so the same code vets a pushed layer (nothing written) and guards an unpack.
import { ShoalError } from '../protocol/errors.ts';

export interface UnpackLimits {
  /** Entries of any kind, whiteouts and directories included. */
  maxEntries: number;
  /** Content bytes of one entry. */
  maxEntryBytes: number;
  /** Bytes of the uncompressed tar stream (so a gzip bomb of zero blocks is stopped too). */
  maxTotalBytes: number;
}

const GiB = 1024 ** 3;
export const defaultUnpackLimits: UnpackLimits = Object.freeze({
  maxEntries: 1_000_000,
  maxEntryBytes: 8 * GiB,
  maxTotalBytes: 32 * GiB,
});

export function resolveLimits(limits: Partial<UnpackLimits> | undefined): UnpackLimits {
  return { ...defaultUnpackLimits, ...limits };
}

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_WHITEOUT = '.wh..wh..opq';
/** aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): reserved names, not whiteouts. */
const WHITEOUT_META_PREFIX = '.wh..wh.';

/** The tar header fields the checks read (tar-stream's header has them all). */
export interface TarHeaderLike {
  name: string;
  type?: string | null | undefined;
  size?: number | undefined;
  mode?: number | undefined;
  uid?: number | undefined;
  gid?: number | undefined;
  mtime?: Date | undefined;
  linkname?: string | null | undefined;
}

/**
 * One entry after the checks. `path` is relative to the layer root, normalised
 * (no `.`, no empty components, no trailing slash); '' is the root itself.
 *   file, directory       as in the archive
 *   symlink               `linkname` is the target exactly as written (it was checked)
 *   hardlink              `linkname` is the normalised path of an earlier regular file
 *   whiteout              deletes `target` (parent + NAME) from the layers below
 *   opaque                hides everything below `target` (the directory) in lower layers
 *   meta                  other reserved `.wh..wh.*` names: no meaning for us
 * Whiteout, opaque and meta entries are also ordinary empty files named `path`, which
 * is how the 'keep' mode writes them.
 */
export interface SafeEntry {
  path: string;
  kind: 'file' | 'directory' | 'symlink' | 'hardlink' | 'whiteout' | 'opaque' | 'meta';
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  linkname: string;
  target: string;
}

export function invalidEntry(entry: string, why: string): ShoalError {
  return new ShoalError('invalid', `layer entry ${JSON.stringify(entry)}: ${why}`, { field: 'layer', detail: { entry } });
}

function tooLarge(entry: string, why: string, limit: number): ShoalError {
  return new ShoalError('too-large', `layer entry ${JSON.stringify(entry)}: ${why}`, { field: 'layer', detail: { entry, limit } });
}

/**
 * Normalises an archive member name to a root-relative path, or refuses it: NUL bytes,
 * absolute paths and `..` components are never accepted. A leading `./` is dropped.
 */
export function normalizeEntryName(name: string, what = 'name'): string {
  if (name.includes('\0')) throw invalidEntry(name, `${what} contains a NUL byte`);
  if (name.startsWith('/')) throw invalidEntry(name, `${what} is an absolute path`);
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw invalidEntry(name, `${what} has a ".." component`);
    parts.push(part);
  }
  return parts.join('/');
}

export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

export function baseOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

export function joinPath(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

/** Proper ancestors of a path, outermost first: 'a/b/c' → ['a', 'a/b']. */
export function ancestorsOf(path: string): string[] {
  const out: string[] = [];
  for (let i = path.indexOf('/'); i >= 0; i = path.indexOf('/', i + 1)) out.push(path.slice(0, i));
  return out;
}

/** True when `path` is `dir` or lies below it ('' is the root and contains everything). */
export function isWithin(path: string, dir: string): boolean {
  return dir === '' || path === dir || path.startsWith(`${dir}/`);
}

/**
 * Where a symlink at `linkPath` points, resolved lexically against the layer root, or
 * undefined when it climbs out of the root. Absolute targets are root-relative (what
 * they mean inside the container), so `/usr/lib` is fine and `/../../etc` is not.
 */
export function resolveSymlinkTarget(linkPath: string, target: string): string | undefined {
  const stack = target.startsWith('/') ? [] : parentOf(linkPath).split('/').filter((p) => p !== '');
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (stack.length === 0) return undefined;
      stack.pop();
    } else {
      stack.push(part);
    }
  }
  return stack.join('/');
}

/** The whiteout meaning of an already normalised path, if its last component has one. */
export function whiteoutOf(path: string): { kind: 'whiteout' | 'opaque' | 'meta'; target: string } | undefined {
  const base = baseOf(path);
  if (!base.startsWith(WHITEOUT_PREFIX)) return undefined;
  const dir = parentOf(path);
  if (base === OPAQUE_WHITEOUT) return { kind: 'opaque', target: dir };
  if (base.startsWith(WHITEOUT_META_PREFIX)) return { kind: 'meta', target: dir };
  const name = base.slice(WHITEOUT_PREFIX.length);
  if (name === '' || name === '.' || name === '..') throw invalidEntry(path, `whiteout names no valid file (${JSON.stringify(name)})`);
  return { kind: 'whiteout', target: joinPath(dir, name) };
}

/**
 * The memory of one archive: checks each header in order against what came before.
 * Throws a ShoalError naming the entry for the first thing it refuses.
 */
export class ArchiveChecker {
  readonly limits: UnpackLimits;
  entries = 0;
  /** Paths that are symlinks now (a later entry may replace one). */
  readonly #symlinks = new Set<string>();
  /** Paths that are regular files of this archive now: the only valid hardlink targets. */
  readonly #files = new Set<string>();
  /** Every path that has had something below it: replacing one with a non-directory forgets its subtree. */
  readonly #parents = new Set<string>();

  constructor(limits: UnpackLimits) {
    this.limits = limits;
  }

  check(header: TarHeaderLike): SafeEntry {
    const raw = header.name;
    this.entries += 1;
    if (this.entries > this.limits.maxEntries) {
      throw tooLarge(raw, `more than ${this.limits.maxEntries} entries in the layer`, this.limits.maxEntries);
    }
    const path = normalizeEntryName(raw);
    const size = header.size ?? 0;
    if (!(size >= 0) || !Number.isSafeInteger(size)) throw invalidEntry(raw, `bad size ${String(size)}`);
    if (size > this.limits.maxEntryBytes) {
      throw tooLarge(raw, `${size} bytes is over the limit of ${this.limits.maxEntryBytes} bytes per entry`, this.limits.maxEntryBytes);
    }
    const type = header.type ?? 'file';
    let kind: SafeEntry['kind'];
    let linkname = '';
    let target = '';
    switch (type) {
      case 'file':
      case 'contiguous-file':
        kind = 'file';
        break;
      case 'directory':
        kind = 'directory';
        break;
      case 'symlink': {
        kind = 'symlink';
        linkname = header.linkname ?? '';
        if (linkname === '') throw invalidEntry(raw, 'symlink has an empty target');
        if (linkname.includes('\0')) throw invalidEntry(raw, 'symlink target contains a NUL byte');
        if (resolveSymlinkTarget(path, linkname) === undefined) {
          throw invalidEntry(raw, `symlink target ${JSON.stringify(linkname)} leads out of the layer`);
        }
        break;
      }
      case 'link': {
        kind = 'hardlink';
        const to = header.linkname ?? '';
        if (to === '') throw invalidEntry(raw, 'hardlink has an empty target');
        try {
          linkname = normalizeEntryName(to, 'hardlink target');
        } catch (e) {
          throw invalidEntry(raw, `hardlink target ${JSON.stringify(to)} leads out of the layer (${(e as Error).message})`);
        }
        if (linkname === path || !this.#files.has(linkname) || this.#throughSymlink(linkname) !== undefined) {
          throw invalidEntry(raw, `hardlink target ${JSON.stringify(to)} is not an earlier regular file of this layer`);
        }
        break;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo':
        throw invalidEntry(raw, `${type} entries are not allowed in a layer`);
      default:
        throw invalidEntry(raw, `unsupported entry type ${JSON.stringify(type)}`);
    }
    if (path === '' && kind !== 'directory') throw invalidEntry(raw, 'the layer root must be a directory');
    const via = this.#throughSymlink(path);
    if (via !== undefined) throw invalidEntry(raw, `path passes through the symlink ${JSON.stringify(via)}`);
    const viaFile = ancestorsOf(path).find((a) => this.#files.has(a));
    if (viaFile !== undefined) throw invalidEntry(raw, `parent ${JSON.stringify(viaFile)} is not a directory`);
    if (kind === 'file') {
      const w = whiteoutOf(path);
      if (w) {
        kind = w.kind;
        target = w.target;
      }
    }
    this.#record(path, kind);
    return {
      path,
      kind,
      size,
      mode: (header.mode ?? 0) & 0o7777,
      uid: header.uid ?? 0,
      gid: header.gid ?? 0,
      mtime: header.mtime ?? new Date(0),
      linkname,
      target,
    };
  }

  #throughSymlink(path: string): string | undefined {
    if (this.#symlinks.size === 0) return undefined;
    return ancestorsOf(path).find((a) => this.#symlinks.has(a));
  }

  #record(path: string, kind: SafeEntry['kind']): void {
    for (const a of ancestorsOf(path)) this.#parents.add(a);
    this.#symlinks.delete(path);
    this.#files.delete(path);
    if (kind !== 'directory' && this.#parents.has(path)) {
      // A non-directory replaces a directory: what was below it is gone.
      for (const set of [this.#symlinks, this.#files, this.#parents]) {
        for (const p of set) if (p !== path && isWithin(p, path)) set.delete(p);
      }
      this.#parents.delete(path);
    }
    if (kind === 'symlink') this.#symlinks.add(path);
    // Whiteouts are not files in every mode, so they are no hardlink targets.
    if (kind === 'file' || kind === 'hardlink') this.#files.add(path);
  }
}
