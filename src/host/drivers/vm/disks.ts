// The VM's disks. The root template: an image's unpacked layers (the merged root the
// agent prepared, before anything ran in it) as ext4 made by `mke2fs -d` (no mount
// needed), converted to qcow2, cached per layer stack and shared read-only by every
// instance. Each instance: a qcow2 overlay backed by it (the differencing disk), and a
// small raw "spec disk" the guest's shoal-run reads its launch spec from.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, lstat, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ShoalError } from '../../../protocol/index.ts';
import type { InstanceSpec } from '../driver.ts';

const run = promisify(execFile);

export interface RootTemplate {
  path: string;
  /** sha256 of the qcow2 file: a saved state's disk overlay only fits this template. */
  digest: string;
  bytes: number;
}

/** Free space the template's ext4 gets beyond its content (the guest's writable room). */
const HEADROOM_BYTES = 128 * 1024 * 1024;

/** The file system's own times (E2FSPROGS_FAKE_TIME): fixed, for identical bytes on every host. */
const FIXED_TIME = '1700000000';

const building = new Map<string, Promise<RootTemplate>>();

/** The cache key of a layer stack (diff ids, bottom first). */
export function layerStackKey(layers: string[]): string {
  return createHash('sha256').update(layers.join('\n')).digest('hex');
}

/**
 * The root template of `rootfs` under `cacheDir/<key>/root.qcow2`, built once. The build
 * is deterministic for the same tree (fixed UUID, hash seed and time, derived from the
 * key), so two hosts building from the same layers get the same bytes, which a restored
 * overlay needs.
 */
export function ensureRootTemplate(cacheDir: string, key: string, rootfs: string, extraBytes = 0): Promise<RootTemplate> {
  const dir = join(cacheDir, key);
  const pending = building.get(dir);
  if (pending) return pending;
  const p = (async () => {
    const existing = await readTemplate(dir);
    if (existing) return existing;
    const work = `${dir}.building-${process.pid}`;
    await rm(work, { recursive: true, force: true });
    await mkdir(work, { recursive: true });
    try {
      const { stdout } = await run('du', ['-sk', '--apparent-size', rootfs]);
      const contentBytes = Number.parseInt(stdout, 10) * 1024;
      const sizeMiB = Math.ceil((contentBytes * 1.3 + HEADROOM_BYTES + extraBytes) / (1024 * 1024));
      const raw = join(work, 'root.raw');
      await run('truncate', ['-s', `${sizeMiB}M`, raw]);
      const uuid = uuidFrom(key);
      await run('mke2fs', ['-q', '-t', 'ext4', '-O', '^has_journal', '-U', uuid, '-E', `hash_seed=${uuidFrom(key + '/hash')},root_owner=0:0`, '-d', rootfs, raw], {
        env: { ...process.env, E2FSPROGS_FAKE_TIME: FIXED_TIME },
      });
      await normalizeTimes(raw, rootfs, join(work, 'times.debugfs'));
      await run('qemu-img', ['convert', '-O', 'qcow2', raw, join(work, 'root.qcow2')]);
      await rm(raw);
      await chmod(join(work, 'root.qcow2'), 0o444);
      const digest = await sha256File(join(work, 'root.qcow2'));
      await writeFile(join(work, 'root.json'), JSON.stringify({ digest }) + '\n');
      await rm(dir, { recursive: true, force: true });
      await rename(work, dir);
    } catch (e) {
      await rm(work, { recursive: true, force: true });
      throw new ShoalError('internal', `building the VM root disk from ${rootfs} failed: ${(e as Error).message}`, { cause: e });
    }
    const made = await readTemplate(dir);
    if (!made) throw new ShoalError('internal', `the VM root disk in ${dir} vanished`);
    return made;
  })();
  building.set(dir, p);
  return p.finally(() => building.delete(dir));
}

/**
 * mke2fs -d copies each file's atime and ctime, which differ from host to host (ctime is
 * when the layer was unpacked there); set both to the mtime (from the layer), so the same
 * layers give the same bytes everywhere (a live migration's target and a restore check the
 * template's digest). The root directory gets fixed times and mode. mke2fs 1.47 already
 * sorts directory entries.
 */
async function normalizeTimes(raw: string, rootfs: string, script: string): Promise<void> {
  const lines: string[] = [];
  const visit = async (rel: string): Promise<void> => {
    if (rel === '') {
      // The root directory is the instance's upper layer, made on this host when its root
      // was mounted: its time and mode are this host's, not the layers'. Fixed instead.
      lines.push(`sif / mode 040755`, `sif / mtime @${FIXED_TIME}`, `sif / atime @${FIXED_TIME}`, `sif / ctime @${FIXED_TIME}`);
      for (const name of (await readdir(rootfs)).sort()) await visit(`/${name}`);
      return;
    }
    const st = await lstat(join(rootfs, rel));
    const path = rel;
    if (/["\\\n]/.test(path)) return; // not expressible to debugfs: left as is (a restore elsewhere is then refused)
    const t = String(Math.floor(st.mtimeMs / 1000));
    lines.push(`sif "${path}" atime @${t}`, `sif "${path}" ctime @${t}`);
    if (st.isDirectory()) for (const name of (await readdir(join(rootfs, rel))).sort()) await visit(`${rel}/${name}`);
  };
  await visit('');
  await writeFile(script, lines.join('\n') + '\n');
  await run('debugfs', ['-w', '-f', script, raw], { maxBuffer: 1 << 26, env: { ...process.env, E2FSPROGS_FAKE_TIME: FIXED_TIME } });
  await rm(script);
}

async function readTemplate(dir: string): Promise<RootTemplate | undefined> {
  try {
    const { digest } = JSON.parse(await readFile(join(dir, 'root.json'), 'utf8')) as { digest: string };
    const path = join(dir, 'root.qcow2');
    return { path, digest, bytes: (await stat(path)).size };
  } catch {
    return undefined;
  }
}

/** The instance's differencing disk, backed by the (absolute path of the) template. */
export async function createOverlay(template: string, path: string): Promise<void> {
  await rm(path, { force: true });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', template, '-F', 'qcow2', path]);
}

/** Points an overlay copied from another host at this host's template. */
export async function rebaseOverlay(template: string, path: string): Promise<void> {
  await run('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', template, '-F', 'qcow2', path]);
}

/** The guest port the service listens on (shoal-run makes the socket). */
export const GUEST_PORT = 8080;

/** The launch spec as shoal-run reads it (kernel-guest/guest-run.c): NUL-separated strings. */
export async function writeSpecDisk(spec: InstanceSpec, path: string): Promise<void> {
  const fields = ['shoal-spec-1', String(GUEST_PORT), String(spec.user.uid), String(spec.user.gid), spec.cwd || '/', String(spec.args.length), ...spec.args, String(spec.env.length), ...spec.env];
  for (const f of fields) if (f.includes('\0')) throw new ShoalError('invalid', 'the spec holds a NUL byte', { field: 'args' });
  const body = Buffer.from(fields.join('\0') + '\0', 'utf8');
  if (body.length > 255 * 1024) throw new ShoalError('invalid', 'the spec (args and env) is larger than 255 KiB', { field: 'env' });
  const padded = Buffer.alloc(Math.ceil((body.length + 1) / 512) * 512);
  body.copy(padded);
  await writeFile(path, padded, { mode: 0o600 });
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

function uuidFrom(seed: string): string {
  const h = createHash('sha256').update(seed).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
