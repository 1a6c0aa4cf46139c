// Where `shoal up` keeps its host's data when the instances could not reach it.
//
// As root without runc, the process driver runs each instance as an unprivileged user
// (65534). That user must traverse every directory down to the instance's flat tree and
// socket dir, which fails when the checkout sits under a 0700 directory (root's home, a
// `mktemp -d` dir), and ./.shoal itself is 0700 (it holds the admin token). The host's data
// then lives under /var/lib/shoal/<hash of the state dir>: persistent (the layer cache
// and instance records survive a reboot, unlike /run or a tmpfs /tmp), out of reach of tmp
// cleaners that could delete a live instance's tree, owned by root and 0711, so the
// instance can pass through but write nothing the host follows (only its own socket dir,
// which the host chowns to it).
import { createHash } from 'node:crypto';
import { chmod, mkdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export const SYSTEM_STATE_DIR = '/var/lib/shoal';

/** True when a user other than the owner can traverse every existing directory down to `dir`. */
export async function othersCanTraverse(dir: string): Promise<boolean> {
  for (let d = dir; ; d = dirname(d)) {
    const st = await stat(d).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined; // made later, by the host, 0711
      throw e;
    });
    if (st !== undefined && (st.mode & 0o001) === 0) return false;
    if (d === dirname(d)) return true;
  }
}

/**
 * The host data dir for `shoal up`: `<stateDir>/host` unless instances run as another
 * user (root, process driver) and cannot reach it; then /var/lib/shoal/<hash>, made 0711.
 */
export async function hostDataDir(stateDir: string, options: { processAsRoot: boolean; base?: string }): Promise<{ dir: string; relocated: boolean }> {
  const inside = join(stateDir, 'host');
  if (!options.processAsRoot || (await othersCanTraverse(inside))) return { dir: inside, relocated: false };
  const base = options.base ?? SYSTEM_STATE_DIR;
  const dir = join(base, createHash('sha256').update(stateDir).digest('hex').slice(0, 16));
  await mkdir(dir, { recursive: true, mode: 0o711 });
  // An existing base made by someone else with a stricter mode would block the instance too.
  await chmod(base, 0o711);
  await chmod(dir, 0o711);
  if (!(await othersCanTraverse(dir))) {
    throw new Error(`instances cannot reach ${dir}: a directory above it is not searchable by other users`);
  }
  return { dir, relocated: true };
}
