// The cost of each way to give an instance a bounded, user-namespaced root, per cold start,
// interleaved in one run (root only): the overlay as it was (mount(8), unbounded, root
// owned), what the host now does (shoal-idmap: id-mapped layers + a tmpfs of the disk
// size), a loop-mounted ext4 image per instance instead of the tmpfs (mkfs + mount), and
// the one-time cost of a shifted (chowned) copy of the node layer, the alternative to
// id-mapped layers.
//   node bench/instance-root.ts [n]
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { DEFAULT_ID_MAPPING } from '../src/host/drivers/runc/index.ts';
import { mountOverlay, unmountOverlay } from '../src/host/rootfs/overlay.ts';
import { buildServiceLayers } from '../test/host/drivers/harness.ts';

const run = promisify(execFile);
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const n = Number(process.argv[2] ?? 10);
const dir = await mkdtemp(join(tmpdir(), 'shoal-ir-'));
try {
  const layers = await buildServiceLayers(join(dir, 'layers'));
  const lowerDirs = [layers.appLayer, layers.nodeLayer];
  let seq = 0;
  const fresh = async (): Promise<{ upper: string; work: string; target: string; base: string }> => {
    const base = join(dir, `i${seq++}`);
    const d = { upper: join(base, 'upper'), work: join(base, 'work'), target: join(base, 'root'), base };
    for (const p of [d.upper, d.work, d.target]) await mkdir(p, { recursive: true });
    return d;
  };
  const variants: Record<string, () => Promise<number>> = {
    'overlay, mount(8) (before)': async () => {
      const d = await fresh();
      const t0 = performance.now();
      await mountOverlay({ lowerDirs, upperDir: d.upper, workDir: d.work, target: d.target });
      const ms = performance.now() - t0;
      await unmountOverlay(d.target);
      return ms;
    },
    'id-mapped layers + 64 MiB tmpfs (now)': async () => {
      const d = await fresh();
      const t0 = performance.now();
      await mountOverlay({ lowerDirs, upperDir: d.upper, workDir: d.work, target: d.target, sizeBytes: 64 << 20, idmap: DEFAULT_ID_MAPPING });
      const ms = performance.now() - t0;
      await unmountOverlay(d.target);
      return ms;
    },
    'id-mapped layers + 64 MiB loop ext4': async () => {
      const d = await fresh();
      const img = join(d.base, 'disk.img');
      const t0 = performance.now();
      await run('truncate', ['-s', '64M', img]);
      await run('mkfs.ext4', ['-q', '-F', '-O', '^has_journal', '-E', 'lazy_itable_init=1,nodiscard', img]);
      await run('mount', ['-o', 'loop,nosuid,nodev', img, d.upper]);
      await mkdir(join(d.upper, 'u'));
      await mkdir(join(d.upper, 'w'));
      await mountOverlay({ lowerDirs, upperDir: join(d.upper, 'u'), workDir: join(d.upper, 'w'), target: d.target, idmap: DEFAULT_ID_MAPPING });
      const ms = performance.now() - t0;
      await unmountOverlay(d.target);
      await run('umount', [d.upper]);
      return ms;
    },
  };
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  for (const v of Object.values(variants)) await v(); // warm: helper built, page cache
  for (let i = 0; i < n; i++) for (const [k, v] of Object.entries(variants)) times[k]!.push(await v());
  const copy = join(dir, 'shifted');
  const t0 = performance.now();
  await run('cp', ['-a', layers.nodeLayer, copy]);
  await run('chown', ['-R', `${DEFAULT_ID_MAPPING.hostId}:${DEFAULT_ID_MAPPING.hostId}`, copy]);
  const shiftedMs = performance.now() - t0;
  console.log(`n = ${n} each, interleaved; root file system only (no container).\n`);
  console.log('| root | min ms | median ms | max ms |\n|---|---|---|---|');
  for (const [k, xs] of Object.entries(times)) console.log(`| ${k} | ${Math.min(...xs).toFixed(1)} | ${median(xs).toFixed(1)} | ${Math.max(...xs).toFixed(1)} |`);
  console.log(`\nA shifted copy of the node layer (cp -a + chown -R, ~100 MB), once per layer and id range: ${shiftedMs.toFixed(0)} ms.`);
} finally {
  await run('sh', ['-c', `grep -o ' ${dir}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l`]).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}
