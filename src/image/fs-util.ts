import type { Stats } from 'node:fs';
import { lstat, stat } from 'node:fs/promises';

/** True for the error a missing path gives. */
export function isNoEnt(e: unknown): boolean {
  return (e as NodeJS.ErrnoException)?.code === 'ENOENT';
}

/** Whether a path exists; other errors (permissions, I/O) are thrown, not taken as "no". */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if (isNoEnt(e)) return false;
    throw e;
  }
}

/** stat, or undefined when the path does not exist (other errors are thrown). */
export async function statIfExists(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (e) {
    if (isNoEnt(e)) return undefined;
    throw e;
  }
}

/** lstat, or undefined when the path does not exist (other errors are thrown). */
export async function lstatIfExists(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (e) {
    if (isNoEnt(e)) return undefined;
    throw e;
  }
}
