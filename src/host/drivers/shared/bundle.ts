// A shoal/service bundle (src/image/sdk-bundle.ts) read out of an instance's root: the
// module files under the entry's top directory, as text by path inside the image. The
// isolate and wasm (QuickJS) drivers hand them to their runners, which never read files.
import { readdir, readFile } from 'node:fs/promises';
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

