// The warm path through the provider against the instance itself and against nginx, all
// with wrk (C, one thread, keep-alive), in one run (issue 12, goal 1).
//
// Targets, each a POST /Echo of the same small JSON body, 32 connections:
//   direct     the instance program itself over TCP: wrk cannot reach a Unix socket, so a
//              twin of the instance's program (the same server.mjs, the same node) serves
//              its own http server on 127.0.0.1 too (bench/lib/also-tcp.mjs)
//   nginx      nginx (one worker, upstream keepalive) → the instance's Unix socket
//   provider   /s/echo/Echo → provider (auth gate, schema check, balancer) → host → instance
//   forwarder  the host's data plane alone (/i/Echo with the route token) → instance
// The targets take turns (ROUNDS rounds, the order rotated each round, the same duration
// each, the same work in each turn), so load from elsewhere on this shared machine falls
// on all alike. Figures: the median over rounds of each target's req/s and p50, and the
// median over rounds of the per-round ratios (provider / direct, provider / nginx).
// CPU per request of the farm process (provider + host in one process, as `shoal up`
// runs them) is read from /proc around each turn.
//
// The farm (store, one runc host, provider) runs in a child process. Where the provider
// reaches a host in its own process it uses the host's in-process data link (no loopback
// HTTP hop; the same route-token and operation checks): `--data-link tcp` measures the old
// path (SHOAL_DATA_LINK=tcp) for comparison.
//   node bench/warm-path.ts [--rounds 5] [--turn-ms 3000] [--connections 32] [--data-link tcp]
//   (root + runc, wrk, nginx)
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fig, type Figure } from './lib/figures.ts';
import { canConnect, cpuMsOf, executable, freePort, NGINX, runWrk, startBenchChild, startNginx, stopChild, WRK, type LoadFigures } from './lib/peers.ts';

const SELF = fileURLToPath(import.meta.url);
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const BODY = '{"message":"hello from the bench"}';
const TOKEN = 'bench-host-token';

export type WarmTarget = 'direct' | 'nginx' | 'provider' | 'provider-tcp' | 'forwarder';
const TARGETS: readonly WarmTarget[] = ['direct', 'nginx', 'provider', 'provider-tcp', 'forwarder'];

export interface WarmPathResult {
  rounds: number;
  turnMs: number;
  connections: number;
  dataLink: 'local' | 'tcp';
  /** Median over rounds, per target. */
  targets: Partial<Record<WarmTarget, LoadFigures & { rounds: number[] }>>;
  /** Median over rounds of the per-round ratio of throughputs. */
  providerVsDirect: number | undefined;
  providerVsNginx: number | undefined;
  forwarderVsNginx: number | undefined;
  localVsTcp: number | undefined;
  /** p50 added over direct (median p50s). */
  addedP50Ms: Partial<Record<WarmTarget, number>>;
  notes: string[];
}

