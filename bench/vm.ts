// The vm driver: first message → reply for a cold boot vs a resume from saved state
// (XenoServer: 41 s new vs ~2 s resumed), bytes of the root template, the overlay and the
// saved state for echo (Table 1 / Table 2), and QEMU's memory per idle VM. The echo image's
// tree (the node template + examples/echo) is started by the driver directly.
//
// Moves, in the same run: each cold-booted VM moves live (pre-copy) to a second driver with
// its own data dir (a second host), then by stop-and-copy (capture, restore on the first
// driver) — the restore's first reply is the resume figure. A client polls Echo every 25 ms
// throughout; the service gap is its last reply from the old VM → its first from the new
// one. The poller stands in for the host's forwarder and the provider's router: at the
// driver's hold (live) or before the capture (stop-and-copy) it sends nothing new and waits
// for its message in flight, and it goes to the new VM once that answers — as a held
// message is retried there once the old instance is removed.
import { cp, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assembleNodeRootfs } from '../src/image/index.ts';
import type { CapturingInstance, InstanceSpec, LiveMigratingInstance, LiveMigrationStats } from '../src/host/drivers/driver.ts';
import { createVmDriver } from '../src/host/drivers/vm/index.ts';
import { call } from '../test/fixtures/instance-client.ts';
import { testKernelDir } from '../test/host/drivers/vm/kernel-cache.ts';
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
  /** Live (pre-copy) moves: what the driver (QEMU) reported, and the gap the poller saw. */
  live: Array<LiveMigrationStats & { gapMs: number; readyMs: number; firstReplyMs: number }>;
  /** Stop-and-copy moves (capture, restore on the other driver): the gap the poller saw. */
  stopAndCopyGapMs: number[];
  /** The poller's replies during the moves that were not 200 (must be none). */
  failedPolls: number;
}

/**
 * A client that posts Echo every 25 ms to the current VM. hold(): it sends nothing new and
 * resolves when its message in flight has come back; switchTo(): it goes on, to the new VM.
 */
