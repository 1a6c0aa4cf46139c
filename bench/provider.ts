// What the provider adds, measured against the host doing the same job directly, in one run.
//
//  cold     one message to a cold service, consumer → reply, through the provider; against
//           the host's own plan-to-ready for the same deployment (its timeline), and against
//           a consumer that POSTs the plan to the host itself and then sends the message
//           straight to the endpoint. Provider share = provider path − direct path (goal ≤ 10 ms).
//           Hosts' layer caches are warm (the image is pulled once first): this is the start
//           path, not the pull. Both paths do the same work inside the clock: the image tag
//           is resolved before it on both (the provider's resolver has it cached from the
//           warm-up; the direct consumer resolves it once and sends the same digest-pinned
//           reference the provider sends), and the consumer's connections (to the provider;
//           to the host's control and data ports) are keep-alive ones opened before it, as
//           the provider's own connections to the host are.
//  warm     POST /Echo at a fixed concurrency for a fixed time: consumer → provider → host →
//           instance, against the instance's Unix socket directly, the host's forwarder alone,
//           and nginx proxying to the same socket. Node keep-alive client (and wrk for the TCP
//           targets); the targets take turns in rotation (interleaved), both clients.
//  spread   deploy one service to 1, 4 and 8 hosts at once (one POST, spread placement):
//           wall time, ratio to one host (goal: 8 hosts ≤ 1.5 × one). In the same run, the
//           machine's own floor for starting N of the same service at once without Shoal:
//           N plain `node server.mjs` children, and N containers of the same image layers
//           started by the runc driver alone (the host's launch: shim + `runc run -d`, with
//           the overlay mount), each ready at its first 200 on GET /healthz. All of it shares
//           this machine's CPUs, so a baseline's own N/1 ratio is what the machine allows.
//
// The farm (store + provider + hosts) runs in a child process, the load client in this one.
//   node bench/provider.ts [--runs 8] [--duration-ms 4000] [--connections 32] [--only cold,warm,spread] [--no-warm-pool]   (root + runc)
import type { ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { Agent, request, type RequestOptions } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Driver } from '../src/host/drivers/driver.ts';
import { createStartRig, removeCgroupParent, type BenchInstance, type StartedInstance, type StartRig } from './host-start.ts';
import { measureInterleaved } from './forwarding.ts';
import { fig, type Figure } from './lib/figures.ts';
import { executable, freePort, NGINX, runWrk, startBenchChild, startNginx, stopChild, WRK, type LoadFigures } from './lib/peers.ts';
import { settle } from './lib/settle.ts';

const SELF = fileURLToPath(import.meta.url);
const HOSTS = 8;
const TOKEN = 'bench-host-token';
const JOIN = 'bench-join-token';
const BODY = '{"message":"hello from the bench"}';

export type { LoadFigures };

export interface ProviderBenchResult {
  cold?: {
    runs: number;
    /** Consumer sends → reply, through the provider (median ms). */
    providerMs: number;
    /** Consumer POSTs the plan to the host → 201 → message to the endpoint → reply (median ms). */
    directMs: number;
    /** The host's own plan-to-ready for the provider's deployments (timeline totals, median ms). */
    hostPlanToReadyMs: number;
    /** Median of the paired differences (provider run − direct run): what the provider adds to a cold start. */
    addedMs: number;
    /** Per run: provider path − the host's plan-to-ready of that deployment (median ms). */
    overHostMs: number;
    samples: { provider: number[]; direct: number[]; host: number[] };
    /** Median duration of each timeline phase, in the provider's deployments and in the direct ones. */
    phases: Record<string, { provider: number; direct: number }>;
  };
  warm?: {
    durationMs: number;
    connections: number;
    direct: LoadFigures;
    forwarder: LoadFigures;
    provider: LoadFigures;
    nginx: LoadFigures | undefined;
    wrk: { forwarder?: LoadFigures; provider?: LoadFigures; nginx?: LoadFigures };
  };
  /** slowestHostMs: the slowest host's own plan-to-ready in the run (median over runs). */
  spread: Array<{
    hosts: number;
    wallMs: number;
    runsMs: number[];
    ratio: number;
    slowestHostMs: number;
    /** Median over runs of the slowest host's timeline phases (ms). */
    slowestPhases: Record<string, number>;
    /** The same N started at once without Shoal (see the header); ratio: wall / its own N = 1 wall. */
    floor: Partial<Record<FloorKind, { wallMs: number; runsMs: number[]; ratio: number }>>;
  }>;
  notes: string[];
}

