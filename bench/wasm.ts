// wasm components (issue 13): cold start on a warm host (a spare runner started ahead),
// fork, snapshot size, and capture → restore latency as memory grows. Driver level, real
// runner processes; plus the in-process engine fork (what a runner does itself).
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createWasmDriver } from '../src/host/drivers/wasm/index.ts';
import { activeDataRanges, ComponentInstance } from '../src/host/drivers/wasm/engine.ts';
import type { InstanceSpec, RunningInstance } from '../src/host/drivers/driver.ts';
import { canCapture } from '../src/host/drivers/driver.ts';
import { componentWasm } from '../test/fixtures/components.ts';
import { post } from '../test/fixtures/instance-client.ts';
import { fig, type Figure } from './lib/figures.ts';
import { buildWasmComponentImage, createRegistryClient, startStore } from '../src/image/index.ts';
import { createStateStore } from '../src/host/state-store.ts';
import { parseImageRef } from '../src/protocol/index.ts';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const MIB = 1024 * 1024;

export async function runWasmBench(options: { runs?: number; log?: (m: string) => void } = {}): Promise<{ text: string; figures: Figure[] }> {
  const runs = options.runs ?? 15;
  const log = options.log ?? (() => {});
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-wasm-'));
  const driver = createWasmDriver({});
  const live: RunningInstance[] = [];
  let n = 0;
  const spec = async (rootfs: string, memoryMb: number): Promise<InstanceSpec> => {
    const base = join(dir, `i${n++}`);
    await mkdir(join(base, 'sock'), { recursive: true });
    return {
      id: `b${n}`, rootfs, args: ['/component.wasm'], env: [], cwd: '/', user: { uid: 65534, gid: 65534 },
      resources: { memoryBytes: memoryMb * MIB, cpuMillis: 1000, pids: 1 },
      listenSocket: join(base, 'sock/app.sock'), importsDir: join(base, 'imp'), logFile: join(base, 'log'), stateDir: join(base, 'state'),
    };
  };
  const root = async (pages: number): Promise<string> => {
    const r = join(dir, `root-${pages}`);
    await mkdir(r, { recursive: true });
    await writeFile(join(r, 'component.wasm'), await componentWasm(pages));
    return r;
  };
  const rows: string[] = [];
  const figures: Figure[] = [];
  const store = await startStore({ dataDir: join(dir, 'store') });
  const states = createStateStore({ userAgent: 'shoal-bench' });
  try {
    // 1. cold start, first message → reply, warm host (spare runner ready)
    const r1 = await root(16);
    const cold: number[] = [];
    for (let i = 0; i < runs + 1; i++) {
      const s = await spec(r1, 128);
      await driver.warm(128 * MIB); // the spare runner is ready again
      const t = performance.now();
      const inst = await driver.start(s);
      const reply = await post(s.listenSocket, 'echo', { hi: 1 });
      const ms = performance.now() - t;
      if (reply.status !== 200) throw new Error(`echo answered ${reply.status}`);
      if (i > 0) cold.push(ms);
      live.push(inst);
    }
    log(`wasm: cold start median ${median(cold).toFixed(2)} ms`);
    rows.push(`| cold start, start → first echo reply (warm host, 1 MiB memory) | ${median(cold).toFixed(2)} ms | ≤ 3 ms |`);
    figures.push(fig('wasm.cold-start', 'wasm cold start → first reply (ms)', median(cold), 'ms', 'lower', cold));

    // 2. fork of a running instance, 1 MiB mostly-zero memory: driver (new runner) and engine (in process)
    const source = live[0]!;
    const forks: number[] = [];
    for (let i = 0; i < runs; i++) {
      const s = await spec(r1, 128);
      await driver.warm(128 * MIB);
      const t = performance.now();
      const f = await driver.fork(source, s);
      await post(s.listenSocket, 'get');
      forks.push(performance.now() - t);
      live.push(f);
    }
    const moduleBytes = await componentWasm(16);
    const module = new WebAssembly.Module(moduleBytes);
    const ranges = activeDataRanges(moduleBytes);
    const opts = { maxMemoryBytes: 64 * MIB, stdout: 1, stderr: 2 };
    const c = ComponentInstance.start(module, opts);
    c.handle('inc', Buffer.alloc(0));
    const engineForks: number[] = [];
    for (let i = 0; i < runs * 10; i++) {
      const t = performance.now();
      const f = ComponentInstance.restore(module, opts, c.capture(), ranges);
      engineForks.push(performance.now() - t);
      if (i === 0 && f.handle('get', Buffer.alloc(0)).status !== 200) throw new Error('engine fork broken');
    }
    rows.push(`| fork, driver: copy state to a new runner → first reply (1 MiB, mostly zero) | ${median(forks).toFixed(2)} ms | ≤ 1 ms |`);
    rows.push(`| fork, engine: capture + new instance from it, in one process (1 MiB) | ${median(engineForks).toFixed(3)} ms | ≤ 1 ms |`);
    figures.push(fig('wasm.fork-driver', 'wasm fork, new runner → first reply (ms)', median(forks), 'ms', 'lower', forks));
    figures.push(fig('wasm.fork-engine', 'wasm fork in process (ms)', median(engineForks), 'ms', 'lower'));

    // 3. snapshot size and capture → restore (first reply) as memory grows
    for (const mib of [1, 16, 64]) {
      const r = await root(mib * 16);
      const s = await spec(r, 128);
      const inst = await driver.start(s);
      live.push(inst);
      await post(s.listenSocket, 'inc');
      if (!canCapture(inst)) throw new Error('not capturing');
      const caps: number[] = [];
      const restores: number[] = [];
      const moves: number[] = [];
      let size = 0;
      await writeFile(join(dir, `m${mib}.wasm`), await componentWasm(mib * 16));
      const image = (await buildWasmComponentImage({ client: createRegistryClient({ baseUrl: store.url }), module: join(dir, `m${mib}.wasm`), ref: parseImageRef(`bench-${mib}:1`) })).reference;
      for (let i = 0; i < 5; i++) {
        let t = performance.now();
        const state = await inst.capture(dir);
        caps.push(performance.now() - t);
        size = (await stat(state.file)).size;
        const s2 = await spec(r, 128);
        await driver.warm(128 * MIB);
        t = performance.now();
        const restored = await driver.restore(s2, state);
        await post(s2.listenSocket, 'get');
        restores.push(performance.now() - t);
        live.push(restored);
        // A move's state path: capture, push to the store, pull, restore → first reply.
        const s3 = await spec(r, 128);
        await driver.warm(128 * MIB);
        t = performance.now();
        const captured = await inst.capture(dir);
        const pushed = await states.push(store.url, image, captured, {});
        const pulled = await states.pull(store.url, image, pushed.digest, dir);
        const moved = await driver.restore(s3, pulled);
        await post(s3.listenSocket, 'get');
        moves.push(performance.now() - t);
        live.push(moved);
        await rm(state.file);
        await rm(captured.file);
        await rm(pulled.file);
      }
      log(`wasm: ${mib} MiB capture ${median(caps).toFixed(1)} ms restore ${median(restores).toFixed(1)} ms size ${size}`);
      rows.push(`| ${mib} MiB memory: capture (quiesced runner → zstd file) / restore (new runner → first reply) / state size | ${median(caps).toFixed(1)} ms / ${median(restores).toFixed(1)} ms / ${size} B | |`);
      rows.push(`| ${mib} MiB memory: move's state path (capture → store push → pull → restore → first reply) | ${median(moves).toFixed(1)} ms | |`);
      figures.push(fig(`wasm.move-${mib}mib`, `wasm move state path, ${mib} MiB (ms)`, median(moves), 'ms', 'lower'));
      figures.push(fig(`wasm.capture-${mib}mib`, `wasm capture, ${mib} MiB (ms)`, median(caps), 'ms', 'lower'));
      figures.push(fig(`wasm.restore-${mib}mib`, `wasm restore → first reply, ${mib} MiB (ms)`, median(restores), 'ms', 'lower'));
    }
  } finally {
    for (const i of live) await i.stop({ graceMs: 0 });
    await driver.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
  const text = [
    `Load average when this ran: ${(await import('node:os')).loadavg().map((x) => x.toFixed(1)).join(' ')} on ${(await import('node:os')).availableParallelism()} CPUs. Median of ${runs} runs (capture/restore: 5). Driver level with real runner processes (${(await driver.fingerprint()).detail}). A move's state path includes the store round trip (in-process store on loopback); the provider's routing switch adds no wait.`,
    '',
    '| what | median | goal |',
    '|---|---|---|',
    ...rows,
  ].join('\n');
  return { text, figures };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runWasmBench({ log: (m) => console.error(m) });
  console.log(r.text);
}
