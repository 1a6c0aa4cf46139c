// What the host forwarder adds to a message, against nginx doing the same job.
//
// One run measures three targets with the same Node load client (keep-alive, a fixed number
// of connections, a fixed duration each, taken in short turns in rotation so noise from
// elsewhere hits all alike; then again with one connection, for each hop's own latency
// without queueing):
//   direct     the instance's Unix socket itself (the baseline)
//   forwarder  127.0.0.1:PORT/i/ → forwarder (own process, route token checked) → socket
//   nginx      127.0.0.1:PORT/   → nginx (one process, upstream keepalive) → socket
// plus wrk on the two TCP targets (wrk cannot reach a Unix socket).
// added latency = target p50 − direct p50; the goal is forwarder ≤ 2 × nginx.
//
//   node bench/forwarding.ts [--duration-ms 5000] [--connections 32]   prints a markdown table

import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, createServer, type RequestOptions } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { cpuMsOf, executable, freePort, loadFor, NGINX, runWrk, startBenchChild, startNginx, stopChild, WRK, type LoadFigures } from './lib/peers.ts';
import { listenForwarder } from '../src/host/data-plane/forwarder.ts';
import { generateRouteKey, signRouteToken } from '../src/host/data-plane/route-token.ts';

const SELF = fileURLToPath(import.meta.url);

export type TargetFigures = LoadFigures;

/** The same Node load client (http.Agent, keep-alive) against each target. */
export interface Comparison {
  connections: number;
  durationMs: number;
  direct: TargetFigures;
  forwarder: TargetFigures;
  nginx: TargetFigures | undefined;
  /** target p50 − direct p50, in ms. */
  forwarderAddedMs: number;
  nginxAddedMs: number | undefined;
  /** forwarderAddedMs / nginxAddedMs; the goal is ≤ 2. */
  addedRatio: number | undefined;
}

export interface ForwardingBenchResult {
  /** `connections` concurrent connections: throughput, and latency under load. */
  loaded: Comparison;
  /** One connection: each hop's own latency, without queueing. */
  unloaded: Comparison;
  /** wrk (C, one thread) on the TCP targets, when wrk is installed. */
  wrk: { forwarder: TargetFigures | undefined; nginx: TargetFigures | undefined };
  notes: string[];
}

