// Socket activation: the host creates each instance's listening Unix socket in a
// directory only the host can write, and hands the listening descriptor to the instance
// (fd 3, with LISTEN_FDS=1, as systemd does). The host then connects to a path the
// instance cannot replace: an instance that swaps a socket for a symlink to another
// daemon's socket only swaps its own copy, which the host never looks at.
//
// Node has no way to make a listening socket without also accepting on it, and closing a
// Node server unlinks its path. So the server listens on a temporary name, the final name
// is a hard link to the same socket inode (connect() finds a socket by inode), the child
// inherits the descriptor, and closing our server removes only the temporary name.
import { randomBytes } from 'node:crypto';
import { chmod, link, lstat, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { ShoalError } from '../../../protocol/index.ts';

/** The descriptor number an instance finds its listener on (SD_LISTEN_FDS_START). */
export const LISTEN_FD = 3;
/** What tells the instance an inherited listener is at LISTEN_FD. */
export const LISTEN_ENV = ['LISTEN_FDS=1', 'LISTEN_FDNAMES=shoal'];

export interface InheritedListener {
  /** Host path the host connects to. */
  path: string;
  /** The listening descriptor, to put in the child's stdio (and nowhere else). */
  fd: number;
  /** The same listener as a Node server: a handle to send over an IPC channel (runner drivers). */
  server: Server;
  /** Drops the host's copy (call once the child holds its own). Leaves `path` in place. */
  release(): Promise<void>;
}

/**
 * Refuses a directory the current user does not own or that others may write: the host
 * only creates, lists or unlinks in directories an instance cannot change.
 */
export async function assertHostOwnedDir(dir: string): Promise<void> {
  const st = await lstat(dir).catch((e: unknown) => {
    throw new ShoalError('internal', `host-owned directory ${dir} is missing: ${(e as Error).message}`, { cause: e });
  });
  const uid = process.getuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o022) !== 0) {
    throw new ShoalError('internal', `${dir} is not a directory owned by the host and closed to others (a symlink, or writable by an instance?); refusing to use it`);
  }
}

export async function createInheritedListener(path: string): Promise<InheritedListener> {
  const dir = dirname(path);
  await assertHostOwnedDir(dir);
  await removeStaleSocket(path);
  const temp = join(dir, `.${basename(path)}.${randomBytes(4).toString('hex')}`);
  const server: Server = createServer((c) => c.destroy()); // nothing connects before release()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(temp, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const release = (): Promise<void> => new Promise<void>((resolve) => server.close(() => resolve()));
  try {
    await chmod(temp, 0o600); // only the host connects
    await link(temp, path);
  } catch (e) {
    await release();
    throw new ShoalError('internal', `creating the listening socket ${path} failed: ${(e as Error).message}`, { cause: e });
  }
  // Internal but stable: the libuv pipe's descriptor, for the child's stdio.
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  return { path, fd, server, release };
}

/** Removes a socket left by an earlier run; anything else at the path is refused (named by `field`). */
export async function removeStaleSocket(path: string, field?: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new ShoalError('conflict', `${path} exists and is not a socket; refusing to replace it`, field === undefined ? {} : { field });
  await rm(path, { force: true });
}