interface FarmInfo {
  providerUrl: string;
  /** An admin API token for the control calls. */
  token: string;
  storeUrl: string;
  hosts: Array<{ id: string; controlUrl: string; dataUrl: string }>;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export type ProviderBenchSection = 'cold' | 'warm' | 'spread';

/** plain: `node server.mjs` children; runc: containers by the runc driver alone (no host agent, no provider). */
export type FloorKind = 'plain' | 'runc';
const FLOOR_KINDS: readonly FloorKind[] = ['plain', 'runc'];

export async function runProviderBench(
  options: {
    runs?: number;
    durationMs?: number;
    connections?: number;
    only?: readonly ProviderBenchSection[];
    /** The hosts' warm pool (default on, as hosts start by default). */
    warmPool?: boolean;
    log?: (line: string) => void;
  } = {},
): Promise<ProviderBenchResult> {
  const want = (s: ProviderBenchSection) => options.only === undefined || options.only.includes(s);
  const runs = options.runs ?? 8;
  const durationMs = options.durationMs ?? 4000;
  const connections = options.connections ?? 32;
  const log = options.log ?? ((line: string) => process.stderr.write(`[provider-bench] ${line}\n`));
  const notes: string[] = [];
  const dir = await mkdtemp(join(tmpdir(), 'spb-'));
  const children: ChildProcess[] = [];
  try {
    log('starting the farm (store, provider, 8 runc hosts) in a child process');
    const farmChild = await startBenchChild(SELF, ['--role=farm', dir, ...(options.warmPool === false ? ['--no-warm-pool'] : [])]);
    if (options.warmPool === false) notes.push('hosts ran without their warm pool (--no-warm-pool)');
    children.push(farmChild);
    const farm = JSON.parse(farmChild.ready!) as FarmInfo;
    const api = (method: string, path: string, body?: unknown) => json(`${farm.providerUrl}${path}`, method, body, { authorization: `Bearer ${farm.token}` });
    const host0 = farm.hosts[0]!;
    const service = (name: string, extra: Record<string, unknown> = {}) => ({
      name,
      version: '1',
      image: 'echo:1',
      operations: { Echo: { input: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] }, output: { type: 'object' }, idempotent: true } },
      // Public: these figures are the message path without a token check.
      access: 'public',
      // A whole core: a CPU cap would make the instance, not the path, the bottleneck.
      resources: { memoryMb: 128, cpuMillis: 1000, pids: 32 },
      scaling: { targetConcurrency: 100_000, idleTimeoutMs: 3_600_000 },
      placement: { policy: 'host-list', hosts: [host0.id] },
      ...extra,
    });

    // Warm every host's layer cache: one deployment each, then removed.
    log('warming the layer caches of the hosts');
    await api('POST', '/api/v1/services', service('warmup', { placement: { policy: 'spread' } }));
    await api('POST', '/api/v1/services/warmup/deployments', { count: HOSTS });
    // The floor starts the very image the hosts run: its layers as host 0 unpacked them.
    const image = want('spread') ? await imageOnHost(join(dir, 'h0')) : undefined;
    await api('DELETE', '/api/v1/services/warmup');

