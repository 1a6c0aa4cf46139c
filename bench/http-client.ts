// The data plane's HTTP client: the hand-written HTTP/1.1 client (src/http) against the
// same interface on undici (bench/lib/undici-http/, kept for this comparison only), in one
// run, interleaved, the same work in each timed region. Both legs of the warm path:
//   forwarder   GET 127.0.0.1:PORT/i/ → host forwarder (own process) → instance Unix socket;
//               the forwarder relays with undici, or with the hand-written client (src)
//   link        POST 127.0.0.1:PORT/ → a provider-like hop (own process) that reads the JSON
//               body and sends it whole to the host forwarder over its pooled link, collects
//               the small reply and writes it (what the router does on a warm message);
//               the link is undici's, or the hand-written one. Both behind the same
//               forwarder (src's), so only the link differs.
// With the Node keep-alive load client at `connections` and at 1 connection, and wrk.
//
//   node bench/http-client.ts [--duration-ms 5000] [--connections 32]   prints a markdown table

import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type RequestOptions } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { measureInterleaved } from './forwarding.ts';
import { executable, runWrk, startBenchChild, stopChild, WRK, type LoadFigures } from './lib/peers.ts';
import { generateRouteKey, signRouteToken } from '../src/host/data-plane/route-token.ts';
import { listenForwarder } from '../src/host/data-plane/forwarder.ts';
import { listenForwarder as listenUndiciForwarder } from './lib/undici-http/forwarder.ts';
import { createUpstream as createUndiciUpstream } from './lib/undici-http/index.ts';
import { createUpstream, type ReplyHandlers, type ReplyHead } from '../src/http/index.ts';

const SELF = fileURLToPath(import.meta.url);
const BODY = '{"message":"hello from the bench"}';
/** 'hand-written': the client in src/http. */
type Impl = 'undici' | 'hand-written';

export interface HttpClientBenchResult {
  connections: number;
  durationMs: number;
  /** Node client, `connections` connections, then 1 connection. */
  loaded: Record<string, LoadFigures>;
  unloaded: Record<string, LoadFigures>;
  wrk: Record<string, LoadFigures | undefined>;
  notes: string[];
}

