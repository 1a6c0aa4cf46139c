// How the service in a guest ended, as shoal-run (kernel-guest/guest-run.c) writes it to
// the status disk (/dev/vdc) before it powers the guest off: the whole exit code, the
// signal that killed it, and whether the guest kernel's OOM killer ran. QEMU's exit status
// carries only 7 bits of the code (isa-debug-exit) and nothing of signals or OOM, so it is
// the fallback. The disk is a host-made file in the state dir, written through QEMU; the
// host reads its first line only, and refuses anything but the exact format.
import { constants } from 'node:fs';
import { chown, open, truncate, writeFile } from 'node:fs/promises';
import { signalName } from '../shared/proc.ts';

/**
 * One block would hold the line, but QEMU 7.2's block migration (a live move, live.ts)
 * fails to load a disk smaller than its 1 MiB chunk ("error while loading state section
 * (block)"): 1 MiB, sparse.
 */
const STATUS_DISK_BYTES = 1024 * 1024;
const LINE = /^shoal-exit-1 (-1|\d{1,3}) (\d{1,2}) ([01])\n/;

export interface GuestStatus {
  /** The service's exit code (0–255), or undefined when a signal killed it. */
  code: number | undefined;
  signal: string | undefined;
  oom: boolean;
}

/** A zeroed status disk, writable by the user QEMU runs as. */
export async function createStatusDisk(path: string, owner: { uid: number; gid: number } | undefined): Promise<void> {
  await writeFile(path, '', { mode: 0o600 });
  await truncate(path, STATUS_DISK_BYTES);
  if (owner) await chown(path, owner.uid, owner.gid);
}

/** The status shoal-run wrote, or undefined (none written: the guest died some other way). */
export async function readStatusDisk(path: string): Promise<GuestStatus | undefined> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    const buf = Buffer.alloc(64);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    return parseStatusLine(buf.subarray(0, bytesRead).toString('latin1'));
  } finally {
    await handle.close();
  }
}

export function parseStatusLine(text: string): GuestStatus | undefined {
  const m = LINE.exec(text);
  if (!m) return undefined;
  const code = Number(m[1]);
  const sig = Number(m[2]);
  if (code > 255) return undefined;
  return { code: code < 0 ? undefined : code, signal: sig > 0 ? (signalName(sig) ?? `SIG${sig}`) : undefined, oom: m[3] === '1' };
}
