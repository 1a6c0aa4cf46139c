// Push and pull of the node template through skopeo: Shoal's store against the reference
// registry (CNCF distribution, Debian's `docker-registry`), both as processes on
// loopback, same image, interleaved rounds (the order flips each round so neither always
// runs on the warmer cache). Each round starts both registries on fresh, empty storage
// (outside the timed region), so every push uploads every blob; then it times
//   skopeo copy oci:SRC:node docker://HOST/bench/node:tpl     (push)
//   skopeo copy docker://HOST/bench/node:tpl oci:DST:node     (pull, into a fresh dir)
// as whole skopeo processes against each registry. Before the timed push, each fresh
// registry gets one untimed push and pull of a small image (another repository), so a
// long-running store is measured, not a just-started one (Shoal's JIT is cold at first;
// the Go registry has nothing to warm). Figures: median seconds and MB/s
// (MB = 10^6 bytes of blobs), and shoal/reference speed (goal ≥ 1.0 for both).
//
//   node bench/store.ts [--runs 5]
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { buildNodeTemplate, createRegistryClient, pullImage } from '../src/image/index.ts';
import { createLayoutWriter } from '../src/image/oci-layout.ts';
import { digestOf } from '../src/protocol/digest.ts';
import { parseImageRef } from '../src/protocol/image-ref.ts';
import { MediaType } from '../src/protocol/oci.ts';
import { canConnect, executable, freePort, stopChild } from './lib/peers.ts';
import { startStoreProcess } from './pull.ts';

const run = promisify(execFile);
const SELF = fileURLToPath(import.meta.url);
export const REFERENCE_REGISTRY = '/usr/bin/docker-registry';

export interface Timed {
  seconds: number[];
  medianSeconds: number;
  medianMBps: number;
}

export interface StoreBenchResult {
  image: string;
  bytes: number;
  blobs: number;
  rounds: number;
  push: { shoal: Timed; reference: Timed; ratio: number };
  pull: { shoal: Timed; reference: Timed; ratio: number };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function timed(seconds: number[], bytes: number): Timed {
  const m = median(seconds);
  return { seconds, medianSeconds: m, medianMBps: bytes / 1e6 / m };
}

/** The reference registry on 127.0.0.1, storage in `dir`; resolves once it accepts connections. */
async function startReferenceRegistry(dir: string): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await freePort();
  await mkdir(join(dir, 'storage'), { recursive: true });
  const config = join(dir, 'config.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: error',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(dir, 'storage')}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn(REFERENCE_REGISTRY, ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const deadline = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`docker-registry did not start on port ${port}: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { url: `http://127.0.0.1:${port}`, stop: () => stopChild(child) };
}

async function skopeoCopy(from: string, to: string): Promise<number> {
  const t0 = performance.now();
  await run('skopeo', ['--insecure-policy', 'copy', '-q', '--src-tls-verify=false', '--dest-tls-verify=false', from, to], {
    maxBuffer: 16 * 1024 * 1024,
  });
  return (performance.now() - t0) / 1000;
}

async function layoutBlobs(dir: string): Promise<{ bytes: number; blobs: number }> {
  let bytes = 0;
  const names = await readdir(join(dir, 'blobs', 'sha256'));
  for (const n of names) bytes += (await stat(join(dir, 'blobs', 'sha256', n))).size;
  return { bytes, blobs: names.length };
}

/** A one-layer image (one file of `size` random bytes) in an OCI layout at `dir`, tag `warm`. */
export async function writeSmallImage(dir: string, size: number): Promise<void> {
  const w = await createLayoutWriter(dir);
  const p = pack();
  p.entry({ name: 'warm.bin', mode: 0o644, mtime: new Date(0), uid: 0, gid: 0 }, randomBytes(size));
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  const tar = Buffer.concat(chunks);
  const layer = gzipSync(tar, { level: 1 });
  await w.addBlob(layer);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [digestOf(tar)] } }));
  await w.addBlob(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: digestOf(config), size: config.length },
      layers: [{ mediaType: MediaType.ociLayerGzip, digest: digestOf(layer), size: layer.length }],
    }),
  );
  await w.addBlob(manifest);
  w.setRef('warm', { mediaType: MediaType.ociManifest, digest: digestOf(manifest), size: manifest.length });
  await w.finish();
}

