// The vm driver: first message → reply for a cold boot vs a resume from saved state
// (XenoServer: 41 s new vs ~2 s resumed), bytes of the root template, the overlay and the
// saved state for echo (Table 1 / Table 2), and QEMU's memory per idle VM. The echo image's
// tree (the node template + examples/echo) is started by the driver directly.
import { cp, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assembleKernel, assembleNodeRootfs } from '../src/image/index.ts';
import type { InstanceSpec } from '../src/host/drivers/driver.ts';
import { createVmDriver } from '../src/host/drivers/vm/index.ts';
import { call } from '../test/fixtures/instance-client.ts';
import { fig, type Figure } from './lib/figures.ts';

const ECHO_ROOT = fileURLToPath(new URL('../examples/echo/rootfs', import.meta.url));

export interface VmBenchResult {
  accel: string;
  coldMs: number[];
  resumeMs: number[];
  templateBytes: number;
  overlayBytes: number;
  stateBytes: number;
  idleRssBytes: number;
  memoryMiB: number;
}

export async function runVmBench(options: { runs?: number; log?: (l: string) => void } = {}): Promise<VmBenchResult> {
  const runs = options.runs ?? 2;
  const log = options.log ?? (() => {});
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-vm-'));
  // Every VM the bench started is destroyed, also when a step fails (QEMU outlives its driver).
  let cleanup = async (): Promise<void> => {};
  try {
    const rootfs = join(dir, 'rootfs');
    await assembleNodeRootfs(rootfs);
    await cp(ECHO_ROOT, rootfs, { recursive: true });
    log('vm: building the kernel template');
    await assembleKernel(join(dir, 'kernel'));
    const driver = createVmDriver({ dataDir: join(dir, 'vm'), kernelDir: join(dir, 'kernel'), log: () => {} });
    cleanup = async () => {
      for (const s of made) await driver.destroy(s.id, s.stateDir).catch(() => undefined);
    };
    const made: InstanceSpec[] = [];
    const spec = async (id: string): Promise<InstanceSpec> => {
      made.push({ id, stateDir: join(dir, 'i', id, 'state') } as InstanceSpec);
      const base = join(dir, 'i', id);
      await mkdir(join(base, 'sock'), { recursive: true });
      await mkdir(join(base, 'state'), { recursive: true });
      return {
        id,
        rootfs,
        rootLayers: ['bench-echo'],
        args: ['/usr/local/bin/node', '/app/server.mjs'],
        env: ['PATH=/usr/local/bin:/bin', 'SHOAL_LISTEN=/run/shoal/app.sock'],
        cwd: '/app',
        user: { uid: 65534, gid: 65534 },
        resources: { memoryBytes: 256 * 1024 * 1024, cpuMillis: 1000, pids: 64 },
        listenSocket: join(base, 'sock/app.sock'),
        importsDir: join(base, 'sock/imports'),
        logFile: join(base, 'log'),
        stateDir: join(base, 'state'),
      };
    };
    const firstReply = async (s: InstanceSpec, t0: number): Promise<number> => {
      for (;;) {
        const r = await call(s.listenSocket, 'POST', '/Echo', { message: 'first' }, 120_000).catch(() => undefined);
        if (r?.status === 200) return performance.now() - t0;
        await new Promise((res) => setTimeout(res, 10));
      }
    };
    log('vm: the root template (not timed)');
    const fp = await driver.fingerprint();
    const warm = await spec('warm');
    await driver.start(warm).then((i) => i.stop({ graceMs: 0 }));
    await driver.destroy(warm.id, warm.stateDir);

    const result: VmBenchResult = { accel: fp.attributes.accel ?? '?', coldMs: [], resumeMs: [], templateBytes: 0, overlayBytes: 0, stateBytes: 0, idleRssBytes: 0, memoryMiB: 256 };
    const statesDir = join(dir, 'states');
    await mkdir(statesDir, { recursive: true });
    for (let i = 0; i < runs; i++) {
      const s = await spec(`cold-${i}`);
      const t0 = performance.now();
      const inst = await driver.start(s);
      result.coldMs.push(await firstReply(s, t0));
      log(`vm: cold ${Math.round(result.coldMs.at(-1)!)} ms`);
      await new Promise((r) => setTimeout(r, 2000));
      result.idleRssBytes = (await inst.stats()).memoryBytes ?? 0;
      result.overlayBytes = (await stat(join(s.stateDir, 'disk.qcow2'))).size;
      const state = await (inst as unknown as { capture(d: string): Promise<{ file: string; mediaType: string; annotations: Record<string, string> }> })
        .capture(statesDir)
        .catch(async (e: unknown) => {
          const { readFile } = await import('node:fs/promises');
          throw new Error(`${(e as Error).message}; instance log: ${(await readFile(s.logFile, 'utf8')).slice(-2000)}`);
        });
      result.stateBytes = (await stat(state.file)).size;
      await driver.destroy(s.id, s.stateDir);

      const r = await spec(`resume-${i}`);
      const t1 = performance.now();
      await driver.restore(r, state);
      result.resumeMs.push(await firstReply(r, t1));
      log(`vm: resume ${Math.round(result.resumeMs.at(-1)!)} ms`);
      await driver.destroy(r.id, r.stateDir);
      await rm(state.file, { force: true });
    }
    const roots = join(dir, 'vm', 'roots');
    const { readdir } = await import('node:fs/promises');
    for (const k of await readdir(roots)) result.templateBytes = (await stat(join(roots, k, 'root.qcow2'))).size;
    await driver.close();
    return result;
  } finally {
    await cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

export function formatVmBench(r: VmBenchResult): string {
  const mb = (n: number) => `${(n / 1e6).toFixed(2)} MB`;
  const ratio = median(r.coldMs) / median(r.resumeMs);
  return [
    `Accelerator: ${r.accel}. Guest ${r.memoryMiB} MiB, 1 vCPU; echo (node template + examples/echo) as the root disk. Timed from the driver call (start / restore) to the first Echo reply over the instance socket.`,
    '',
    '| path | runs (ms) | median ms |',
    '|---|---|---|',
    `| cold boot | ${r.coldMs.map((x) => x.toFixed(0)).join(', ')} | ${median(r.coldMs).toFixed(0)} |`,
    `| resume from saved state | ${r.resumeMs.map((x) => x.toFixed(0)).join(', ')} | ${median(r.resumeMs).toFixed(0)} |`,
    '',
    `**Resume is ${ratio.toFixed(1)}× faster than a cold boot** (goal ≥ 20×).`,
    '',
    '| bytes | size |',
    '|---|---|',
    `| root template (qcow2, shared by every instance) | ${mb(r.templateBytes)} |`,
    `| instance overlay after boot | ${mb(r.overlayBytes)} |`,
    `| saved state (RAM zstd + overlay zstd, tar) | ${mb(r.stateBytes)} |`,
    `| QEMU RSS per idle VM | ${mb(r.idleRssBytes)} |`,
  ].join('\n');
}

export function vmFigures(r: VmBenchResult): Figure[] {
  return [
    fig('vm.resume-vs-cold', 'vm: cold boot ÷ resume (first reply)', median(r.coldMs) / median(r.resumeMs), 'ratio', 'higher'),
    fig('vm.resume-ms', 'vm: resume from saved state to first reply', median(r.resumeMs), 'ms', 'lower', r.resumeMs),
  ];
}