    // ---- cold ----
    const samples = { provider: [] as number[], direct: [] as number[], host: [] as number[] };
    const phaseSamples = { provider: new Map<string, number[]>(), direct: new Map<string, number[]>() };
    const addPhases = (into: Map<string, number[]>, phases: Array<{ name: string; startMs: number; endMs: number }>) => {
      for (const p of phases) (into.get(p.name) ?? into.set(p.name, []).get(p.name)!).push(p.endMs - p.startMs);
    };
    const overHost: number[] = [];
    // A fresh service name per run on both paths: the host keeps a warm container for a plan
    // it has just deployed, and a cold service has none.
    // The reference the provider's plans carry: resolved here once, before any clock, as the
    // provider's resolver did during the warm-up.
    const { createRegistryClient, resolveRemoteImage } = await import('../src/image/index.ts');
    const resolved = await resolveRemoteImage(createRegistryClient({ baseUrl: farm.storeUrl }), 'echo:1');
    const pinned = `${resolved.repository}@${resolved.manifestDigest}`;
    const plan = (i: number) => ({ service: { name: `direct-${i}`, version: '1' }, image: pinned, store: farm.storeUrl, resources: { memoryMb: 128, cpuMillis: 1000, pids: 32 } });
    // The consumer's keep-alive connections, one pool per path, opened before each clock.
    const consumer = new Agent({ keepAlive: true, maxSockets: 4 });
    const hostData = new URL(host0.dataUrl);
    const paired: number[] = [];
    const viaProvider = async (i: number): Promise<number> => {
      const name = `cold-${i}`;
      await api('POST', '/api/v1/services', service(name));
      await touch(`${farm.providerUrl}/healthz`, consumer);
      const t0 = performance.now();
      const r = await post(`${farm.providerUrl}/s/${name}/Echo`, BODY, {}, consumer);
      const e2e = performance.now() - t0;
      if (r.status !== 200) throw new Error(`cold message ${i}: ${r.status} ${r.text}`);
      const deps = (await api('GET', `/api/v1/deployments?service=${name}`)) as { deployments: Array<{ timeline: { phases: Array<{ name: string; startMs: number; endMs: number }> } }> };
      const phases = deps.deployments[0]!.timeline.phases;
      const admit = phases.find((p) => p.name === 'admit')!;
      const ready = phases.find((p) => p.name === 'ready')!;
      const hostMs = ready.endMs - admit.startMs;
      samples.provider.push(e2e);
      samples.host.push(hostMs);
      addPhases(phaseSamples.provider, phases);
      overHost.push(e2e - hostMs);
      await api('DELETE', `/api/v1/services/${name}`);
      return e2e;
    };
    const directly = async (i: number): Promise<number> => {
      await touch(`${host0.controlUrl}/healthz`, consumer);
      await touch(`${hostData.origin}/healthz`, consumer);
      const d0 = performance.now();
      const created = await post(`${host0.controlUrl}/v1/instances`, JSON.stringify(plan(i)), { authorization: `Bearer ${TOKEN}` }, consumer);
      if (created.status !== 201) throw new Error(`direct plan ${i}: ${created.status} ${created.text}`);
      const res = JSON.parse(created.text) as { endpoint: { url: string; token: string; instance: string }; timeline: { phases: Array<{ name: string; startMs: number; endMs: number }> } };
      const endpoint = res.endpoint;
      const m = await post(`${endpoint.url}/Echo`, BODY, { 'x-shoal-route': endpoint.token }, consumer);
      const direct = performance.now() - d0;
      if (m.status !== 200) throw new Error(`direct message ${i}: ${m.status} ${m.text}`);
      addPhases(phaseSamples.direct, res.timeline.phases);
      samples.direct.push(direct);
      await json(`${host0.controlUrl}/v1/instances/${endpoint.instance}`, 'DELETE', undefined, { authorization: `Bearer ${TOKEN}` });
      return direct;
    };
    for (let i = 0; i < (want('cold') ? runs : 0); i++) {
      // Alternate which goes first, so neither always follows the other's teardown.
      let p: number;
      let d: number;
      if (i % 2 === 0) {
        p = await viaProvider(i);
        d = await directly(i);
      } else {
        d = await directly(i);
        p = await viaProvider(i);
      }
      paired.push(p - d);
      log(`cold ${i + 1}/${runs}: provider ${p.toFixed(1)} ms, direct ${d.toFixed(1)} ms`);
    }
    consumer.destroy();
    const cold = {
      runs,
      providerMs: median(samples.provider),
      directMs: median(samples.direct),
      hostPlanToReadyMs: median(samples.host),
      addedMs: median(paired),
      overHostMs: median(overHost),
      samples,
      phases: Object.fromEntries(
        [...phaseSamples.provider.keys()].map((name) => [name, { provider: median(phaseSamples.provider.get(name)!), direct: median(phaseSamples.direct.get(name) ?? []) }]),
      ),
    };

    // ---- warm ----
    let warm: ProviderBenchResult['warm'] | undefined;
    if (want('warm')) {
    log('warm path: deploying echo on the first host');
    await api('POST', '/api/v1/services', service('echo'));
    const first = await post(`${farm.providerUrl}/s/echo/Echo`, BODY);
    if (first.status !== 200) throw new Error(`echo: ${first.status} ${first.text}`);
    const inst = (await json(`${host0.controlUrl}/v1/instances`, 'GET', undefined, { authorization: `Bearer ${TOKEN}` })) as { instances: Array<{ id: string; service: { name: string }; endpoint?: { url: string; token: string } }> };
    const echo = inst.instances.find((i) => i.service.name === 'echo')!;
    const socketPath = join(dir, 'h0', 'instances', echo.id, 'run', 'app.sock');
    const token = echo.endpoint!.token;
    const dataUrl = new URL(host0.dataUrl);

    let nginxPort: number | undefined;
    if (await executable(NGINX)) {
      nginxPort = await freePort();
      children.push(await startNginx(dir, socketPath, nginxPort));
    } else notes.push(`${NGINX} not found: nginx not measured`);

    const providerUrl = new URL(farm.providerUrl);
    // Every target takes short turns in rotation (forwarding.ts's measureInterleaved), so a
    // burst of load from elsewhere on the machine falls on all of them alike.
    const targets: RequestOptions[] = [
      { socketPath, path: '/Echo' },
      { host: dataUrl.hostname, port: Number(dataUrl.port), path: '/i/Echo', headers: { 'x-shoal-route': token } },
      { host: providerUrl.hostname, port: Number(providerUrl.port), path: '/s/echo/Echo' },
      ...(nginxPort === undefined ? [] : [{ host: '127.0.0.1', port: nginxPort, path: '/Echo' }]),
    ];
    log(`warm path: direct, forwarder, provider${nginxPort === undefined ? '' : ', nginx'} interleaved (Node client)`);
    const [direct, forwarder, provider, nginx] = await measureInterleaved(targets, connections, durationMs, BODY);
    if (direct === undefined || forwarder === undefined || provider === undefined) throw new Error('unreachable: three targets measured');
    const wrk: NonNullable<ProviderBenchResult['warm']>['wrk'] = {};
    if (await executable(WRK)) {
      const script = join(dir, 'post.lua');
      await writeFile(script, `wrk.method = "POST"\nwrk.body = '${BODY}'\nwrk.headers["content-type"] = "application/json"\n`);
      log('warm path: wrk, interleaved');
      const runs = await wrkInterleaved<'provider' | 'forwarder' | 'nginx'>(
        {
          provider: [`${farm.providerUrl}/s/echo/Echo`, undefined],
          forwarder: [`${host0.dataUrl}/i/Echo`, token],
          ...(nginxPort === undefined ? {} : { nginx: [`http://127.0.0.1:${nginxPort}/Echo`, undefined] }),
        },
        { script, connections, durationMs },
      );
      Object.assign(wrk, runs);
    } else notes.push(`${WRK} not found: wrk figures left out`);
    await api('DELETE', '/api/v1/services/echo');
    warm = { durationMs, connections, direct, forwarder, provider, nginx, wrk };
    }

