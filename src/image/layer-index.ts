// The merged view of a stack of layers, read from the archives without unpacking them:
// what a file system built from those layers would hold at each path. layer-build.ts
// compares a service's tree with it to write an overlay of only what changed.
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Digest } from '../protocol/index.ts';
import { ShoalError } from '../protocol/index.ts';
import { scanLayer, drain, type LayerSource } from './layer-unpack.ts';
import { baseOf, parentOf, type SafeEntry, type UnpackLimits } from './tar-safety.ts';

export interface IndexEntry {
  type: 'file' | 'directory' | 'symlink';
  /** Permission bits (& 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Content bytes (0 for directories and symlinks). */
  size: number;
  /** Files only: sha256 of the content. */
  sha256: Digest | undefined;
  /** Symlinks only: the target as written. */
  linkname: string | undefined;
}

/** Root-relative path ('usr/bin/node', no leading slash; the root itself is not listed) → entry. */
export type LayerIndex = Map<string, IndexEntry>;

const IMPLICIT_DIR: IndexEntry = { type: 'directory', mode: 0o755, uid: 0, gid: 0, size: 0, sha256: undefined, linkname: undefined };

/** A LayerIndex with a child list per directory, so a subtree is removed without a scan. */
class IndexBuilder {
  readonly entries: LayerIndex = new Map();
  readonly #children = new Map<string, Set<string>>();

  get(path: string): IndexEntry | undefined {
    return this.entries.get(path);
  }

  set(path: string, entry: IndexEntry): void {
    const old = this.entries.get(path);
    if (old && old.type === 'directory' && entry.type !== 'directory') this.removeBelow(path);
    this.entries.set(path, entry);
    const parent = parentOf(path);
    let kids = this.#children.get(parent);
    if (!kids) this.#children.set(parent, (kids = new Set()));
    kids.add(baseOf(path));
  }

  /** Removes `path` and everything below it. */
  remove(path: string): void {
    if (!this.entries.has(path)) return;
    this.removeBelow(path);
    this.entries.delete(path);
    this.#children.get(parentOf(path))?.delete(baseOf(path));
  }

  /** Removes everything below `path` (an opaque directory keeps itself). */
  removeBelow(path: string): void {
    const kids = this.#children.get(path);
    if (!kids) return;
    this.#children.delete(path);
    for (const name of kids) {
      const child = path === '' ? name : `${path}/${name}`;
      this.removeBelow(child);
      this.entries.delete(child);
    }
  }

  /**
   * Parents of `path` as directories, as an unpack creates them; never through a symlink
   * or file. A directory in the index has only directories above it, so the walk stops
   * at the nearest one.
   */
  ensureParents(path: string, entryName: string): void {
    const missing: string[] = [];
    for (let a = parentOf(path); a !== ''; a = parentOf(a)) {
      const e = this.entries.get(a);
      if (e === undefined) {
        missing.push(a);
        continue;
      }
      if (e.type === 'directory') break;
      throw new ShoalError('invalid', `layer entry ${JSON.stringify(entryName)}: parent ${JSON.stringify(a)} is a ${e.type}, not a directory`, {
        field: 'layer',
        detail: { entry: entryName },
      });
    }
    for (let i = missing.length - 1; i >= 0; i--) this.set(missing[i] as string, { ...IMPLICIT_DIR });
  }
}

interface Seen {
  entry: SafeEntry;
  sha256: Digest | undefined;
}

async function hashContent(content: Readable): Promise<Digest> {
  const h = createHash('sha256');
  for await (const chunk of content) h.update(chunk as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/**
 * Reads `layers` (lowest first) and returns the merged tree they describe, whiteouts
 * and opaque directories applied. Every archive gets the same checks as an unpack.
 */
export async function indexLayers(layers: LayerSource[], limits?: Partial<UnpackLimits>): Promise<LayerIndex> {
  const index = new IndexBuilder();
  for (const layer of layers) {
    const seen: Seen[] = [];
    await scanLayer(layer.open(), { mediaType: layer.mediaType, limits, expectDiffId: layer.diffId }, async (entry, content) => {
      if (entry.kind === 'file') seen.push({ entry, sha256: await hashContent(content) });
      else {
        await drain(content);
        seen.push({ entry, sha256: undefined });
      }
    });
    // A layer's whiteouts only hide what is below it, so they go first.
    for (const { entry } of seen) {
      if (entry.kind === 'whiteout') index.remove(entry.target);
      else if (entry.kind === 'opaque') index.removeBelow(entry.target);
    }
    for (const { entry, sha256 } of seen) {
      if (entry.path === '') continue;
      index.ensureParents(entry.path, entry.path);
      const common = { mode: entry.mode, uid: entry.uid, gid: entry.gid };
      switch (entry.kind) {
        case 'directory':
          index.set(entry.path, { type: 'directory', ...common, size: 0, sha256: undefined, linkname: undefined });
          break;
        case 'file':
          index.set(entry.path, { type: 'file', ...common, size: entry.size, sha256, linkname: undefined });
          break;
        case 'symlink':
          index.set(entry.path, { type: 'symlink', ...common, size: 0, sha256: undefined, linkname: entry.linkname });
          break;
        case 'hardlink': {
          // One inode: the link shows what its target shows.
          const target = index.get(entry.linkname);
          if (target) index.set(entry.path, { ...target });
          break;
        }
        case 'whiteout':
        case 'opaque':
        case 'meta':
          break;
        case 'fifo':
        case 'device':
          // Never created by an unpack (skipped there), so not in the tree it builds.
          break;
        default: {
          const never: never = entry.kind;
          return never;
        }
      }
    }
  }
  return index.entries;
}
