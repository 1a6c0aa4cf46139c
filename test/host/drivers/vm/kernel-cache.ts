// The kernel template for tests, built once per machine and kernel release (apt-get
// download reaches the Debian mirror, so each test run must not do it again) and kept in
// the temp dir like the echo store. Test files running at once: the first builds, the
// others wait for its directory to appear.
import { cp, mkdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { assembleKernel, currentKernelRelease, readKernelFiles } from '../../../../src/image/index.ts';

export async function testKernelDir(): Promise<string> {
  const release = await currentKernelRelease();
  const dir = join(tmpdir(), `shoal-test-vm-kernel-${release}`);
  const lock = `${dir}.lock`;
  const deadline = Date.now() + 10 * 60_000;
  while (!(await readKernelFiles(dir))) {
    try {
      await mkdir(lock);
    } catch {
      const st = await stat(lock).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > 5 * 60_000) await rm(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`);
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    try {
      await assembleKernel(dir, { release });
    } finally {
      await rm(lock, { recursive: true, force: true });
    }
  }
  return dir;
}

/** Puts the cached kernel where a host with data dir `hostData` looks for it. */
export async function installTestKernel(hostData: string): Promise<void> {
  const src = await testKernelDir();
  const k = await readKernelFiles(src);
  const target = join(hostData, 'vm', 'kernel', k!.release);
  await mkdir(dirname(target), { recursive: true });
  await cp(src, target, { recursive: true });
}