    // ---- spread ----
    const spread: ProviderBenchResult['spread'] = [];
    const floor = image === undefined ? undefined : await startFloor(image);
    try {
      const shoalRun = async (n: number, k: number) => {
        const name = `spread-${n}-${k}`;
        await api('POST', '/api/v1/services', service(name, { placement: { policy: 'spread' } }));
        const t0 = performance.now();
        const out = (await api('POST', `/api/v1/services/${name}/deployments`, { count: n })) as {
          deployments: Array<{ state: string; hostId: string; timeline?: { phases: Array<{ name: string; startMs: number; endMs: number }> } }>;
        };
        const wall = performance.now() - t0;
        const ready = out.deployments.filter((d) => d.state === 'ready');
        if (ready.length !== n || new Set(ready.map((d) => d.hostId)).size !== n) throw new Error(`spread ${n}: ${JSON.stringify(out)}`);
        // The slowest host's own plan-to-ready: what no provider could shorten.
        const timed = out.deployments.map((d) => {
          const ph = d.timeline?.phases ?? [];
          const a = ph.find((p) => p.name === 'admit');
          const r = ph.find((p) => p.name === 'ready');
          return { ms: a && r ? r.endMs - a.startMs : 0, phases: ph };
        });
        const slowest = timed.reduce((x, y) => (y.ms > x.ms ? y : x));
        await api('DELETE', `/api/v1/services/${name}`);
        return { wall, slowest };
      };
      for (const n of want('spread') ? [1, 4, 8] : []) {
        const runsMs: number[] = [];
        const slowestMs: number[] = [];
        const phaseRuns = new Map<string, number[]>();
        const floorRuns: Record<FloorKind, number[]> = { plain: [], runc: [] };
        for (let k = 0; k < 3; k++) {
          // Rotate who goes first; wait for the farm's after-work (teardown, pre-created
          // containers) to finish before each timed start.
          const order = ['shoal', ...FLOOR_KINDS] as const;
          for (let j = 0; j < order.length; j++) {
            const what = order[(j + k) % order.length]!;
            if (!(await settle())) notes.push(`spread ${n}, run ${k + 1}: the machine was not idle before the ${what} start`);
            if (what === 'shoal') {
              const { wall, slowest } = await shoalRun(n, k);
              runsMs.push(wall);
              slowestMs.push(slowest.ms);
              addPhases(phaseRuns, slowest.phases);
            } else floorRuns[what].push(await floor!.atOnce(what, n));
          }
        }
        spread.push({
          hosts: n,
          wallMs: median(runsMs),
          runsMs,
          ratio: 0,
          slowestHostMs: median(slowestMs),
          slowestPhases: Object.fromEntries([...phaseRuns].map(([name, xs]) => [name, median(xs)])),
          floor: Object.fromEntries(FLOOR_KINDS.filter((f) => floorRuns[f].length > 0).map((f) => [f, { wallMs: median(floorRuns[f]), runsMs: floorRuns[f], ratio: 0 }])),
        });
        log(
          `spread to ${n} host(s): ${runsMs.map((x) => x.toFixed(0)).join(', ')} ms; ` +
            FLOOR_KINDS.map((f) => `${f} ${floorRuns[f].map((x) => x.toFixed(0)).join(', ')} ms`).join('; '),
        );
      }
    } finally {
      await floor?.close();
    }
    for (const s of spread) {
      for (const f of FLOOR_KINDS) {
        const mine = s.floor[f];
        const one = spread[0]!.floor[f];
        if (mine && one) mine.ratio = mine.wallMs / one.wallMs;
      }
    }
    for (const s of spread) s.ratio = s.wallMs / spread[0]!.wallMs;
    return { ...(want('cold') ? { cold } : {}), ...(warm ? { warm } : {}), spread, notes };
  } finally {
    for (const c of children.reverse()) await stopChild(c);
    await rm(dir, { recursive: true, force: true });
  }
}

