// Fixtures for the registry-client, import and export tests: a store server on a temp
// dir, OCI layouts built from tiny layers, and tars crafted entry by entry (hostile
// ones included).
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pack, type Header } from 'tar-stream';
import { createLayoutWriter } from '../../src/image/oci-layout.ts';
import { createRegistryClient, type RegistryClient } from '../../src/image/registry-client.ts';
import { startStore } from '../../src/image/store-server.ts';
import { digestOf, type Digest } from '../../src/protocol/digest.ts';
import { MediaType } from '../../src/protocol/oci.ts';
import { makeConfig, makeLayer, makeManifest, type Layer } from './store-fixtures.ts';

export { makeConfig, makeLayer, makeManifest, makeTar, type Layer } from './store-fixtures.ts';

export interface TestStore {
  url: string;
  dataDir: string;
  client: RegistryClient;
  close(): Promise<void>;
  /** Every file under the data dir whose path has a `blobs/` component. */
  blobFiles(): Promise<string[]>;
}

export async function startTestStore(): Promise<TestStore> {
  const dataDir = await mkdtemp(join(tmpdir(), 'shoal-test-store-'));
  const server = await startStore({ dataDir, host: '127.0.0.1', port: 0 });
  return {
    url: server.url,
    dataDir,
    client: createRegistryClient({ baseUrl: server.url }),
    async close() {
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
    blobFiles: () => listFiles(dataDir).then((all) => all.filter((p) => /(^|\/)blobs\//.test(p)).sort()),
  };
}

/** Relative paths of every regular file under dir. */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (path: string, rel: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(path, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(join(path, e.name), r);
      else out.push(r);
    }
  };
  await walk(dir, '');
  return out.sort();
}

export interface TarEntry {
  name: string;
  content?: Buffer | string;
  type?: Header['type'];
  linkname?: string;
  mode?: number;
}

/** A tar whose entries are exactly these, names unchecked (for hostile archives). */
export async function tarOf(entries: TarEntry[]): Promise<Buffer> {
  const p = pack();
  for (const e of entries) {
    const header: Partial<Header> & { name: string } = { name: e.name, mode: e.mode ?? (e.type === 'directory' ? 0o755 : 0o644), mtime: new Date(0), uid: 0, gid: 0 };
    if (e.type) header.type = e.type;
    if (e.linkname !== undefined) header.linkname = e.linkname;
    if (e.type === 'character-device' || e.type === 'block-device') {
      header.devmajor = 1;
      header.devminor = 3;
    }
    const content = e.content ?? (e.type === undefined || e.type === 'file' ? '' : undefined);
    if (content === undefined) p.entry(header);
    else p.entry(header, content);
  }
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export interface BuiltImage {
  layers: Layer[];
  config: Buffer;
  manifest: Buffer;
  manifestDigest: Digest;
}

/** An image of gzip layers built from `files` (one record per layer). */
export async function buildImage(files: Array<Record<string, string>>, extra: { Cmd?: string[] } = {}): Promise<BuiltImage> {
  const layers: Layer[] = [];
  for (const f of files) layers.push(await makeLayer(f));
  const config = makeConfig(layers.map((l) => l.diffId), { Cmd: extra.Cmd ?? ['/bin/app'] });
  const manifest = makeManifest(config, layers);
  return { layers, config, manifest, manifestDigest: digestOf(manifest) };
}

/** Writes `image` as an OCI layout at `dir`, named `refName`. */
export async function writeLayout(dir: string, image: BuiltImage, refName = 'latest'): Promise<void> {
  const w = await createLayoutWriter(dir);
  for (const l of image.layers) await w.addBlob(l.gz);
  await w.addBlob(image.config);
  await w.addBlob(image.manifest);
  w.setRef(refName, { mediaType: MediaType.ociManifest, digest: image.manifestDigest, size: image.manifest.length });
  await w.finish();
}

/** Tar entries for every file under dir (for turning a layout into an OCI archive). */
export async function dirEntries(dir: string): Promise<TarEntry[]> {
  const { readFile } = await import('node:fs/promises');
  const entries: TarEntry[] = [];
  for (const rel of await listFiles(dir)) entries.push({ name: rel, content: await readFile(join(dir, rel)) });
  return entries;
}

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
