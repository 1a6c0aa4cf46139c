// Cold start on a host whose layer cache is warm: a plan received → the instance ready
// (the host's whole path: admit, mount, create, start, readiness), against the same
// echo service started as a plain child process with a clean environment, alternating,
// in one run, interleaved. The headline is a service's FIRST deployment (a new service
// name each run, on the default host with its warm pool): what a cold service pays. The
// same service deployed again (the warm pool's pre-created container for it) and the
// host without a pool are secondary figures. Goal (issue 12): first deployment ≤ 1.2×.
// A host without the pool nor runc's hardening (user namespace + id-mapped layers, a
// bounded tmpfs root) shows what the hardening adds (issue 10: ≤ 1.3×).
//   node bench/host-deploy.ts [--n 10]   (root + runc)
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { buildImage, buildNodeTemplate, createRegistryClient, startStore } from '../src/image/index.ts';
import { startHost, type Host } from '../src/host/index.ts';
import { parseImageRef } from '../src/protocol/image-ref.ts';
import { fig, type Figure } from './lib/figures.ts';

const ECHO = new URL('../examples/echo/rootfs', import.meta.url).pathname;
const TOKEN = 'bench-host-token-0123456789';

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function healthz(socketPath: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/healthz', method: 'GET' }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** The baseline: `node server.mjs` as a plain child with a clean environment, until /healthz answers 200. */
async function plainNodeStart(dir: string): Promise<number> {
  const sock = join(dir, `plain-${process.hrtime.bigint()}.sock`);
  const t0 = performance.now();
  const child = spawn(process.execPath, [join(ECHO, 'app/server.mjs')], { env: { SHOAL_LISTEN: sock }, stdio: 'ignore' });
  while ((await healthz(sock)) !== 200) await new Promise((r) => setTimeout(r, 1));
  const ms = performance.now() - t0;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
  return ms;
}

async function hostDeploy(host: Host, image: string, store: string, service = 'echo'): Promise<number> {
  const plan = {
    service: { name: service, version: '1' },
    image,
    store,
    resources: { memoryMb: 256, cpuMillis: 2000, pids: 64 },
  };
  const t0 = performance.now();
  const res = await fetch(`${host.controlUrl}/v1/instances`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(plan),
  });
  const body = (await res.json()) as { instance: { id: string } };
  const ms = performance.now() - t0;
  if (res.status !== 201) throw new Error(`deploy failed: ${res.status} ${JSON.stringify(body)}`);
  await fetch(`${host.controlUrl}/v1/instances/${body.instance.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } });
  return ms;
}

export interface HostDeployResult {
  n: number;
  plainMs: number[];
  /** A service never deployed on the host before (a new name each run): the headline. */
  firstMs: number[];
  /** The same service again: the pool's pre-created container for it. */
  pooledMs: number[];
  unpooledMs: number[];
  ratioFirst: number;
  /** No pool, no user namespace, no bounded root (the runc driver as it was). */
  plainRuncMs: number[];
  ratioPooled: number;
  ratioUnpooled: number;
  ratioPlainRunc: number;
}

export async function runHostDeployBench(options: { n?: number; log?: (m: string) => void } = {}): Promise<HostDeployResult> {
  const n = options.n ?? 10;
  const log = options.log ?? (() => undefined);
  const work = await mkdtemp(join(tmpdir(), 'shoal-bd-'));
  const store = await startStore({ dataDir: join(work, 'store') });
  const hosts: Host[] = [];
  try {
    const client = createRegistryClient({ baseUrl: store.url });
    const template = await buildNodeTemplate({ client });
    const image = await buildImage({
      client,
      source: ECHO,
      template: parseImageRef(template.name),
      ref: parseImageRef('echo:1'),
      owner: { uid: 0, gid: 0 },
      process: { cmd: ['/usr/local/bin/node', '/app/server.mjs'] },
    });
    const capacity = { memoryMb: 4096, cpuMillis: 8000, instances: 16 };
    const runcHost = async (dir: string, extra: Partial<Parameters<typeof startHost>[0]> = {}): Promise<Host> => {
      const h = await startHost({ dataDir: join(work, dir), listen: { host: '127.0.0.1', port: 0 }, token: TOKEN, capacity, driver: 'runc', ...extra });
      hosts.push(h);
      return h;
    };
    const pooled = await runcHost('hp');
    const unpooled = await runcHost('hu', { warmPool: { perImage: 0 } });
    const unhardened = await runcHost('hx', { warmPool: { perImage: 0 }, runc: { userNamespace: false, boundedRoot: false } });
    hosts.push(unhardened);
    // Warm the layer caches (and the pool) first: the figure is for a warm cache.
    await hostDeploy(pooled, image.reference, store.url);
    await hostDeploy(unpooled, image.reference, store.url);
    await hostDeploy(unhardened, image.reference, store.url);
    await plainNodeStart(work);
    const plainMs: number[] = [];
    const firstMs: number[] = [];
    const pooledMs: number[] = [];
    const unpooledMs: number[] = [];
    const plainRuncMs: number[] = [];
    const variants: Array<() => Promise<void>> = [
      async () => void plainMs.push(await plainNodeStart(work)),
      async () => void firstMs.push(await hostDeploy(pooled, image.reference, store.url, `first-${firstMs.length}`)),
      async () => void pooledMs.push(await hostDeploy(pooled, image.reference, store.url)),
      async () => void unpooledMs.push(await hostDeploy(unpooled, image.reference, store.url)),
      async () => void plainRuncMs.push(await hostDeploy(unhardened, image.reference, store.url)),
    ];
    for (let i = 0; i < n; i++) {
      // Rotate the order each run, so none always follows another's teardown.
      for (let k = 0; k < variants.length; k++) await variants[(i + k) % variants.length]!();
      log(
        `run ${i}: plain ${plainMs.at(-1)!.toFixed(0)} ms, first deployment ${firstMs.at(-1)!.toFixed(0)} ms, same service again ${pooledMs.at(-1)!.toFixed(0)} ms, unpooled ${unpooledMs.at(-1)!.toFixed(0)} ms, unhardened ${plainRuncMs.at(-1)!.toFixed(0)} ms`,
      );
    }
    return {
      n,
      plainMs,
      firstMs,
      pooledMs,
      unpooledMs,
      ratioFirst: median(firstMs) / median(plainMs),
      plainRuncMs,
      ratioPooled: median(pooledMs) / median(plainMs),
      ratioUnpooled: median(unpooledMs) / median(plainMs),
      ratioPlainRunc: median(plainRuncMs) / median(plainMs),
    };
  } finally {
    for (const h of hosts) await h.close({ stopInstances: true });
    await store.close();
    await rm(work, { recursive: true, force: true });
  }
}

export function formatHostDeployBench(r: HostDeployResult): string {
  const row = (name: string, xs: number[], ratio?: number) =>
    `| ${name} | ${Math.min(...xs).toFixed(0)} | ${median(xs).toFixed(0)} | ${Math.max(...xs).toFixed(0)} | ${ratio === undefined ? '1.00' : ratio.toFixed(2)} |`;
  return [
    `n = ${r.n} each, interleaved (the order rotates each run); host: runc driver, warm layer cache, cpuMillis 2000; baseline: \`node server.mjs\`, clean env, until /healthz answers.`,
    '',
    '| path | min ms | median ms | max ms | × baseline |',
    '|---|---|---|---|---|',
    row('plain node child (baseline)', r.plainMs),
    row("host plan → ready, a service's first deployment (default host)", r.firstMs, r.ratioFirst),
    row('host plan → ready, the same service again (warm pool)', r.pooledMs, r.ratioPooled),
    row('host plan → ready, no pool (runc run)', r.unpooledMs, r.ratioUnpooled),
    row('same, without user namespace nor bounded root', r.plainRuncMs, r.ratioPlainRunc),
    '',
    `**A service's first deployment: ${r.ratioFirst.toFixed(2)}× a plain process start** (goal ≤ 1.2×). The same service deployed again, from the warm pool: ${r.ratioPooled.toFixed(2)}×.`,
    `The hardening (user namespace, bounded root) adds ${(r.ratioUnpooled - r.ratioPlainRunc).toFixed(2)}× of a plain start without the pool (issue 10: cold start ≤ 1.3×).`,
  ].join('\n');
}

/** For bench/compare.ts; the first deployment is the headline. */
export function hostDeployFigures(r: HostDeployResult): Figure[] {
  return [
    fig('host-start.first.ratio', "a service's first deployment × plain process", r.ratioFirst, 'ratio', 'lower'),
    fig('host-start.first.ms', "a service's first deployment, plan → ready", median(r.firstMs), 'ms', 'lower', r.firstMs),
    fig('host-start.pooled.ratio', 'the same service again (warm pool) × plain process', r.ratioPooled, 'ratio', 'lower'),
    fig('host-start.unpooled.ratio', 'no pool × plain process', r.ratioUnpooled, 'ratio', 'lower'),
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const at = process.argv.indexOf('--n');
  const r = await runHostDeployBench({ ...(at > 0 ? { n: Number(process.argv[at + 1]) } : {}), log: (m) => process.stderr.write(`${m}\n`) });
  console.log(formatHostDeployBench(r));
}
