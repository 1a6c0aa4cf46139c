// A shoal/service bundle (src/image/sdk-bundle.ts) read out of an instance's root: the
// module files under the entry's top directory, as text by path inside the image. The
// isolate and wasm (QuickJS) drivers hand them to their runners, which never read files.
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { ShoalError } from '../../../protocol/index.ts';

const MAX_BUNDLE_BYTES = 64 * 1024 * 1024;
export const MODULE_FILE = /\.(mjs|js|cjs|json)$/;

/** The bundle's module files under the entry's top directory (/app), by path inside the image. */
export async function readBundle(rootfs: string, entry: string): Promise<Record<string, string>> {
  // The entry comes from the spec's args: `/../x.js` would make the walk start above the image root.
  if (posix.normalize(entry) !== entry || entry.split('/').includes('..') || entry.split('/').length < 3) {
    throw new ShoalError('invalid', `${entry} is not a module path inside the image (absolute, normalised, under a top directory such as /app)`, { field: 'args' });
  }
  const top = `/${entry.split('/')[1] ?? ''}`;
  const out: Record<string, string> = {};
  let bytes = 0;
  const walk = async (inside: string): Promise<void> => {
    for (const e of await readdir(join(rootfs, inside), { withFileTypes: true })) {
      const p = posix.join(inside, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && MODULE_FILE.test(e.name)) {
        const text = await readFile(join(rootfs, p), 'utf8');
        bytes += text.length;
        if (bytes > MAX_BUNDLE_BYTES) throw new ShoalError('invalid', `the bundle under ${top} is larger than ${MAX_BUNDLE_BYTES} bytes`, { field: 'rootfs' });
        out[p] = text;
      }
      // Symbolic links and anything else are not followed.
    }
  };
  try {
    await walk(top);
  } catch (e) {
    if (e instanceof ShoalError) throw e;
    throw new ShoalError('invalid', `reading the bundle ${top} from ${rootfs} failed: ${(e as Error).message}`, { field: 'rootfs', cause: e });
  }
  if (out[entry] === undefined) throw new ShoalError('invalid', `${entry} is not a module file in the image`, { field: 'args' });
  return out;
}


export interface ReadBundle {
  modules: Record<string, string>;
  /** sha256 (hex) of the entry's name and every module file: one service version. */
  digest: string;
}

/**
 * Bundles read once per root tree: the agent gives instances of one image the same flat
 * tree (host-owned, never written). The entry file's inode, size and mtime guard against
 * a tree replaced at the same path.
 */
export function createBundleCache(): { read(rootfs: string, entry: string): Promise<ReadBundle> } {
  const bundles = new Map<string, ReadBundle & { stamp: string }>();
  return {
    async read(rootfs, entry) {
      const st = await lstat(join(rootfs, entry)).catch(() => undefined);
      const stamp = st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}` : '';
      const cacheKey = `${rootfs}\0${entry}`;
      const hit = bundles.get(cacheKey);
      if (hit !== undefined && st !== undefined && hit.stamp === stamp) return hit;
      const modules = await readBundle(rootfs, entry);
      const found = { stamp, modules, digest: bundleDigest(entry, modules) };
      bundles.set(cacheKey, found);
      // Bounded: an entry per image tree in use (overlay roots, one per instance, would grow it).
      if (bundles.size > 256) bundles.delete(bundles.keys().next().value as string);
      return found;
    },
  };
}

function bundleDigest(entry: string, modules: Record<string, string>): string {
  const h = createHash('sha256').update(entry).update('\0');
  for (const path of Object.keys(modules).sort()) h.update(path).update('\0').update(modules[path] as string).update('\0');
  return h.digest('hex');
}
