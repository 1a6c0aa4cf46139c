// The node template's file tree: the Node.js binary Shoal itself runs on, the shared
// libraries it links (as `ldd` lists them), a minimal /etc and empty mount points.
// Nothing is downloaded: the runtime is copied from this machine.
import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdir, realpath, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { ShoalError } from '../../protocol/index.ts';

const run = promisify(execFile);

export interface NodeRootfsInfo {
  /** Major version of the copied runtime, used as the template's version tag. */
  major: number;
  version: string;
  /** Path of the binary inside the tree. */
  binary: string;
}

/** Shared-library paths of an ELF binary, as the dynamic loader resolves them. */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await run('ldd', [binary]);
  const libs: string[] = [];
  for (const line of stdout.split('\n')) {
    // "libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m?.[1]) libs.push(m[1]);
  }
  if (libs.length === 0) throw new ShoalError('internal', `ldd found no libraries for ${binary}`);
  return libs;
}

const PASSWD = 'root:x:0:0:root:/root:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n';
const GROUP = 'root:x:0:\nnogroup:x:65534:\n';

/** Writes the minimal /etc and mount points every Shoal template carries. */
export async function writeBaseSkeleton(root: string): Promise<void> {
  for (const d of ['etc', 'proc', 'sys', 'dev', 'run/shoal', 'tmp', 'app']) await mkdir(join(root, d), { recursive: true });
  await chmod(join(root, 'tmp'), 0o1777);
  await writeFile(join(root, 'etc/passwd'), PASSWD);
  await writeFile(join(root, 'etc/group'), GROUP);
  await writeFile(join(root, 'etc/hosts'), '127.0.0.1 localhost\n::1 localhost\n');
  await writeFile(join(root, 'etc/nsswitch.conf'), 'passwd: files\ngroup: files\nhosts: files\n');
  await writeFile(join(root, 'etc/resolv.conf'), '');
}

/**
 * Copies `nodeBinary` (default: the running node) and its libraries into `root`,
 * which must be an empty or missing directory.
 */
export async function assembleNodeRootfs(root: string, nodeBinary = process.execPath): Promise<NodeRootfsInfo> {
  const binary = await realpath(nodeBinary);
  const { stdout } = await run(binary, ['--version']);
  const version = stdout.trim().replace(/^v/, '');
  const major = Number(version.split('.')[0]);
  await writeBaseSkeleton(root);
  await mkdir(join(root, 'usr/local/bin'), { recursive: true });
  await copyFile(binary, join(root, 'usr/local/bin/node'));
  await chmod(join(root, 'usr/local/bin/node'), 0o755);
  // /bin/node too (a symlink, so the 100 MB binary is stored once).
  await mkdir(join(root, 'bin'), { recursive: true });
  await symlink('../usr/local/bin/node', join(root, 'bin/node'));
  for (const lib of await sharedLibraries(binary)) {
    const real = await realpath(lib);
    const dest = join(root, lib);
    await mkdir(dirname(dest), { recursive: true });
    await copyFile(real, dest);
  }
  return { major, version, binary: '/usr/local/bin/node' };
}
