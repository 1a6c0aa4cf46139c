// The kernel template's files: the Debian kernel this machine's apt reaches, uncompressed
// for a PVH boot (under TCG, xz-decompressing a bzImage takes ~5.7 s of every boot), and
// a small initramfs: Debian's static busybox, the virtio and ext4 modules (modules in
// Debian's kernel), the guest init (kernel-guest/guest-init.sh) and shoal-run
// (kernel-guest/guest-run.c, compiled static here: it hands the service its listening
// socket as fd 3 and reports its exit code). Nothing is downloaded but by apt-get.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createGzip } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { ShoalError } from '../../protocol/index.ts';

const run = promisify(execFile);

const GUEST_INIT = fileURLToPath(new URL('./kernel-guest/guest-init.sh', import.meta.url));
const GUEST_RUN_SOURCE = fileURLToPath(new URL('./kernel-guest/guest-run.c', import.meta.url));

/**
 * The guest's own files' version (init and shoal-run): kernel.json records it, and a
 * template built from other versions reads as absent, so it is built again (the host's
 * side of the guest contract, such as the status disk, changes with these files).
 */
let guestVersion: Promise<string> | undefined;
export function guestFilesVersion(): Promise<string> {
  guestVersion ??= Promise.all([readFile(GUEST_INIT), readFile(GUEST_RUN_SOURCE)]).then(([a, b]) =>
    createHash('sha256').update(a).update('\0').update(b).digest('hex').slice(0, 16),
  );
  return guestVersion;
}

/** The modules the guest loads (each with what it depends on, in order). */
const GUEST_MODULES = ['virtio_pci', 'virtio_blk', 'virtio_net', 'crc32c_generic', 'ext4'];

export interface KernelFiles {
  /** Kernel release, e.g. 6.1.0-57-amd64 (the template's version). */
  release: string;
  /** The Debian package version it came from. */
  packageVersion: string;
  vmlinux: string;
  initrd: string;
}

export const KERNEL_FILE = 'vmlinux';
export const INITRD_FILE = 'initrd.img';
export const KERNEL_INFO_FILE = 'kernel.json';

/** The release apt's linux-image-amd64 points at now (e.g. 6.1.0-57-amd64). */
export async function currentKernelRelease(): Promise<string> {
  const { stdout } = await run('apt-cache', ['depends', 'linux-image-amd64'], { env: { ...process.env, LC_ALL: 'C' } });
  const m = /Depends: linux-image-(\d[^\s]*)/.exec(stdout);
  if (!m?.[1]) throw new ShoalError('unavailable', 'apt knows no linux-image-amd64 (run apt-get update?)');
  return m[1];
}

/**
 * Builds vmlinux, initrd.img and kernel.json into `outDir` (made atomically: a scratch
 * directory renamed into place). `release` defaults to what linux-image-amd64 names.
 */
export async function assembleKernel(outDir: string, options: { release?: string; log?: (line: string) => void } = {}): Promise<KernelFiles> {
  const log = options.log ?? (() => {});
  const release = options.release ?? (await currentKernelRelease());
  const work = `${outDir}.building-${process.pid}`;
  await rm(work, { recursive: true, force: true });
  await mkdir(join(work, 'debs'), { recursive: true });
  try {
    log(`apt-get download linux-image-${release} busybox-static`);
    // _apt cannot write a root-owned scratch dir; the download is then done as root (apt's own warning).
    await chmod(work, 0o755);
    await run('apt-get', ['download', '-q', `linux-image-${release}`, 'busybox-static'], { cwd: join(work, 'debs'), maxBuffer: 1 << 24 });
    const debs = await readdir(join(work, 'debs'));
    const kernelDeb = debs.find((d) => d.startsWith('linux-image-'));
    const busyboxDeb = debs.find((d) => d.startsWith('busybox-static'));
    if (!kernelDeb || !busyboxDeb) throw new ShoalError('internal', `apt-get download gave ${debs.join(', ')}`);
    const packageVersion = decodeURIComponent(kernelDeb.split('_')[1] ?? '');
    await run('dpkg-deb', ['-x', join(work, 'debs', kernelDeb), join(work, 'kernel')]);
    await run('dpkg-deb', ['-x', join(work, 'debs', busyboxDeb), join(work, 'busybox')]);

    log('extracting the uncompressed kernel (PVH boot)');
    await extractVmlinux(join(work, 'kernel/boot', `vmlinuz-${release}`), join(work, KERNEL_FILE));

    log('building the initramfs');
    const ird = join(work, 'initramfs');
    for (const d of ['bin', 'modules', 'proc', 'sys', 'dev', 'newroot']) await mkdir(join(ird, d), { recursive: true });
    await copyFile(join(work, 'busybox/bin/busybox'), join(ird, 'bin/busybox'));
    await copyFile(GUEST_INIT, join(ird, 'init'));
    await chmod(join(ird, 'init'), 0o755);
    await run('gcc', ['-static', '-Os', '-Wall', '-o', join(ird, 'shoal-run'), GUEST_RUN_SOURCE]);
    await run('strip', [join(ird, 'shoal-run')]);
    const order = await moduleOrder(join(work, 'kernel/lib/modules', release, 'kernel'), GUEST_MODULES);
    for (const m of order) await copyFile(m.path, join(ird, 'modules', `${m.name}.ko`));
    await writeFile(join(ird, 'modules/order'), order.map((m) => m.name).join('\n') + '\n');
    await writeCpioGz(join(work, 'busybox/bin/busybox'), ird, join(work, INITRD_FILE));

    const info = { release, packageVersion, guest: await guestFilesVersion() };
    await writeFile(join(work, KERNEL_INFO_FILE), JSON.stringify(info, null, 2) + '\n');
    for (const d of ['debs', 'kernel', 'busybox', 'initramfs']) await rm(join(work, d), { recursive: true, force: true });
    await rm(outDir, { recursive: true, force: true });
    await rename(work, outDir);
    return { release, packageVersion, vmlinux: join(outDir, KERNEL_FILE), initrd: join(outDir, INITRD_FILE) };
  } catch (e) {
    await rm(work, { recursive: true, force: true });
    if (e instanceof ShoalError) throw e;
    throw new ShoalError('internal', `building the kernel template failed: ${(e as Error).message}`, { cause: e });
  }
}

