// Pull throughput from the store: Shoal's pullImage into an OCI layout against
//   skopeo copy --src-tls-verify=false docker://HOST:PORT/REPO:TAG oci:DIR:TAG
// of the same image from the same store, in one run, alternating (the order flips each
// round so neither always gets the warmer cache), N runs each, a fresh destination
// each time. Both verify every digest, write the same blobs and fsync them (skopeo
// does; Shoal's default). Figures: median MB/s (MB = 10^6 bytes of blobs: manifest,
// config, layers) and shoal/skopeo (goal ≥ 1.0); for information also Shoal without
// fsync, which shows what the disk costs.
//
// Both are timed as a whole process per run, from spawn to exit (Shoal's as
// bench/lib/pull-cli.ts): each pays its start-up, a fresh connection pool and a cold
// JIT, as a caller starting either would. The store runs in its own process so the
// client and the server do not share an event loop.
//
//   node bench/pull.ts [--runs 3] [--store URL --ref REPO:TAG]
// Alone, it starts a store on a temp dir and pushes a synthetic image (three gzip
// layers of incompressible data: ~120 MB, ~30 MB, ~1 MB) to pull.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createGzip } from 'node:zlib';
import { pack } from 'tar-stream';
import { createLayoutWriter, readLayout } from '../src/image/oci-layout.ts';
import { createRegistryClient, pushImage } from '../src/image/registry-client.ts';
import { digestOf, type Digest } from '../src/protocol/digest.ts';
import { formatImageRef, parseImageRef } from '../src/protocol/image-ref.ts';
import { MediaType, type ImageManifest } from '../src/protocol/oci.ts';
import { fig, type Figure } from './lib/figures.ts';

const run = promisify(execFile);
const SELF = fileURLToPath(import.meta.url);
const ROOT = join(SELF, '..', '..');
const PULL_CLI = join(ROOT, 'bench', 'lib', 'pull-cli.ts');

export interface PullRun {
  seconds: number;
  mbps: number;
}

export interface PullSide {
  runs: PullRun[];
  medianMBps: number;
  medianSeconds: number;
}

export interface PullBenchResult {
  storeUrl: string;
  ref: string;
  /** Blob bytes of one pull (manifest + config + layers). */
  bytes: number;
  blobs: number;
  concurrency: number;
  shoal: PullSide;
  /** pullImage with durable: false (no fsync): the client's own speed. */
  shoalNoSync: PullSide;
  /** undefined when skopeo is not installed. */
  skopeo: PullSide | undefined;
  /** shoal.medianMBps / skopeo.medianMBps; the goal is ≥ 1.0. */
  ratio: number | undefined;
  /** Whether skopeo's layout held the very manifest Shoal pulled (same bytes moved). */
  sameManifest: boolean | undefined;
}

