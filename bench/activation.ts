// First message after idleness, by the path that answers it (issue 15), real parts: one
// store, a provider, three host agents with the wasm driver, and two stateful components:
// the WAT counter (a WASI module) and a shoal/service counter on QuickJS. Per round,
// interleaved, for each: warm (an instance is up), resume-less paths — restore (the
// instance was suspended: the first message restores its state), cold (it was stopped: the
// first message starts it from the image) — and fork (the API call that copies a warm
// instance). The vm driver has no row: it cannot be suspended through the provider yet.
// Then a mixed trace (each idle period ends in a suspend or a stop, at random) where the
// activator chooses, compared with the best path that was available in hindsight (the
// per-path medians measured above: restore when the instance was suspended — a cold start
// would lose its state, so it is no alternative —, cold otherwise). Timed: the client's POST /s/counter/inc, from send to reply.
//   node bench/activation.ts [--rounds 5] [--trace 12]       SHOAL_BENCH_ONLY=activation npm run bench
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildComponentImage, buildWasmComponentImage, createRegistryClient, startStore } from '../src/image/index.ts';
import { startHost, type Host } from '../src/host/index.ts';
import { startProvider } from '../src/provider/index.ts';
import { createApiToken } from '../src/provider/auth/index.ts';
import { parseImageRef } from '../src/protocol/image-ref.ts';
import { fileURLToPath } from 'node:url';
import { componentWasm } from '../test/fixtures/components.ts';

const JS_COUNTER = fileURLToPath(new URL('../test/host/fixtures/js-counter-service.ts', import.meta.url));
import { fig, type Figure } from './lib/figures.ts';

type PathTimes = Record<'warm' | 'restore' | 'cold' | 'fork', number[]>;