export async function runStoreBench(options: { runs?: number; log?: (line: string) => void } = {}): Promise<StoreBenchResult | { skipped: string }> {
  const runs = options.runs ?? 5;
  const log = options.log ?? (() => undefined);
  if (!(await executable(REFERENCE_REGISTRY))) return { skipped: `${REFERENCE_REGISTRY} is missing (apt-get install docker-registry)` };
  if (!(await run('skopeo', ['--version']).then(() => true, () => false))) return { skipped: 'skopeo is not installed' };
  const work = await mkdtemp(join(tmpdir(), 'shoal-bench-store-'));
  try {
    // The image: the node template, built into a scratch store and pulled into an OCI layout.
    const src = join(work, 'src');
    const scratch = await startStoreProcess(join(work, 'scratch'));
    let image: string;
    try {
      const client = createRegistryClient({ baseUrl: scratch.url });
      log('building template://node');
      image = (await buildNodeTemplate({ client, workDir: work })).name;
      await pullImage(client, parseImageRef(image), { layoutDir: src });
    } finally {
      await scratch.stop();
      await rm(join(work, 'scratch'), { recursive: true, force: true });
    }
    const tag = parseImageRef(image).tag ?? 'latest';
    const { bytes, blobs } = await layoutBlobs(src);
    log(`${image}: ${(bytes / 1e6).toFixed(1)} MB in ${blobs} blobs`);

    const warm = join(work, 'warm');
    await writeSmallImage(warm, 4 << 20);
    const seconds = { push: { shoal: [] as number[], reference: [] as number[] }, pull: { shoal: [] as number[], reference: [] as number[] } };
    const round = async (i: number, who: 'shoal' | 'reference') => {
      const dir = join(work, `${who}-${i}`);
      const reg = who === 'shoal' ? await startStoreProcess(join(dir, 'data')) : await startReferenceRegistry(dir);
      try {
        const host = new URL(reg.url).host;
        await skopeoCopy(`oci:${warm}:warm`, `docker://${host}/bench/warm:warm`);
        await skopeoCopy(`docker://${host}/bench/warm:warm`, `oci:${join(dir, 'warm')}:warm`);
        const remote = `docker://${host}/bench/node:${tag}`;
        const push = await skopeoCopy(`oci:${src}:${tag}`, remote);
        const pull = await skopeoCopy(remote, `oci:${join(dir, 'pulled')}:${tag}`);
        const got = await layoutBlobs(join(dir, 'pulled'));
        if (got.bytes !== bytes) throw new Error(`${who} round ${i}: pulled ${got.bytes} bytes of blobs, pushed ${bytes}`);
        seconds.push[who].push(push);
        seconds.pull[who].push(pull);
        log(`${who} round ${i + 1}: push ${push.toFixed(3)} s, pull ${pull.toFixed(3)} s`);
      } finally {
        await reg.stop();
        await rm(dir, { recursive: true, force: true });
      }
    };
    for (let i = 0; i < runs; i++) {
      const order: Array<'shoal' | 'reference'> = i % 2 === 0 ? ['shoal', 'reference'] : ['reference', 'shoal'];
      for (const who of order) await round(i, who);
    }
    const side = (k: 'push' | 'pull') => {
      const shoal = timed(seconds[k].shoal, bytes);
      const reference = timed(seconds[k].reference, bytes);
      return { shoal, reference, ratio: reference.medianSeconds / shoal.medianSeconds };
    };
    return { image, bytes, blobs, rounds: runs, push: side('push'), pull: side('pull') };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export function formatStoreBench(r: StoreBenchResult | { skipped: string }): string {
  if ('skipped' in r) return `skipped: ${r.skipped}`;
  const row = (what: string, who: string, t: Timed) =>
    `| ${what} | ${who} | ${t.seconds.map((s) => s.toFixed(3)).join(', ')} | ${t.medianSeconds.toFixed(3)} | ${t.medianMBps.toFixed(0)} |`;
  return [
    `Image ${r.image}: ${(r.bytes / 1e6).toFixed(1)} MB in ${r.blobs} blobs; skopeo copy against each registry process on loopback, fresh storage each round, ${r.rounds} interleaved rounds.`,
    '',
    '| | registry | seconds per round | median s | median MB/s |',
    '|---|---|---|---|---|',
    row('push', 'shoal store', r.push.shoal),
    row('push', 'docker-registry', r.push.reference),
    row('pull', 'shoal store', r.pull.shoal),
    row('pull', 'docker-registry', r.pull.reference),
    '',
    `**Speed shoal / reference: push ${r.push.ratio.toFixed(2)}×, pull ${r.pull.ratio.toFixed(2)}×** (goal ≥ 1.0 for both)`,
  ].join('\n');
}

if (process.argv[1] === SELF) {
  const args = process.argv.slice(2);
  const i = args.indexOf('--runs');
  const runs = i >= 0 ? Number(args[i + 1]) : 5;
  runStoreBench({ runs, log: (l) => void process.stderr.write(`${l}\n`) })
    .then((r) => console.log(args.includes('--json') ? JSON.stringify(r, null, 2) : formatStoreBench(r)))
    .catch((e: unknown) => {
      console.error(e);
      process.exitCode = 1;
    });
}
