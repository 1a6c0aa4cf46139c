// The debian template's file tree: a minbase Debian built by debootstrap from the
// archive this machine's apt already uses (no mirror is named in the code), tidied so
// two builds differ only where the packages do, plus `aptInstallInto` to add packages
// to such a tree (how a service's overlay on `template://debian/...` gets nginx).
import { spawn } from 'node:child_process';
import { chmod, lstat, mkdir, readdir, readFile, readlink, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ShoalError } from '../../protocol/index.ts';
import { lstatIfExists } from '../fs-util.ts';

export interface DebianRootfsOptions {
  /** Debian release codename; default 'bookworm'. */
  suite?: string;
  variant?: 'minbase';
  /** Archive URL; default: the one this machine's apt is configured with (`aptMirror`). */
  mirror?: string;
  /** Receives debootstrap's output, one line at a time. */
  log?: (line: string) => void;
  signal?: AbortSignal;
}

export interface DebianRootfsInfo {
  suite: string;
  mirror: string;
  /** Apparent size of the regular files in the tree, after tidying. */
  bytes: number;
  /** Entries in the tree (files, directories, links). */
  files: number;
}

const APT_DIR = '/etc/apt';

/**
 * The archive URL of the first entry in an apt sources file that is enabled, of type
 * `deb`, and lists exactly `suite` (so `bookworm` does not match `bookworm-security`).
 */
export function parseAptSources(text: string, format: 'deb822' | 'list', suite: string): string | undefined {
  return format === 'deb822' ? parseDeb822(text, suite) : parseOneLine(text, suite);
}

function usableUri(uri: string | undefined): string | undefined {
  // debootstrap fetches over http(s) or reads a local file: archive; apt's other
  // transports (cdrom:, mirror+file:, tor+http:) are of no use to it.
  if (uri === undefined || !/^(https?|file):/.test(uri)) return undefined;
  return uri.replace(/\/+$/, '');
}