export async function runForwardingBench(options: { durationMs?: number; connections?: number } = {}): Promise<ForwardingBenchResult> {
  const durationMs = options.durationMs ?? 5000;
  const connections = options.connections ?? 32;
  const notes: string[] = [];
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-fwd-'));
  const children: ChildProcess[] = [];
  try {
    const socketPath = join(dir, 'app.sock');
    children.push(await startBenchChild(SELF, ['--role=instance', socketPath]));

    const key = generateRouteKey();
    const token = signRouteToken({ instance: 'bench-1', service: 'bench', expiresAt: Date.now() + 3_600_000 }, key);
    const forwarderChild = await startBenchChild(SELF, ['--role=forwarder', socketPath, Buffer.from(key).toString('hex')]);
    children.push(forwarderChild);
    const forwarderPort = Number(forwarderChild.ready);

    let nginxPort: number | undefined;
    if (await executable(NGINX)) {
      nginxPort = await freePort();
      children.push(await startNginx(dir, socketPath, nginxPort));
    } else {
      notes.push(`${NGINX} not found: nginx not measured`);
    }

    const targets = {
      direct: { socketPath, path: '/' },
      forwarder: { host: '127.0.0.1', port: forwarderPort, path: '/i/', headers: { 'x-shoal-route': token } },
      nginx: nginxPort === undefined ? undefined : { host: '127.0.0.1', port: nginxPort, path: '/' },
    };
    const compare = async (conns: number, ms: number): Promise<Comparison> => {
      const list: RequestOptions[] = [targets.direct, targets.forwarder];
      if (targets.nginx !== undefined) list.push(targets.nginx);
      const [direct, forwarder, nginx] = await measureInterleaved(list, conns, ms);
      if (direct === undefined || forwarder === undefined) throw new Error('unreachable: two targets measured');
      const forwarderAddedMs = forwarder.p50Ms - direct.p50Ms;
      const nginxAddedMs = nginx === undefined ? undefined : nginx.p50Ms - direct.p50Ms;
      const addedRatio = nginxAddedMs === undefined || nginxAddedMs <= 0 ? undefined : forwarderAddedMs / nginxAddedMs;
      if (nginxAddedMs !== undefined && nginxAddedMs <= 0) notes.push(`with ${conns} connection(s) nginx added no measurable p50 latency (${nginxAddedMs.toFixed(3)} ms): no ratio`);
      return { connections: conns, durationMs: ms, direct, forwarder, nginx, forwarderAddedMs, nginxAddedMs, addedRatio };
    };
    const loaded = await compare(connections, durationMs);
    const unloaded = await compare(1, Math.max(500, durationMs / 2));

    const wrk = { forwarder: undefined as TargetFigures | undefined, nginx: undefined as TargetFigures | undefined };
    if (await executable(WRK)) {
      wrk.forwarder = await runWrk(`http://127.0.0.1:${forwarderPort}/i/`, { token, connections, durationMs });
      if (nginxPort !== undefined) wrk.nginx = await runWrk(`http://127.0.0.1:${nginxPort}/`, { connections, durationMs });
    } else {
      notes.push(`${WRK} not found: wrk figures left out`);
    }
    return { loaded, unloaded, wrk, notes };
  } finally {
    await Promise.all(children.map((c) => stopChild(c, 3000)));
    await rm(dir, { recursive: true, force: true });
  }
}

// ---- load client ----

/**
 * Measures each target for `durationMs` in all, in ROUNDS short turns taken in rotation, so
 * a burst of load from elsewhere on the machine falls on every target alike. GETs, or POSTs
 * of `body` as JSON.
 */
export async function measureInterleaved(targets: RequestOptions[], connections: number, durationMs: number, body?: string, pids?: ReadonlyArray<number | undefined>): Promise<TargetFigures[]> {
  const agents = targets.map(() => new Agent({ keepAlive: true, maxSockets: connections }));
  try {
    const state = targets.map(() => ({ histogram: createHistogram(), requests: 0, errors: 0, ms: 0, cpuMs: 0 }));
    for (let t = 0; t < targets.length; t++) await loadFor(targets[t]!, agents[t]!, connections, Math.min(1000, durationMs / 5), undefined, body); // JIT, connections
    const turn = durationMs / ROUNDS;
    for (let round = 0; round < ROUNDS; round++) {
      for (let k = 0; k < targets.length; k++) {
        const t = (round + k) % targets.length;
        const s = state[t]!;
        const pid = pids?.[t];
        const cpuBefore = pid === undefined ? 0 : await cpuMsOf(pid);
        const started = performance.now();
        const { requests, errors } = await loadFor(targets[t]!, agents[t]!, connections, turn, s.histogram, body);
        s.ms += performance.now() - started;
        if (pid !== undefined) s.cpuMs += (await cpuMsOf(pid)) - cpuBefore;
        s.requests += requests;
        s.errors += errors;
      }
    }
    return state.map((s, i) => ({
      requests: s.requests,
      errors: s.errors,
      rps: s.requests / (s.ms / 1000),
      p50Ms: s.histogram.percentile(50) / 1e6,
      p99Ms: s.histogram.percentile(99) / 1e6,
      ...(pids?.[i] === undefined || s.requests === 0 ? {} : { cpuUsPerRequest: (s.cpuMs * 1000) / s.requests }),
    }));
  } finally {
    for (const agent of agents) agent.destroy();
  }
}

const ROUNDS = 5;