export interface ActivationBenchResult {
  rounds: number;
  /** The WASI counter's (the trace runs on it). */
  ms: PathTimes;
  /** The same paths for the shoal/service counter on QuickJS. */
  quickjs: PathTimes;
  trace: Array<{ state: boolean; path: string; ms: number; bestMs: number }>;
  chosenP50: number;
  bestP50: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export async function runActivationBench(options: { rounds?: number; trace?: number; log?: (m: string) => void; rand?: () => number } = {}): Promise<ActivationBenchResult> {
  const rounds = options.rounds ?? 5;
  const traceLength = options.trace ?? 12;
  const log = options.log ?? (() => undefined);
  const rand = options.rand ?? Math.random;
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-activation-'));
  const store = await startStore({ dataDir: join(dir, 'store') });
  const hosts: Host[] = [];
  const provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database: join(dir, 'shoal.db'), storeUrl: store.url, joinToken: 'bench-join-token' });
  try {
    await writeFile(join(dir, 'counter.wasm'), await componentWasm(4));
    await buildWasmComponentImage({ client: createRegistryClient({ baseUrl: store.url }), module: join(dir, 'counter.wasm'), ref: parseImageRef('counter:1') });
    const token = (await createApiToken(provider.registry, { role: 'admin' })).secret;
    for (const name of ['a', 'b', 'c']) {
      const h = await startHost({ dataDir: join(dir, name), listen: { host: '127.0.0.1', port: 0 }, token: 'bench-host-token', capacity: { memoryMb: 4096, cpuMillis: 8000, instances: 20 }, driver: 'wasm' });
      hosts.push(h);
      await provider.registerHost({ controlUrl: h.controlUrl, token: 'bench-host-token' });
    }
    const op = { input: { type: 'object' }, output: { type: 'object' } };
    await provider.registerService({ name: 'counter', version: '1', image: 'counter:1', driver: 'wasm', resources: { memoryMb: 64, cpuMillis: 100, pids: 4 }, scaling: { min: 0, max: 4 }, operations: { inc: op } });
    await buildComponentImage({ client: createRegistryClient({ baseUrl: store.url }), entry: JS_COUNTER, ref: parseImageRef('js-counter:1'), driver: 'wasm' });
    await provider.registerService({ name: 'js-counter', version: '1', image: 'js-counter:1', driver: 'wasm', resources: { memoryMb: 64, cpuMillis: 100, pids: 4 }, scaling: { min: 0, max: 4 }, operations: { Add: op } });
    const api = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(provider.url + path, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
      const text = await res.text();
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
      return text ? (JSON.parse(text) as Record<string, unknown>) : {};
    };
    /** One stateful service: its first-message call, its instances, the four paths. */
    const kinds = [
      { service: 'counter', path: '/s/counter/inc', body: {} },
      { service: 'js-counter', path: '/s/js-counter/Add', body: { by: 1 } },
    ].map((k) => {
      const timedInc = async (): Promise<number> => {
        const t = performance.now();
        await api('POST', k.path, k.body);
        return performance.now() - t;
      };
      const instances = async () => ((await api('GET', '/api/v1/instances')).instances as Array<{ id: string; service: string }>).filter((i) => i.service === k.service);
      const one = async (): Promise<string> => {
        if ((await instances()).length === 0) await timedInc();
        return (await instances())[0]!.id;
      };
      const stopAll = async () => {
        for (const i of await instances()) await api('DELETE', `/api/v1/instances/${i.id}`);
      };
      const ms: PathTimes = { warm: [], restore: [], cold: [], fork: [] };
      const round = async (): Promise<void> => {
        ms.warm.push(await timedInc());
        // restore: the instance is suspended; the first message restores it
        await api('POST', `/api/v1/instances/${await one()}/suspend`);
        ms.restore.push(await timedInc());
        // fork: the API call that copies the warm instance on its host
        const source = await one();
        const t = performance.now();
        const forked = (await api('POST', `/api/v1/instances/${source}/fork`)).instance as { id: string };
        ms.fork.push(performance.now() - t);
        await api('DELETE', `/api/v1/instances/${forked.id}`);
        // cold: the instance is stopped; the first message starts it from the image
        await stopAll();
        ms.cold.push(await timedInc());
      };
      return { ...k, timedInc, one, stopAll, ms, round };
    });
    const [wasi, js] = kinds as [(typeof kinds)[0], (typeof kinds)[0]];
    for (const k of kinds) await k.one();
    for (let r = 0; r < rounds; r++) {
      for (const k of kinds) {
        await k.round();
        log(`activation round ${r + 1} ${k.service}: warm ${k.ms.warm.at(-1)!.toFixed(1)} ms, restore ${k.ms.restore.at(-1)!.toFixed(1)}, fork ${k.ms.fork.at(-1)!.toFixed(1)}, cold ${k.ms.cold.at(-1)!.toFixed(1)}`);
      }
    }
    const { ms, timedInc, one, stopAll } = wasi;
    const best = { restore: median(ms.restore), cold: median(ms.cold) };
    const trace: ActivationBenchResult['trace'] = [];
    const before = await provider.registry.listEvents({ kind: 'activated', limit: 1 });
    let afterId = before.at(-1)?.id ?? 0;
    for (let i = 0; i < traceLength; i++) {
      const suspend = rand() < 0.5;
      const id = await one();
      if (suspend) await api('POST', `/api/v1/instances/${id}/suspend`);
      else await stopAll();
      const took = await timedInc();
      const events = await provider.registry.listEvents({ kind: 'activated', afterId });
      afterId = events.at(-1)?.id ?? afterId;
      const path = (events.at(-1)?.detail as { path?: string } | undefined)?.path ?? 'unknown';
      trace.push({ state: suspend, path, ms: took, bestMs: suspend ? best.restore : best.cold });
    }
    return { rounds, ms, quickjs: js.ms, trace, chosenP50: median(trace.map((t) => t.ms)), bestP50: median(trace.map((t) => t.bestMs)) };
  } finally {
    await provider.close();
    for (const h of hosts) await h.close({ stopInstances: true });
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

export function formatActivationBench(r: ActivationBenchResult): string {
  const row = (name: string, xs: number[]) => `| ${name} | ${median(xs).toFixed(1)} | ${Math.min(...xs).toFixed(1)} | ${Math.max(...xs).toFixed(1)} | ${xs.length} |`;
  const chosen = r.trace.map((t) => `${t.state ? 'S' : '-'}→${t.path} ${t.ms.toFixed(0)}`).join(', ');
  const table = (ms: PathTimes) => [
    '| path | median ms | min | max | n |',
    '|---|---|---|---|---|',
    row('warm (instance up)', ms.warm),
    row('restore (after suspend: the state comes back)', ms.restore),
    row('fork (copy a warm instance)', ms.fork),
    row('cold (after stop: from the image)', ms.cold),
  ];
  return [
    `Two stateful components behind the provider, three wasm hosts, ${r.rounds} interleaved rounds. Each figure is the client's first message after the instance was left in that condition (fork: the API call that copies a warm instance).`,
    '',
    'The WAT counter (a WASI module, 4 pages of memory):',
    '',
    ...table(r.ms),
    '',
    'A shoal/service counter on QuickJS (test/host/fixtures/js-counter-service.ts; its heap, timers included):',
    '',
    ...table(r.quickjs),
    '',
    `**Restore / cold at the median: ${(median(r.ms.restore) / median(r.ms.cold)).toFixed(2)}×** (below 1: restoring the state is faster than starting from the image).`,
    '',
    `Mixed trace (${r.trace.length} idle periods, each ending in a suspend (S) or a stop (-), then one message; path and ms): ${chosen}.`,
    `**The activator's choice at p50: ${r.chosenP50.toFixed(1)} ms vs ${r.bestP50.toFixed(1)} ms best available in hindsight (per-path medians above) = ${(r.chosenP50 / r.bestP50).toFixed(2)}×** (goal ≤ 1.1×).`,
  ].join('\n');
}

export function activationFigures(r: ActivationBenchResult): Figure[] {
  return [
    fig('activation.warm', 'warm first message (ms)', median(r.ms.warm), 'ms', 'lower', r.ms.warm),
    fig('activation.restore', 'first message after suspend: restore (ms)', median(r.ms.restore), 'ms', 'lower', r.ms.restore),
    fig('activation.fork', 'fork API call (ms)', median(r.ms.fork), 'ms', 'lower', r.ms.fork),
    fig('activation.cold', 'first message after stop: cold (ms)', median(r.ms.cold), 'ms', 'lower', r.ms.cold),
    fig('activation.quickjs.restore', 'QuickJS counter: first message after suspend: restore (ms)', median(r.quickjs.restore), 'ms', 'lower', r.quickjs.restore),
    fig('activation.quickjs.cold', 'QuickJS counter: first message after stop: cold (ms)', median(r.quickjs.cold), 'ms', 'lower', r.quickjs.cold),
    fig('activation.choice-vs-hindsight', "activator's choice / best in hindsight at p50", r.chosenP50 / r.bestP50, 'ratio', 'lower'),
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const arg = (name: string, def: number) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? Number(process.argv[i + 1]) : def;
  };
  const r = await runActivationBench({ rounds: arg('rounds', 5), trace: arg('trace', 12), log: (m) => process.stderr.write(`[activation] ${m}\n`) });
  process.stdout.write(`${formatActivationBench(r)}\n`);
}
