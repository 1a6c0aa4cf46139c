// Two faults under load, loopback only, bounded in time (issue 10, item 7):
//
//  up-restart   `shoal up` (a provider and a host in one process, its own database and data
//               dir, a fixed provider port) serving echo under load is killed with SIGKILL
//               and started again 2 s later on the same database, data dir and port.
//  host-kill    three hosts, each its own process, and a provider (in this process);
//               echo runs on one of them (min 1); that host's process is killed with
//               SIGKILL while messages flow.
//
// For each: the count of every outcome (200, each error status, refused connections), the
// outage (from the kill to the first 200 after it; for up-restart also from the provider
// accepting again to the first 200), and how many 502s named an address that no longer
// answered. Load: `--connections` closed-loop clients, each message with a 10 s deadline.
//   node bench/faults.ts [--connections 4] [--only up-restart,host-kill]   (root + runc)
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startBenchChild, stopChild, type BenchChild } from './lib/peers.ts';

const SELF = fileURLToPath(import.meta.url);
const TOKEN = 'bench-host-token';
const JOIN = 'bench-join-token';
const BODY = '{"message":"hello from the fault bench"}';
const log = (line: string) => process.stderr.write(`[faults] ${line}\n`);

export interface FaultFigures {
  fault: 'up-restart' | 'host-kill';
  /** Messages answered (any outcome) from the kill on. */
  messages: number;
  /** outcome → count, from the kill on: '200', '502', '503', 'refused' (no provider listening), 'timeout', … */
  outcomes: Record<string, number>;
  /** The longest time, from the kill on, in which no 200 was answered (ms). */
  outageMs: number;
  /** The slowest message answered after the kill (ms): how long a message waited for an instance. */
  maxLatencyMs: number;
  /** up-restart: from the restarted provider accepting connections to the first 200 (ms). */
  afterAcceptMs?: number;
  /** 502s whose message names a host address that did not answer (a stale or dead address). */
  staleAddress502: number;
}

export interface FaultsResult {
  connections: number;
  faults: FaultFigures[];
}

interface Outcome {
  /** Sent, and answered (performance.now()). */
  at: number;
  end: number;
  outcome: string;
  message?: string;
}

/** Closed-loop load until stop(): every outcome with its time. */
function load(url: string, connections: number, token: string): { outcomes: Outcome[]; stop(): Promise<void> } {
  const outcomes: Outcome[] = [];
  let stopped = false;
  const worker = async () => {
    while (!stopped) {
      const at = performance.now();
      try {
        const r = await fetch(url, { method: 'POST', body: BODY, headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) });
        const text = await r.text();
        outcomes.push({ at, end: performance.now(), outcome: String(r.status), ...(r.status === 200 ? {} : { message: text.slice(0, 300) }) });
      } catch (e) {
        const err = e as Error & { cause?: { code?: string } };
        const outcome = err.name === 'TimeoutError' ? 'timeout' : err.cause?.code === 'ECONNREFUSED' ? 'refused' : `error ${err.cause?.code ?? err.name}`;
        outcomes.push({ at, end: performance.now(), outcome });
        if (outcome === 'refused') await new Promise((r) => setTimeout(r, 20)); // nothing listens: do not spin
      }
    }
  };
  const workers = Array.from({ length: connections }, worker);
  return {
    outcomes,
    async stop() {
      stopped = true;
      await Promise.all(workers);
    },
  };
}

