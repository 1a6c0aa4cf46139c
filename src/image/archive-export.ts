// Exporting an image from the store to a file or directory that other tools read:
//   oci-layout      an OCI image layout directory (skopeo `oci:DIR:TAG`)
//   oci-archive     a tar of that layout (skopeo `oci-archive:FILE:TAG`)
//   docker-archive  what `docker save` writes since Docker 25: the OCI layout plus a
//                   manifest.json ([{Config, RepoTags, Layers}]) whose paths point into
//                   blobs/sha256/. The layers stay gzip-compressed, as stored: `docker
//                   load` decompresses them (it has always accepted compressed layers)
//                   and checks each against the config's diff_ids; and because the
//                   blobs and manifest are the store's own bytes, importing the file
//                   again gives the same manifest digest.
// The image is first pulled (every digest verified) into a temp layout; the result
// appears under `output` only when complete (temp name + rename).
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, basename } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pack as tarPack } from 'tar-stream';
import { digestHex, type Digest, ShoalError } from '../protocol/index.ts';
import type { ImageRef } from '../protocol/index.ts';
import { LAYOUT_FILE, readLayout, resolveImageManifest, type Platform } from './oci-layout.ts';
import { pullImage, type PullProgress, type RegistryClient } from './registry-client.ts';
import { statIfExists, lstatIfExists } from './fs-util.ts';

export type ExportFormat = 'oci-archive' | 'oci-layout' | 'docker-archive';

export interface ExportOptions {
  format: ExportFormat;
  platform?: Platform;
  concurrency?: number;
  /** Replace an existing output (default: refuse with 'conflict'). */
  overwrite?: boolean;
  onProgress?(p: PullProgress): void;
}

export interface ExportResult {
  manifestDigest: Digest;
  /** Size of the archive written, or of the layout's blobs. */
  bytes: number;
  format: ExportFormat;
}

export async function exportImage(source: { client: RegistryClient; ref: ImageRef }, output: string, opts: ExportOptions): Promise<ExportResult> {
  const { client, ref } = source;
  if (!['oci-archive', 'oci-layout', 'docker-archive'].includes(opts.format)) {
    throw new ShoalError('unsupported', `unknown export format ${JSON.stringify(opts.format)} (oci-archive, oci-layout or docker-archive)`, { field: 'format' });
  }
  const existing = await lstatIfExists(output);
  if (existing && !opts.overwrite) throw new ShoalError('conflict', `${output} exists; remove it or ask to overwrite`, { field: 'output' });
  const parent = await statIfExists(dirname(output));
  if (!parent?.isDirectory()) throw new ShoalError('not-found', `${dirname(output)}: no such directory`, { field: 'output' });

  const suffix = `.tmp-${randomBytes(6).toString('hex')}`;
  // A layout is built where it will live (one rename); an archive's layout is scratch.
  const layoutDir = opts.format === 'oci-layout' ? join(dirname(output), `.${basename(output)}${suffix}`) : await mkdtemp(join(tmpdir(), 'shoal-export-'));
  const tmpArchive = join(dirname(output), `.${basename(output)}${suffix}`);
  try {
    const pulled = await pullImage(client, ref, { layoutDir }, {
      refName: ref.tag ?? null,
      ...(opts.platform ? { platform: opts.platform } : {}),
      ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    });
    const layout = await readLayout(layoutDir);
    const image = await resolveImageManifest(layout, layout.resolve(ref.tag), layoutDir, opts.platform);
    const blobs = [image.descriptor, image.manifest.config, ...image.manifest.layers];

    if (opts.format === 'oci-layout') {
      const bytes = blobs.reduce((n, b, i) => (blobs.findIndex((x) => x.digest === b.digest) === i ? n + b.size : n), 0);
      if (existing) await rm(output, { recursive: true, force: true });
      await rename(layoutDir, output);
      return { manifestDigest: pulled.manifestDigest, bytes, format: opts.format };
    }

    const files: Array<{ name: string; path?: string; bytes?: Buffer }> = [
      { name: LAYOUT_FILE, bytes: await readFile(join(layoutDir, LAYOUT_FILE)) },
      { name: 'index.json', bytes: await readFile(join(layoutDir, 'index.json')) },
    ];
    if (opts.format === 'docker-archive') {
      const entry = {
        Config: `blobs/sha256/${digestHex(image.manifest.config.digest as Digest)}`,
        RepoTags: ref.tag ? [formatRepoTag(ref)] : [],
        Layers: image.manifest.layers.map((l) => `blobs/sha256/${digestHex(l.digest as Digest)}`),
      };
      files.push({ name: 'manifest.json', bytes: Buffer.from(JSON.stringify([entry])) });
    }
    const seen = new Set<string>();
    for (const b of [...blobs].sort((x, y) => (x.digest < y.digest ? -1 : 1))) {
      if (seen.has(b.digest)) continue;
      seen.add(b.digest);
      files.push({ name: `blobs/sha256/${digestHex(b.digest as Digest)}`, path: layout.blobPath(b.digest as Digest) });
    }
    await writeTar(tmpArchive, ['blobs/', 'blobs/sha256/'], files);
    const bytes = (await stat(tmpArchive)).size;
    if (existing?.isDirectory()) await rm(output, { recursive: true, force: true });
    await rename(tmpArchive, output);
    return { manifestDigest: pulled.manifestDigest, bytes, format: opts.format };
  } finally {
    await rm(layoutDir, { recursive: true, force: true });
    await rm(tmpArchive, { force: true });
  }
}

/** docker's RepoTags spelling: NAME:TAG (the store's repository name as the NAME). */
function formatRepoTag(ref: ImageRef): string {
  return `${ref.repository}:${ref.tag ?? 'latest'}`;
}

/** A reproducible tar: fixed order, mtime 0, owner 0:0, modes 0644/0755. */
async function writeTar(file: string, dirs: string[], files: Array<{ name: string; path?: string; bytes?: Buffer }>): Promise<void> {
  const pack = tarPack();
  const written = pipeline(pack, createWriteStream(file, { flags: 'wx' }));
  const base = { mtime: new Date(0), uid: 0, gid: 0, uname: '', gname: '' };
  try {
    for (const f of files.slice(0, 2)) pack.entry({ ...base, name: f.name, mode: 0o644 }, f.bytes!);
    for (const f of files.slice(2).filter((f) => f.bytes)) pack.entry({ ...base, name: f.name, mode: 0o644 }, f.bytes!);
    for (const d of dirs) pack.entry({ ...base, name: d, type: 'directory', mode: 0o755 });
    for (const f of files.slice(2).filter((f) => f.path)) {
      const size = (await stat(f.path!)).size;
      const sink = pack.entry({ ...base, name: f.name, mode: 0o644, size });
      await pipeline(createReadStream(f.path!, { highWaterMark: 1024 * 1024 }), sink);
    }
    pack.finalize();
  } catch (e) {
    pack.destroy(e as Error);
    await written.catch(() => undefined);
    throw e;
  }
  await written;
}