interface FarmInfo {
  providerUrl: string;
  /** A second provider and host in the same process, whose provider reaches its host over loopback HTTP. */
  tcpProviderUrl: string;
  dataUrl: string;
  socketPath: string;
  token: string;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export async function runWarmPathBench(
  options: { rounds?: number; turnMs?: number; connections?: number; dataLink?: 'local' | 'tcp'; log?: (line: string) => void } = {},
): Promise<WarmPathResult> {
  const rounds = options.rounds ?? 5;
  const turnMs = options.turnMs ?? 3000;
  const connections = options.connections ?? 32;
  const dataLink = options.dataLink ?? 'local';
  const log = options.log ?? ((line: string) => process.stderr.write(`[warm-path] ${line}\n`));
  const notes: string[] = [];
  if (!(await executable(WRK))) throw new Error(`${WRK} is needed for the warm-path comparison`);
  const dir = await mkdtemp(join(tmpdir(), 'swp-'));
  const children: ChildProcess[] = [];
  try {
    log(`starting the farm (store, one runc host, provider; data link ${dataLink})`);
    const farmChild = await startBenchChild(SELF, ['--role=farm', dir, dataLink]);
    children.push(farmChild);
    const farm = JSON.parse(farmChild.ready!) as FarmInfo;

    const tcpPort = await freePort();
    const twin = spawn(process.execPath, ['--import', join(ROOT, 'bench/lib/also-tcp.mjs'), join(ROOT, 'examples/echo/rootfs/app/server.mjs')], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', SHOAL_LISTEN: join(dir, 'twin.sock'), BENCH_TCP_PORT: String(tcpPort) },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(twin);
    for (let i = 0; !(await canConnect(tcpPort)); i++) {
      if (i > 250 || twin.exitCode !== null) throw new Error('the direct twin did not start');
      await new Promise((r) => setTimeout(r, 20));
    }

    const urls: Partial<Record<WarmTarget, [string, string | undefined]>> = {
      direct: [`http://127.0.0.1:${tcpPort}/Echo`, undefined],
      provider: [`${farm.providerUrl}/s/echo/Echo`, undefined],
      'provider-tcp': [`${farm.tcpProviderUrl}/s/echo/Echo`, undefined],
      forwarder: [`${farm.dataUrl}/i/Echo`, farm.token],
    };
    if (await executable(NGINX)) {
      const nginxPort = await freePort();
      children.push(await startNginx(dir, farm.socketPath, nginxPort));
      urls.nginx = [`http://127.0.0.1:${nginxPort}/Echo`, undefined];
    } else notes.push(`${NGINX} not found: nginx not measured`);

    const script = join(dir, 'post.lua');
    await writeFile(script, `wrk.method = "POST"\nwrk.body = '${BODY}'\nwrk.headers["content-type"] = "application/json"\n`);
    const keys = TARGETS.filter((t) => urls[t] !== undefined);
    // Warm-up: JIT and pooled connections everywhere, outside the figures.
    for (const k of keys) await runWrk(urls[k]![0], { script, token: urls[k]![1], connections, durationMs: 1000 });

    const turns = new Map<WarmTarget, Array<LoadFigures & { farmCpuMs: number; round: number }>>(keys.map((k) => [k, []]));
    for (let round = 0; round < rounds; round++) {
      for (let j = 0; j < keys.length; j++) {
        const k = keys[(round + j) % keys.length]!;
        const [url, token] = urls[k]!;
        const cpu0 = await cpuMsOf(farmChild.pid!);
        const f = await runWrk(url, { script, token, connections, durationMs: turnMs });
        const cpu1 = await cpuMsOf(farmChild.pid!);
        if (f === undefined) {
          notes.push(`round ${round + 1}: wrk output for ${k} unreadable`);
          continue;
        }
        if (f.errors > 0) notes.push(`round ${round + 1}: ${k} had ${f.errors} errors`);
        turns.get(k)!.push({ ...f, farmCpuMs: cpu1 - cpu0, round });
      }
      log(`round ${round + 1}/${rounds}: ${keys.map((k) => `${k} ${Math.round(turns.get(k)!.find((t) => t.round === round)?.rps ?? NaN)}`).join(', ')} req/s`);
    }

    const targets: WarmPathResult['targets'] = {};
    for (const [k, fs] of turns) {
      if (fs.length === 0) continue;
      const farmCpu = fs.reduce((a, f) => a + f.farmCpuMs, 0);
      const requests = fs.reduce((a, f) => a + f.requests, 0);
      targets[k] = {
        requests,
        errors: fs.reduce((a, f) => a + f.errors, 0),
        rps: median(fs.map((f) => f.rps)),
        p50Ms: median(fs.map((f) => f.p50Ms)),
        p99Ms: median(fs.map((f) => f.p99Ms)),
        ...(k === 'provider' || k === 'provider-tcp' || k === 'forwarder' ? { cpuUsPerRequest: (farmCpu * 1000) / requests } : {}),
        rounds: fs.map((f) => f.rps),
      };
    }
    const ratio = (a: WarmTarget, b: WarmTarget): number | undefined => {
      const xs = turns.get(a);
      const ys = turns.get(b);
      if (xs === undefined || ys === undefined) return undefined;
      // Rounds where both were read (a round whose wrk output was unreadable is left out of both).
      const pairs = xs.flatMap((x) => ys.filter((y) => y.round === x.round).map((y) => x.rps / y.rps));
      return pairs.length === 0 ? undefined : median(pairs);
    };
    const addedP50Ms: WarmPathResult['addedP50Ms'] = {};
    for (const k of keys) if (k !== 'direct' && targets[k] && targets.direct) addedP50Ms[k] = targets[k].p50Ms - targets.direct.p50Ms;
    return {
      rounds,
      turnMs,
      connections,
      dataLink,
      targets,
      providerVsDirect: ratio('provider', 'direct'),
      providerVsNginx: ratio('provider', 'nginx'),
      forwarderVsNginx: ratio('forwarder', 'nginx'),
      localVsTcp: ratio('provider', 'provider-tcp'),
      addedP50Ms,
      notes,
    };
  } finally {
    for (const c of children.reverse()) await stopChild(c);
    await rm(dir, { recursive: true, force: true });
  }
}

export function formatWarmPathBench(r: WarmPathResult): string {
  const f2 = (n: number | undefined): string => (n === undefined || Number.isNaN(n) ? '–' : n.toFixed(2));
  const f3 = (n: number | undefined): string => (n === undefined || Number.isNaN(n) ? '–' : n.toFixed(3));
  const name: Record<WarmTarget, string> = {
    direct: 'direct: the instance program (twin) over TCP',
    nginx: 'nginx → instance socket',
    provider: 'provider → host → instance (/s/), in-process data link',
    'provider-tcp': 'the same, provider → host over loopback HTTP (the old link)',
    forwarder: 'host forwarder alone (/i/, token)',
  };
  const d = r.targets.direct;
  const lines = [
    `wrk -t1 -c${r.connections}, POST of a small JSON body, ${r.rounds} rounds of ${r.turnMs / 1000} s per target, order rotated each round; medians over rounds. Provider and host run in one process (as \`shoal up\` runs them); data link: **${r.dataLink === 'local' ? "in-process (the host's forwarder called without an HTTP hop)" : 'loopback HTTP to the host (SHOAL_DATA_LINK=tcp)'}**.`,
    '',
    '| target | req/s (median) | × direct | p50 ms | added p50 ms | p99 ms | farm CPU µs/req | rounds (req/s) | errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |',
  ];
  for (const k of TARGETS) {
    const t = r.targets[k];
    if (t === undefined) continue;
    lines.push(
      `| ${name[k]} | ${Math.round(t.rps)} | ${d ? f2(t.rps / d.rps) : '–'} | ${f3(t.p50Ms)} | ${k === 'direct' ? '–' : f3(r.addedP50Ms[k])} | ${f3(t.p99Ms)} | ${t.cpuUsPerRequest === undefined ? '–' : Math.round(t.cpuUsPerRequest)} | ${t.rounds.map((x) => Math.round(x)).join(', ')} | ${t.errors} |`,
    );
  }
  lines.push(
    '',
    `Provider / direct (median of per-round ratios): **${f2(r.providerVsDirect)}** (goal ≥ 0.7). Provider / nginx: **${f2(r.providerVsNginx)}** (goal ≥ 1.0). Forwarder alone / nginx: ${f2(r.forwarderVsNginx)}. In-process link / loopback HTTP link: ${f2(r.localVsTcp)} (throughput), farm CPU per request ${f2(r.targets.provider?.cpuUsPerRequest !== undefined && r.targets['provider-tcp']?.cpuUsPerRequest !== undefined ? r.targets.provider.cpuUsPerRequest / r.targets['provider-tcp'].cpuUsPerRequest : undefined)}×.`,
    `Added p50: provider ${f3(r.addedP50Ms.provider)} ms, nginx ${f3(r.addedP50Ms.nginx)} ms (goal: provider ≤ nginx).`,
    ...r.notes.map((n) => `- ${n}`),
  );
  return lines.join('\n');
}

export function warmPathFigures(r: WarmPathResult): Figure[] {
  const out: Figure[] = [];
  if (r.providerVsDirect !== undefined) out.push(fig('warm.wrk.provider-vs-direct', 'warm path throughput × direct (wrk)', r.providerVsDirect, 'ratio', 'higher'));
  if (r.providerVsNginx !== undefined) out.push(fig('warm.wrk.provider-vs-nginx', 'warm path throughput × nginx (wrk)', r.providerVsNginx, 'ratio', 'higher'));
  if (r.addedP50Ms.provider !== undefined) out.push(fig('warm.wrk.provider-added-p50-ms', 'warm path p50 added over direct (wrk)', r.addedP50Ms.provider, 'ms', 'lower'));
  if (r.targets.provider?.cpuUsPerRequest !== undefined) out.push(fig('warm.provider-cpu-ms', 'provider + host CPU per warm request (ms)', r.targets.provider.cpuUsPerRequest / 1000, 'ms', 'lower'));
  return out;
}

// ---- the farm (child process) ----

/**
 * Two store-host-provider pairs in one process (one store): the first provider reaches its
 * host through the in-process link, the second over loopback HTTP (SHOAL_DATA_LINK=tcp
 * while it deploys: the link is chosen when the endpoint is made), so both links are
 * measured in one run, interleaved, on the same process.
 */
async function runFarm(dir: string, dataLink: string): Promise<void> {
  const { startHost } = await import('../src/host/index.ts');
  const { startProvider } = await import('../src/provider/index.ts');
  const { startStore } = await import('../src/image/index.ts');
  const { createApiToken } = await import('../src/provider/auth/index.ts');
  const { echoStoreDir } = await import('../test/provider/fixtures/echo-store.ts');
  const store = await startStore({ dataDir: await echoStoreDir() });
  const closers: Array<() => Promise<void>> = [() => store.close()];
  const stop = async (): Promise<void> => {
    for (const c of closers.reverse()) await c().catch((e: unknown) => process.stderr.write(`[warm-path farm] closing: ${String(e)}\n`));
  };
  const pair = async (name: string, link: 'local' | 'tcp') => {
    const host = await startHost({
      dataDir: join(dir, name),
      listen: { host: '127.0.0.1', port: 0 },
      token: TOKEN,
      capacity: { memoryMb: 4096, cpuMillis: 8000, instances: 8 },
      driver: 'runc',
    });
    closers.push(() => host.close({ stopInstances: true }));
    const provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database: join(dir, `${name}.db`), storeUrl: store.url, joinToken: 'bench-join-token' });
    closers.push(() => provider.close());
    await provider.registerHost({ controlUrl: host.controlUrl, token: TOKEN });
    const admin = (await createApiToken(provider.registry, { role: 'admin' })).secret;
    const res = await fetch(`${provider.url}/api/v1/services`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'echo',
        version: '1',
        image: 'echo:1',
        operations: { Echo: { input: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] }, output: { type: 'object' }, idempotent: true } },
        access: 'public',
        // Two whole cores: a CPU cap would make the instance's quota, not the path, the limit.
        resources: { memoryMb: 128, cpuMillis: 2000, pids: 32 },
        scaling: { targetConcurrency: 100_000, idleTimeoutMs: 3_600_000 },
      }),
    });
    if (!res.ok) throw new Error(`registering echo: ${res.status} ${await res.text()}`);
    const before = process.env.SHOAL_DATA_LINK;
    if (link === 'tcp') process.env.SHOAL_DATA_LINK = 'tcp';
    try {
      const first = await fetch(`${provider.url}/s/echo/Echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: BODY });
      if (first.status !== 200) throw new Error(`echo: ${first.status} ${await first.text()}`);
    } finally {
      if (before === undefined) delete process.env.SHOAL_DATA_LINK;
      else process.env.SHOAL_DATA_LINK = before;
    }
    const listed = await fetch(`${host.controlUrl}/v1/instances`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const { instances } = (await listed.json()) as { instances: Array<{ id: string; service: { name: string }; state: string; endpoint?: { token: string } }> };
    const echo = instances.find((i) => i.service.name === 'echo' && i.endpoint !== undefined)!;
    return { provider, host, socketPath: join(dir, name, 'instances', echo.id, 'sock', 'app.sock'), token: echo.endpoint!.token };
  };
  try {
    const main = await pair('h0', dataLink === 'tcp' ? 'tcp' : 'local');
    const old = await pair('h1', 'tcp');
    process.on('SIGTERM', () => void stop().then(() => process.exit(0)));
    const info: FarmInfo = { providerUrl: main.provider.url, tcpProviderUrl: old.provider.url, dataUrl: main.host.dataUrl, socketPath: main.socketPath, token: main.token };
    process.stdout.write(`${JSON.stringify(info)}\n`);
  } catch (e) {
    await stop(); // nothing left running (containers, mounts) when the set-up fails
    throw e;
  }
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const role = args.find((a) => a.startsWith('--role='))?.slice('--role='.length);
  if (role === 'farm') await runFarm(args[1]!, args[2]!);
  else {
    const flag = (name: string): string | undefined => {
      const i = args.indexOf(name);
      return i === -1 ? undefined : args[i + 1];
    };
    const num = (name: string): number | undefined => (flag(name) === undefined ? undefined : Number(flag(name)));
    const result = await runWarmPathBench({
      rounds: num('--rounds'),
      turnMs: num('--turn-ms'),
      connections: num('--connections'),
      dataLink: flag('--data-link') === 'tcp' ? 'tcp' : 'local',
    });
    console.log(formatWarmPathBench(result));
  }
}