// ---- the farm (child process) ----

async function runFarm(dir: string, warmPool: boolean): Promise<void> {
  const { startHost } = await import('../src/host/index.ts');
  const { startProvider } = await import('../src/provider/index.ts');
  const { startStore } = await import('../src/image/index.ts');
  const { echoStoreDir } = await import('../test/provider/fixtures/echo-store.ts');
  const store = await startStore({ dataDir: await echoStoreDir() });
  const hosts: Array<Awaited<ReturnType<typeof startHost>>> = [];
  for (let i = 0; i < HOSTS; i++) {
    hosts.push(
      await startHost({
        dataDir: join(dir, `h${i}`),
        listen: { host: '127.0.0.1', port: 0 },
        token: TOKEN,
        capacity: { memoryMb: 4096, cpuMillis: 8000, instances: 32 },
        driver: 'runc',
        ...(warmPool ? {} : { warmPool: { perImage: 0 } }),
      }),
    );
  }
  const provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database: join(dir, 'shoal.db'), storeUrl: store.url, joinToken: JOIN });
  for (const h of hosts) await provider.registerHost({ controlUrl: h.controlUrl, token: TOKEN });
  process.on('SIGTERM', () => {
    void (async () => {
      await provider.close();
      await Promise.all(hosts.map((h) => h.close({ stopInstances: true })));
      await store.close();
      process.exit(0);
    })();
  });
  const { createApiToken } = await import('../src/provider/auth/index.ts');
  const token = (await createApiToken(provider.registry, { role: 'admin' })).secret;
  const info: FarmInfo = { providerUrl: provider.url, token, storeUrl: store.url, hosts: hosts.map((h) => ({ id: h.hostId, controlUrl: h.controlUrl, dataUrl: h.dataUrl })) };
  process.stdout.write(`${JSON.stringify(info)}\n`);
}

// ---- the machine's floor: the same image started N at once without Shoal ----

interface HostImage {
  /** The layer directories host 0 unpacked, top-most first (overlayfs order). */
  lowerDirs: string[];
  args: string[];
  cwd: string;
}

/** The image of a live instance on the host in `hostDir`, read from its record and layer cache. */
async function imageOnHost(hostDir: string): Promise<HostImage> {
  const instances = join(hostDir, 'instances');
  for (const id of await readdir(instances)) {
    const rec = JSON.parse(await readFile(join(instances, id, 'instance.json'), 'utf8').catch(() => 'null')) as {
      rootfs?: { manifestDigest: string; layers: Array<{ digest: string }>; process: { args: string[]; cwd: string } };
    } | null;
    // Not a template-pool container waiting for a deployment: its root has the template's
    // layers only (the service's own layer is grafted in when a deployment takes it).
    if (!rec?.rootfs || rec.rootfs.manifestDigest.startsWith('template:')) continue;
    const lowerDirs = rec.rootfs.layers.map((l) => join(hostDir, 'cache', 'layers', l.digest.replace(/^sha256:/, ''))).reverse();
    for (const d of lowerDirs) if (!(await stat(d).catch(() => undefined))?.isDirectory()) throw new Error(`layer ${d} of ${id} is not in the host's cache`);
    return { lowerDirs, args: rec.rootfs.process.args, cwd: rec.rootfs.process.cwd || '/' };
  }
  throw new Error(`no instance with a root file system under ${instances}`);
}

interface Floor {
  /** Starts n at once; ms from go until the last answers 200 on /healthz. */
  atOnce(kind: FloorKind, n: number): Promise<number>;
  close(): Promise<void>;
}

/**
 * The start rig of bench/host-start.ts on the hosts' own layers. Plain children run the
 * image's program from one read-only overlay of those layers; containers get an overlay
 * each, mounted inside the timed window (the host mounts inside its own too), and the
 * plan's resources.
 */
