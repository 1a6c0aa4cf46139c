// Overlay roots: an instance's root file system is the image's layers (read-only, shared by
// every instance, page cache included) under one writable upper dir of its own.
// We call mount(8) rather than mount(2) because Node has no binding for the latter.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, mkdir, readFile, realpath, rm, symlink } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { promisify } from 'node:util';
import { ShoalError } from '../../protocol/index.ts';
import { ensureIdmapHelper } from '../drivers/shared/native.ts';

const run = promisify(execFile);

/**
 * The kernel copies mount options into one page (4096 bytes here, NUL included); a
 * longer option string fails with EINVAL. We keep a margin for what mount(8) appends.
 */
const MAX_OPTIONS = 3900;

export interface OverlayOptions {
  /** Layer directories, top-most first. */
  lowerDirs: string[];
  /** The instance's writable layer; omit (with workDir) for a read-only root. */
  upperDir?: string | undefined;
  /** Overlayfs scratch dir on the same file system as upperDir. */
  workDir?: string | undefined;
  target: string;
  /**
   * Bound the writable layer: a tmpfs of this size is mounted (nosuid,nodev) at `target`
   * first and holds the upper and work dirs, and the overlay goes on top of it; so
   * `unmountOverlay(target)` takes both away. Writes past the size fail with ENOSPC.
   */
  sizeBytes?: number | undefined;
  /**
   * The instance runs in a user namespace mapping 0..count-1 to hostId..: the layers are
   * shown through an id-mapped mount (their files keep their owners inside) and the upper
   * dir belongs to hostId. Uses native/idmap/shoal-idmap.c, which also keeps host paths
   * out of the mount's options (what /proc/self/mountinfo shows inside).
   */
  idmap?: { hostId: number; count: number } | undefined;
  /** Where the compiled helper is cached (default: the shim's cache). */
  helperDir?: string | undefined;
}

/**
 * Mounts `lowerDirs` (+ `upperDir`) at `target`. Long layer lists are mounted with short
 * relative paths (containerd's trick), and when even those do not fit, through a
 * temporary directory of one-character symlinks that the kernel resolves at mount time.
 * A single layer without an upper is mounted as a read-only bind mount, because
 * overlayfs needs two lower layers when there is no upper.
 */
export async function mountOverlay(options: OverlayOptions): Promise<void> {
  const { lowerDirs, upperDir, workDir, target } = options;
  if (lowerDirs.length === 0) throw new ShoalError('invalid', 'an overlay needs at least one lower dir', { field: 'lowerDirs' });
  if ((upperDir === undefined) !== (workDir === undefined)) {
    throw new ShoalError('invalid', 'upperDir and workDir go together: give both or neither', { field: upperDir === undefined ? 'upperDir' : 'workDir' });
  }
  const named: Array<[string, string]> = [...lowerDirs.map((d, i): [string, string] => [`lowerDirs[${i}]`, d]), ['target', target]];
  if (upperDir !== undefined && workDir !== undefined) named.push(['upperDir', upperDir], ['workDir', workDir]);
  for (const [field, p] of named) {
    if (!isAbsolute(p)) throw new ShoalError('invalid', `${field} must be an absolute path: ${p}`, { field });
    // ',' separates mount options and ':' separates layers; overlayfs escapes exist but
    // our own dirs never need them, so refuse instead of escaping.
    if (/[,:\\\n]/.test(p)) throw new ShoalError('invalid', `${field} contains a character overlayfs cannot take (, : \\ or newline): ${p}`, { field });
  }

  if (upperDir !== undefined && workDir !== undefined && (options.sizeBytes !== undefined || options.idmap !== undefined)) {
    await mountInstanceRoot(options, upperDir, workDir);
    return;
  }

  if (upperDir === undefined && lowerDirs.length === 1) {
    await mountCommand(['--bind', '-o', 'ro', lowerDirs[0] as string, target], undefined, target);
    return;
  }

  const tail = upperDir !== undefined ? `,upperdir=${upperDir},workdir=${workDir}` : '';
  const absolute = `lowerdir=${lowerDirs.join(':')}${tail}`;
  if (absolute.length <= MAX_OPTIONS) {
    await mountCommand(['-t', 'overlay', 'overlay', '-o', absolute, target], undefined, target);
    return;
  }
  const parent = commonParent(lowerDirs);
  const relativeOpts = `lowerdir=${lowerDirs.map((d) => relative(parent, d) || '.').join(':')}${tail}`;
  if (relativeOpts.length <= MAX_OPTIONS) {
    await mountCommand(['-t', 'overlay', 'overlay', '-o', relativeOpts, target], parent, target);
    return;
  }
  // Still too long (deep or digest-named layer dirs): short symlinks in a scratch dir.
  // The kernel follows them when it parses the options; afterwards they can go.
  const linkDir = join(dirname(workDir ?? target), `.ovl-links-${randomBytes(4).toString('hex')}`);
  await mkdir(linkDir, { recursive: true });
  try {
    const names = lowerDirs.map((_, i) => i.toString(36));
    for (const [i, d] of lowerDirs.entries()) await symlink(d, join(linkDir, names[i] as string));
    const linked = `lowerdir=${names.join(':')}${tail}`;
    if (linked.length > MAX_OPTIONS) {
      throw new ShoalError('too-large', `${lowerDirs.length} layers do not fit in one overlay mount (options ${linked.length} bytes > ${MAX_OPTIONS})`, { field: 'lowerDirs' });
    }
    await mountCommand(['-t', 'overlay', 'overlay', '-o', linked, target], linkDir, target);
  } finally {
    await rm(linkDir, { recursive: true, force: true });
  }
}

