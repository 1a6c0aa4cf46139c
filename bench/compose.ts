// What one intermediary hop (or, par, ref) adds to a message, against the direct route
// through the provider (/s/<instance service>/Echo), in one run. Consumer → provider
// → [intermediary →] provider message path → host → instance, one message at a time
// (latency, not throughput), keep-alive client, the routes interleaved round by round so
// drift hits them alike. The hosts are the provider tests' fake hosts (an in-process HTTP
// data plane answering Echo), so what differs between routes is the provider's work only;
// no root or runc needed.
//   node bench/compose.ts [--messages 3000]
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { startProvider } from '../src/provider/index.ts';
import { Type, defineService } from '../src/service/index.ts';
import { farm, or, par, ref, role } from '../src/compose/index.ts';
import { startFakeHost, startTinyStore } from '../test/provider/fixtures/fake-host.ts';
import { fig, type Figure } from './lib/figures.ts';

export interface RouteFigures {
  route: 'direct' | 'or' | 'par' | 'ref';
  path: string;
  p50Ms: number;
  p99Ms: number;
  /** Added over direct at the same percentile. */
  addedP50Ms: number;
  addedP99Ms: number;
  /** Added p50 in each round of 100 messages: the run-to-run spread bench/compare.ts reads. */
  roundAddedP50Ms: number[];
}

export interface ComposeBenchResult {
  messages: number;
  routes: RouteFigures[];
}

const Echo = defineService({
  name: 'bench-echo',
  version: '1',
  image: 'echo:1',
  operations: { Echo: { input: Type.Object({ message: Type.String() }), output: Type.Object({ message: Type.String() }), idempotent: true } },
});

export async function runComposeBench(options: { messages?: number; log?: (line: string) => void } = {}): Promise<ComposeBenchResult> {
  const messages = options.messages ?? 3000;
  const log = options.log ?? (() => undefined);
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-compose-'));
  const store = await startTinyStore();
  const host = await startFakeHost({});
  const provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database: join(dir, 'p.db'), storeUrl: store.url, joinToken: 'bench-join-token' });
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    await provider.registerHost({ controlUrl: host.controlUrl, token: host.token });
    const graph = farm('bench', () => {
      const w1 = role(Echo)(undefined, { name: 'w1' });
      const w2 = role(Echo)(undefined, { name: 'w2' });
      or(w1.exports, w2.exports);
      par(w1.exports, w2.exports);
      ref(w1.exports, { name: 'r' });
    });
    await provider.farms.apply(graph);
    const deadline = Date.now() + 10_000;
    while (!['bench-w1', 'bench-w2'].every((s) => provider.table.endpoints(s).length === 1)) {
      if (Date.now() > deadline) throw new Error('bench: instances did not come up');
      await new Promise((r) => setTimeout(r, 20));
    }
    const routes: Array<[RouteFigures['route'], string]> = [
      ['direct', '/s/bench-w1/Echo'],
      ['or', '/x/bench/or-1/Echo'],
      ['par', '/x/bench/par-1/Echo'],
      ['ref', '/x/bench/r/Echo'],
    ];
    const body = JSON.stringify({ message: 'x'.repeat(64) });
    // The farm's services take tokens (the default): each message carries an invoke token.
    const { createApiToken } = await import('../src/provider/auth/index.ts');
    const authorization = `Bearer ${(await createApiToken(provider.registry, { role: 'invoke' })).secret}`;
    const once = (path: string) =>
      new Promise<number>((resolve, reject) => {
        const t0 = performance.now();
        const req = request(`${provider.url}${path}`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization } }, (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 200 ? resolve(performance.now() - t0) : reject(new Error(`${path}: HTTP ${res.statusCode}`))));
        });
        req.on('error', reject);
        req.end(body);
      });
    const samples = new Map(routes.map(([r]) => [r, [] as number[]]));
    for (let i = 0; i < 200; i++) for (const [, p] of routes) await once(p); // warm-up
    const rounds = Math.ceil(messages / 100);
    for (let round = 0; round < rounds; round++) {
      for (const [r, p] of round % 2 === 0 ? routes : [...routes].reverse()) for (let i = 0; i < 100; i++) samples.get(r)!.push(await once(p));
    }
    log(`compose: ${rounds * 100} messages per route`);
    const q = (xs: number[], p: number) => {
      const s = [...xs].sort((a, b) => a - b);
      return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
    };
    const direct = samples.get('direct')!;
    const d50 = q(direct, 0.5);
    const d99 = q(direct, 0.99);
    return {
      messages: rounds * 100,
      routes: routes.map(([route, path]) => {
        const xs = samples.get(route)!;
        const p50 = q(xs, 0.5);
        const p99 = q(xs, 0.99);
        const rounds = Array.from({ length: xs.length / 100 }, (_, k) => q(xs.slice(k * 100, k * 100 + 100), 0.5) - q(direct.slice(k * 100, k * 100 + 100), 0.5));
        return { route, path, p50Ms: p50, p99Ms: p99, addedP50Ms: p50 - d50, addedP99Ms: p99 - d99, roundAddedP50Ms: rounds };
      }),
    };
  } finally {
    agent.destroy();
    await provider.close();
    await host.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

export function formatComposeBench(r: ComposeBenchResult): string {
  const f = (x: number) => x.toFixed(3);
  return [
    `${r.messages} messages per route, one at a time, 64-byte Echo; fake hosts (in-process data plane), so the differences are the provider's own work.`,
    '',
    '| route | path | p50 ms | p99 ms | added p50 ms | added p99 ms |',
    '|---|---|---|---|---|---|',
    ...r.routes.map((x) => `| ${x.route} | \`${x.path}\` | ${f(x.p50Ms)} | ${f(x.p99Ms)} | ${x.route === 'direct' ? '—' : f(x.addedP50Ms)} | ${x.route === 'direct' ? '—' : f(x.addedP99Ms)} |`),
  ].join('\n');
}

if (import.meta.main) {
  const i = process.argv.indexOf('--messages');
  const r = await runComposeBench({ messages: i > 0 ? Number(process.argv[i + 1]) : 3000, log: (l) => process.stderr.write(`[bench] ${l}\n`) });
  process.stdout.write(`${formatComposeBench(r)}\n`);
}

/** The added p50 of each intermediary, for bench/compare.ts. */
export function composeFigures(r: ComposeBenchResult): Figure[] {
  return r.routes.filter((x) => x.route !== 'direct').map((x) => fig(`compose.${x.route}.added-p50-ms`, `${x.route}: added p50 per hop`, x.addedP50Ms, 'ms', 'lower', x.roundAddedP50Ms));
}
