// Builds native/shim/shoal-shim.c (the runc driver's container monitor) on first use.
// The binary is cached by the hash of its source, so an updated source is rebuilt and
// several agents can share one cache dir.
//
// Pre-build (setup scripts):  node src/host/drivers/runc/shim.ts [cacheDir]
// which prints the binary's path; it is the same as `cc -O2 -o <cacheDir>/shoal-shim-<hash>
// native/shim/shoal-shim.c`.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, constants, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ShoalError } from '../../../protocol/errors.ts';

const run = promisify(execFile);

export const shimSource = fileURLToPath(new URL('../../../../native/shim/shoal-shim.c', import.meta.url));

/** $XDG_CACHE_HOME/shoal, else ~/.cache/shoal. */
export function defaultShimDir(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'shoal');
}

const building = new Map<string, Promise<string>>();

/** Path of the compiled shim, compiling it with `cc` if the cache lacks this version. */
export function ensureShim(options: { cacheDir?: string; cc?: string } = {}): Promise<string> {
  const cacheDir = options.cacheDir ?? defaultShimDir();
  let p = building.get(cacheDir);
  if (!p) {
    p = build(cacheDir, options.cc ?? 'cc');
    building.set(cacheDir, p);
    p.catch(() => building.delete(cacheDir));
  }
  return p;
}

async function build(cacheDir: string, cc: string): Promise<string> {
  const source = await readFile(shimSource);
  const hash = createHash('sha256').update(source).digest('hex').slice(0, 16);
  const out = join(cacheDir, `shoal-shim-${hash}`);
  try {
    await access(out, constants.X_OK);
    return out;
  } catch {
    // not built yet
  }
  await mkdir(cacheDir, { recursive: true });
  // Compile beside, then rename: a concurrent builder never sees half a binary.
  const tmp = `${out}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await run(cc, ['-O2', '-Wall', '-o', tmp, shimSource]);
    await rename(tmp, out);
  } catch (e) {
    await rm(tmp, { force: true });
    const stderr = (e as { stderr?: string }).stderr?.trim();
    throw new ShoalError('unavailable', `cannot build the runc shim with ${cc}: ${stderr || (e as Error).message}`, { cause: e });
  }
  return out;
}

if (import.meta.main) {
  ensureShim(process.argv[2] ? { cacheDir: process.argv[2] } : {}).then(
    (path) => console.log(path),
    (e: unknown) => {
      console.error((e as Error).message);
      process.exitCode = 1;
    },
  );
}