function parseDeb822(text: string, suite: string): string | undefined {
  // Stanzas are separated by blank lines; '#' lines are comments; a line starting with
  // whitespace continues the previous field.
  const stanzas: Map<string, string>[] = [];
  let current = new Map<string, string>();
  let last: string | undefined;
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      if (current.size > 0) stanzas.push(current);
      current = new Map();
      last = undefined;
      continue;
    }
    if (line.startsWith('#')) continue;
    if (/^\s/.test(line)) {
      if (last !== undefined) current.set(last, `${current.get(last) ?? ''} ${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    last = line.slice(0, colon).trim().toLowerCase();
    current.set(last, line.slice(colon + 1).trim());
  }
  if (current.size > 0) stanzas.push(current);

  const words = (v: string | undefined): string[] => (v ?? '').split(/\s+/).filter((w) => w !== '');
  for (const s of stanzas) {
    if (/^(no|false|0)$/i.test(s.get('enabled') ?? 'yes')) continue;
    if (!words(s.get('types')).includes('deb')) continue;
    if (!words(s.get('suites')).includes(suite)) continue;
    for (const uri of words(s.get('uris'))) {
      const usable = usableUri(uri);
      if (usable !== undefined) return usable;
    }
  }
  return undefined;
}

function parseOneLine(text: string, suite: string): string | undefined {
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    // deb [option=value ...] uri suite [component ...]
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
    if (m === null || m[2] !== suite) continue;
    const usable = usableUri(m[1]);
    if (usable !== undefined) return usable;
  }
  return undefined;
}

/**
 * The Debian archive URL this machine's apt is configured with for `suite`:
 * `sources.list.d/*.sources` (deb822), then `sources.list.d/*.list` and `sources.list`.
 */
export async function aptMirror(options: { suite?: string; aptDir?: string } = {}): Promise<string> {
  const suite = options.suite ?? 'bookworm';
  const aptDir = options.aptDir ?? APT_DIR;
  const partsDir = join(aptDir, 'sources.list.d');
  const parts = (await readdir(partsDir).catch(() => [] as string[])).sort();
  const candidates: [string, 'deb822' | 'list'][] = [
    ...parts.filter((f) => f.endsWith('.sources')).map((f): [string, 'deb822'] => [join(partsDir, f), 'deb822']),
    ...parts.filter((f) => f.endsWith('.list')).map((f): [string, 'list'] => [join(partsDir, f), 'list']),
    [join(aptDir, 'sources.list'), 'list'],
  ];
  for (const [file, format] of candidates) {
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    const uri = parseAptSources(text, format, suite);
    if (uri !== undefined) return uri;
  }
  throw new ShoalError('unavailable', `no apt source for suite '${suite}' in ${aptDir}/sources.list.d/*.sources, *.list or ${aptDir}/sources.list; pass a mirror explicitly`, {
    field: 'mirror',
  });
}

/**
 * Runs debootstrap into `root` (which must be missing or empty) and tidies the result
 * into a template tree. On failure the partial tree is removed and the error carries
 * debootstrap's last 20 lines.
 */
export async function debootstrapRootfs(root: string, options: DebianRootfsOptions = {}): Promise<DebianRootfsInfo> {
  const suite = options.suite ?? 'bookworm';
  const variant = options.variant ?? 'minbase';
  if (!/^[a-z][a-z0-9-]*$/.test(suite)) throw new ShoalError('invalid', `suite '${suite}' is not a Debian codename`, { field: 'suite' });
  const mirror = options.mirror ?? (await aptMirror({ suite }));
  const target = resolve(root);
  const existing = await readdir(target).catch(() => undefined);
  if (existing !== undefined && existing.length > 0) {
    throw new ShoalError('conflict', `root ${target} is not empty; debootstrap needs a missing or empty directory`, { field: 'root' });
  }
  await mkdir(target, { recursive: true });
  try {
    await runLogged('debootstrap', [`--variant=${variant}`, suite, target, mirror], {
      log: options.log,
      signal: options.signal,
      what: `debootstrap ${suite} from ${mirror}`,
    });
    await tidyTree(target);
    await finishSkeleton(target);
  } catch (e) {
    await removeTree(target);
    throw e;
  }
  return { suite, mirror, ...(await treeSize(target)) };
}

/**
 * Installs Debian packages into an existing tree with `chroot root apt-get`. /dev,
 * /proc and /sys are mounted into the tree only for the duration and always unmounted;
 * the host's resolv.conf is lent to the tree and the tree's own put back; services are
 * kept from starting (policy-rc.d exits 101). Caches and lists are emptied afterwards.
 */
export async function aptInstallInto(
  root: string,
  packages: string[],
  options: { mirror?: string; log?: (line: string) => void; signal?: AbortSignal } = {},
): Promise<void> {
  const target = resolve(root);
  if (packages.length === 0) throw new ShoalError('invalid', 'packages is empty', { field: 'packages' });
  packages.forEach((p, i) => {
    // Debian package names (optionally =version); a leading '-' would be read as an option.
    if (!/^[a-z0-9][a-z0-9+.-]*(=[A-Za-z0-9.+~:-]+)?$/.test(p)) {
      throw new ShoalError('invalid', `packages[${i}] '${p}' is not a Debian package name`, { field: `packages[${i}]` });
    }
  });
  if (!(await exists(join(target, 'usr/bin/apt-get')))) {
    throw new ShoalError('invalid', `root ${target} has no /usr/bin/apt-get; is it a Debian tree?`, { field: 'root' });
  }

  const aptOptions: string[] = ['-o', 'Acquire::Retries=3'];
  const lent: (() => Promise<void>)[] = [];
  const mounted: string[] = [];
  try {
    lent.push(await lendFile(join(target, 'usr/sbin/policy-rc.d'), '#!/bin/sh\n# Shoal: no service starts while packages are installed into a template.\nexit 101\n', 0o755));
    lent.push(await lendFile(join(target, 'etc/resolv.conf'), await readFile('/etc/resolv.conf', 'utf8'), 0o644));
    if (options.mirror !== undefined) {
      // The caller's archive instead of the tree's own sources, for this install only.
      const codename = await treeCodename(target);
      lent.push(await lendFile(join(target, 'tmp/shoal-sources.list'), `deb ${options.mirror} ${codename} main\n`, 0o644));
      await mkdir(join(target, 'tmp/shoal-sources.d'), { recursive: true });
      lent.push(() => rm(join(target, 'tmp/shoal-sources.d'), { recursive: true, force: true }));
      aptOptions.push('-o', 'Dir::Etc::SourceList=/tmp/shoal-sources.list', '-o', 'Dir::Etc::SourceParts=/tmp/shoal-sources.d');
    }
    // Non-recursive binds, so nothing else of the host's /dev comes along; /dev/pts
    // because apt and dpkg open a pseudo-terminal to log maintainer scripts.
    const mounts: [string, string[]][] = [['dev', ['--bind', '/dev']]];
    if (await exists('/dev/pts/ptmx')) mounts.push(['dev/pts', ['--bind', '/dev/pts']]);
    mounts.push(['proc', ['-t', 'proc', 'proc']], ['sys', ['-t', 'sysfs', 'sysfs']]);
    for (const [what, args] of mounts) {
      const point = join(target, what);
      await mkdir(point, { recursive: true });
      await runLogged('mount', [...args, point], { what: `mount ${what} into ${target}` });
      mounted.push(point);
    }

    const chrootEnv = {
      PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: '/root',
      LC_ALL: 'C',
      DEBIAN_FRONTEND: 'noninteractive',
      DEBCONF_NONINTERACTIVE_SEEN: 'true',
    };
    const common = { log: options.log, signal: options.signal, env: chrootEnv };
    await runLogged('chroot', [target, 'apt-get', ...aptOptions, 'update'], {
      ...common,
      what: 'apt-get update in the tree',
      code: 'unavailable',
    });
    await runLogged(
      'chroot',
      [
        target,
        'apt-get',
        ...aptOptions,
        '-o',
        'Dpkg::Options::=--force-confdef',
        '-o',
        'Dpkg::Options::=--force-confold',
        'install',
        '-y',
        '--no-install-recommends',
        ...packages,
      ],
      { ...common, what: `apt-get install ${packages.join(' ')}`, notFoundField: 'packages' },
    );
    await runLogged('chroot', [target, 'apt-get', 'clean'], { ...common, what: 'apt-get clean in the tree' });
  } finally {
    const errors: unknown[] = [];
    for (const point of mounted.reverse()) await unmount(point).catch((e: unknown) => errors.push(e));
    for (const restore of lent.reverse()) await restore().catch((e: unknown) => errors.push(e));
    const left = await mountsUnder(target);
    if (left.length > 0) errors.push(new ShoalError('internal', `mounts left under ${target}: ${left.join(', ')}`));
    if (errors.length > 0) throw errors[0];
  }
  await tidyTree(target);
}

/** Mount points at or under `dir`, deepest first, from /proc/self/mountinfo. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const base = resolve(dir);
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const points: string[] = [];
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4];
    if (field === undefined) continue;
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    const point = field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (point === base || point.startsWith(`${base}/`)) points.push(point);
  }
  return points.sort((a, b) => b.length - a.length);
}

async function unmount(point: string): Promise<void> {
  try {
    await runLogged('umount', [point], { what: `umount ${point}` });
  } catch {
    // Busy (a process still has a file open there): detach it now, freed when released.
    await runLogged('umount', ['-l', point], { what: `umount -l ${point}` });
  }
}

/** Removes a tree, but only after everything mounted under it is gone: a bind of /dev must never be deleted through. */
async function removeTree(target: string): Promise<void> {
  for (const point of await mountsUnder(target)) await unmount(point).catch(() => undefined);
  const left = await mountsUnder(target);
  if (left.length > 0) throw new ShoalError('internal', `not removing ${target}: still mounted under it: ${left.join(', ')}`);
  await rm(target, { recursive: true, force: true });
}

/**
 * Puts `content` at `path` for a while; the returned function puts back what was there
 * (a file, a symlink, or nothing). A symlink is replaced rather than written through,
 * since an absolute link would point out of the tree.
 */
async function lendFile(path: string, content: string, mode: number): Promise<() => Promise<void>> {
  const before = await lstatIfExists(path);
  let restore: () => Promise<void>;
  if (before === undefined) {
    restore = () => rm(path, { force: true });
  } else if (before.isSymbolicLink()) {
    const link = await readlink(path);
    restore = async () => {
      await rm(path, { force: true });
      await symlink(link, path);
    };
  } else if (before.isFile()) {
    const old = await readFile(path);
    restore = async () => {
      await rm(path, { force: true });
      await writeFile(path, old, { mode: before.mode & 0o7777 });
      await chmod(path, before.mode & 0o7777);
    };
  } else {
    throw new ShoalError('conflict', `${path} exists and is not a file or symlink`);
  }
  await rm(path, { force: true });
  await writeFile(path, content, { mode });
  await chmod(path, mode);
  return restore;
}

async function treeCodename(target: string): Promise<string> {
  const text = await readFile(join(target, 'etc/os-release'), 'utf8').catch(() => '');
  const m = /^VERSION_CODENAME=["']?([a-z0-9-]+)/m.exec(text);
  if (m?.[1] === undefined) throw new ShoalError('invalid', `cannot tell the Debian release of ${target} (no VERSION_CODENAME in /etc/os-release)`, { field: 'root' });
  return m[1];
}

async function exists(path: string): Promise<boolean> {
  return (await lstatIfExists(path)) !== undefined;
}

/** Empties a directory, keeping the directory itself and any subdirectory named in `keep` (emptied too). */
async function emptyDir(dir: string, keep: string[] = []): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (e.isDirectory() && keep.includes(e.name)) await emptyDir(join(dir, e.name));
    else await rm(join(dir, e.name), { recursive: true, force: true });
  }
}

/** Removes the files under `dir`, keeping its directory structure (apt and dpkg expect /var/log/apt). */
async function removeFilesKeepDirs(dir: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (e.isDirectory()) await removeFilesKeepDirs(join(dir, e.name));
    else await rm(join(dir, e.name), { force: true });
  }
}