async function startFloor(image: HostImage): Promise<Floor> {
  const { listMounts, mountOverlay, unmountOverlay } = await import('../src/host/rootfs/overlay.ts');
  const { createRuncDriver } = await import('../src/host/drivers/runc/index.ts');
  const dir = await mkdtemp(join(tmpdir(), 'spb-floor-'));
  await chmod(dir, 0o755);
  const flat = join(dir, 'flat');
  await mkdir(flat);
  await mountOverlay({ lowerDirs: image.lowerDirs, target: flat });
  const cgroupParent = `shoal-bench-floor-${process.pid}`;
  // As the hosts launch (mode auto = the shim, its default cache dir), in a runc root of its own.
  const runc: Driver = createRuncDriver({ runcRoot: join(dir, 'runc'), cgroupParent, log: () => undefined });
  const rig: StartRig = createStartRig({ dir, flat, lowerDirs: image.lowerDirs, args: image.args, cwd: image.cwd, resources: { memoryBytes: 128 * 1024 * 1024, cpuMillis: 1000, pids: 32 } });
  const atOnce = async (kind: FloorKind, n: number): Promise<number> => {
    const insts: BenchInstance[] = await Promise.all(Array.from({ length: n }, () => rig.instance(kind === 'runc')));
    const t0 = performance.now();
    const settled = await Promise.allSettled(
      insts.map(async (inst): Promise<StartedInstance> => {
        if (kind === 'plain') return rig.plain(inst, t0);
        await inst.mount();
        return rig.onDriver(runc, inst, t0);
      }),
    );
    const wall = performance.now() - t0;
    for (const r of settled) if (r.status === 'fulfilled') await r.value.stop();
    for (const inst of insts) await inst.release();
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw new Error(`floor ${kind} × ${n}: ${String(failed.reason)}`);
    return wall;
  };
  const close = async (): Promise<void> => {
    await runc.close();
    await unmountOverlay(flat);
    await removeCgroupParent(cgroupParent);
    // Only once nothing is mounted in it: rm through a mount would reach the layers.
    const left = await listMounts(dir);
    if (left.length > 0) throw new Error(`still mounted, ${dir} kept: ${left.join(', ')}`);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // One of each first, unrecorded: the shim build, the page cache.
    await atOnce('plain', 1);
    await atOnce('runc', 1);
  } catch (e) {
    await close().catch(() => undefined); // a failed warm-up must not leave its overlay mounted
    throw e;
  }
  return { atOnce, close };
}

// ---- clients ----

/** A GET whose reply is drained: opens (or keeps) `agent`'s connection to that origin before a clock starts. */
function touch(url: string, agent: Agent): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent }, (res) => {
      res.resume();
      res.on('end', () => resolve());
    });
    req.on('error', reject);
    req.end();
  });
}

