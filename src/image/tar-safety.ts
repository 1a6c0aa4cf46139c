// Checks that make a layer archive safe to extract. Every archive is hostile: names are
// normalised and refused when they could reach outside the layer root, links are
// resolved lexically (never by asking the file system), and the archive is bounded in
// entries and bytes. What the image spec allows is accepted: symlinks whose relative
// target climbs above `/` (resolved inside the root, as the kernel does in a chroot, and
// rewritten to that in-root target), hardlinks to symlinks, fifos and device nodes
// (the unpacker skips the last two with a log line). The checks are pure and hold their own memory of the archive so
// far, so the same code vets a pushed layer (nothing written) and guards an unpack.
import { ShoalError } from '../protocol/index.ts';

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
 *   symlink               `linkname` is the target as written, or, when it climbs above
 *                         the root, the same target resolved inside the root
 *   hardlink              `linkname` is the normalised path of an earlier regular file,
 *                         symlink, fifo or device node of the archive
 *   fifo, device          a named pipe or a character/block device node (never created
 *                         on a host: the unpacker skips them)
 *   whiteout              deletes `target` (parent + NAME) from the layers below
 *   opaque                hides everything below `target` (the directory) in lower layers
 *   meta                  other reserved `.wh..wh.*` names: no meaning for us
 * Whiteout, opaque and meta entries are also ordinary empty files named `path`, which
 * is how the 'keep' mode writes them.
 */
export interface SafeEntry {
  path: string;
  kind: 'file' | 'directory' | 'symlink' | 'hardlink' | 'fifo' | 'device' | 'whiteout' | 'opaque' | 'meta';
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

/**
 * Where a symlink at `linkPath` points, resolved lexically against the layer root, as a
 * root-relative path. Absolute targets are root-relative (what they mean inside the
 * container), and `..` at the root stays at the root, as in a chroot: `/../etc` and,
 * from `a/l`, `../../etc` both name `etc`.
 */
export function resolveSymlinkTarget(linkPath: string, target: string): string {
  return resolveInRoot(linkPath, target).path;
}

/** Whether a symlink's target climbs above the root (allowed in images; layer-build refuses it in a source tree). */
export function symlinkClimbs(linkPath: string, target: string): boolean {
  return resolveInRoot(linkPath, target).climbs;
}

function resolveInRoot(linkPath: string, target: string): { path: string; climbs: boolean } {
  const stack = target.startsWith('/') ? [] : parentOf(linkPath).split('/').filter((p) => p !== '');
  let climbs = false;
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (stack.length === 0) climbs = true;
      else stack.pop();
    } else {
      stack.push(part);
    }
  }
  return { path: stack.join('/'), climbs };
}

/**
 * The symlink target to write for `linkPath`: as written unless it climbs above the
 * root, in which case the target it has inside the root (absolute targets stay
 * absolute, relative ones stay relative), so that the link cannot lead out of the tree
 * even when the host follows it from outside the container.
 */