/**
 * Removes what bloats a template or differs between two builds of it: downloaded
 * packages and package lists (apt-get update fetches them again), logs, backup copies,
 * the host's hostname and resolver that debootstrap copies in, and /dev's nodes (the
 * runtime gives each instance its own /dev; layers carry no device nodes).
 */
async function tidyTree(target: string): Promise<void> {
  // Emptying /dev through a bind of the host's /dev would delete the host's nodes.
  const mounted = await mountsUnder(target);
  if (mounted.length > 0) throw new ShoalError('internal', `not tidying ${target}: still mounted under it: ${mounted.join(', ')}`);
  await emptyDir(join(target, 'var/cache/apt/archives'), ['partial']);
  for (const f of ['pkgcache.bin', 'srcpkgcache.bin']) await rm(join(target, 'var/cache/apt', f), { force: true });
  await emptyDir(join(target, 'var/lib/apt/lists'), ['partial']);
  await removeFilesKeepDirs(join(target, 'var/log'));
  await emptyDir(join(target, 'tmp'));
  await emptyDir(join(target, 'var/tmp'));
  await emptyDir(join(target, 'dev'));
  await rm(join(target, 'var/cache/ldconfig/aux-cache'), { force: true });
  await rm(join(target, 'var/lib/dbus/machine-id'), { force: true });
  for (const dir of ['var/cache/debconf', 'var/lib/dpkg']) {
    for (const f of await readdir(join(target, dir)).catch(() => [] as string[])) {
      if (f.endsWith('-old')) await rm(join(target, dir, f), { force: true });
    }
  }
  // Empty, not missing: systemd treats an empty machine-id as "generate at boot".
  if (await exists(join(target, 'etc/machine-id'))) await writeFile(join(target, 'etc/machine-id'), '');
}

