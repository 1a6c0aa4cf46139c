// The vm driver's instances of the fixture service for the driver contract: one flat
// root (node + /app/server.mjs) whose root disk template every instance shares, the
// kernel template from the test cache, QEMU's monitor (the shim) cached in the temp dir.
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createVmDriver } from '../../../../src/host/drivers/vm/index.ts';
import type { ContractInstance } from '../contract.ts';
import { skipUnless } from '../../fixtures/requirements.ts';
import { buildFlatRootfs, serviceArgs } from '../harness.ts';
import { testKernelDir } from './kernel-cache.ts';

export const unavailable = skipUnless(['root', 'qemu', 'cc']);
/** A cold boot of node under TCG on a loaded machine: seconds, sometimes tens. */
export const BOOT_MS = 180_000;

let dir = '';
let rootfs = '';
let kernelDir = '';

export async function setUp(): Promise<void> {
  dir = await mkdtemp(join(tmpdir(), 'shoal-vm-contract-'));
  await chmod(dir, 0o755);
  rootfs = await buildFlatRootfs(join(dir, 'rootfs'));
  kernelDir = await testKernelDir();
}

export async function tearDown(): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** Every driver of the suite shares the data dir: the root disk template is built once. */
export function driver() {
  return createVmDriver({ dataDir: join(dir, 'data'), kernelDir, shimDir: join(dir, 'shim'), log: () => undefined });
}

export async function instance(id: string): Promise<ContractInstance> {
  const base = join(dir, 'i', id);
  const socketDir = join(base, 'sock');
  await mkdir(join(socketDir, 'imports'), { recursive: true });
  await mkdir(join(base, 'state'), { recursive: true });
  return {
    socketPath: join(socketDir, 'app.sock'),
    spec: {
      id,
      rootfs,
      rootLayers: ['sha256:test-contract-node-and-app'],
      args: serviceArgs,
      env: ['PATH=/usr/local/bin:/bin', 'SHOAL_LISTEN=/run/shoal/app.sock', `SHOAL_INSTANCE=${id}`],
      cwd: '/app',
      user: { uid: 65534, gid: 65534 },
      resources: { memoryBytes: 160 * 1024 * 1024, cpuMillis: 1000, pids: 64 },
      listenSocket: join(socketDir, 'app.sock'),
      importsDir: join(socketDir, 'imports'),
      logFile: join(base, 'log'),
      stateDir: join(base, 'state'),
    },
    release: () => rm(base, { recursive: true, force: true }),
  };
}

/** No VM's cgroup is left (each QEMU has shoal/vm-<id> until it is gone). */
export async function assertClean(): Promise<void> {
  for (const root of ['/sys/fs/cgroup/memory/shoal', '/sys/fs/cgroup/shoal']) {
    const left = (await readdir(root).catch(() => [] as string[])).filter((n) => n.startsWith('vm-c-vm-'));
    assert.deepEqual(left, [], `VM cgroups left in ${root}`);
  }
}
