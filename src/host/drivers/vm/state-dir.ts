// What a VM keeps in its instance state directory (root-owned; QEMU, running as its own
// user, may write only the overlay and the status disk).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Accel } from './qemu.ts';

/** The instance's qcow2 overlay over the shared root template (disks.ts). */
export const OVERLAY = 'disk.qcow2';
/** The spec disk the guest's init reads its command line, env and user from (disks.ts). */
export const SPEC_DISK = 'spec.img';
/** The guest writes its service's exit here (status.ts). */
export const STATUS_DISK = 'status.img';
export const QMP_SOCKET = 'qmp.sock';
/** A restore's saved RAM (QEMU's migration stream, decompressed), read by QEMU as fd 5. */
export const MEMORY = 'memory.stream';
/** Where a live migration's key file lives while the move runs: root's, in a 0700 parent (live.ts makeKeyDir). */
export const KEYS = 'keys';
export const KEY_DIR = `${KEYS}/migration`;
/** What start() leaves so destroy() and recover() can find QEMU again. */
export const STATE_FILE = 'vm.json';
/** shoal-shim's files: QEMU's exit status and pid, for an agent that restarted meanwhile. */
export const shimFiles = (stateDir: string) => ({ exit: join(stateDir, 'exit'), pid: join(stateDir, 'bridge.pid'), qemuPid: join(stateDir, 'qemu.pid') });

/** What a saved state or a live migration's target must agree with (kept in the state file). */
export interface VmFacts {
  memoryMiB: number;
  cpus: number;
  templateDigest: string;
  kernelRelease: string;
  accel: Accel;
}

export interface StateFile {
  id: string;
  pid: number;
  startTime: number;
  listenSocket: string;
  facts: VmFacts;
}

export async function readState(stateDir: string): Promise<StateFile | undefined> {
  try {
    return JSON.parse(await readFile(join(stateDir, STATE_FILE), 'utf8')) as StateFile;
  } catch {
    return undefined;
  }
}