export interface PullBenchOptions {
  storeUrl: string;
  ref: string;
  runs?: number;
  concurrency?: number;
  log?: (line: string) => void;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function side(runs: PullRun[]): PullSide {
  return { runs, medianMBps: median(runs.map((r) => r.mbps)), medianSeconds: median(runs.map((r) => r.seconds)) };
}

async function hasSkopeo(): Promise<boolean> {
  return run('skopeo', ['--version']).then(
    () => true,
    () => false,
  );
}

export async function runPullBench(options: PullBenchOptions): Promise<PullBenchResult> {
  const runs = options.runs ?? 3;
  const concurrency = options.concurrency ?? 4;
  const log = options.log ?? (() => undefined);
  const ref = parseImageRef(options.ref);
  const client = createRegistryClient({ baseUrl: options.storeUrl, concurrency });
  const top = await client.getManifest(ref.repository, ref.digest ?? ref.tag ?? 'latest');
  if (!top) throw new Error(`${options.ref} is not in the store at ${options.storeUrl}`);
  const work = await mkdtemp(join(tmpdir(), 'shoal-bench-pull-'));
  const host = new URL(options.storeUrl).host;
  const tag = ref.tag ?? 'latest';
  const skopeo = await hasSkopeo();
  const shoalRuns: PullRun[] = [];
  const noSyncRuns: PullRun[] = [];
  const skopeoRuns: PullRun[] = [];
  let bytes = 0;
  let blobs = 0;
  let manifestDigest: Digest | undefined;
  let sameManifest: boolean | undefined;
  try {
    const shoalOnce = async (i: number, durable = true): Promise<void> => {
      const dir = join(work, `shoal-${i}`);
      const t0 = performance.now();
      const { stdout } = await run(process.execPath, [PULL_CLI, options.storeUrl, options.ref, dir, String(concurrency), durable ? 'durable' : 'no-fsync'], { maxBuffer: 1024 * 1024 });
      const seconds = (performance.now() - t0) / 1000;
      const r = JSON.parse(stdout) as { manifestDigest: Digest; blobs: number; pullMs: number };
      const layout = await readLayout(dir);
      const manifest = JSON.parse((await layout.readBlob(layout.resolve(tag))).toString()) as ImageManifest;
      manifestDigest = r.manifestDigest;
      bytes = (await layout.readBlob(layout.resolve(tag))).length + manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0);
      blobs = r.blobs + 1;
      (durable ? shoalRuns : noSyncRuns).push({ seconds, mbps: bytes / 1e6 / seconds });
      log(`shoal${durable ? '' : ' (no fsync)'} run ${i + 1}: ${seconds.toFixed(3)} s (the pull call itself ${(r.pullMs / 1000).toFixed(3)} s), ${(bytes / 1e6 / seconds).toFixed(0)} MB/s`);
      await rm(dir, { recursive: true, force: true });
    };
    const skopeoOnce = async (i: number): Promise<void> => {
      const dir = join(work, `skopeo-${i}`);
      const t0 = performance.now();
      await run('skopeo', ['--insecure-policy', 'copy', '-q', '--src-tls-verify=false', `docker://${host}/${ref.repository}:${tag}`, `oci:${dir}:${tag}`], {
        maxBuffer: 16 * 1024 * 1024,
      });
      const seconds = (performance.now() - t0) / 1000;
      if (sameManifest === undefined && manifestDigest !== undefined) {
        const layout = await readLayout(dir);
        sameManifest = layout.resolve(tag).digest === manifestDigest;
      }
      skopeoRuns.push({ seconds, mbps: bytes / 1e6 / seconds });
      log(`skopeo run ${i + 1}: ${seconds.toFixed(3)} s, ${(bytes / 1e6 / seconds).toFixed(0)} MB/s`);
      await rm(dir, { recursive: true, force: true });
    };
    // One untimed pull warms the store's page cache and fills in the byte count.
    await shoalOnce(-1);
    shoalRuns.length = 0;
    for (let i = 0; i < runs; i++) {
      if (i % 2 === 0 || !skopeo) {
        await shoalOnce(i);
        if (skopeo) await skopeoOnce(i);
      } else {
        await skopeoOnce(i);
        await shoalOnce(i);
      }
      await shoalOnce(i, false);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const shoal = side(shoalRuns);
  const sk = skopeo ? side(skopeoRuns) : undefined;
  return {
    storeUrl: options.storeUrl,
    ref: formatImageRef(ref),
    bytes,
    blobs,
    concurrency,
    shoal,
    shoalNoSync: side(noSyncRuns),
    skopeo: sk,
    ratio: sk ? shoal.medianMBps / sk.medianMBps : undefined,
    sameManifest,
  };
}

// ---------------------------------------------------------------------------------
// Standalone: a store in a child process and a synthetic image

/** Starts `startStore` in its own node process; resolves with its URL. */
export async function startStoreProcess(dataDir: string): Promise<{ url: string; stop(): Promise<void> }> {
  const code = `
    import { startStore } from ${JSON.stringify(join(ROOT, 'src/image/store-server.ts'))};
    const s = await startStore({ dataDir: ${JSON.stringify(dataDir)}, port: 0 });
    process.stdout.write(s.url + '\\n');
    process.on('SIGTERM', () => s.close().then(() => process.exit(0)));
  `;
  const child: ChildProcess = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve(line.trim());
    });
    child.once('exit', (c) => reject(new Error(`the store process exited (${c}) before it listened`)));
  });
  return {
    url,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** A gzip (level 1) layer of one file of `size` incompressible bytes, into the layout. */
async function addRandomLayer(writer: Awaited<ReturnType<typeof createLayoutWriter>>, dir: string, name: string, size: number) {
  const p = pack();
  const tarHash = (await import('node:crypto')).createHash('sha256');
  const tmp = join(dir, `${name}.tar.gz`);
  const done = pipeline(
    p as unknown as Readable,
    async function* (src: AsyncIterable<Buffer>) {
      for await (const c of src) {
        tarHash.update(c);
        yield c;
      }
    },
    createGzip({ level: 1 }),
    createWriteStream(tmp),
  );
  const sink = p.entry({ name: `data/${name}.bin`, size, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0 });
  const chunk = 1024 * 1024;
  await pipeline(
    Readable.from(
      (function* () {
        for (let left = size; left > 0; left -= chunk) yield randomBytes(Math.min(chunk, left));
      })(),
    ),
    sink,
  );
  p.finalize();
  await done;
  const { createReadStream } = await import('node:fs');
  const blob = await writer.addBlob(createReadStream(tmp));
  await rm(tmp);
  return { mediaType: MediaType.ociLayerGzip, digest: blob.digest, size: blob.size, diffId: `sha256:${tarHash.digest('hex')}` as Digest };
}

export async function pushSyntheticImage(storeUrl: string, ref: string, sizes = [120e6, 30e6, 1e6]): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-image-'));
  try {
    const writer = await createLayoutWriter(dir);
    const layers = [];
    for (const [i, size] of sizes.entries()) layers.push(await addRandomLayer(writer, dir, `layer${i}`, size));
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/true'] }, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) } }));
    await writer.addBlob(config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: digestOf(config), size: config.length },
        layers: layers.map(({ mediaType, digest, size }) => ({ mediaType, digest, size })),
      }),
    );
    await writer.addBlob(manifest);
    writer.setRef('latest', { mediaType: MediaType.ociManifest, digest: digestOf(manifest), size: manifest.length });
    await writer.finish();
    await pushImage(createRegistryClient({ baseUrl: storeUrl }), { layoutDir: dir }, parseImageRef(ref));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function formatResult(r: PullBenchResult): string {
  const row = (name: string, s: PullSide) =>
    `| ${name} | ${s.runs.map((x) => x.mbps.toFixed(0)).join(', ')} | ${s.medianMBps.toFixed(0)} | ${s.medianSeconds.toFixed(3)} |`;
  return [
    `Pull of ${r.ref} (${(r.bytes / 1e6).toFixed(1)} MB in ${r.blobs} blobs) from ${r.storeUrl}, concurrency ${r.concurrency}`,
    '',
    '| client | MB/s per run | median MB/s | median s |',
    '| --- | --- | --- | --- |',
    row('shoal (pull-cli process)', r.shoal),
    row('shoal (pull-cli process), no fsync', r.shoalNoSync),
    ...(r.skopeo ? [row('skopeo copy', r.skopeo)] : []),
    '',
    r.ratio !== undefined ? `ratio shoal/skopeo: ${r.ratio.toFixed(2)} (goal ≥ 1.0); same manifest: ${r.sameManifest}` : 'skopeo not installed: no ratio',
  ].join('\n');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const arg = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const runs = Number(arg('--runs') ?? 3);
  const concurrency = Number(arg('--concurrency') ?? 4);
  const log = (line: string): void => void process.stderr.write(`${line}\n`);
  if (arg('--store')) {
    const r = await runPullBench({ storeUrl: arg('--store')!, ref: arg('--ref') ?? 'bench/pull:latest', runs, concurrency, log });
    console.log(args.includes('--json') ? JSON.stringify(r, null, 2) : formatResult(r));
    return;
  }
  const dataDir = await mkdtemp(join(tmpdir(), 'shoal-bench-store-'));
  const store = await startStoreProcess(dataDir).catch(async (e: unknown) => {
    await rm(dataDir, { recursive: true, force: true });
    throw e;
  });
  try {
    log(`store at ${store.url}; pushing the synthetic image…`);
    await pushSyntheticImage(store.url, 'bench/pull:latest');
    const r = await runPullBench({ storeUrl: store.url, ref: 'bench/pull:latest', runs, concurrency, log });
    console.log(args.includes('--json') ? JSON.stringify(r, null, 2) : formatResult(r));
  } finally {
    await store.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

if (process.argv[1] === SELF) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}

/** For bench/compare.ts: the headline ratio and each side's MB/s with its runs. */
export function pullFigures(r: PullBenchResult): Figure[] {
  return [
    fig('pull.shoal.mbps', 'Shoal pull MB/s (process per run)', r.shoal.medianMBps, 'rate', 'higher', r.shoal.runs.map((x) => x.mbps)),
    ...(r.skopeo ? [fig('pull.skopeo.mbps', 'skopeo copy MB/s', r.skopeo.medianMBps, 'rate', 'higher', r.skopeo.runs.map((x) => x.mbps))] : []),
    ...(r.ratio === undefined ? [] : [fig('pull.ratio', 'Shoal / skopeo pull throughput', r.ratio, 'ratio', 'higher')]),
  ];
}