function post(url: string, body: string, headers: Record<string, string> = {}, agent: Agent | false = false): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function json(url: string, method: string, body?: unknown, headers: Record<string, string> = {}): Promise<unknown> {
  const res = await fetch(url, { method, headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/**
 * wrk against each target in WRK_TURNS turns of durationMs / WRK_TURNS, the order rotating
 * each turn; per target the turn with the median throughput (wrk reports percentiles per
 * run, which cannot be merged).
 */
async function wrkInterleaved<K extends string>(
  targets: Partial<Record<K, [url: string, token: string | undefined]>>,
  options: { script: string; connections: number; durationMs: number },
): Promise<Partial<Record<K, LoadFigures>>> {
  const keys = Object.keys(targets) as K[];
  const turns = new Map<K, LoadFigures[]>(keys.map((k) => [k, []]));
  const turnMs = Math.max(1000, options.durationMs / WRK_TURNS);
  for (let round = 0; round < WRK_TURNS; round++) {
    for (let j = 0; j < keys.length; j++) {
      const k = keys[(round + j) % keys.length]!;
      const [url, token] = targets[k]!;
      const f = await runWrk(url, { script: options.script, token, connections: options.connections, durationMs: turnMs });
      if (f) turns.get(k)!.push(f);
    }
  }
  const out: Partial<Record<K, LoadFigures>> = {};
  for (const [k, fs] of turns) if (fs.length > 0) out[k] = [...fs].sort((a, b) => a.rps - b.rps)[fs.length >> 1]!;
  return out;
}

const WRK_TURNS = 3;






// ---- report ----

export function formatProviderBench(r: ProviderBenchResult): string {
  const f1 = (n: number): string => n.toFixed(1);
  const f2 = (n: number): string => n.toFixed(2);
  const lines: string[] = [];
  const c = r.cold;
  if (c !== undefined) {
    lines.push(
      `### Cold first message (${c.runs} runs, warm layer caches, medians)`,
      '',
      '| path | ms |',
      '| --- | ---: |',
      `| consumer → provider → (deploy) → reply | ${f1(c.providerMs)} |`,
      `| consumer → host plan → 201 → message to the endpoint → reply | ${f1(c.directMs)} |`,
      `| the host's own plan-to-ready (its timeline, provider runs) | ${f1(c.hostPlanToReadyMs)} |`,
      '',
      '| phase | provider runs (ms) | direct runs (ms) |',
      '| --- | ---: | ---: |',
      ...Object.entries(c.phases).map(([name, v]) => `| ${name} | ${f1(v.provider)} | ${Number.isNaN(v.direct) ? '–' : f1(v.direct)} |`),
      '',
      `Provider's share of a cold start: **${f1(c.addedMs)} ms** (median of paired runs, provider − direct; goal ≤ 10 ms; on both paths the image tag was resolved and the consumer's keep-alive connections opened before the clock; paired differences ${c.samples.provider.map((p, i) => f1(p - c.samples.direct[i]!)).join(', ')} ms: when they straddle zero, the share is inside this run's noise). The provider's own steps are the queue and place phases above plus recording the deployment; ${f1(c.overHostMs)} ms separate the consumer's reply from the host's plan-to-ready (both hops, the host's 201, the first message).`,
      '',
    );
  }
  const w = r.warm;
  if (w !== undefined) {
    const row = (name: string, t: LoadFigures | undefined) =>
      t === undefined ? `| ${name} | – | – | – | – | – |` : `| ${name} | ${Math.round(t.rps)} | ${f2(t.rps / w.direct.rps)} | ${f2(t.p50Ms)} | ${f2(t.p99Ms)} | ${t.errors} |`;
    const wrkRow = (name: string, t: LoadFigures | undefined) => (t === undefined ? [] : [`| ${name} (wrk) | ${Math.round(t.rps)} | – | ${f2(t.p50Ms)} | ${f2(t.p99Ms)} | ${t.errors} |`]);
    lines.push(
      `### Warm path: ${w.connections} connections, ${w.durationMs / 1000} s per target in turns taken in rotation (interleaved; wrk likewise, the median turn), POST of a small JSON body`,
      '',
      '| target (Node keep-alive client) | req/s | × direct | p50 ms | p99 ms | errors |',
      '| --- | ---: | ---: | ---: | ---: | ---: |',
      row('direct (instance socket)', w.direct),
      row('host forwarder (/i/, token)', w.forwarder),
      row('provider → host → instance (/s/)', w.provider),
      row('nginx → instance socket', w.nginx),
      ...wrkRow('host forwarder', w.wrk.forwarder),
      ...wrkRow('provider', w.wrk.provider),
      ...wrkRow('nginx', w.wrk.nginx),
      '',
    );
    if (w.nginx !== undefined) {
      lines.push(
        `Provider path vs nginx (Node client): throughput ${f2(w.provider.rps / w.nginx.rps)}×, p50 ${f2(w.provider.p50Ms / w.nginx.p50Ms)}×, p99 ${f2(w.provider.p99Ms / w.nginx.p99Ms)}×; p50 added over direct ${f2(w.provider.p50Ms - w.direct.p50Ms)} ms (nginx ${f2(w.nginx.p50Ms - w.direct.p50Ms)} ms). The provider path has two hops (provider, host forwarder), nginx one.`,
        '',
      );
    }
  }
  if (r.spread.length > 0) {
    const kinds = FLOOR_KINDS.filter((f) => r.spread.every((s) => s.floor[f] !== undefined));
    const floorName: Record<FloorKind, string> = { plain: 'plain node children', runc: 'runc driver alone' };
    const last = r.spread.at(-1)!;
    const phaseNames = [...new Set(r.spread.flatMap((s) => Object.keys(s.slowestPhases)))];
    lines.push(
      '### Deploying one service to several hosts at once (spread, warm caches, 3 runs, median)',
      '',
      '| hosts | wall ms | runs | × one host | slowest host plan-to-ready ms | wall − slowest host ms |',
      '| ---: | ---: | --- | ---: | ---: | ---: |',
      ...r.spread.map(
        (s) => `| ${s.hosts} | ${Math.round(s.wallMs)} | ${s.runsMs.map((x) => Math.round(x)).join(', ')} | ${f2(s.ratio)} | ${Math.round(s.slowestHostMs)} | ${Math.round(s.wallMs - s.slowestHostMs)} |`,
      ),
      '',
      `8 hosts / 1 host = **${f2(last.ratio)}** (goal ≤ 1.5). The last column is what the provider adds on top of the slowest host.`,
      '',
    );
    if (kinds.length > 0) {
      lines.push(
        `#### The machine's floor: the same N started at once without Shoal (same run, interleaved, 3 runs each, median)`,
        '',
        "Plain: N `node server.mjs` children of the image's own files (clean env, uid 65534). runc: N containers of the hosts' own unpacked layers, the plan's resources, started by the runc driver alone as the hosts start them (overlay mount, shim, `runc run -d`), no host agent, no provider. Each is ready at its first 200 on GET /healthz; wall = go → the last one ready. Before every timed start (Shoal's or a floor's) the bench waits until the CPUs are idle, so one run's teardown and pre-created containers do not land in the next. A floor's own × N=1 is what this machine allows any launcher; Shoal / floor is what the host agent and the provider add at that N.",
        '',
        `| N | Shoal wall ms | × N=1 | ${kinds.map((f) => `${floorName[f]} ms | × N=1`).join(' | ')} | ${kinds.map((f) => `Shoal / ${f}`).join(' | ')} |`,
        `| ---: | ---: | ---: | ${kinds.map(() => '---: | ---:').join(' | ')} | ${kinds.map(() => '---:').join(' | ')} |`,
        ...r.spread.map(
          (s) =>
            `| ${s.hosts} | ${Math.round(s.wallMs)} | ${f2(s.ratio)} | ${kinds.map((f) => `${Math.round(s.floor[f]!.wallMs)} (${s.floor[f]!.runsMs.map((x) => Math.round(x)).join(', ')}) | ${f2(s.floor[f]!.ratio)}`).join(' | ')} | ${kinds.map((f) => f2(s.wallMs / s.floor[f]!.wallMs)).join(' | ')} |`,
        ),
        '',
        `At 8: Shoal ${f2(last.ratio)}× its one-host time; the machine alone ${kinds.map((f) => `${f2(last.floor[f]!.ratio)}× (${f})`).join(', ')}. Shoal's 8-host time is ${kinds.map((f) => `${f2(last.wallMs / last.floor[f]!.wallMs)}× the ${f} floor's`).join(' and ')} (at 1: ${kinds.map((f) => `${f2(r.spread[0]!.wallMs / r.spread[0]!.floor[f]!.wallMs)}×`).join(', ')}).`,
        '',
        "The slowest host's phases (median ms):",
        '',
        `| N | ${phaseNames.join(' | ')} |`,
        `| ---: | ${phaseNames.map(() => '---:').join(' | ')} |`,
        ...r.spread.map((s) => `| ${s.hosts} | ${phaseNames.map((p) => (s.slowestPhases[p] === undefined ? '–' : f1(s.slowestPhases[p]!))).join(' | ')} |`),
        '',
      );
    }
  }
  lines.push(...r.notes.map((n) => `- ${n}`));
  return lines.join('\n');
}

/** For bench/compare.ts: the cold share (with its paired runs), the warm ratios, the spread ratio. */
export function providerFigures(r: ProviderBenchResult): Figure[] {
  const out: Figure[] = [];
  const c = r.cold;
  if (c !== undefined) {
    const paired = c.samples.provider.map((p, i) => p - (c.samples.direct[i] ?? NaN)).filter((x) => Number.isFinite(x));
    out.push(fig('provider.cold.added-ms', "provider's share of a cold start", c.addedMs, 'ms', 'lower', paired));
    out.push(fig('provider.cold.provider-ms', 'cold first message through the provider', c.providerMs, 'ms', 'lower', c.samples.provider));
  }
  const w = r.warm;
  if (w !== undefined) {
    out.push(fig('provider.warm.rps-vs-direct', 'warm path throughput × direct (Node client)', w.provider.rps / w.direct.rps, 'ratio', 'higher'));
    out.push(fig('provider.warm.added-p50-ms', 'warm path p50 added over direct (Node client)', w.provider.p50Ms - w.direct.p50Ms, 'ms', 'lower'));
    if (w.nginx !== undefined) out.push(fig('provider.warm.rps-vs-nginx', 'warm path throughput × nginx (Node client)', w.provider.rps / w.nginx.rps, 'ratio', 'higher'));
    if (w.wrk.provider !== undefined && w.wrk.nginx !== undefined) out.push(fig('provider.warm.wrk-rps-vs-nginx', 'warm path throughput × nginx (wrk)', w.wrk.provider.rps / w.wrk.nginx.rps, 'ratio', 'higher'));
  }
  const last = r.spread.at(-1);
  if (last !== undefined && r.spread.length > 1) {
    out.push(fig(`provider.spread.${last.hosts}-vs-1`, `deploy to ${last.hosts} hosts × one host`, last.ratio, 'ratio', 'lower'));
    const runcFloor = last.floor.runc;
    if (runcFloor !== undefined) out.push(fig(`provider.spread.${last.hosts}-vs-runc-floor`, `deploy to ${last.hosts} hosts × the runc floor`, last.wallMs / runcFloor.wallMs, 'ratio', 'lower'));
  }
  return out;
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const role = args.find((a) => a.startsWith('--role='))?.slice('--role='.length);
  if (role === 'farm') await runFarm(args[1]!, !args.includes('--no-warm-pool'));
  else {
    const flag = (name: string): number | undefined => {
      const i = args.indexOf(name);
      return i === -1 ? undefined : Number(args[i + 1]);
    };
    const onlyAt = args.indexOf('--only');
    const only = onlyAt === -1 ? undefined : (args[onlyAt + 1]!.split(',') as ProviderBenchSection[]);
    const result = await runProviderBench({
      runs: flag('--runs'),
      durationMs: flag('--duration-ms'),
      connections: flag('--connections'),
      ...(only ? { only } : {}),
      ...(args.includes('--no-warm-pool') ? { warmPool: false } : {}),
    });
    console.log(formatProviderBench(result));
  }
}