/**
 * An instance's root: optionally size-bounded and id-mapped, mounted by shoal-idmap from
 * inside the layers' common parent with relative lower paths and the upper named by
 * descriptor, so that its options name no host path.
 */
async function mountInstanceRoot(options: OverlayOptions, upperDir: string, workDir: string): Promise<void> {
  const { lowerDirs, target, sizeBytes, idmap } = options;
  if (sizeBytes !== undefined && (!Number.isSafeInteger(sizeBytes) || sizeBytes < 1024 * 1024)) {
    throw new ShoalError('invalid', `the writable layer's size must be at least 1 MiB, got ${sizeBytes}`, { field: 'sizeBytes' });
  }
  const helper = await ensureIdmapHelper(options.helperDir ? { cacheDir: options.helperDir } : {});
  let upperArg: string;
  let names: [string, string];
  if (sizeBytes !== undefined) {
    // The helper mounts the tmpfs at target and makes upper/ and work/ in it.
    upperArg = `--tmpfs=${Math.ceil(sizeBytes / 1024)}`;
    names = ['upper', 'work'];
  } else {
    if (dirname(upperDir) !== dirname(workDir)) throw new ShoalError('invalid', 'upperDir and workDir must be siblings', { field: 'workDir' });
    upperArg = dirname(upperDir);
    names = [basename(upperDir), basename(workDir)];
    await mkdir(upperDir, { recursive: true, mode: 0o755 });
    await mkdir(workDir, { recursive: true, mode: 0o700 });
    // The root dir inside is the upper dir: root inside (hostId) owns it.
    if (idmap) await chown(upperDir, idmap.hostId, idmap.hostId);
  }
  const parent = commonParent(lowerDirs);
  const opts = `lowerdir=${lowerDirs.map((d) => relative(parent, d) || '.').join(':')},upperdir=@U/${names[0]},workdir=@U/${names[1]}`;
  if (opts.length > MAX_OPTIONS) {
    throw new ShoalError('too-large', `${lowerDirs.length} layers do not fit in one overlay mount (options ${opts.length} bytes > ${MAX_OPTIONS})`, { field: 'lowerDirs' });
  }
  try {
    await run(helper, [idmap ? String(idmap.hostId) : '-', String(idmap?.count ?? 0), parent, upperArg, target, opts]);
  } catch (e) {
    const stderr = (e as { stderr?: string }).stderr?.trim() ?? String(e);
    throw new ShoalError('internal', `mounting the root file system at ${target} failed: ${stderr}`, { field: 'target', cause: e });
  }
}

async function mountCommand(args: string[], cwd: string | undefined, target: string): Promise<void> {
  try {
    await run('mount', args, cwd === undefined ? {} : { cwd });
  } catch (e) {
    const stderr = (e as { stderr?: string }).stderr?.trim() ?? String(e);
    const code = /permission denied|must be superuser|only root/i.test(stderr) ? 'forbidden' : 'internal';
    throw new ShoalError(code, `mounting the root file system at ${target} failed: ${stderr}`, { field: 'target', cause: e });
  }
}

function commonParent(dirs: string[]): string {
  const split = dirs.map((d) => resolve(d).split(sep));
  const first = split[0] as string[];
  let n = 0;
  while (n < first.length - 1 && split.every((parts) => parts.length > n + 1 && parts[n] === first[n])) n++;
  return first.slice(0, n).join(sep) || sep;
}

/**
 * Unmounts `target` (every mount stacked on it). Not mounted → nothing to do. When the
 * mount is busy (a process still has a file open in it) it is detached lazily: it
 * disappears from the tree now and the kernel frees it when the last user lets go.
 */
export async function unmountOverlay(target: string): Promise<void> {
  const path = await canonical(target);
  for (let i = 0; i < 16 && (await isMountPoint(path)); i++) {
    try {
      await run('umount', [path]);
    } catch (e) {
      const stderr = (e as { stderr?: string }).stderr ?? '';
      if (!(await isMountPoint(path))) return;
      if (/busy/i.test(stderr)) {
        await run('umount', ['-l', path]).catch((e2: unknown) => {
          throw new ShoalError('internal', `lazy unmount of ${path} failed: ${(e2 as { stderr?: string }).stderr?.trim() ?? String(e2)}`, { cause: e2 });
        });
      } else {
        throw new ShoalError('internal', `unmounting ${path} failed: ${stderr.trim()}`, { cause: e });
      }
    }
  }
}

async function isMountPoint(path: string): Promise<boolean> {
  return (await readMountPoints()).includes(path);
}

/** Mount points at or under `under` (this process's mount namespace), outermost first. */
export async function listMounts(under: string): Promise<string[]> {
  const root = await canonical(under);
  const prefix = root.endsWith(sep) ? root : root + sep;
  return (await readMountPoints()).filter((m) => m === root || m.startsWith(prefix));
}

async function readMountPoints(): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4];
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    if (field) out.push(field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return out;
}

/** realpath when the path exists (so /tmp symlinks match mountinfo), else the resolved path. */
async function canonical(p: string): Promise<string> {
  try {
    return await realpath(p);
  } catch {
    return resolve(p);
  }
}
