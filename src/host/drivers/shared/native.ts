// Builds native/shim/shoal-shim.c (the container and VM monitor of the runc and vm drivers) and
// native/idmap/shoal-idmap.c (user namespaces: overlays over id-mapped layers) on first use.
// The binary is cached by the hash of its source, so an updated source is rebuilt and
// several agents can share one cache dir.
//
// Pre-build (setup scripts):  node src/host/drivers/shared/native.ts [cacheDir]
// which prints the binaries' paths; the shim's is the same as `cc -O2 -o <cacheDir>/shoal-shim-<hash>
// native/shim/shoal-shim.c`.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, constants, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ShoalError } from '../../../protocol/index.ts';

const run = promisify(execFile);

export const shimSource = fileURLToPath(new URL('../../../../native/shim/shoal-shim.c', import.meta.url));
/** The overlay-over-id-mapped-layers mounter (user namespaces; src/host/rootfs/overlay.ts). */
export const idmapSource = fileURLToPath(new URL('../../../../native/idmap/shoal-idmap.c', import.meta.url));

/** Adds a service's layers inside a container pre-created for its template (the template pool). */
export const graftSource = fileURLToPath(new URL('../../../../native/idmap/shoal-graft.c', import.meta.url));
/** The init of a container pre-created for a template: runs the program chosen at start. */
export const runnerSource = fileURLToPath(new URL('../../../../native/runner/shoal-runner.c', import.meta.url));

/** $XDG_CACHE_HOME/shoal, else ~/.cache/shoal. */
export function defaultShimDir(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'shoal');
}

const building = new Map<string, Promise<string>>();

/** Path of the compiled shim, compiling it with `cc` if the cache lacks this version. */
export function ensureShim(options: { cacheDir?: string; cc?: string } = {}): Promise<string> {
  return ensureNative(shimSource, 'shoal-shim', options);
}

/** Path of the compiled shoal-idmap helper (same cache and rules as the shim). */
export function ensureIdmapHelper(options: { cacheDir?: string; cc?: string } = {}): Promise<string> {
  return ensureNative(idmapSource, 'shoal-idmap', options);
}

/** The $PORT contract's bridge (native/port-bridge), linked statically: it runs inside images that may have no libc. */
export const portBridgeSource = fileURLToPath(new URL('../../../../native/port-bridge/shoal-port-bridge.c', import.meta.url));

/** Path of the compiled shoal-port-bridge (same cache and rules as the shim). */
export function ensurePortBridge(options: { cacheDir?: string; cc?: string } = {}): Promise<string> {
  return ensureNative(portBridgeSource, 'shoal-port-bridge', options, ['-static']);
}

/** Path of the compiled shoal-graft helper. */
export function ensureGraftHelper(options: { cacheDir?: string; cc?: string } = {}): Promise<string> {
  return ensureNative(graftSource, 'shoal-graft', options);
}

/** Path of the compiled shoal-runner, linked statically (it runs inside any root). */
export function ensureRunner(options: { cacheDir?: string; cc?: string } = {}): Promise<string> {
  return ensureNative(runnerSource, 'shoal-runner', options, ['-static']);
}

function ensureNative(sourcePath: string, name: string, options: { cacheDir?: string; cc?: string }, flags: string[] = []): Promise<string> {
  const cacheDir = options.cacheDir ?? defaultShimDir();
  const key = `${cacheDir}\0${name}`;
  let p = building.get(key);
  if (!p) {
    p = build(sourcePath, name, cacheDir, options.cc ?? 'cc', flags);
    building.set(key, p);
    p.catch(() => building.delete(key));
  }
  return p;
}

async function build(sourcePath: string, name: string, cacheDir: string, cc: string, flags: string[]): Promise<string> {
  const source = await readFile(sourcePath);
  const hash = createHash('sha256').update(source).digest('hex').slice(0, 16);
  const out = join(cacheDir, `${name}-${hash}`);
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
    await run(cc, ['-O2', '-Wall', ...flags, '-o', tmp, sourcePath]);
    await rename(tmp, out);
  } catch (e) {
    await rm(tmp, { force: true });
    const stderr = (e as { stderr?: string }).stderr?.trim();
    throw new ShoalError('unavailable', `cannot build the runc ${name === 'shoal-shim' ? 'shim' : `helper ${name}`} with ${cc}: ${stderr || (e as Error).message}`, { cause: e });
  }
  return out;
}

if (import.meta.main) {
  const opts = process.argv[2] ? { cacheDir: process.argv[2] } : {};
  Promise.all([ensureShim(opts), ensureIdmapHelper(opts), ensurePortBridge(opts), ensureGraftHelper(opts), ensureRunner(opts)]).then(
    (paths) => console.log(paths.join('\n')),
    (e: unknown) => {
      console.error((e as Error).message);
      process.exitCode = 1;
    },
  );
}