/** What every Shoal template carries (see writeBaseSkeleton), without replacing Debian's own /etc. */
async function finishSkeleton(target: string): Promise<void> {
  for (const d of ['proc', 'sys', 'dev', 'run/shoal', 'tmp', 'app']) await mkdir(join(target, d), { recursive: true });
  await chmod(join(target, 'tmp'), 0o1777);
  await writeFile(join(target, 'etc/hostname'), 'localhost\n');
  await writeFile(join(target, 'etc/hosts'), '127.0.0.1 localhost\n::1 localhost\n');
  await writeFile(join(target, 'etc/resolv.conf'), '');
  const passwd = await readFile(join(target, 'etc/passwd'), 'utf8');
  if (!/^nobody:[^:]*:65534:/m.test(passwd)) {
    throw new ShoalError('internal', `${target}/etc/passwd has no nobody user with uid 65534`);
  }
}

async function treeSize(target: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      files += 1;
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) bytes += (await lstat(p)).size;
    }
  };
  await walk(target);
  return { bytes, files };
}

interface RunOptions {
  what: string;
  log?: ((line: string) => void) | undefined;
  signal?: AbortSignal | undefined;
  env?: Record<string, string>;
  /** Error code when the command fails; default 'internal'. */
  code?: 'internal' | 'unavailable';
  /** When apt says it cannot find a package, fail as 'invalid' naming this field. */
  notFoundField?: string;
}