export async function runHttpClientBench(options: { durationMs?: number; connections?: number } = {}): Promise<HttpClientBenchResult> {
  const durationMs = options.durationMs ?? 5000;
  const connections = options.connections ?? 32;
  const notes: string[] = [];
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-client-'));
  const children: ChildProcess[] = [];
  try {
    const socketPath = join(dir, 'app.sock');
    children.push(await startBenchChild(join(fileURLToPath(new URL('.', import.meta.url)), 'forwarding.ts'), ['--role=instance', socketPath]));
    const key = generateRouteKey();
    const keyHex = Buffer.from(key).toString('hex');
    const token = signRouteToken({ instance: 'bench-1', service: 'bench', expiresAt: Date.now() + 3_600_000 }, key);
    const port: Record<string, number> = {};
    const pid: Record<string, number | undefined> = {};
    for (const impl of ['undici', 'hand-written'] as const) {
      const child = await startBenchChild(SELF, ['--role=forwarder', impl, socketPath, keyHex]);
      children.push(child);
      port[`forwarder ${impl}`] = Number(child.ready);
      pid[`forwarder ${impl}`] = child.pid;
    }
    for (const impl of ['undici', 'hand-written'] as const) {
      const child = await startBenchChild(SELF, ['--role=link', impl, String(port['forwarder hand-written']), token]);
      children.push(child);
      port[`link ${impl}`] = Number(child.ready);
      pid[`link ${impl}`] = child.pid;
    }
    const names = ['forwarder undici', 'forwarder hand-written', 'link undici', 'link hand-written'];
    const target = (name: string): RequestOptions =>
      name.startsWith('forwarder') ? { host: '127.0.0.1', port: port[name]!, path: '/i/', headers: { 'x-shoal-route': token } } : { host: '127.0.0.1', port: port[name]!, path: '/' };
    const figures = async (conns: number, ms: number): Promise<Record<string, LoadFigures>> => {
      // GETs for the forwarder pair, POSTs for the link pair: each pair measured interleaved.
      const out: Record<string, LoadFigures> = {};
      const fwd = await measureInterleaved([target(names[0]!), target(names[1]!)], conns, ms, undefined, [pid[names[0]!], pid[names[1]!]]);
      const link = await measureInterleaved([target(names[2]!), target(names[3]!)], conns, ms, BODY, [pid[names[2]!], pid[names[3]!]]);
      [out[names[0]!], out[names[1]!], out[names[2]!], out[names[3]!]] = [fwd[0]!, fwd[1]!, link[0]!, link[1]!];
      return out;
    };
    const loaded = await figures(connections, durationMs);
    const unloaded = await figures(1, Math.max(500, durationMs / 2));
    const wrk: Record<string, LoadFigures | undefined> = {};
    if (await executable(WRK)) {
      const script = join(dir, 'post.lua');
      await writeFile(script, `wrk.method = "POST"\nwrk.body = '${BODY}'\nwrk.headers["content-type"] = "application/json"\n`);
      // Alternated, twice each, so drift falls on both alike; the better of two is kept per target.
      for (let round = 0; round < 2; round++) {
        for (const name of round === 0 ? names : [...names].reverse()) {
          const r = name.startsWith('forwarder')
            ? await runWrk(`http://127.0.0.1:${port[name]}/i/`, { token, connections, durationMs: durationMs / 2 })
            : await runWrk(`http://127.0.0.1:${port[name]}/`, { script, connections, durationMs: durationMs / 2 });
          if (r !== undefined && (wrk[name] === undefined || r.rps > wrk[name]!.rps)) wrk[name] = r;
        }
      }
    } else notes.push(`${WRK} not found: wrk figures left out`);
    return { connections, durationMs, loaded, unloaded, wrk, notes };
  } finally {
    await Promise.all(children.map((c) => stopChild(c, 3000)));
    await rm(dir, { recursive: true, force: true });
  }
}

// ---- the children ----

async function runForwarder(impl: Impl, socketPath: string, keyHex: string): Promise<void> {
  let served = 0;
  const options = {
    host: '127.0.0.1',
    port: 0,
    keys: [new Uint8Array(Buffer.from(keyHex, 'hex'))],
    resolveInstance: (id: string) => (id === 'bench-1' ? { socketPath, state: 'ready' as const } : undefined),
    onRequest: () => void served++,
  };
  const forwarder = impl === 'undici' ? await listenUndiciForwarder(options) : await listenForwarder(options);
  process.on('SIGTERM', () => void forwarder.close().then(() => process.exit(0)));
  process.stdout.write(`${forwarder.address.port}\n`);
}

/** One whole request over the link, its reply to handlers: the same shape for both clients. */
type Send = (path: string, headers: string[], body: Buffer, handlers: ReplyHandlers) => void;

function linkOf(impl: Impl, port: number): Send {
  const link = impl === 'undici' ? createUndiciUpstream({ origin: `http://127.0.0.1:${port}`, timeoutMs: 60_000 }) : createUpstream({ origin: `http://127.0.0.1:${port}`, timeoutMs: 60_000, maxIdle: 256 });
  // The undici variant's ReplyHead lacks the hand-written one's keep-alive fields, which the router does not read.
  return (path, headers, body, handlers) => void link.request({ method: 'POST', path, headers, body, timeoutMs: 60_000 }, handlers as never);
}

