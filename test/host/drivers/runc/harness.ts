// The runc driver's instances of the fixture service (overlays over the node and app
// layers, id-mapped as the agent mounts them), shared by the contract suite
// (../contract.test.ts) and the driver's own tests.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chown, mkdir, mkdtemp, readdir, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cgroupPathsOf } from '../../../../src/host/drivers/runc/cgroups.ts';
import { DEFAULT_ID_MAPPING, type RuncDriverOptions } from '../../../../src/host/drivers/runc/index.ts';
import { listMounts, mountOverlay, unmountOverlay } from '../../../../src/host/rootfs/overlay.ts';
import { skipUnless } from '../../fixtures/requirements.ts';
import type { ContractInstance } from '../contract.ts';
import { buildServiceLayers, serviceArgs } from '../harness.ts';

const run = promisify(execFile);
export const unavailable = skipUnless(['root', 'runc', 'cc']);
export const cgroupParent = `shoal-test-${process.pid}`;
export const quiet = (): void => undefined;

/** Set by setUp() (live bindings: importers see the values). */
export let dir = '';
export let layers = { nodeLayer: '', appLayer: '' };

export async function setUp(): Promise<void> {
  if (unavailable) return;
  dir = await mkdtemp(join(tmpdir(), 'shoal-runc-'));
  layers = await buildServiceLayers(join(dir, 'layers'));
  // A probe for the seccomp tests: the syscalls a container must not make.
  await writeProbe(join(layers.appLayer, 'app', 'probe'));
  // A dir the service user may write to, as an image would declare one.
  await mkdir(join(layers.appLayer, 'app', 'data'));
  await chown(join(layers.appLayer, 'app', 'data'), 65534, 65534);
}

export async function tearDown(): Promise<void> {
  if (unavailable) return;
  for (const root of await readdir(dir).then((n) => n.filter((x) => x.startsWith('runc-'))).catch(() => [])) {
    assert.deepEqual(await runcList(join(dir, root)), [], `containers left under ${root}`);
  }
  assert.deepEqual(await listMounts(dir), []);
  // The parent cgroup runc created in each hierarchy (empty by now).
  for (const p of await cgroupParents()) await rmdir(p).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}

async function writeProbe(out: string): Promise<void> {
  const src = `${out}.c`;
  const { writeFile } = await import('node:fs/promises');
  await writeFile(
    src,
    `#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
  int u = unshare(CLONE_NEWUSER) == 0 ? 0 : errno;
  int m = mount("none", "/tmp", "tmpfs", 0, NULL) == 0 ? 0 : errno;
  int p = syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0) == 0 ? 0 : errno;
  int k = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0) >= 0 ? 0 : errno;
  printf("{\\"unshare\\":%d,\\"mount\\":%d,\\"ptrace\\":%d,\\"keyctl\\":%d}\\n", u, m, p, k);
  return 0;
}
`,
  );
  await run('cc', ['-O2', '-o', out, src]);
  await rm(src);
}

export async function runcList(root: string): Promise<string[]> {
  try {
    const { stdout } = await run('runc', ['--root', root, 'list', '--quiet']);
    return stdout.split('\n').filter(Boolean);
  } catch {
    return []; // no root dir: nothing there
  }
}

/** <cgroupParent> in each hierarchy, relative to this process's cgroups (where runc puts it). */
async function cgroupParents(): Promise<string[]> {
  const own = await cgroupPathsOf(process.pid);
  const dirs = [...Object.values(own.v1), ...(own.unified ? [own.unified] : [])].map((d) => join(d, cgroupParent));
  return [...new Set(dirs)];
}

async function leftoverCgroups(): Promise<string[]> {
  const out: string[] = [];
  for (const p of await cgroupParents()) {
    const entries = await readdir(p, { withFileTypes: true }).catch(() => []);
    for (const e of entries) if (e.isDirectory()) out.push(join(p, e.name));
  }
  return out;
}

export async function assertClean(): Promise<void> {
  for (const mode of ['shim', 'foreground']) assert.deepEqual(await runcList(join(dir, `runc-${mode}`)), [], `runc-${mode} containers left`);
  assert.deepEqual(await listMounts(join(dir, 'i')), [], 'mounts left');
  assert.deepEqual(await leftoverCgroups(), [], 'cgroups left');
}

export async function instance(id: string, resources = { memoryBytes: 128 * 1024 * 1024, cpuMillis: 1000, pids: 64 }): Promise<ContractInstance & { upperDir: string }> {
  const base = join(dir, 'i', id);
  const d = { upper: join(base, 'upper'), work: join(base, 'work'), rootfs: join(base, 'rootfs'), sock: join(base, 'sock'), state: join(base, 'state') };
  for (const p of Object.values(d)) await mkdir(p, { recursive: true });
  await mkdir(join(d.sock, 'imports'));
  // As the agent does for a driver in a user namespace: the layers id-mapped to its range.
  await mountOverlay({ lowerDirs: [layers.appLayer, layers.nodeLayer], upperDir: d.upper, workDir: d.work, target: d.rootfs, idmap: DEFAULT_ID_MAPPING, helperDir: join(dir, 'shim') });
  return {
    upperDir: d.upper,
    socketPath: join(d.sock, 'app.sock'),
    spec: {
      id,
      rootfs: d.rootfs,
      args: serviceArgs,
      env: ['PATH=/usr/local/bin:/bin', 'SHOAL_LISTEN=/run/shoal/app.sock', 'SHOAL_IMPORTS=/run/shoal/imports'],
      cwd: '/app',
      user: { uid: 65534, gid: 65534 },
      resources,
      listenSocket: join(d.sock, 'app.sock'),
      importsDir: join(d.sock, 'imports'),
      logFile: join(base, 'log'),
      stateDir: d.state,
    },
    release: async () => {
      await unmountOverlay(d.rootfs);
      await rm(base, { recursive: true, force: true });
    },
  };
}

export function driverOptions(mode: 'shim' | 'foreground', extra: Partial<RuncDriverOptions> = {}): RuncDriverOptions {
  return { runcRoot: join(dir, `runc-${mode}`), mode, cgroupParent, shimDir: join(dir, 'shim'), log: quiet, ...extra };
}

