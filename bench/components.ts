// Components (issue 13): the same echo service (examples/echo/service.ts, bundled as its
// image holds it) on the process, runc, isolate and wasm (QuickJS) drivers, side by side.
//   node bench/components.ts [n]     or  SHOAL_BENCH_ONLY=components npm run bench
// - cold start on a warm host: t0 → driver.start() → the reply to the first POST /Echo
//   (the host's listener exists from start(), so the message waits in its backlog);
//   isolate: the version's runner is up and has had a moment to prepare its spare.
// - density: SHOAL_BENCH_DENSITY (default 200; 1000 is the goal's count) idle isolate instances of echo, the RSS
//   of everything that holds them (runner, and `runc run` under runc).
// - messages/s straight to one instance's socket (16 keep-alive connections, 2 s): the
//   driver's own cost, not the provider's.
import { cp, mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Driver, RunningInstance } from '../src/host/drivers/driver.ts';
import { createIsolateDriver } from '../src/host/drivers/isolate/index.ts';
import { createProcessDriver } from '../src/host/drivers/process/index.ts';
import { createRuncDriver } from '../src/host/drivers/runc/index.ts';
import { createWasmDriver } from '../src/host/drivers/wasm/index.ts';
import { canCapture } from '../src/host/drivers/driver.ts';
import { readProcStat, readStatusField } from '../src/host/drivers/shared/proc.ts';
import { bundleService } from '../src/image/index.ts';
import { assembleNodeRootfs } from '../src/image/templates/node-rootfs.ts';
import { createStartRig, removeCgroupParent } from './host-start.ts';

const ECHO = fileURLToPath(new URL('../examples/echo/service.ts', import.meta.url));
const asRoot = process.getuid?.() === 0;

export interface ComponentsResult {
  n: number;
  coldStart: Record<string, number[]>;
  density: { instances: number; rssBytes: number; processes: number; startSeconds: number; runner: string } | undefined;
  messagesPerSecond: Record<string, number>;
  /** The wasm driver's QuickJS echo: capture and fork times, the stored state's size. */
  quickjs?: { captureMs: number[]; forkMs: number[]; stateBytes: number };
}

function post(socketPath: string, body: string, agent?: Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { socketPath, method: 'POST', path: '/Echo', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, ...(agent ? { agent } : { agent: false }) },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function messagesPerSecond(socketPath: string, seconds = 2, connections = 16): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const body = JSON.stringify({ message: 'hello' });
  const end = performance.now() + seconds * 1000;
  let n = 0;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < end) {
        if ((await post(socketPath, body, agent)) === 200) n++;
      }
    }),
  );
  agent.destroy();
  return n / seconds;
}

/** RSS of `pid` and all its descendants. */
async function treeRss(pid: number): Promise<{ bytes: number; processes: number }> {
  const children = new Map<number, number[]>();
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = await readProcStat(Number(name));
    if (st) children.set(st.ppid, [...(children.get(st.ppid) ?? []), Number(name)]);
  }
  let bytes = 0;
  let processes = 0;
  const walk = async (p: number): Promise<void> => {
    const rss = await readStatusField(p, 'VmRSS');
    if (rss !== undefined) {
      bytes += Number.parseInt(rss, 10) * 1024;
      processes++;
    }
    for (const c of children.get(p) ?? []) await walk(c);
  };
  await walk(pid);
  return { bytes, processes };
}