async function runLink(impl: Impl, forwarderPort: number, token: string): Promise<void> {
  const send = linkOf(impl, forwarderPort);
  const authority = `127.0.0.1:${forwarderPort}`;
  const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      JSON.parse(body.toString('utf8')); // the router parses and checks every message
      let head: ReplyHead | undefined;
      const reply: Buffer[] = [];
      send('/i/', ['host', authority, 'content-type', 'application/json', 'content-length', String(body.length), 'x-shoal-route', token], body, {
        onHead: (h) => (head = h),
        onData: (c) => reply.push(c),
        onEnd: () => {
          res.writeHead(head!.status, head!.headers);
          res.end(reply.length === 1 ? reply[0] : Buffer.concat(reply));
        },
        onError: (e) => {
          res.writeHead(502, { 'content-type': 'text/plain' });
          res.end(String(e.code ?? e.message));
        },
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  process.on('SIGTERM', () => process.exit(0));
  const address = server.address();
  process.stdout.write(`${typeof address === 'object' && address !== null ? address.port : 0}\n`);
}

export function formatHttpClientBench(r: HttpClientBenchResult): string {
  const f3 = (n: number): string => n.toFixed(3);
  const row = (name: string, t: LoadFigures | undefined): string =>
    t === undefined
      ? `| ${name} | – | – | – | – | – |`
      : `| ${name} | ${Math.round(t.rps)} | ${f3(t.p50Ms)} | ${f3(t.p99Ms)} | ${t.cpuUsPerRequest === undefined ? '–' : Math.round(t.cpuUsPerRequest)} | ${t.errors} |`;
  const lines = [
    'undici vs the hand-written client; each pair measured interleaved in one run, the same work in each timed region.',
    '',
    'CPU µs/req: user + system time of the process under test (the forwarder, or the link hop) per request, from /proc; it is the figure least moved by other load on the machine.',
    '',
    '| target | req/s | p50 ms | p99 ms | CPU µs/req | errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const [tag, set] of [[`Node client, ${r.connections} conn`, r.loaded], ['Node client, 1 conn', r.unloaded]] as const) {
    for (const [name, t] of Object.entries(set)) lines.push(row(`${name} (${tag})`, t));
  }
  for (const [name, t] of Object.entries(r.wrk)) lines.push(row(`${name} (wrk, ${r.connections} conn)`, t));
  const ratio = (a: LoadFigures | undefined, b: LoadFigures | undefined): string => (a === undefined || b === undefined ? '–' : (a.rps / b.rps).toFixed(2));
  const cpu = (a: LoadFigures | undefined, b: LoadFigures | undefined): string =>
    a?.cpuUsPerRequest === undefined || b?.cpuUsPerRequest === undefined ? '–' : (a.cpuUsPerRequest / b.cpuUsPerRequest).toFixed(2);
  lines.push(
    '',
    `CPU per request undici / hand-written (${r.connections} conn): forwarder ${cpu(r.loaded['forwarder undici'], r.loaded['forwarder hand-written'])}, link ${cpu(r.loaded['link undici'], r.loaded['link hand-written'])}; ` +
      `(1 conn): forwarder ${cpu(r.unloaded['forwarder undici'], r.unloaded['forwarder hand-written'])}, link ${cpu(r.unloaded['link undici'], r.unloaded['link hand-written'])}.`,
    `Throughput undici / hand-written: forwarder ${ratio(r.loaded['forwarder undici'], r.loaded['forwarder hand-written'])} (Node client), ${ratio(r.wrk['forwarder undici'], r.wrk['forwarder hand-written'])} (wrk); ` +
      `link ${ratio(r.loaded['link undici'], r.loaded['link hand-written'])} (Node client), ${ratio(r.wrk['link undici'], r.wrk['link hand-written'])} (wrk).`,
  );
  lines.push(...r.notes.map((n) => `- ${n}`));
  return lines.join('\n');
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const role = args.find((a) => a.startsWith('--role='))?.slice('--role='.length);
  if (role === 'forwarder') await runForwarder(args[1] as Impl, args[2]!, args[3]!);
  else if (role === 'link') await runLink(args[1] as Impl, Number(args[2]), args[3]!);
  else {
    const flag = (name: string): number | undefined => {
      const i = args.indexOf(name);
      return i === -1 ? undefined : Number(args[i + 1]);
    };
    console.log(formatHttpClientBench(await runHttpClientBench({ durationMs: flag('--duration-ms'), connections: flag('--connections') })));
  }
}
