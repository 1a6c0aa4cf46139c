// Builds small OCI images in memory for the store's tests: gzip tar layers, configs,
// manifests, indexes; and snapshots a directory tree to prove that nothing changed.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { digestOf, type Digest } from '../../src/protocol/digest.ts';
import { MediaType } from '../../src/protocol/oci.ts';

export interface Layer {
  tar: Buffer;
  gz: Buffer;
  digest: Digest;
  diffId: Digest;
  size: number;
}

export async function makeTar(files: Record<string, string>): Promise<Buffer> {
  const p = pack();
  for (const [name, content] of Object.entries(files)) {
    p.entry({ name, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0 }, content);
  }
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export async function makeLayer(files: Record<string, string>): Promise<Layer> {
  const tar = await makeTar(files);
  const gz = gzipSync(tar);
  return { tar, gz, digest: digestOf(gz), diffId: digestOf(tar), size: gz.length };
}

export function makeConfig(
  diffIds: string[],
  extra: { Entrypoint?: string[]; Cmd?: string[]; Env?: string[]; WorkingDir?: string; User?: string; architecture?: string } = {},
): Buffer {
  const { architecture, ...config } = extra;
  return Buffer.from(
    JSON.stringify({
      architecture: architecture ?? 'amd64',
      os: 'linux',
      created: '2024-01-01T00:00:00Z',
      config,
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
}

export function descriptor(mediaType: string, bytes: Buffer, extra: Record<string, unknown> = {}) {
  return { mediaType, digest: digestOf(bytes), size: bytes.length, ...extra };
}

export function makeManifest(config: Buffer, layers: Layer[], mediaType: string = MediaType.ociManifest): Buffer {
  const docker = mediaType === MediaType.dockerManifest;
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: descriptor(docker ? MediaType.dockerConfig : MediaType.ociConfig, config),
      layers: layers.map((l) => ({
        mediaType: docker ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip,
        digest: l.digest,
        size: l.size,
      })),
    }),
  );
}

export function makeIndex(children: Array<{ manifest: Buffer; architecture: string }>): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: children.map((c) =>
        descriptor(MediaType.ociManifest, c.manifest, { platform: { os: 'linux', architecture: c.architecture } }),
      ),
    }),
  );
}

/** path → sha256 of every file under dir (directories show as entries too). */
export async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (path: string, rel: string) => {
    let entries;
    try {
      entries = await readdir(path, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(path, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        out[`${r}/`] = 'dir';
        await walk(p, r);
      } else {
        out[r] = createHash('sha256').update(await readFile(p)).digest('hex');
      }
    }
  };
  await walk(dir, '');
  return out;
}
