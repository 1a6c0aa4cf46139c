// Scale past this machine by simulation (issue 12, goal 4): what the provider costs per host
// and per deployment with 10, 100 and 1,000 hosts. The hosts are simulated: the provider
// tests' fake host agents (test/provider/fixtures/fake-host.ts: the host control API, its
// event stream and a data plane answering Echo, each on its own loopback port), all in one
// child process, whose deployments take a start time drawn from the measured distribution
// of a real runc host's first deployment (bench/report.md, host-start: plan → ready median
// 285 ms, range 262–306 ms over 10 runs on the quiet machine: a log-normal with σ 0.055).
// No containers; the simulated start lives only here, never in src/.
//
// The provider runs in a child of its own, so its CPU (from /proc) is its alone; its
// registry is wrapped to count the write calls (SQLite by default; PostgreSQL when
// SHOAL_TEST_DATABASE_URL names a server, scripts/start-postgres.sh).
// Per N: register N hosts (time); idle for IDLE_MS (provider CPU per host per second: reports
// and event streams); then D = N deployments: N services registered, then the first
// message to each sent at once (at most 64 in flight), each a cold start the provider
// places, deploys, records and routes. Figures: wall time, provider CPU per deployment,
// registry writes per deployment.
//   node bench/scale.ts [--hosts 10,100,1000] [--postgres]
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { fig, type Figure } from './lib/figures.ts';
import { cpuMsOf, startBenchChild, stopChild } from './lib/peers.ts';

const SELF = fileURLToPath(import.meta.url);
const JOIN = 'bench-join-token';
const IDLE_MS = 5000;
const IN_FLIGHT = 64;
/** The measured first-deployment start on a runc host (bench/report.md, host-start). */
const START_MEDIAN_MS = 285;
const START_SIGMA = 0.055;

const WRITES = new Set([
  'putService',
  'removeService',
  'upsertHost',
  'recordHostReport',
  'recordHostReports',
  'removeHost',
  'markHosts',
  'claimDeployment',
  'renewClaim',
  'createDeployment',
  'updateDeployment',
  'appendEvent',
  'createApiToken',
  'revokeApiToken',
  'appendAudit',
]);
/** Writes the hosts cause whether or not anything is deployed. */
const HOST_WRITES = new Set(['recordHostReport', 'recordHostReports', 'markHosts', 'upsertHost']);

export interface ScaleRow {
  hosts: number;
  database: 'sqlite' | 'postgres';
  registerMs: number;
  /** Provider CPU while idle, per host, in ms per second. */
  idleCpuMsPerHostPerS: number;
  deployments: number;
  deployWallMs: number;
  /** Median consumer-seen time of a first message (cold start through the provider). */
  firstMessageP50Ms: number;
  firstMessageP99Ms: number;
  cpuMsPerDeployment: number;
  /** Registry write calls during the deployments, per deployment: all, and without the hosts' reports. */
  writesPerDeployment: number;
  deploymentWritesPerDeployment: number;
  writes: Record<string, number>;
  failed: number;
}

export interface ScaleResult {
  rows: ScaleRow[];
  notes: string[];
}

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

/** One line of JSON in, one out: the provider child's control channel. */
function channel(child: ChildProcess): (cmd: string) => Promise<any> {
  const lines = createInterface({ input: child.stdout! });
  const waiting: Array<(line: string) => void> = [];
  lines.on('line', (line) => waiting.shift()?.(line));
  return (cmd) =>
    new Promise((resolve) => {
      waiting.push((line) => resolve(JSON.parse(line)));
      child.stdin!.write(`${cmd}\n`);
    });
}