function figures(fault: FaultFigures['fault'], all: Outcome[], killedAt: number, acceptedAt?: number): FaultFigures {
  // Every message answered from the kill on, also those sent just before it (they waited through it).
  const after = all.filter((o) => o.end >= killedAt);
  const outcomes: Record<string, number> = {};
  for (const o of after) outcomes[o.outcome] = (outcomes[o.outcome] ?? 0) + 1;
  const oks = all.filter((o) => o.outcome === '200' && o.end >= killedAt).map((o) => o.end).sort((a, b) => a - b);
  let outage = 0;
  let prev = killedAt;
  for (const end of oks) {
    outage = Math.max(outage, end - prev);
    prev = end;
  }
  const firstOkAfterAccept = acceptedAt === undefined ? undefined : after.filter((o) => o.outcome === '200' && o.at >= acceptedAt).sort((a, b) => a.end - b.end)[0];
  return {
    fault,
    messages: after.length,
    outcomes,
    outageMs: oks.length === 0 ? Number.NaN : outage,
    maxLatencyMs: Math.max(0, ...after.map((o) => o.end - o.at)),
    ...(acceptedAt === undefined ? {} : { afterAcceptMs: firstOkAfterAccept === undefined ? Number.NaN : firstOkAfterAccept.end - acceptedAt }),
    staleAddress502: after.filter((o) => o.outcome === '502' && /unreachable|ECONNREFUSED|not answering/.test(o.message ?? '')).length,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`faults bench: ${what} not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

async function accepting(url: string): Promise<boolean> {
  try {
    await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(500) });
    return true;
  } catch {
    return false;
  }
}

const echoService = (placement?: unknown) => ({
  name: 'echo',
  version: '1',
  image: 'echo:1',
  operations: { Echo: { input: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] }, output: { type: 'object' }, idempotent: true } },
  resources: { memoryMb: 64, cpuMillis: 500, pids: 32 },
  scaling: { min: 1, idleTimeoutMs: 600_000 },
  ...(placement === undefined ? {} : { placement }),
});

async function api(base: string, token: string, method: string, path: string, body?: unknown): Promise<unknown> {
  const r = await fetch(`${base}${path}`, { method, headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text === '' ? undefined : JSON.parse(text);
}

async function upRestart(dir: string, storeUrl: string, connections: number): Promise<FaultFigures> {
  const port = await freePort();
  const args = ['--role=up', join(dir, 'up'), String(port), storeUrl];
  let up: BenchChild = await startBenchChild(SELF, args);
  const url = `http://127.0.0.1:${port}`;
  // The first start's admin token (in the provider's database, so it outlives the restart).
  const token = (JSON.parse(up.ready!) as { token: string }).token;
  try {
    await api(url, token, 'POST', '/api/v1/services', echoService());
    let last = 'nothing yet';
    await until(
      'echo answers',
      async () => {
        const r = await fetch(`${url}/s/echo/Echo`, { method: 'POST', body: BODY, headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` } }).catch((e: unknown) => String(e));
        if (typeof r === 'string') last = r;
        else last = `${r.status} ${(await r.text()).slice(0, 300)}`;
        return last.startsWith('200 ');
      },
      120_000,
    ).catch((e: unknown) => {
      throw new Error(`${(e as Error).message}; last answer: ${last}`);
    });
    const l = load(`${url}/s/echo/Echo`, connections, token);
    await sleep(2000);
    log('up-restart: kill -9 of the up process');
    const killedAt = performance.now();
    up.kill('SIGKILL');
    await new Promise((r) => up.once('exit', r));
    await sleep(2000);
    up = await startBenchChild(SELF, args);
    await until('the provider accepts', () => accepting(url), 60_000);
    const acceptedAt = performance.now();
    await until('a reply after the restart', () => l.outcomes.some((o) => o.at >= acceptedAt && o.outcome === '200'), 60_000);
    await sleep(3000);
    await l.stop();
    return figures('up-restart', l.outcomes, killedAt, acceptedAt);
  } finally {
    await stopChild(up);
  }
}

async function hostKill(dir: string, storeUrl: string, connections: number): Promise<FaultFigures> {
  const { startProvider } = await import('../src/provider/index.ts');
  const hosts: BenchChild[] = [];
  const infos: Array<{ hostId: string; controlUrl: string }> = [];
  for (let i = 0; i < 3; i++) {
    const c = await startBenchChild(SELF, ['--role=host', join(dir, `h${i}`)]);
    hosts.push(c);
    infos.push(JSON.parse(c.ready!) as { hostId: string; controlUrl: string });
  }
  const provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database: join(dir, 'p.db'), storeUrl, joinToken: JOIN });
  let restarted: BenchChild | undefined;
  try {
    for (const h of infos) await provider.registerHost({ controlUrl: h.controlUrl, token: TOKEN });
    await provider.registerService(echoService({ policy: 'host-list', hosts: [infos[2]!.hostId, infos[1]!.hostId, infos[0]!.hostId] }));
    await until('echo on the third host', () => provider.table.endpoints('echo').some((e) => e.hostId === infos[2]!.hostId), 120_000);
    const { createApiToken } = await import('../src/provider/auth/index.ts');
    const l = load(`${provider.url}/s/echo/Echo`, connections, (await createApiToken(provider.registry, { role: 'invoke' })).secret);
    await sleep(2000);
    log('host-kill: kill -9 of the host running echo');
    const killedAt = performance.now();
    hosts[2]!.kill('SIGKILL');
    await until('a reply from another host', () => l.outcomes.some((o) => o.at >= killedAt && o.outcome === '200') && provider.table.endpoints('echo').some((e) => e.hostId !== infos[2]!.hostId), 60_000);
    await sleep(3000);
    await l.stop();
    return figures('host-kill', l.outcomes, killedAt);
  } finally {
    await provider.close();
    // The killed host's container lives on: a host on its data dir re-adopts it, and stopping it removes it.
    restarted = await startBenchChild(SELF, ['--role=host', join(dir, 'h2')]).catch((e: unknown) => {
      log(`restarting the killed host to clean up failed: ${String(e)}`);
      return undefined;
    });
    for (const c of [...hosts.slice(0, 2), ...(restarted ? [restarted] : [])]) await stopChild(c);
  }
}

export async function runFaultsBench(options: { connections?: number; only?: string[] } = {}): Promise<FaultsResult> {
  const connections = options.connections ?? 4;
  const want = (f: string) => options.only === undefined || options.only.includes(f);
  const dir = await mkdtemp(join(tmpdir(), 'sf-'));
  const store = await startBenchChild(SELF, ['--role=store']);
  const storeUrl = store.ready!;
  const faults: FaultFigures[] = [];
  try {
    if (want('up-restart')) faults.push(await upRestart(dir, storeUrl, connections));
    if (want('host-kill')) faults.push(await hostKill(dir, storeUrl, connections));
    return { connections, faults };
  } finally {
    await stopChild(store);
    await rm(dir, { recursive: true, force: true });
  }
}

export function formatFaultsBench(r: FaultsResult): string {
  const f0 = (x: number | undefined) => (x === undefined ? '—' : Number.isNaN(x) ? 'never' : x.toFixed(0));
  return [
    `${r.connections} closed-loop clients, POST /s/echo/Echo (idempotent), each with a 10 s deadline; counted from the kill on (messages answered after it).`,
    '',
    '| fault | messages | outcomes | outage: longest time without a 200 (ms) | slowest message (ms) | provider accepting → first 200 (ms) | 502 naming a dead address |',
    '|---|---|---|---|---|---|---|',
    ...r.faults.map(
      (f) =>
        `| ${f.fault} | ${f.messages} | ${Object.entries(f.outcomes)
          .sort()
          .map(([k, v]) => `${k}: ${v}`)
          .join(', ')} | ${f0(f.outageMs)} | ${f0(f.maxLatencyMs)} | ${f0(f.afterAcceptMs)} | ${f.staleAddress502} |`,
    ),
    '',
    'up-restart: `refused` are messages sent while no provider listened (the process was down); the restarted host listens on the ports it had (recorded in its data dir). host-kill: the host is never declared dead in this window (8 report intervals = 16 s); its instance leaves routing on the first refused connection and a replacement starts on another host.',
  ].join('\n');
}

// ---- children ----

async function runStore(): Promise<void> {
  const { startStore } = await import('../src/image/index.ts');
  const { echoStoreDir } = await import('../test/provider/fixtures/echo-store.ts');
  const store = await startStore({ dataDir: await echoStoreDir() });
  process.on('SIGTERM', () => void store.close().then(() => process.exit(0)));
  process.stdout.write(`${store.url}\n`);
}

async function runHost(dir: string): Promise<void> {
  const { startHost } = await import('../src/host/index.ts');
  const host = await startHost({ dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, token: TOKEN, capacity: { memoryMb: 2048, cpuMillis: 4000, instances: 16 }, driver: 'runc' });
  process.on('SIGTERM', () => void host.close({ stopInstances: true }).then(() => process.exit(0)));
  process.stdout.write(`${JSON.stringify({ hostId: host.hostId, controlUrl: host.controlUrl })}\n`);
}

/** What `shoal up` runs: a provider and a host in one process. */
async function runUp(dir: string, port: number, storeUrl: string): Promise<void> {
  const { startHost } = await import('../src/host/index.ts');
  const { startProvider } = await import('../src/provider/index.ts');
  const host = await startHost({ dataDir: join(dir, 'host'), listen: { host: '127.0.0.1', port: 0 }, token: TOKEN, capacity: { memoryMb: 2048, cpuMillis: 4000, instances: 16 }, driver: 'runc' });
  const provider = await startProvider({ listen: { host: '127.0.0.1', port }, database: join(dir, 'shoal.db'), storeUrl, joinToken: JOIN, providerId: `up:${port}` });
  await provider.registerHost({ controlUrl: host.controlUrl, token: TOKEN });
  process.on('SIGTERM', () => {
    void (async () => {
      await provider.close();
      await host.close({ stopInstances: true });
      process.exit(0);
    })();
  });
  const { createApiToken } = await import('../src/provider/auth/index.ts');
  const { secret } = await createApiToken(provider.registry, { role: 'admin', note: 'bench/faults' });
  process.stdout.write(`${JSON.stringify({ url: provider.url, token: secret })}\n`);
}

async function main(): Promise<void> {
  const role = process.argv.find((a) => a.startsWith('--role='))?.slice('--role='.length);
  const rest = process.argv.slice(2).filter((a) => !a.startsWith('--'));
  if (role === 'store') return runStore();
  if (role === 'host') return runHost(rest[0]!);
  if (role === 'up') return runUp(rest[0]!, Number(rest[1]), rest[2]!);
  const arg = (name: string) => {
    const i = process.argv.indexOf(`--${name}`);
    return i < 0 ? undefined : process.argv[i + 1];
  };
  const only = arg('only')?.split(',');
  const r = await runFaultsBench({ connections: Number(arg('connections') ?? 4), ...(only ? { only } : {}) });
  process.stdout.write(`${formatFaultsBench(r)}\n`);
}

if (process.argv[1] === SELF) {
  main().catch((e: unknown) => {
    process.stderr.write(`${String((e as Error)?.stack ?? e)}\n`);
    process.exit(1);
  });
}

