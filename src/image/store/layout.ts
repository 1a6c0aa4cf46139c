// Where an image store keeps repositories, as plain files (the distribution registry's
// storage driver in small):
//
//   <root>/<name>/_manifests/<hex>   membership marker; content: the media type
//   <root>/<name>/_tags/<tag>        content: the manifest digest (atomic rename)
//
// `_manifests` and `_tags` start with `_`, which no repository name component can, so a
// repository `a/b` and a repository `a/b/tags` never collide in the tree. The layout
// holds no state but its root: every answer comes from the files.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { digestHex, isDigest, type Digest, isRepositoryName, isTagName } from '../../protocol/index.ts';
import { exists, isNoEnt } from '../fs-util.ts';

export interface RepoLayout {
  readonly root: string;
  /** The media type a repository holds a manifest as, or undefined when it does not hold it. */
  markerType(repo: string, digest: Digest): Promise<string | undefined>;
  writeMarker(repo: string, digest: Digest, mediaType: string): Promise<void>;
  removeMarker(repo: string, digest: Digest): Promise<void>;
  readTag(repo: string, tag: string): Promise<Digest | undefined>;
  writeTag(repo: string, tag: string, digest: Digest): Promise<void>;
  removeTag(repo: string, tag: string): Promise<void>;
  /** Tag → digest, by tag name. */
  tagsOf(repo: string): Promise<Map<string, Digest>>;
  listRepositories(): Promise<string[]>;
  listManifests(repo: string): Promise<Digest[]>;
  hasRepository(repo: string): Promise<boolean>;
  /** Removes the repository's markers and tags, and parents left empty. */
  removeRepository(repo: string): Promise<void>;
}

/** Writes `content` to `path` through a temp file and a rename: readers see old or new, never half. */
export async function writeAtomic(path: string, content: string): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${randomBytes(8).toString('hex')}.tmp`);
  await mkdir(dir, { recursive: true });
  await writeFile(tmp, content);
  await rename(tmp, path);
}

/** A file's trimmed text, or undefined when it does not exist. */
export async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (e) {
    if (isNoEnt(e)) return undefined;
    throw e;
  }
}

async function readdirIfExists(path: string): Promise<string[] | undefined> {
  try {
    return await readdir(path);
  } catch (e) {
    if (isNoEnt(e)) return undefined;
    throw e;
  }
}

export function createRepoLayout(root: string): RepoLayout {
  const repoDir = (repo: string) => join(root, ...repo.split('/'));
  const markerPath = (repo: string, d: Digest) => join(repoDir(repo), '_manifests', digestHex(d));
  const tagPath = (repo: string, tag: string) => join(repoDir(repo), '_tags', tag);

  const readTag = async (repo: string, tag: string): Promise<Digest | undefined> => {
    const d = await readIfExists(tagPath(repo, tag));
    return d !== undefined && isDigest(d) ? d : undefined;
  };

  const listRepositories = async (): Promise<string[]> => {
    const out: string[] = [];
    const walk = async (path: string, name: string) => {
      let entries;
      try {
        entries = await readdir(path, { withFileTypes: true });
      } catch (e) {
        if (isNoEnt(e)) return;
        throw e;
      }
      if (name && entries.some((e) => e.name === '_manifests' || e.name === '_tags')) out.push(name);
      for (const e of entries) {
        if (e.isDirectory() && !e.name.startsWith('_') && !e.name.startsWith('.')) {
          await walk(join(path, e.name), name ? `${name}/${e.name}` : e.name);
        }
      }
    };
    await walk(root, '');
    return out.sort();
  };

  return {
    root,
    markerType: (repo, d) => readIfExists(markerPath(repo, d)),
    writeMarker: (repo, d, mediaType) => writeAtomic(markerPath(repo, d), mediaType),
    removeMarker: (repo, d) => rm(markerPath(repo, d), { force: true }),
    readTag,
    writeTag: (repo, tag, d) => writeAtomic(tagPath(repo, tag), d),
    removeTag: (repo, tag) => rm(tagPath(repo, tag), { force: true }),

    async tagsOf(repo) {
      const out = new Map<string, Digest>();
      const names = await readdirIfExists(join(repoDir(repo), '_tags'));
      for (const t of (names ?? []).sort()) {
        if (!isTagName(t)) continue;
        const d = await readTag(repo, t);
        if (d) out.set(t, d);
      }
      return out;
    },

    listRepositories,

    async listManifests(repo) {
      const hexes = await readdirIfExists(join(repoDir(repo), '_manifests'));
      return (hexes ?? [])
        .map((h) => `sha256:${h}`)
        .filter(isDigest)
        .sort();
    },

    async hasRepository(repo) {
      if (!isRepositoryName(repo)) return false;
      const d = repoDir(repo);
      return (await exists(join(d, '_manifests'))) || (await exists(join(d, '_tags')));
    },

    async removeRepository(repo) {
      const d = repoDir(repo);
      await rm(join(d, '_tags'), { recursive: true, force: true });
      await rm(join(d, '_manifests'), { recursive: true, force: true });
      // Remove now-empty parents, but never a directory another repository lives under.
      for (let path = d; path !== root && path.startsWith(root); path = dirname(path)) {
        try {
          await rmdir(path);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOENT') break;
          throw e;
        }
      }
    },
  };
}
