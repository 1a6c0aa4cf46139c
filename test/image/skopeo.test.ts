// The store against a real OCI client: skopeo pushes an OCI layout built here, pulls it
// back, inspects it and lists its tags. Digests must survive both ways unchanged.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { startStore, type RunningStore } from '../../src/image/store-server.ts';
import { digestOf } from '../../src/protocol/digest.ts';
import { MediaType } from '../../src/protocol/oci.ts';
import { makeConfig, makeIndex, makeLayer, makeManifest } from './store-fixtures.ts';

const run = promisify(execFile);

async function skopeoVersion(): Promise<string | undefined> {
  try {
    return (await run('skopeo', ['--version'])).stdout.trim();
  } catch {
    return undefined;
  }
}

const version = await skopeoVersion();
const missing = version === undefined;
if (missing && process.env.CI === 'true') {
  test('skopeo is installed (required in CI)', () => {
    assert.fail('skopeo is not installed: scripts/setup-system.sh should install it (apt-get install skopeo)');
  });
}

let root: string;
let s: RunningStore;
let host: string;

async function skopeo(...args: string[]): Promise<string> {
  // --insecure-policy: no /etc/containers/policy.json needed; HOME/TMPDIR keep skopeo's
  // caches (blob-info-cache) inside the test's temp dir.
  const env = { ...process.env, HOME: join(root, 'home'), TMPDIR: join(root, 'tmp') };
  try {
    const { stdout } = await run('skopeo', ['--insecure-policy', ...args], { env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`skopeo ${args.join(' ')} failed: ${err.stderr ?? err.message}`);
  }
}

/** Writes an OCI image layout: blobs, oci-layout, index.json naming `refs`. */
async function writeLayout(dir: string, blobs: Buffer[], refs: Array<{ name: string; bytes: Buffer; mediaType: string }>) {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  for (const b of blobs) await writeFile(join(dir, 'blobs', 'sha256', digestOf(b).slice(7)), b);
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: refs.map((r) => ({
        mediaType: r.mediaType,
        digest: digestOf(r.bytes),
        size: r.bytes.length,
        annotations: { 'org.opencontainers.image.ref.name': r.name },
      })),
    }),
  );
}

async function layoutBlobs(dir: string): Promise<string[]> {
  return (await readdir(join(dir, 'blobs', 'sha256'))).sort();
}

async function layoutRef(dir: string, name: string): Promise<string> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as {
    manifests: Array<{ digest: string; annotations?: Record<string, string> }>;
  };
  const m = index.manifests.find((x) => x.annotations?.['org.opencontainers.image.ref.name'] === name);
  assert.ok(m, `no ${name} in ${dir}/index.json`);
  return m.digest;
}

