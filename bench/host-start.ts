// Cold start of one Node.js service instance: time from "go" until the first 200 on
// GET /healthz over its Unix socket, n runs per variant (interleaved), medians.
//   node bench/host-start.ts [n]            (root, runc and cc needed for the runc rows)
// or through bench/run.ts (runHostStartBench + formatHostStartBench).
// Variants:
//   plain       `node server.mjs` as a child with a clean env (the baseline)
//   process     the process driver's start()
//   foreground  the runc driver, `runc run --keep` as a child
//   shim        the runc driver via shoal-shim: `runc run -d`
//   prepared    the runc driver, prepare() done beforehand; timed: start() = `runc start`
//   prepared-native  the same with the x86_64-only seccomp filter
// The overlay mount (3-5 ms) is made before the clock starts for every variant.
// createStartRig is the same machinery for other benchmarks (the provider's fan-out floor).
import { spawn } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, rm, rmdir } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import type { Driver, InstanceSpec } from '../src/host/drivers/driver.ts';
import { canPrepare } from '../src/host/drivers/driver.ts';
import { createProcessDriver } from '../src/host/drivers/process/index.ts';
import { cgroupPathsOf } from '../src/host/drivers/runc/cgroups.ts';
import { createRuncDriver } from '../src/host/drivers/runc/index.ts';
import { mountOverlay, unmountOverlay } from '../src/host/rootfs/overlay.ts';
import { buildFlatRootfs, buildServiceLayers, serviceArgs } from '../test/host/drivers/harness.ts';

const asRoot = process.getuid?.() === 0;

export interface HostStartResult {
  n: number;
  /** Milliseconds until the first 200, per variant, in run order. */
  samples: Record<string, number[]>;
}