function createPoller(first: string) {
  let target = first;
  let gate: Promise<void> | undefined;
  let open: () => void = () => {};
  let inFlight: Promise<unknown> = Promise.resolve();
  let running = true;
  let failed = 0;
  const replies: Array<{ at: number; from: string }> = [];
  const loop = (async () => {
    while (running) {
      if (gate) await gate;
      const to = target;
      const sent = call(to, 'POST', '/Echo', { message: 'poll' }, 120_000).then(
        (r) => {
          if (r.status === 200) replies.push({ at: performance.now(), from: to });
          else failed++;
        },
        () => void failed++,
      );
      inFlight = sent;
      await sent;
      await new Promise((r) => setTimeout(r, 25));
    }
  })();
  return {
    async hold(): Promise<void> {
      gate ??= new Promise<void>((r) => (open = r));
      await inFlight;
    },
    switchTo(path: string): void {
      target = path;
      gate = undefined;
      open();
    },
    /** Last reply from `from` → first reply from `to`. */
    gap(from: string, to: string): number {
      const last = replies.filter((r) => r.from === from).at(-1);
      const firstNew = replies.find((r) => r.from === to);
      return last && firstNew ? firstNew.at - last.at : NaN;
    },
    async firstFrom(path: string): Promise<void> {
      while (!replies.some((r) => r.from === path)) await new Promise((r) => setTimeout(r, 5));
    },
    get failed(): number {
      return failed;
    },
    async stop(): Promise<void> {
      running = false;
      this.switchTo(target);
      await loop;
    },
  };
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
    log('vm: the kernel template (built once per machine and kernel, then kept in the temp dir)');
    const kernelDir = await testKernelDir();
    const driver = createVmDriver({ dataDir: join(dir, 'vm'), kernelDir, log: () => {} });
    // A second host's driver: its own data dir (root template built there too).
    const other = createVmDriver({ dataDir: join(dir, 'vm2'), kernelDir, log: () => {} });
    cleanup = async () => {
      for (const s of made) for (const d of [driver, other]) await d.destroy(s.id, s.stateDir).catch(() => undefined);
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

    const result: VmBenchResult = {
      accel: fp.attributes.accel ?? '?',
      coldMs: [],
      resumeMs: [],
      templateBytes: 0,
      overlayBytes: 0,
      stateBytes: 0,
      idleRssBytes: 0,
      memoryMiB: 256,
      live: [],
      stopAndCopyGapMs: [],
      failedPolls: 0,
    };
    const statesDir = join(dir, 'states');
    await mkdir(statesDir, { recursive: true });
    const withLog = async <T,>(s: InstanceSpec, p: Promise<T>): Promise<T> =>
      p.catch(async (e: unknown) => {
        throw new Error(`${(e as Error).message}; instance log: ${(await readFile(s.logFile, 'utf8').catch(() => '')).slice(-2000)}`);
      });
    for (let i = 0; i < runs; i++) {
      const s = await spec(`cold-${i}`);
      const t0 = performance.now();
      const inst = await driver.start(s);
      result.coldMs.push(await firstReply(s, t0));
      log(`vm: cold ${Math.round(result.coldMs.at(-1)!)} ms`);
      await new Promise((r) => setTimeout(r, 2000));
      result.idleRssBytes = (await inst.stats()).memoryBytes ?? 0;
      result.overlayBytes = (await stat(join(s.stateDir, 'disk.qcow2'))).size;

      // Live: to the other driver while the poller keeps asking.
      const poller = createPoller(s.listenSocket);
      await new Promise((r) => setTimeout(r, 500));
      const l = await spec(`live-${i}`);
      const incoming = await other.receive(l);
      const stats = await withLog(s, (inst as unknown as LiveMigratingInstance).migrateTo(incoming.offer, { hold: () => poller.hold() }));
      const tSent = performance.now();
      await withLog(l, incoming.instance);
      const tReady = performance.now();
      poller.switchTo(l.listenSocket);
      await poller.firstFrom(l.listenSocket);
      const liveGap = poller.gap(s.listenSocket, l.listenSocket);
      result.live.push({ ...stats, gapMs: liveGap, readyMs: tReady - tSent, firstReplyMs: performance.now() - tReady });
      log(`vm: live move: QEMU total ${stats.totalMs} ms, downtime ${stats.downtimeMs} ms, held ${Math.round(stats.heldMs)} ms; target ready ${Math.round(tReady - tSent)} ms after; its first reply ${Math.round(performance.now() - tReady)} ms after that; client gap ${Math.round(liveGap)} ms`);
      await driver.destroy(s.id, s.stateDir);
      await new Promise((r) => setTimeout(r, 500));

      // Stop-and-copy: hold, capture, restore on the first driver; its first reply is the resume figure.
      const moved = (await incoming.instance) as unknown as CapturingInstance;
      await poller.hold();
      const state = await withLog(l, moved.capture(statesDir));
      result.stateBytes = (await stat(state.file)).size;
      await other.destroy(l.id, l.stateDir);
      const r = await spec(`resume-${i}`);
      const t1 = performance.now();
      await driver.restore(r, state);
      poller.switchTo(r.listenSocket);
      result.resumeMs.push(await firstReply(r, t1));
      await poller.firstFrom(r.listenSocket);
      const copyGap = poller.gap(l.listenSocket, r.listenSocket);
      result.stopAndCopyGapMs.push(copyGap);
      log(`vm: resume ${Math.round(result.resumeMs.at(-1)!)} ms; stop-and-copy client gap ${Math.round(copyGap)} ms`);
      await poller.stop();
      result.failedPolls += poller.failed;
      await driver.destroy(r.id, r.stateDir);
      await rm(state.file, { force: true });
    }
    const roots = join(dir, 'vm', 'roots');
    const { readdir } = await import('node:fs/promises');
    for (const k of await readdir(roots)) result.templateBytes = (await stat(join(roots, k, 'root.qcow2'))).size;
    await driver.close();
    await other.close();
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
    'Moving a running VM to another driver (a second data dir: another host) while a client polls Echo every 25 ms; gap = its last reply from the old VM → its first from the new one.',
    '',
    '| move | runs | median |',
    '|---|---|---|',
    `| live (pre-copy, TLS-PSK, incremental block migration): QEMU downtime | ${r.live.map((x) => x.downtimeMs.toFixed(0)).join(', ')} ms | ${median(r.live.map((x) => x.downtimeMs)).toFixed(0)} ms |`,
    `| live: QEMU total time | ${r.live.map((x) => x.totalMs.toFixed(0)).join(', ')} ms | ${median(r.live.map((x) => x.totalMs)).toFixed(0)} ms |`,
    `| live: messages held (hold → switch-over) | ${r.live.map((x) => x.heldMs.toFixed(0)).join(', ')} ms | ${median(r.live.map((x) => x.heldMs)).toFixed(0)} ms |`,
    `| live: bytes sent (RAM + devices; the overlay's clusters not counted) | ${r.live.map((x) => (x.bytes / 2 ** 20).toFixed(1)).join(', ')} MiB | |`,
    `| live: switch-over → the target's driver says ready | ${r.live.map((x) => x.readyMs.toFixed(0)).join(', ')} ms | ${median(r.live.map((x) => x.readyMs)).toFixed(0)} ms |`,
    `| live: ready → the client's first reply from it | ${r.live.map((x) => x.firstReplyMs.toFixed(0)).join(', ')} ms | ${median(r.live.map((x) => x.firstReplyMs)).toFixed(0)} ms |`,
    `| **live: client gap** | ${r.live.map((x) => x.gapMs.toFixed(0)).join(', ')} ms | **${median(r.live.map((x) => x.gapMs)).toFixed(0)} ms** |`,
    `| **stop-and-copy (capture, restore elsewhere): client gap** | ${r.stopAndCopyGapMs.map((x) => x.toFixed(0)).join(', ')} ms | **${median(r.stopAndCopyGapMs).toFixed(0)} ms** |`,
    '',
    `Polls not answered 200 during the moves: ${r.failedPolls}.`,
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
    fig('vm.live-downtime-ms', 'vm: live migration, QEMU-reported downtime', median(r.live.map((x) => x.downtimeMs)), 'ms', 'lower', r.live.map((x) => x.downtimeMs)),
    fig('vm.live-gap-ms', 'vm: live migration, client gap (25 ms polls)', median(r.live.map((x) => x.gapMs)), 'ms', 'lower', r.live.map((x) => x.gapMs)),
    fig('vm.stop-and-copy-gap-ms', 'vm: stop-and-copy migration, client gap (25 ms polls)', median(r.stopAndCopyGapMs), 'ms', 'lower', r.stopAndCopyGapMs),
  ];
}

if (import.meta.main) {
  const r = await runVmBench({ runs: Number(process.argv[2] ?? 2), log: (m) => process.stderr.write(`${m}\n`) });
  console.log(formatVmBench(r));
}
