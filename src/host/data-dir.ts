// The host's data dir: its length (instance sockets live under it), its lock (one host
// per data dir) and the identity kept in it (the route-token key and the host id).
import { randomBytes } from 'node:crypto';
import { unlinkSync } from 'node:fs';
import { chmod, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from './ports.ts';
import { ShoalError } from '../protocol/index.ts';

/**
 * Unix socket paths are limited to 107 bytes; instance sockets live at
 * <dataDir>/instances/<id ≤ 29>/run/app.sock (import sockets are checked when opened).
 */
const SOCKET_PATH_OVERHEAD = '/instances/'.length + 29 + '/run/app.sock'.length;
const MAX_SOCKET_PATH = 107;

/** Throws invalid (field dataDir) when instance sockets under `dataDir` could not be bound. */
export function checkDataDirLength(dataDir: string): void {
  if (Buffer.byteLength(dataDir) + SOCKET_PATH_OVERHEAD <= MAX_SOCKET_PATH) return;
  throw new ShoalError(
    'invalid',
    `dataDir ${dataDir} is too long: instance sockets under it would pass the 107-byte limit of Unix socket paths (keep it under ${MAX_SOCKET_PATH - SOCKET_PATH_OVERHEAD} bytes)`,
    { field: 'dataDir' },
  );
}

const lockedHere = new Set<string>();

/**
 * One host per data dir: a second one would re-adopt (and fight over) the first one's
 * instances. The lock file holds the owner's pid; a dead owner's lock is taken over.
 * Returns the release function (idempotent).
 */
export async function lockDataDir(dataDir: string, log?: Logger): Promise<() => void> {
  const file = join(dataDir, 'host.lock');
  if (lockedHere.has(dataDir)) throw new ShoalError('conflict', `another host in this process already uses ${dataDir}`, { field: 'dataDir' });
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(file, String(process.pid), { flag: 'wx', mode: 0o600 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
      const pid = Number((await readIfExists(file)).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new ShoalError('conflict', `host process ${pid} already uses ${dataDir} (${file})`, { field: 'dataDir' });
      }
      await unlink(file).catch(ignoreMissing);
    }
  }
  lockedHere.add(dataDir);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    lockedHere.delete(dataDir);
    try {
      unlinkSync(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') log?.warn({ file, err: String(e) }, 'removing the data dir lock failed');
    }
  };
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The host's identity: its route-token key and its id, made on first start and kept. */
export async function loadIdentity(dataDir: string): Promise<{ routeKey: Buffer; hostId: string }> {
  const routeKey = await loadOrCreate(join(dataDir, 'host.key'), () => randomBytes(32));
  const hostId = (await loadOrCreate(join(dataDir, 'host-id'), () => Buffer.from(`host-${randomBytes(4).toString('hex')}`))).toString('utf8').trim();
  return { routeKey, hostId };
}

/** The file's content, made by `make` (mode 0600) when it does not exist yet. */
export async function loadOrCreate(file: string, make: () => Buffer): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  // Two starts racing: the first write wins and both read it back.
  await writeFile(file, make(), { mode: 0o600, flag: 'wx' }).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'EEXIST') throw e;
  });
  await chmod(file, 0o600);
  return readFile(file);
}

async function readIfExists(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return ''; // its owner just let go
    throw e;
  }
}

function ignoreMissing(e: NodeJS.ErrnoException): void {
  if (e.code !== 'ENOENT') throw e;
}