export async function runComponentsBench(options: { n?: number; density?: number; log?: (m: string) => void } = {}): Promise<ComponentsResult> {
  const n = options.n ?? 10;
  const densityN = options.density ?? Number(process.env.SHOAL_BENCH_DENSITY ?? 200);
  const log = options.log ?? (() => undefined);
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-comp-'));
  const cgroupParent = `shoal-bench-${process.pid}`;
  const result: ComponentsResult = { n, coldStart: {}, density: undefined, messagesPerSecond: {} };
  const quiet = (): void => undefined;
  const drivers: Record<string, Driver> = {};
  try {
    // The echo bundle, as the images hold it: on the node template (process, runc), alone (isolate).
    const bundle = join(dir, 'bundle');
    const { entry } = await bundleService({ entry: ECHO, outDir: bundle });
    const nodeLayer = join(dir, 'node');
    await assembleNodeRootfs(nodeLayer);
    const flat = join(dir, 'flat');
    await cp(nodeLayer, flat, { recursive: true });
    await cp(bundle, flat, { recursive: true });
    const rig = createStartRig({ dir, flat, lowerDirs: [bundle, nodeLayer], args: ['/usr/local/bin/node', entry] });

    drivers.process = createProcessDriver({ log: quiet });
    if (asRoot) drivers.runc = createRuncDriver({ runcRoot: join(dir, 'runc'), mode: 'shim', cgroupParent, shimDir: join(dir, 'shim'), log: quiet });
    drivers.isolate = createIsolateDriver({ dataDir: join(dir, 'data'), cgroupParent, log: quiet });
    // The same bundle on QuickJS compiled to wasm (its entry is the module the driver runs).
    drivers[WASM_JS] = createWasmDriver({ log: quiet });
    const body = JSON.stringify({ message: 'first' });

    const once = async (name: string, keep = false): Promise<{ ms: number; inst: RunningInstance; socket: string; release: () => Promise<void> }> => {
      const driver = drivers[name] as Driver;
      const bi = await rig.instance(name === 'runc');
      await bi.mount();
      const spec = name === WASM_JS ? { ...bi.spec, args: [entry] } : bi.spec;
      const t0 = performance.now();
      const inst = await driver.start(spec);
      const status = await post(bi.socket, body);
      const ms = performance.now() - t0;
      if (status !== 200) throw new Error(`${name}: first message answered ${status}`);
      const release = async (): Promise<void> => {
        await inst.stop({ graceMs: 1000 });
        await driver.destroy(bi.spec.id, bi.spec.stateDir);
        await bi.release();
      };
      if (!keep) await release();
      return { ms, inst, socket: bi.socket, release };
    };

    // Warm-up (page cache, shim build, the isolate runner), not recorded.
    for (const name of Object.keys(drivers)) await once(name);
    for (let i = 0; i < n; i++) {
      log(`components: cold start round ${i + 1}/${n}`);
      for (const name of Object.keys(drivers)) {
        await new Promise((r) => setTimeout(r, 200)); // a warm host is an idle one
        (result.coldStart[name] ??= []).push((await once(name)).ms);
      }
    }

    for (const name of Object.keys(drivers)) {
      log(`components: messages/s on ${name}`);
      const kept = await once(name, true);
      result.messagesPerSecond[name] = await messagesPerSecond(kept.socket);
      await kept.release();
    }

    // QuickJS live state: capture (bytes stored), and fork → first reply of the fork.
    {
      log('components: QuickJS capture and fork');
      const wasm = drivers[WASM_JS] as ReturnType<typeof createWasmDriver>;
      const source = await once(WASM_JS, true);
      const captures: number[] = [];
      const forks: number[] = [];
      let stateBytes = 0;
      for (let i = 0; i < n; i++) {
        if (!canCapture(source.inst)) throw new Error('the wasm instance cannot capture');
        let t0 = performance.now();
        const state = await source.inst.capture(dir);
        captures.push(performance.now() - t0);
        stateBytes = (await stat(state.file)).size;
        await rm(state.file);
        const bi = await rig.instance(false);
        await bi.mount();
        await wasm.warm(bi.spec.resources.memoryBytes); // a warm host: its spare runner is up
        t0 = performance.now();
        const fork = await wasm.fork(source.inst, { ...bi.spec, args: [entry] });
        if ((await post(bi.socket, body)) !== 200) throw new Error('the fork did not answer');
        forks.push(performance.now() - t0);
        await fork.stop({ graceMs: 0 });
        await bi.release();
      }
      await source.release();
      result.quickjs = { captureMs: captures, forkMs: forks, stateBytes };
    }

    if (densityN > 0) {
      log(`components: density, ${densityN} idle isolate instances`);
      const driver = drivers.isolate as Driver;
      const kept: Array<Awaited<ReturnType<typeof once>>> = [];
      const t0 = performance.now();
      for (let i = 0; i < densityN; i++) {
        kept.push(await once('isolate', true));
        if ((i + 1) % 100 === 0) log(`components: ${i + 1} isolates`);
      }
      const startSeconds = (performance.now() - t0) / 1000;
      await new Promise((r) => setTimeout(r, 2000)); // settle (GC of start-up garbage)
      const pid = kept[0]?.inst.pid as number;
      const { bytes, processes } = await treeRss(pid);
      result.density = { instances: densityN, rssBytes: bytes, processes, startSeconds, runner: (await driver.fingerprint()).attributes.runner ?? '?' };
      for (const k of kept) await k.release();
    }
  } finally {
    for (const d of Object.values(drivers)) await d.close();
    await rm(dir, { recursive: true, force: true });
    await removeCgroupParent(cgroupParent);
  }
  return result;
}

const WASM_JS = 'wasm (QuickJS)';

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? (s[(s.length - 1) / 2] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

export function formatComponentsBench(r: ComponentsResult): string {
  const lines = [
    `Echo (examples/echo/service.ts) on each driver; n = ${r.n}. Cold start: start() → reply to the first POST /Echo, on a warm host (isolate goal ≤ 3 ms).`,
    '',
    '| driver | min ms | median ms | max ms | messages/s (16 conns, straight to the socket) |',
    '|---|---|---|---|---|',
    ...Object.entries(r.coldStart).map(
      ([name, xs]) => `| ${name} | ${Math.min(...xs).toFixed(1)} | ${median(xs).toFixed(1)} | ${Math.max(...xs).toFixed(1)} | ${(r.messagesPerSecond[name] ?? 0).toFixed(0)} |`,
    ),
  ];
  if (r.quickjs) {
    const q = r.quickjs;
    lines.push(
      '',
      `${WASM_JS} live state (echo, its runner's 16 MiB heap): capture (quiesce, copy the non-zero 4 KiB pages, zstd) median ${median(q.captureMs).toFixed(1)} ms, ${(q.stateBytes / 1024).toFixed(0)} KiB stored; fork → the fork's first reply median ${median(q.forkMs).toFixed(1)} ms (min ${Math.min(...q.forkMs).toFixed(1)}; goal ≤ 3 ms for a QuickJS fork).`,
    );
  }
  if (r.density) {
    const d = r.density;
    lines.push(
      '',
      `Density: ${d.instances} idle echo isolates in one runner (${d.runner}): ${(d.rssBytes / 2 ** 20).toFixed(0)} MiB RSS in ${d.processes} processes (runner included), ${((d.rssBytes / d.instances) / 2 ** 20).toFixed(2)} MiB each, so 1,000 would take ${((1000 * d.rssBytes) / d.instances / 2 ** 30).toFixed(1)} GiB (goal: 1,000 in ≤ 2 GiB); started in ${d.startSeconds.toFixed(1)} s.`,
    );
  }
  return lines.join('\n');
}

if (import.meta.main) {
  const r = await runComponentsBench({ n: Number(process.argv[2] ?? 10), log: (m) => process.stderr.write(`${m}\n`) });
  console.log(formatComponentsBench(r));
}
