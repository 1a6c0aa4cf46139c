// Before/after for a change to the HTTP client: this checkout against another one (`--base`,
// e.g. a `git worktree add` of main with node_modules linked), in one run, interleaved:
//   forwarder  the host forwarder of each checkout in its own process, the same instance
//              behind both; req/s, p50/p99 and CPU per request, at 32 connections and at 1
//   pull       each checkout's bench/pull.ts against one store, alternating, 3 rounds; each
//              run's shoal/skopeo ratio is taken in that run
//
//   node bench/checkout-ab.ts --base /tmp/main [--duration-ms 6000] [--only forwarder,pull]
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { measureInterleaved } from './forwarding.ts';
import { startBenchChild, stopChild, type BenchChild } from './lib/peers.ts';
import { pushSyntheticImage, startStoreProcess } from './pull.ts';
import { generateRouteKey, signRouteToken } from '../src/host/data-plane/route-token.ts';

const HERE = resolve(fileURLToPath(new URL('..', import.meta.url)));

async function forwarders(base: string, durationMs: number): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-ab-fwd-'));
  const children: BenchChild[] = [];
  try {
    const socketPath = join(dir, 'app.sock');
    children.push(await startBenchChild(join(HERE, 'bench/forwarding.ts'), ['--role=instance', socketPath]));
    const key = generateRouteKey();
    const token = signRouteToken({ instance: 'bench-1', service: 'bench', expiresAt: Date.now() + 3_600_000 }, key);
    const hex = Buffer.from(key).toString('hex');
    const sides = [
      ['base', await startBenchChild(join(base, 'bench/forwarding.ts'), ['--role=forwarder', socketPath, hex])],
      ['this', await startBenchChild(join(HERE, 'bench/forwarding.ts'), ['--role=forwarder', socketPath, hex])],
    ] as const;
    children.push(...sides.map(([, c]) => c));
    const target = (c: BenchChild) => ({ host: '127.0.0.1', port: Number(c.ready), path: '/i/', headers: { 'x-shoal-route': token } });
    console.log('| forwarder | conn | req/s | p50 ms | p99 ms | CPU µs/req | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const conns of [32, 1]) {
      const figures = await measureInterleaved(sides.map(([, c]) => target(c)), conns, durationMs, undefined, sides.map(([, c]) => c.pid));
      figures.forEach((f, i) =>
        console.log(`| ${sides[i]![0]} | ${conns} | ${Math.round(f.rps)} | ${f.p50Ms.toFixed(3)} | ${f.p99Ms.toFixed(3)} | ${Math.round(f.cpuUsPerRequest ?? 0)} | ${f.errors} |`),
      );
    }
  } finally {
    await Promise.all(children.map((c) => stopChild(c, 3000)));
    await rm(dir, { recursive: true, force: true });
  }
}

async function pulls(base: string): Promise<void> {
  const run = promisify(execFile);
  const dataDir = await mkdtemp(join(tmpdir(), 'shoal-ab-store-'));
  const store = await startStoreProcess(dataDir);
  try {
    await pushSyntheticImage(store.url, 'bench/pull:latest');
    console.log('\n| pull | round | shoal MB/s | skopeo MB/s | shoal/skopeo |\n| --- | ---: | ---: | ---: | ---: |');
    const sides = [['base', base], ['this', HERE]] as const;
    for (let round = 0; round < 3; round++) {
      for (const [name, dir] of round % 2 === 0 ? sides : [...sides].reverse()) {
        const { stdout } = await run(process.execPath, [join(dir, 'bench/pull.ts'), '--store', store.url, '--runs', '3', '--json'], { cwd: dir, maxBuffer: 1 << 24 });
        const r = JSON.parse(stdout) as { shoal: { medianMBps: number }; skopeo?: { medianMBps: number }; ratio?: number };
        console.log(`| ${name} | ${round} | ${r.shoal.medianMBps.toFixed(0)} | ${r.skopeo?.medianMBps.toFixed(0) ?? '–'} | ${r.ratio?.toFixed(2) ?? '–'} |`);
      }
    }
  } finally {
    await store.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const arg = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i === -1 ? undefined : args[i + 1];
  };
  const base = arg('--base');
  if (base === undefined) throw new Error('--base <another checkout, with node_modules> is required');
  const only = (arg('--only') ?? 'forwarder,pull').split(',');
  if (only.includes('forwarder')) await forwarders(resolve(base), Number(arg('--duration-ms') ?? 6000));
  if (only.includes('pull')) await pulls(resolve(base));
}
