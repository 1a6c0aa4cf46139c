// Cold start on a host whose layer cache is warm: a plan received → the instance ready
// (the host's whole path: admit, mount, create, start, readiness), against the same
// echo service started as a plain child process with a clean environment, alternating,
// in one run. Measured with the host's warm pool (pre-created containers, the default)
// and without it, and without the pool nor runc's hardening (user namespace + id-mapped
// layers, a bounded tmpfs root) to show what the hardening adds. Goal: ≤ 1.3× the
// plain-node baseline.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { buildImage, buildNodeTemplate, createRegistryClient, startStore } from '../src/image/index.ts';
import { startHost, type Host } from '../src/host/index.ts';
import { parseImageRef } from '../src/protocol/image-ref.ts';

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

async function hostDeploy(host: Host, image: string, store: string): Promise<number> {
  const plan = {
    service: { name: 'echo', version: '1' },
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
  pooledMs: number[];
  unpooledMs: number[];
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
    const pooled = await startHost({ dataDir: join(work, 'hp'), listen: { host: '127.0.0.1', port: 0 }, token: TOKEN, capacity, driver: 'runc' });
    hosts.push(pooled);
    const unpooled = await startHost({
      dataDir: join(work, 'hu'),
      listen: { host: '127.0.0.1', port: 0 },
      token: TOKEN,
      capacity,
      driver: 'runc',
      warmPool: { perImage: 0 },
    });
    hosts.push(unpooled);
    const unhardened = await startHost({
      dataDir: join(work, 'hx'),
      listen: { host: '127.0.0.1', port: 0 },
      token: TOKEN,
      capacity,
      driver: 'runc',
      warmPool: { perImage: 0 },
      runc: { userNamespace: false, boundedRoot: false },
    });
    hosts.push(unhardened);
    // Warm the layer caches (and the pool) first: the figure is for a warm cache.
    await hostDeploy(pooled, image.reference, store.url);
    await hostDeploy(unpooled, image.reference, store.url);
    await hostDeploy(unhardened, image.reference, store.url);
    await plainNodeStart(work);
    const plainMs: number[] = [];
    const pooledMs: number[] = [];
    const unpooledMs: number[] = [];
    const plainRuncMs: number[] = [];
    for (let i = 0; i < n; i++) {
      plainMs.push(await plainNodeStart(work));
      pooledMs.push(await hostDeploy(pooled, image.reference, store.url));
      unpooledMs.push(await hostDeploy(unpooled, image.reference, store.url));
      plainRuncMs.push(await hostDeploy(unhardened, image.reference, store.url));
      log(
        `run ${i}: plain ${plainMs.at(-1)!.toFixed(0)} ms, pooled ${pooledMs.at(-1)!.toFixed(0)} ms, unpooled ${unpooledMs.at(-1)!.toFixed(0)} ms, unhardened ${plainRuncMs.at(-1)!.toFixed(0)} ms`,
      );
    }
    return {
      n,
      plainMs,
      pooledMs,
      unpooledMs,
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
    `n = ${r.n} each, alternating; host: runc driver, warm layer cache, cpuMillis 2000; baseline: \`node server.mjs\`, clean env, until /healthz answers.`,
    '',
    '| path | min ms | median ms | max ms | × baseline |',
    '|---|---|---|---|---|',
    row('plain node child (baseline)', r.plainMs),
    row('host plan → ready, warm pool (default)', r.pooledMs, r.ratioPooled),
    row('host plan → ready, no pool (runc run)', r.unpooledMs, r.ratioUnpooled),
    row('same, without user namespace nor bounded root', r.plainRuncMs, r.ratioPlainRunc),
    '',
    `**Goal ≤ 1.3×: ${r.ratioPooled.toFixed(2)}× with the pool.** The hardening adds ${(r.ratioUnpooled - r.ratioPlainRunc).toFixed(2)}× of a plain start without the pool.`,
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runHostDeployBench({ log: (m) => process.stderr.write(`${m}\n`) });
  console.log(formatHostDeployBench(r));
}
