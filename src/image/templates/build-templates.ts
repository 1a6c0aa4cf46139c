// The well-known templates: build the tree, turn it into one layer, push it to a store
// under its template name (template://NAME/VERSION → repository templates/NAME, tag VERSION).
import { cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseImageRef } from '../../protocol/index.ts';
import { buildTemplate, type BuildResult } from '../image-build.ts';
import type { RegistryClient } from '../registry-client.ts';
import { debootstrapRootfs } from './debian-rootfs.ts';
import { assembleNodeRootfs } from './node-rootfs.ts';
import { assembleKernel, type KernelFiles } from './kernel.ts';

export interface TemplateResult extends BuildResult {
  /** The well-known name, e.g. template://node/24. */
  name: string;
}

async function inScratch<T>(workDir: string | undefined, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(workDir ?? tmpdir(), 'shoal-template-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** template://node/<major>: the Node.js runtime Shoal itself runs on. */
export async function buildNodeTemplate(options: { client: RegistryClient; nodeBinary?: string; workDir?: string }): Promise<TemplateResult> {
  return inScratch(options.workDir, async (dir) => {
    const rootfs = join(dir, 'rootfs');
    const info = await assembleNodeRootfs(rootfs, options.nodeBinary);
    const name = `template://node/${info.major}`;
    const result = await buildTemplate({
      client: options.client,
      rootfs,
      ref: parseImageRef(name),
      process: { cmd: [info.binary], workdir: '/app', labels: { 'org.opencontainers.image.version': info.version } },
      workDir: dir,
    });
    return { ...result, name };
  });
}

/** template://debian/<suite>: a minimal Debian made by debootstrap. */
export async function buildDebianTemplate(options: {
  client: RegistryClient;
  suite?: string;
  mirror?: string;
  workDir?: string;
  log?: ((line: string) => void) | undefined;
}): Promise<TemplateResult> {
  const suite = options.suite ?? 'bookworm';
  return inScratch(options.workDir, async (dir) => {
    const rootfs = join(dir, 'rootfs');
    await debootstrapRootfs(rootfs, {
      suite,
      ...(options.mirror ? { mirror: options.mirror } : {}),
      ...(options.log ? { log: options.log } : {}),
    });
    const name = `template://debian/${suite}`;
    const result = await buildTemplate({
      client: options.client,
      rootfs,
      ref: parseImageRef(name),
      process: { cmd: ['/bin/bash'] },
      workDir: dir,
    });
    return { ...result, name };
  });
}

/**
 * template://kernel/linux/<release>: the Debian kernel for the vm driver, uncompressed,
 * with its initramfs, as files under /boot (kernel.ts). `installDir`, when given, also
 * keeps the built files there (a host's kernel cache: <dataDir>/vm/kernel/<release>).
 */
export async function buildKernelTemplate(options: {
  client: RegistryClient;
  release?: string;
  workDir?: string;
  installDir?: (release: string) => string;
  log?: ((line: string) => void) | undefined;
}): Promise<TemplateResult & { kernel: KernelFiles }> {
  return inScratch(options.workDir, async (dir) => {
    const boot = join(dir, 'rootfs/boot');
    const kernel = await assembleKernel(boot, { ...(options.release ? { release: options.release } : {}), ...(options.log ? { log: options.log } : {}) });
    const name = `template://kernel/linux/${kernel.release}`;
    const result = await buildTemplate({
      client: options.client,
      rootfs: join(dir, 'rootfs'),
      ref: parseImageRef(name),
      process: { cmd: ['/boot/vmlinux'], labels: { 'org.opencontainers.image.version': kernel.packageVersion } },
      workDir: dir,
    });
    let installed = kernel;
    if (options.installDir) {
      const target = options.installDir(kernel.release);
      await mkdir(dirname(target), { recursive: true });
      await rm(target, { recursive: true, force: true });
      await cp(boot, target, { recursive: true });
      installed = { ...kernel, vmlinux: join(target, 'vmlinux'), initrd: join(target, 'initrd.img') };
    }
    return { ...result, name, kernel: installed };
  });
}