describe('skopeo against the store', { skip: missing ? 'skopeo is not installed (apt-get install skopeo)' : false }, () => {
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'shoal-skopeo-'));
    await mkdir(join(root, 'home'));
    await mkdir(join(root, 'tmp'));
    s = await startStore({ dataDir: join(root, 'data') });
    host = new URL(s.url).host;
  });
  after(async () => {
    await s?.close();
    await rm(root, { recursive: true, force: true });
  });

  test('push an OCI layout, pull it back: same manifest and blob digests; inspect; list-tags', async () => {
    const l1 = await makeLayer({ 'etc/hello.txt': 'hello\n', 'bin/app': '#!/bin/sh\necho hi\n' });
    const l2 = await makeLayer({ 'srv/data.txt': 'data '.repeat(20_000) });
    const config = makeConfig([l1.diffId, l2.diffId], { Cmd: ['/bin/app'], Env: ['PATH=/bin'] });
    const manifest = makeManifest(config, [l1, l2]);
    const src = join(root, 'src');
    await writeLayout(src, [l1.gz, l2.gz, config, manifest], [{ name: 't', bytes: manifest, mediaType: MediaType.ociManifest }]);

    await skopeo('copy', '--dest-tls-verify=false', `oci:${src}:t`, `docker://${host}/demo/app:1`);
    const stored = await s.store.getManifest('demo/app', '1');
    assert.ok(stored);
    assert.equal(stored.digest, digestOf(manifest), 'the store holds the manifest skopeo pushed, byte for byte');
    for (const b of [l1.gz, l2.gz, config]) assert.equal(await s.blobs.verify(digestOf(b)), true);

    const dst = join(root, 'dst');
    await skopeo('copy', '--src-tls-verify=false', `docker://${host}/demo/app:1`, `oci:${dst}:t`);
    assert.equal(await layoutRef(dst, 't'), digestOf(manifest));
    assert.deepEqual(await layoutBlobs(dst), await layoutBlobs(src));
    for (const name of await layoutBlobs(dst)) {
      const bytes = await readFile(join(dst, 'blobs', 'sha256', name));
      assert.equal(digestOf(bytes), `sha256:${name}`);
    }

    const info = JSON.parse(await skopeo('inspect', '--tls-verify=false', `docker://${host}/demo/app:1`)) as {
      Digest: string;
      Layers: string[];
      RepoTags: string[];
      Architecture: string;
    };
    assert.equal(info.Digest, digestOf(manifest));
    assert.deepEqual(info.Layers, [l1.digest, l2.digest]);
    assert.deepEqual(info.RepoTags, ['1']);
    assert.equal(info.Architecture, 'amd64');
    const raw = await skopeo('inspect', '--raw', '--tls-verify=false', `docker://${host}/demo/app@${digestOf(manifest)}`);
    assert.equal(digestOf(raw), digestOf(manifest));

    await skopeo('copy', '--dest-tls-verify=false', `oci:${src}:t`, `docker://${host}/demo/app:2`);
    const tags = JSON.parse(await skopeo('list-tags', '--tls-verify=false', `docker://${host}/demo/app`)) as { Tags: string[] };
    assert.deepEqual(tags.Tags, ['1', '2']);
  });

  test('registry to registry (no blob sent twice) and a Docker schema 2 conversion', async () => {
    const l = await makeLayer({ 'a.txt': 'a' });
    const config = makeConfig([l.diffId]);
    const manifest = makeManifest(config, [l]);
    const src = join(root, 'src2');
    await writeLayout(src, [l.gz, config, manifest], [{ name: 'x', bytes: manifest, mediaType: MediaType.ociManifest }]);
    await skopeo('copy', '--dest-tls-verify=false', `oci:${src}:x`, `docker://${host}/demo/one:x`);
    const seen: string[] = [];
    const record = (req: { method?: string; url?: string }) => seen.push(`${req.method} ${req.url}`);
    s.server.on('request', record);
    await skopeo('copy', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${host}/demo/one:x`, `docker://${host}/other/two:y`);
    s.server.off('request', record);
    // Blobs are shared by the whole store, so skopeo's HEAD in the target repository
    // already finds them: nothing is uploaded again (not even a mount request).
    assert.ok(seen.some((r) => r.startsWith('HEAD /v2/other/two/blobs/')), seen.join(', '));
    assert.ok(!seen.some((r) => r.startsWith('PATCH') || r.startsWith('POST')), `no blob was sent again: ${seen.join(', ')}`);
    assert.equal((await s.store.getManifest('other/two', 'y'))?.digest, digestOf(manifest));

    await skopeo('copy', '--dest-tls-verify=false', '--format', 'v2s2', `oci:${src}:x`, `docker://${host}/demo/docker:1`);
    const docker = await s.store.getManifest('demo/docker', '1');
    assert.equal(docker?.mediaType, MediaType.dockerManifest);
    const dst = join(root, 'dst2');
    await skopeo('copy', '--src-tls-verify=false', `docker://${host}/demo/docker:1`, `oci:${dst}:x`);
    assert.ok((await layoutBlobs(dst)).includes(l.digest.slice(7)));
  });

  test('a multi-platform index, both ways with --all', async () => {
    const amd = await makeLayer({ 'arch': 'amd64' });
    const arm = await makeLayer({ 'arch': 'arm64' });
    const amdConfig = makeConfig([amd.diffId], { Cmd: ['amd'] });
    const armConfig = makeConfig([arm.diffId], { Cmd: ['arm'], architecture: 'arm64' });
    const amdManifest = makeManifest(amdConfig, [amd]);
    const armManifest = makeManifest(armConfig, [arm]);
    const index = makeIndex([
      { manifest: amdManifest, architecture: 'amd64' },
      { manifest: armManifest, architecture: 'arm64' },
    ]);
    const src = join(root, 'src3');
    await writeLayout(src, [amd.gz, arm.gz, amdConfig, armConfig, amdManifest, armManifest, index], [
      { name: 'multi', bytes: index, mediaType: MediaType.ociIndex },
    ]);
    await skopeo('copy', '--all', '--dest-tls-verify=false', `oci:${src}:multi`, `docker://${host}/demo/multi:1`);
    assert.equal((await s.store.getManifest('demo/multi', '1'))?.digest, digestOf(index));
    const { parseImageRef } = await import('../../src/protocol/image-ref.ts');
    assert.equal((await s.store.resolve(parseImageRef('demo/multi:1'))).manifestDigest, digestOf(amdManifest));
    const dst = join(root, 'dst3');
    await skopeo('copy', '--all', '--src-tls-verify=false', `docker://${host}/demo/multi:1`, `oci:${dst}:multi`);
    assert.equal(await layoutRef(dst, 'multi'), digestOf(index));
    assert.deepEqual(await layoutBlobs(dst), await layoutBlobs(src));
  });
});