function healthz(socketPath: string): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest({ socketPath, path: '/healthz', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

async function untilReady(socketPath: string, t0: number): Promise<number> {
  while (performance.now() - t0 < 20_000) {
    if ((await healthz(socketPath)) === 200) return performance.now() - t0;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error(`${socketPath} not ready`);
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? (s[(s.length - 1) / 2] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

/** One instance's directories and spec. Its overlay root is mounted by mount(), not before. */
export interface BenchInstance {
  spec: InstanceSpec;
  /** The socket as seen from this process. */
  socket: string;
  /**
   * Where the plain baseline binds its own socket: a directory its unprivileged user owns
   * (the drivers' socket dir is the host's, root-owned, and they pass the listener in).
   */
  plainSocket: string;
  mount(): Promise<void>;
  release(): Promise<void>;
}

/** Something started: `ms` from the caller's t0 until the first 200 on /healthz. */
export interface StartedInstance {
  ms: number;
  stop(): Promise<void>;
}

export interface StartRigOptions {
  /** Work directory (made traversable: the service runs as uid 65534). */
  dir: string;
  /** A plain directory holding the whole root (plain children and the process driver start from it). */
  flat: string;
  /** Overlay layers, top-most first (the runc instances' roots); none: runc is not offered. */
  lowerDirs?: string[];
  /** The program and its arguments inside the root (default: the driver tests' fixture service). */
  args?: string[];
  cwd?: string;
  resources?: InstanceSpec['resources'];
}

export interface StartRig {
  instance(overlay: boolean): Promise<BenchInstance>;
  /** `args` as a plain child (the root's paths, a clean env, uid 65534 when root). */
  plain(inst: BenchInstance, t0: number): Promise<StartedInstance>;
  /** driver.start(); stop() also destroys the driver's state. */
  onDriver(driver: Driver, inst: BenchInstance, t0: number): Promise<StartedInstance>;
}

/** Starts the same service the same ways for every benchmark that needs a baseline. */
export function createStartRig(options: StartRigOptions): StartRig {
  const { dir, flat, lowerDirs } = options;
  const args = options.args ?? serviceArgs;
  const resources = options.resources ?? { memoryBytes: 256 * 1024 * 1024, cpuMillis: 1000, pids: 64 };
  let seq = 0;
  return {
    async instance(overlay) {
      if (overlay && !lowerDirs) throw new Error('this rig has no layers to mount');
      const id = `b${process.pid}-${seq++}`;
      const base = join(dir, 'i', id);
      const d = { upper: join(base, 'u'), work: join(base, 'w'), rootfs: join(base, 'r'), sock: join(base, 's'), state: join(base, 'st') };
      for (const p of Object.values(d)) await mkdir(p, { recursive: true });
      await chmod(dir, 0o755);
      await chmod(join(dir, 'i'), 0o755);
      await chmod(base, 0o755);
      await mkdir(join(d.sock, 'imports'));
      const plainDir = join(base, 'p');
      await mkdir(plainDir);
      if (asRoot) await chown(plainDir, 65534, 65534);
      let mounted = false;
      const listen = overlay ? '/run/shoal/app.sock' : join(d.sock, 'app.sock');
      return {
        socket: join(d.sock, 'app.sock'),
        plainSocket: join(plainDir, 'app.sock'),
        spec: {
          id,
          rootfs: overlay ? d.rootfs : flat,
          args,
          env: ['PATH=/usr/local/bin:/bin', `SHOAL_LISTEN=${listen}`],
          cwd: options.cwd ?? '/app',
          user: { uid: 65534, gid: 65534 },
          resources,
          listenSocket: join(d.sock, 'app.sock'),
          importsDir: join(d.sock, 'imports'),
          logFile: join(base, 'log'),
          stateDir: d.state,
        },
        mount: async () => {
          if (!overlay || mounted) return;
          await mountOverlay({ lowerDirs: lowerDirs!, upperDir: d.upper, workDir: d.work, target: d.rootfs });
          mounted = true;
        },
        release: async () => {
          if (mounted) await unmountOverlay(d.rootfs);
          await rm(base, { recursive: true, force: true });
        },
      };
    },

    async plain(inst, t0) {
      const inRoot = (p: string): string => (isAbsolute(p) ? join(flat, p) : p);
      const child = spawn(inRoot(args[0]!), args.slice(1).map(inRoot), {
        cwd: inRoot(options.cwd ?? '/app'),
        env: { PATH: '/usr/local/bin:/bin', SHOAL_LISTEN: inst.plainSocket },
        stdio: 'ignore',
        ...(asRoot ? { uid: 65534, gid: 65534 } : {}),
      });
      const gone = new Promise((r) => child.once('exit', r));
      const stop = async (): Promise<void> => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await gone;
      };
      try {
        return { ms: await untilReady(inst.plainSocket, t0), stop };
      } catch (e) {
        await stop();
        throw e;
      }
    },

    async onDriver(driver, inst, t0) {
      const running = await driver.start(inst.spec);
      const stop = async (): Promise<void> => {
        await running.stop({ graceMs: 1000 });
        await driver.destroy(inst.spec.id, inst.spec.stateDir);
      };
      try {
        return { ms: await untilReady(inst.socket, t0), stop };
      } catch (e) {
        await stop();
        throw e;
      }
    },
  };
}

/** runc leaves the parent cgroup it created in each hierarchy; removes it when empty. */
export async function removeCgroupParent(cgroupParent: string): Promise<void> {
  const own = await cgroupPathsOf(process.pid).catch(() => ({ v1: {}, unified: undefined }));
  for (const p of new Set([...Object.values(own.v1), ...(own.unified ? [own.unified] : [])])) await rmdir(join(p, cgroupParent)).catch(() => undefined);
}

export async function runHostStartBench(options: { n?: number; log?: (m: string) => void } = {}): Promise<HostStartResult> {
  const n = options.n ?? 10;
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-'));
  await chmod(dir, 0o755);
  const cgroupParent = `shoal-bench-${process.pid}`;
  const results: Record<string, number[]> = {};
  const record = (name: string, ms: number): void => {
    (results[name] ??= []).push(ms);
  };
  try {
    const flat = await buildFlatRootfs(join(dir, 'flat'));
    const layers = asRoot ? await buildServiceLayers(join(dir, 'layers')) : undefined;
    const rig = createStartRig({ dir, flat, ...(layers ? { lowerDirs: [layers.appLayer, layers.nodeLayer] } : {}) });
    const quiet = (): void => undefined;
    const processDriver = createProcessDriver({ log: quiet });
    const runcDrivers: Record<string, Driver> = asRoot
      ? {
          foreground: createRuncDriver({ runcRoot: join(dir, 'runc-fg'), mode: 'foreground', cgroupParent, log: quiet }),
          shim: createRuncDriver({ runcRoot: join(dir, 'runc-shim'), mode: 'shim', cgroupParent, shimDir: join(dir, 'shim'), log: quiet }),
          native: createRuncDriver({ runcRoot: join(dir, 'runc-native'), mode: 'shim', cgroupParent, shimDir: join(dir, 'shim'), seccompArchitectures: 'native', log: quiet }),
        }
      : {};

    async function viaDriver(name: string, driver: Driver, overlay: boolean, prepared: boolean): Promise<void> {
      const inst = await rig.instance(overlay);
      await inst.mount();
      if (prepared && canPrepare(driver)) await driver.prepare(inst.spec);
      const started = await rig.onDriver(driver, inst, performance.now());
      record(name, started.ms);
      await started.stop();
      await inst.release();
    }

    async function plain(): Promise<void> {
      const inst = await rig.instance(false);
      const started = await rig.plain(inst, performance.now());
      record('plain', started.ms);
      await started.stop();
      await inst.release();
    }

    // One warm-up round (page cache, shim build), not recorded.
    const rounds = async (recording: boolean): Promise<void> => {
      await plain();
      await viaDriver('process', processDriver, false, false);
      for (const name of ['foreground', 'shim'] as const) if (runcDrivers[name]) await viaDriver(name, runcDrivers[name], true, false);
      if (runcDrivers.shim) await viaDriver('prepared', runcDrivers.shim, true, true);
      if (runcDrivers.native) await viaDriver('prepared-native', runcDrivers.native, true, true);
      if (!recording) for (const k of Object.keys(results)) delete results[k];
    };
    await rounds(false);
    for (let i = 0; i < n; i++) {
      options.log?.(`host-start: round ${i + 1}/${n}`);
      await rounds(true);
    }

    await processDriver.close();
    for (const d of Object.values(runcDrivers)) await d.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
    await removeCgroupParent(cgroupParent);
  }
  return { n, samples: results };
}
const describe: Record<string, string> = {
  plain: '`node server.mjs` child, clean env (baseline)',
  process: 'process driver',
  foreground: 'runc driver, foreground `runc run`',
  shim: 'runc driver, under shoal-shim: `runc run -d`',
  prepared: 'runc driver, pre-created (`prepare()` earlier): `runc start` only',
  'prepared-native': 'the same, seccomp filter for x86_64 only',
};

export function formatHostStartBench(r: HostStartResult): string {
  const base = median(r.samples.plain ?? [1]);
  const rows = Object.entries(r.samples).map(([name, xs]) => {
    const m = median(xs);
    return `| ${describe[name] ?? name} | ${Math.min(...xs).toFixed(0)} | ${m.toFixed(1)} | ${Math.max(...xs).toFixed(0)} | ${(m / base).toFixed(2)} |`;
  });
  return [
    `Time from start until the first 200 on \`GET /healthz\` over the instance's Unix socket, n=${r.n} per variant (interleaved, after one warm-up round), ms. The overlay mount is made before the clock starts.`,
    '',
    '| variant | min | median | max | × plain |',
    '| --- | --- | --- | --- | --- |',
    ...rows,
  ].join('\n');
}

if (import.meta.main) {
  const r = await runHostStartBench({ n: Number(process.argv[2] ?? 10) });
  console.log(formatHostStartBench(r));
}