export function containedSymlinkTarget(linkPath: string, target: string): string {
  const { path, climbs } = resolveInRoot(linkPath, target);
  if (!climbs) return target;
  if (target.startsWith('/')) return `/${path}`;
  const from = parentOf(linkPath).split('/').filter((p) => p !== '');
  const to = path.split('/').filter((p) => p !== '');
  let common = 0;
  while (common < from.length && common < to.length && from[common] === to[common]) common++;
  const rel = [...Array<string>(from.length - common).fill('..'), ...to.slice(common)].join('/');
  return rel === '' ? '.' : rel;
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

/** Linux's PATH_MAX: no longer name can be created, and longer ones only cost time. */
export const MAX_NAME_BYTES = 4096;

/** 'special': a fifo or device node; 'other': whiteouts and reserved names. */
type NodeKind = 'dir' | 'file' | 'symlink' | 'special' | 'other';

function nodeKindOf(kind: Exclude<SafeEntry['kind'], 'hardlink'>): NodeKind {
  switch (kind) {
    case 'directory':
      return 'dir';
    case 'file':
      return 'file';
    case 'symlink':
      return 'symlink';
    case 'fifo':
    case 'device':
      return 'special';
    case 'whiteout':
    case 'opaque':
    case 'meta':
      return 'other';
    default: {
      const never: never = kind;
      return never;
    }
  }
}

/**
 * The memory of one archive: checks each header in order against what came before.
 * Throws a ShoalError naming the entry for the first thing it refuses.
 *
 * It keeps the archive's tree (explicit entries and the directories they imply) with a
 * child list per directory, so that each check walks up only to the nearest known
 * directory and a replaced subtree is dropped in time proportional to its size: a
 * hostile archive cannot make the checks quadratic. Implied directories count against
 * maxEntries, since an unpack creates them too.
 */
export class ArchiveChecker {
  readonly limits: UnpackLimits;
  /** Archive entries seen. */
  entries = 0;
  /** Paths recorded (entries and implied directories): what maxEntries bounds. */
  #paths = 0;
  readonly #kinds = new Map<string, NodeKind>();
  readonly #children = new Map<string, Set<string>>();

  constructor(limits: UnpackLimits) {
    this.limits = limits;
  }

  check(header: TarHeaderLike): SafeEntry {
    const raw = header.name;
    this.entries += 1;
    if (this.entries > this.limits.maxEntries) {
      throw tooLarge(raw, `more than ${this.limits.maxEntries} entries in the layer`, this.limits.maxEntries);
    }
    if (Buffer.byteLength(raw) > MAX_NAME_BYTES) throw invalidEntry(raw.slice(0, 200) + '…', `name is longer than ${MAX_NAME_BYTES} bytes`);
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
        if (Buffer.byteLength(linkname) > MAX_NAME_BYTES) throw invalidEntry(raw, `symlink target is longer than ${MAX_NAME_BYTES} bytes`);
        linkname = containedSymlinkTarget(path, linkname);
        break;
      }
      case 'link': {
        kind = 'hardlink';
        const to = header.linkname ?? '';
        if (to === '') throw invalidEntry(raw, 'hardlink has an empty target');
        if (Buffer.byteLength(to) > MAX_NAME_BYTES) throw invalidEntry(raw, `hardlink target is longer than ${MAX_NAME_BYTES} bytes`);
        try {
          linkname = normalizeEntryName(to, 'hardlink target');
        } catch (e) {
          throw invalidEntry(raw, `hardlink target ${JSON.stringify(to)} leads out of the layer (${(e as Error).message})`);
        }
        // A recorded path has only directories above it (a replaced parent drops its
        // subtree), so a kind here means: an earlier entry, reachable without symlinks.
        const targetKind = this.#kinds.get(linkname);
        if (linkname === path || targetKind === undefined || targetKind === 'dir' || targetKind === 'other') {
          throw invalidEntry(raw, `hardlink target ${JSON.stringify(to)} is not an earlier regular file, symlink or special file of this layer`);
        }
        break;
      }
      case 'character-device':
      case 'block-device':
        kind = 'device';
        break;
      case 'fifo':
        kind = 'fifo';
        break;
      default:
        throw invalidEntry(raw, `unsupported entry type ${JSON.stringify(type)}`);
    }
    if (path === '' && kind !== 'directory') throw invalidEntry(raw, 'the layer root must be a directory');
    // Walk up to the nearest known directory; everything above it was checked before.
    const implied: string[] = [];
    for (let a = parentOf(path); path !== '' && a !== ''; a = parentOf(a)) {
      const k = this.#kinds.get(a);
      if (k === 'dir') break;
      if (k === 'symlink') throw invalidEntry(raw, `path passes through the symlink ${JSON.stringify(a)}`);
      if (k !== undefined) throw invalidEntry(raw, `parent ${JSON.stringify(a)} is not a directory`);
      implied.push(a);
    }
    if (kind === 'file') {
      const w = whiteoutOf(path);
      if (w) {
        kind = w.kind;
        target = w.target;
      }
    }
    for (let i = implied.length - 1; i >= 0; i--) this.#record(raw, implied[i] as string, 'dir');
    if (path !== '') {
      const nodeKind = kind === 'hardlink' ? (this.#kinds.get(linkname) ?? 'file') : nodeKindOf(kind);
      this.#record(raw, path, nodeKind);
    }
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

  #record(raw: string, path: string, kind: NodeKind): void {
    const old = this.#kinds.get(path);
    if (old === undefined) {
      this.#paths += 1;
      if (this.#paths > this.limits.maxEntries) {
        throw tooLarge(raw, `more than ${this.limits.maxEntries} entries in the layer, counting the directories they imply`, this.limits.maxEntries);
      }
      const parent = parentOf(path);
      let kids = this.#children.get(parent);
      if (!kids) this.#children.set(parent, (kids = new Set()));
      kids.add(path);
    } else if (old === 'dir' && kind !== 'dir') {
      // A non-directory replaces a directory: what was below it is gone.
      this.#dropBelow(path);
    }
    this.#kinds.set(path, kind);
  }

  #dropBelow(path: string): void {
    const kids = this.#children.get(path);
    if (!kids) return;
    this.#children.delete(path);
    for (const child of kids) {
      this.#dropBelow(child);
      this.#kinds.delete(child);
    }
  }
}