/**
 * Runs a command, passing each output line to `log` and keeping the last 20 for the
 * error. The command gets its own process group so an abort stops its children too.
 */
function runLogged(command: string, args: string[], options: RunOptions): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    if (options.signal?.aborted) {
      reject(new ShoalError('internal', `${options.what}: aborted before it started`, { cause: options.signal.reason }));
      return;
    }
    const tail: string[] = [];
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      ...(options.env === undefined ? {} : { env: options.env }),
    });
    const onAbort = (): void => {
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGTERM');
        } catch {
          // already gone
        }
      }
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const take = (stream: NodeJS.ReadableStream): void => {
      let pending = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        pending += chunk;
        const lines = pending.split(/\r?\n/);
        pending = lines.pop() ?? '';
        for (const line of lines) emit(line);
      });
      stream.on('end', () => {
        if (pending !== '') emit(pending);
      });
    };
    const emit = (line: string): void => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      options.log?.(line);
    };
    take(child.stdout);
    take(child.stderr);
    child.on('error', (e) => {
      options.signal?.removeEventListener('abort', onAbort);
      reject(new ShoalError('unavailable', `${options.what}: cannot run ${command}: ${e.message}`, { cause: e }));
    });
    child.on('close', (status, sig) => {
      options.signal?.removeEventListener('abort', onAbort);
      if (status === 0) {
        resolvePromise();
        return;
      }
      const how = options.signal?.aborted ? 'aborted' : sig !== null ? `killed by ${sig}` : `exited with ${status}`;
      const last = tail.join('\n');
      const missing = options.notFoundField !== undefined && /Unable to locate package|has no installation candidate/.test(last);
      const code = missing ? 'invalid' : (options.code ?? 'internal');
      reject(
        new ShoalError(code, `${options.what} ${how}; last lines:\n${last}`, {
          ...(missing && options.notFoundField !== undefined ? { field: options.notFoundField } : {}),
          detail: { command, args, status, signal: sig, tail },
        }),
      );
    });
  });
}