async function runInstance(socketPath: string): Promise<void> {
  const body = JSON.stringify({ ok: true, service: 'bench', message: 'hello from the instance' });
  const length = String(Buffer.byteLength(body));
  const server = createServer({ keepAliveTimeout: 60_000 }, (_req, res) => {
    res.writeHead(200, ['content-type', 'application/json', 'content-length', length]);
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  process.on('SIGTERM', () => process.exit(0));
  process.stdout.write('ready\n');
}

async function runForwarder(socketPath: string, keyHex: string): Promise<void> {
  let served = 0; // a metrics hook is on in a real host, so it is on here too
  const forwarder = await listenForwarder({
    host: '127.0.0.1',
    port: 0,
    keys: [new Uint8Array(Buffer.from(keyHex, 'hex'))],
    resolveInstance: (id) => (id === 'bench-1' ? { socketPath, state: 'ready' } : undefined),
    onRequest: () => void served++,
  });
  process.on('SIGTERM', () => void forwarder.close().then(() => process.exit(0)));
  process.stdout.write(`${forwarder.address.port}\n`);
}

// ---- helpers ----




export function formatForwardingBench(r: ForwardingBenchResult): string {
  const f2 = (n: number): string => n.toFixed(2);
  const f3 = (n: number): string => n.toFixed(3);
  const row = (name: string, t: TargetFigures | undefined, added: number | undefined): string =>
    t === undefined
      ? `| ${name} | – | – | – | – | – |`
      : `| ${name} | ${Math.round(t.rps)} | ${f3(t.p50Ms)} | ${f3(t.p99Ms)} | ${added === undefined ? '–' : f3(added)} | ${t.errors} |`;
  const ratio = (c: Comparison): string =>
    c.addedRatio === undefined ? 'not computed' : `**${f2(c.addedRatio)}** (goal ≤ 2)`;
  const lines = [
    `GET of a ${'small JSON'} reply; the instance, the forwarder and nginx (one worker) each run in their own process; the load client is Node (http.Agent, keep-alive), the same for every target.`,
    '',
    '| target | req/s | p50 ms | p99 ms | added p50 ms | errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const c of [r.loaded, r.unloaded]) {
    const tag = `${c.connections} conn, ${c.durationMs / 1000} s`;
    lines.push(
      row(`direct, Unix socket (${tag})`, c.direct, undefined),
      row(`forwarder (${tag})`, c.forwarder, c.forwarderAddedMs),
      row(`nginx (${tag})`, c.nginx, c.nginxAddedMs),
    );
  }
  lines.push(
    row(`forwarder, wrk (${r.loaded.connections} conn)`, r.wrk.forwarder, undefined),
    row(`nginx, wrk (${r.loaded.connections} conn)`, r.wrk.nginx, undefined),
    '',
    `Forwarder added latency / nginx added latency: ${r.loaded.connections} connections ${ratio(r.loaded)}; 1 connection ${ratio(r.unloaded)}.`,
  );
  if (r.loaded.nginx !== undefined) lines.push(`Throughput forwarder / nginx (Node client): ${f2(r.loaded.forwarder.rps / r.loaded.nginx.rps)}.`);
  if (r.wrk.forwarder !== undefined && r.wrk.nginx !== undefined) lines.push(`Throughput forwarder / nginx (wrk): ${f2(r.wrk.forwarder.rps / r.wrk.nginx.rps)}.`);
  lines.push(...r.notes.map((n) => `- ${n}`));
  return lines.join('\n');
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const role = args.find((a) => a.startsWith('--role='))?.slice('--role='.length);
  if (role === 'instance') await runInstance(args[1]!);
  else if (role === 'forwarder') await runForwarder(args[1]!, args[2]!);
  else {
    const flag = (name: string): number | undefined => {
      const i = args.indexOf(name);
      return i === -1 ? undefined : Number(args[i + 1]);
    };
    const result = await runForwardingBench({ durationMs: flag('--duration-ms'), connections: flag('--connections') });
    console.log(formatForwardingBench(result));
  }
}