/** The kernel files already in `dir` (built from this guest version), or undefined. */
export async function readKernelFiles(dir: string): Promise<KernelFiles | undefined> {
  try {
    const info = JSON.parse(await readFile(join(dir, KERNEL_INFO_FILE), 'utf8')) as { release: string; packageVersion: string; guest?: string };
    if (info.guest !== (await guestFilesVersion())) return undefined;
    return { release: info.release, packageVersion: info.packageVersion, vmlinux: join(dir, KERNEL_FILE), initrd: join(dir, INITRD_FILE) };
  } catch {
    return undefined;
  }
}

/** The xz stream inside a bzImage, decompressed: an ELF vmlinux QEMU boots through PVH. */
async function extractVmlinux(vmlinuz: string, out: string): Promise<void> {
  const image = await readFile(vmlinuz);
  const at = image.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
  if (at < 0) throw new ShoalError('internal', `${vmlinuz} holds no xz stream`);
  const xz = spawn('xz', ['-dc'], { stdio: ['pipe', 'pipe', 'ignore'] });
  const done = new Promise<void>((resolve) => xz.once('close', () => resolve()));
  const write = pipeline(xz.stdout, createWriteStream(out));
  xz.stdin.on('error', () => {}); // xz stops at the stream's end, before the trailing bytes
  xz.stdin.end(image.subarray(at));
  await write;
  await done;
  const head = Buffer.alloc(4);
  const fh = await open(out, 'r');
  await fh.read(head, 0, 4, 0);
  await fh.close();
  if (!head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) throw new ShoalError('internal', 'the decompressed kernel is not an ELF file');
}

/** `wanted` and what they depend on (modinfo's depends=), dependencies first. */
export async function moduleOrder(modulesRoot: string, wanted: string[]): Promise<Array<{ name: string; path: string }>> {
  const paths = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(dir, e.name));
      else if (e.name.endsWith('.ko')) paths.set(e.name.slice(0, -3).replaceAll('-', '_'), join(dir, e.name));
    }
  };
  await walk(modulesRoot);
  const out: Array<{ name: string; path: string }> = [];
  const seen = new Set<string>();
  const visit = async (name: string): Promise<void> => {
    if (seen.has(name)) return;
    seen.add(name);
    const path = paths.get(name);
    if (!path) return; // built into the kernel
    const text = (await readFile(path)).toString('latin1');
    const m = /depends=([^\0]*)\0/.exec(text);
    for (const dep of (m?.[1] ?? '').split(',').filter(Boolean)) await visit(dep.replaceAll('-', '_'));
    out.push({ name, path });
  };
  for (const w of wanted) await visit(w);
  return out;
}

/** A newc cpio of `dir`, gzipped (busybox's cpio applet: no cpio package needed). */
async function writeCpioGz(busybox: string, dir: string, out: string): Promise<void> {
  const list = (await run('find', ['.'], { cwd: dir, maxBuffer: 1 << 24 })).stdout;
  const cpio = spawn(busybox, ['cpio', '-o', '-H', 'newc'], { cwd: dir, stdio: ['pipe', 'pipe', 'ignore'] });
  const exited = new Promise<number | null>((resolve) => cpio.once('close', resolve));
  cpio.stdin.end(list);
  await pipeline(cpio.stdout, createGzip({ level: 6 }), createWriteStream(out));
  const code = await exited;
  if (code !== 0) throw new ShoalError('internal', `cpio exited with ${code}`);
}