export async function runScaleBench(options: { hosts?: number[]; postgresUrl?: string; log?: (line: string) => void } = {}): Promise<ScaleResult> {
  const log = options.log ?? ((line: string) => process.stderr.write(`[scale] ${line}\n`));
  const counts = options.hosts ?? [10, 100, 1000];
  const rows: ScaleRow[] = [];
  const notes: string[] = [];
  for (const n of counts) {
    const dir = await mkdtemp(join(tmpdir(), 'ssc-'));
    const children: ChildProcess[] = [];
    /** What was measured before a failure, for the note. */
    const partial: string[] = [];
    try {
      log(`${n} hosts: starting the simulated hosts and the provider`);
      const hostsChild = await startBenchChild(SELF, ['--role=hosts', String(n)], true);
      children.push(hostsChild);
      const hosts = JSON.parse(hostsChild.ready!) as { storeUrl: string; hosts: Array<{ controlUrl: string; token: string }> };
      const providerChild = await startBenchChild(SELF, ['--role=provider', dir, hosts.storeUrl, options.postgresUrl ?? ''], true);
      children.push(providerChild);
      const { url, admin } = JSON.parse(providerChild.ready!) as { url: string; admin: string };
      const ask = channel(providerChild);
      const pid = providerChild.pid!;
      const api = async (method: string, path: string, body: unknown, token = admin): Promise<unknown> => {
        const res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
        const text = await res.text();
        if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
        return JSON.parse(text);
      };

      const r0 = performance.now();
      let registered = 0;
      await pool(hosts.hosts, 16, async (h) => {
        await api('POST', '/api/v1/hosts', { controlUrl: h.controlUrl, token: h.token }, JOIN);
        if (++registered % 100 === 0) log(`${n} hosts: ${registered} registered after ${Math.round((performance.now() - r0) / 1000)} s`);
      });
      const registerMs = performance.now() - r0;
      partial.push(`${n} hosts registered in ${Math.round(registerMs)} ms`);

      const idle0 = await cpuMsOf(pid);
      await new Promise((r) => setTimeout(r, IDLE_MS));
      const idleCpuMsPerHostPerS = ((await cpuMsOf(pid)) - idle0) / (IDLE_MS / 1000) / n;
      partial.push(`idle provider CPU ${idleCpuMsPerHostPerS.toFixed(2)} ms/s per host (${(idleCpuMsPerHostPerS * n).toFixed(0)} ms/s in all)`);
      log(`${n} hosts: ${partial.join('; ')}`);

      const services = Array.from({ length: n }, (_, i) => `s${i}`);
      await pool(services, 16, (name) =>
        api('POST', '/api/v1/services', {
          name,
          version: '1',
          image: 'echo:1',
          operations: { Echo: { input: { type: 'object' }, output: { type: 'object' }, idempotent: true } },
          access: 'public',
          resources: { memoryMb: 64, cpuMillis: 100, pids: 16 },
          scaling: { idleTimeoutMs: 3_600_000 },
        }),
      );

      log(`${n} hosts: ${n} first messages, ${IN_FLIGHT} at a time`);
      const before = (await ask('writes')) as Record<string, number>;
      const cpu0 = await cpuMsOf(pid);
      const d0 = performance.now();
      const latencies: number[] = [];
      let failed = 0;
      await pool(services, IN_FLIGHT, async (name) => {
        const t0 = performance.now();
        const res = await fetch(`${url}/s/${name}/Echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"message":"hi"}' });
        await res.arrayBuffer();
        if (res.status === 200) latencies.push(performance.now() - t0);
        else failed++;
      });
      const deployWallMs = performance.now() - d0;
      const cpuMs = (await cpuMsOf(pid)) - cpu0;
      const after = (await ask('writes')) as Record<string, number>;
      const writes = Object.fromEntries(Object.keys(after).map((k) => [k, (after[k] ?? 0) - (before[k] ?? 0)]).filter(([, v]) => (v as number) > 0));
      const total = Object.values(writes).reduce((a: number, b) => a + (b as number), 0);
      const ofDeploys = Object.entries(writes).reduce((a, [k, v]) => a + (HOST_WRITES.has(k) ? 0 : (v as number)), 0);
      if (failed > 0) notes.push(`${n} hosts: ${failed} of ${n} first messages failed`);
      rows.push({
        hosts: n,
        database: options.postgresUrl ? 'postgres' : 'sqlite',
        registerMs,
        idleCpuMsPerHostPerS,
        deployments: n,
        deployWallMs,
        firstMessageP50Ms: quantile(latencies, 0.5),
        firstMessageP99Ms: quantile(latencies, 0.99),
        cpuMsPerDeployment: cpuMs / n,
        writesPerDeployment: total / n,
        deploymentWritesPerDeployment: ofDeploys / n,
        writes: writes as Record<string, number>,
        failed,
      });
      log(`${n} hosts: ${Math.round(deployWallMs)} ms for ${n} deployments, ${(cpuMs / n).toFixed(2)} ms provider CPU each, ${(total / n).toFixed(1)} registry writes each`);
    } catch (e) {
      // A provider overwhelmed at this N is a finding, not a crash of the whole bench.
      notes.push(`${n} hosts: did not complete (${partial.join('; ') || 'nothing measured'}): ${(e as Error).message.slice(0, 300)}`);
      log(`${n} hosts: did not complete: ${(e as Error).message}`);
    } finally {
      for (const c of children.reverse()) await stopChild(c, 20_000);
      await rm(dir, { recursive: true, force: true });
    }
  }
  return { rows, notes };
}

async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

export function formatScaleBench(r: ScaleResult): string {
  const f1 = (n: number): string => n.toFixed(1);
  const f2 = (n: number): string => n.toFixed(2);
  const lines = [
    `Simulated hosts (the provider tests' fake host agents, each on its own loopback ports, all in one process), deployments taking a start drawn from the measured runc first-deployment distribution (log-normal, median ${START_MEDIAN_MS} ms, σ ${START_SIGMA}); the provider in its own process (CPU from /proc); N services, the first message to each sent ${IN_FLIGHT} at a time, each a cold start. The machine is shared: wall times include waiting for CPU; CPU per deployment and writes per deployment are the figures to read.`,
    '',
    '| hosts | registry | register N hosts ms | idle provider CPU ms/s per host | N deployments wall ms | first message p50 / p99 ms | provider CPU ms per deployment | registry writes per deployment (all / without host reports) | failed |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...r.rows.map(
      (x) =>
        `| ${x.hosts} | ${x.database} | ${Math.round(x.registerMs)} | ${f2(x.idleCpuMsPerHostPerS)} | ${Math.round(x.deployWallMs)} | ${Math.round(x.firstMessageP50Ms)} / ${Math.round(x.firstMessageP99Ms)} | ${f1(x.cpuMsPerDeployment)} | ${f1(x.writesPerDeployment)} / ${f1(x.deploymentWritesPerDeployment)} | ${x.failed} |`,
    ),
    '',
    'Registry writes during the deployments, by call:',
    '',
    ...r.rows.map((x) => `- ${x.hosts} hosts: ${Object.entries(x.writes).map(([k, v]) => `${k} ${v}`).join(', ')}`),
    ...r.notes.map((n) => `- ${n}`),
  ];
  return lines.join('\n');
}

export function scaleFigures(r: ScaleResult): Figure[] {
  return r.rows.flatMap((x) => [
    fig(`scale.${x.database}.${x.hosts}.cpu-ms-per-deployment`, `provider CPU per deployment, ${x.hosts} hosts (${x.database})`, x.cpuMsPerDeployment, 'ms', 'lower'),
    fig(`scale.${x.database}.${x.hosts}.writes-per-deployment`, `registry writes per deployment, ${x.hosts} hosts (${x.database})`, x.writesPerDeployment, 'rate', 'lower'),
  ]);
}

// ---- children ----

async function runHosts(n: number): Promise<void> {
  const { startFakeHost, startTinyStore } = await import('../test/provider/fixtures/fake-host.ts');
  const store = await startTinyStore();
  const hosts: Array<Awaited<ReturnType<typeof startFakeHost>>> = [];
  for (let i = 0; i < n; i++) {
    const h = await startFakeHost({ id: `sim-${i}`, capacity: { memoryMb: 65536, cpuMillis: 64000, instances: 64 } });
    // Each deployment draws its start time (the fake host reads deployMs when a plan arrives).
    Object.defineProperty(h, 'deployMs', { get: drawStartMs });
    hosts.push(h);
  }
  process.on('SIGTERM', () => void Promise.all(hosts.map((h) => h.close())).then(() => store.close()).then(() => process.exit(0)));
  process.stdout.write(`${JSON.stringify({ storeUrl: store.url, hosts: hosts.map((h) => ({ controlUrl: h.controlUrl, token: h.token })) })}\n`);
}

/** Log-normal around the measured median (Box–Muller). */
function drawStartMs(): number {
  const u = 1 - Math.random();
  const v = Math.random();
  const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  return Math.round(START_MEDIAN_MS * Math.exp(START_SIGMA * z));
}

async function runProvider(dir: string, storeUrl: string, postgresUrl: string): Promise<void> {
  const { startProvider, openRegistry } = await import('../src/provider/index.ts');
  const { createApiToken } = await import('../src/provider/auth/index.ts');
  let dbUrl = join(dir, 'shoal.db');
  let dropDb: (() => Promise<void>) | undefined;
  if (postgresUrl !== '') {
    const { postgresDatabases } = await import('../test/provider/registry/fixtures/databases.ts');
    const dbs = await postgresDatabases(postgresUrl);
    dbUrl = await dbs.newUrl();
    dropDb = () => dbs.cleanup();
  }
  const registry = await openRegistry({ url: dbUrl });
  const writes: Record<string, number> = {};
  const counted = new Proxy(registry, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver) as unknown;
      if (typeof name !== 'string' || typeof value !== 'function' || !WRITES.has(name)) return value;
      return (...args: unknown[]) => {
        writes[name] = (writes[name] ?? 0) + 1;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, registry: counted, storeUrl, joinToken: JOIN });
  const admin = (await createApiToken(registry, { role: 'admin' })).secret;
  process.on('SIGTERM', () => void provider.close().then(() => dropDb?.()).then(() => process.exit(0)));
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() === 'writes') process.stdout.write(`${JSON.stringify(writes)}\n`);
  });
  process.stdout.write(`${JSON.stringify({ url: provider.url, admin })}\n`);
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const role = args.find((a) => a.startsWith('--role='))?.slice('--role='.length);
  if (role === 'hosts') await runHosts(Number(args[1]));
  else if (role === 'provider') await runProvider(args[1]!, args[2]!, args[3] ?? '');
  else {
    const i = args.indexOf('--hosts');
    const hosts = i === -1 ? undefined : args[i + 1]!.split(',').map(Number);
    const postgresUrl = args.includes('--postgres') ? process.env.SHOAL_TEST_DATABASE_URL : undefined;
    if (args.includes('--postgres') && postgresUrl === undefined) throw new Error('--postgres needs SHOAL_TEST_DATABASE_URL (scripts/start-postgres.sh prints it)');
    const result = await runScaleBench({ ...(hosts ? { hosts } : {}), ...(postgresUrl ? { postgresUrl } : {}) });
    console.log(formatScaleBench(result));
  }
}
