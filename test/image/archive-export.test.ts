import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { extract } from 'tar-stream';
import { exportImage } from '../../src/image/archive-export.ts';
import { importImage } from '../../src/image/archive-import.ts';
import { readLayout } from '../../src/image/oci-layout.ts';
import { resolveRemoteImage } from '../../src/image/remote-resolve.ts';
import { digestHex, digestOf } from '../../src/protocol/digest.ts';
import { ShoalError } from '../../src/protocol/errors.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import { buildImage, exists, listFiles, startTestStore, writeLayout, type BuiltImage, type TestStore } from './archive-fixtures.ts';

const run = promisify(execFile);

let root: string;
let store: TestStore;
let image: BuiltImage;
const source = 'exp/source:v1';
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'shoal-archive-export-'));
  store = await startTestStore();
  image = await buildImage([{ 'etc/motd': 'exported\n' }, { 'app/server.js': 'serve()\n'.repeat(50) }], { Cmd: ['/app/server.js'] });
  const dir = join(root, 'source-layout');
  await writeLayout(dir, image, 'v1');
  await importImage(dir, { client: store.client, ref: parseImageRef(source) });
});
after(async () => {
  await store.close();
  await rm(root, { recursive: true, force: true });
});

let n = 0;
const fresh = (name: string): string => join(root, `${n++}-${name}`);
const from = (ref: string) => ({ client: store.client, ref: parseImageRef(ref) });

async function tarNames(file: string): Promise<string[]> {
  const names: string[] = [];
  const x = extract();
  const done = (async () => {
    for await (const e of x) {
      names.push(e.header.name);
      e.resume();
    }
  })();
  x.end(await readFile(file));
  await done;
  return names;
}

async function hasSkopeo(): Promise<boolean> {
  return run('skopeo', ['--version']).then(
    () => true,
    () => false,
  );
}

describe('round trips', () => {
  for (const format of ['oci-archive', 'docker-archive', 'oci-layout'] as const) {
    test(`${format}: export, import under a new tag, same manifest digest`, async () => {
      const out = fresh(format);
      const result = await exportImage(from(source), out, { format });
      assert.equal(result.manifestDigest, image.manifestDigest);
      assert.ok(result.bytes > 0);
      const again = await importImage(out, { client: store.client, ref: parseImageRef(`exp/again:${format}`) });
      assert.equal(again.manifestDigest, image.manifestDigest);
      assert.equal(again.format, format);
      const spec = await resolveRemoteImage(store.client, `exp/again:${format}`);
      assert.deepEqual(spec.process.args, ['/app/server.js']);
      assert.deepEqual(spec.layers.map((l) => l.diffId), image.layers.map((l) => l.diffId));
      // Nothing left beside the output.
      assert.deepEqual((await listFiles(root)).filter((f) => f.includes('.tmp-')), []);
    });
  }
});

describe('contents', () => {
  test('an OCI archive is the layout, in a fixed order, with the tag as its ref name', async () => {
    const out = fresh('a.tar');
    await exportImage(from(source), out, { format: 'oci-archive' });
    const names = await tarNames(out);
    assert.deepEqual(names.slice(0, 4), ['oci-layout', 'index.json', 'blobs/', 'blobs/sha256/']);
    const blobs = [image.manifestDigest, digestOf(image.config), ...image.layers.map((l) => l.digest)].map((d) => `blobs/sha256/${digestHex(d)}`).sort();
    assert.deepEqual(names.slice(4), blobs);
    // Reproducible: the same image exports to the same bytes.
    const second = fresh('b.tar');
    await exportImage(from(source), second, { format: 'oci-archive' });
    assert.deepEqual(await readFile(second), await readFile(out));
  });

  test('a docker archive has manifest.json pointing at the gzip blobs', async () => {
    const out = fresh('d.tar');
    await exportImage(from(source), out, { format: 'docker-archive' });
    const names = await tarNames(out);
    assert.ok(names.includes('manifest.json'));
    const x = extract();
    let manifestJson = '';
    const done = (async () => {
      for await (const e of x) {
        if (e.header.name === 'manifest.json') for await (const c of e) manifestJson += (c as Buffer).toString();
        else e.resume();
      }
    })();
    x.end(await readFile(out));
    await done;
    assert.deepEqual(JSON.parse(manifestJson), [
      {
        Config: `blobs/sha256/${digestHex(digestOf(image.config))}`,
        RepoTags: ['exp/source:v1'],
        Layers: image.layers.map((l) => `blobs/sha256/${digestHex(l.digest)}`),
      },
    ]);
  });

  test('an OCI layout directory names the image by its tag', async () => {
    const out = fresh('layout');
    await exportImage(from(source), out, { format: 'oci-layout' });
    const layout = await readLayout(out);
    assert.equal(layout.resolve('v1').digest, image.manifestDigest);
    assert.deepEqual(await readFile(layout.blobPath(image.manifestDigest)), image.manifest);
  });

  test('skopeo reads what we export', async (t) => {
    if (!(await hasSkopeo())) {
      if (process.env['CI'] === 'true') assert.fail('skopeo is required in CI (scripts/setup-system.sh installs it)');
      t.skip('skopeo is not installed');
      return;
    }
    const archive = fresh('s.tar');
    await exportImage(from(source), archive, { format: 'oci-archive' });
    const raw = await run('skopeo', ['inspect', '--raw', `oci-archive:${archive}:v1`]);
    assert.equal(digestOf(raw.stdout), image.manifestDigest);
    const docker = fresh('s-docker.tar');
    await exportImage(from(source), docker, { format: 'docker-archive' });
    // A copy re-reads every layer and checks it against the config's diff_ids.
    const copied = fresh('s-copy');
    await run('skopeo', ['--insecure-policy', 'copy', '-q', `docker-archive:${docker}`, `oci:${copied}:x`]);
    // skopeo rewrites the config as OCI and recompresses the layers; the diff_ids stay.
    const layout = await readLayout(copied);
    const manifest = JSON.parse((await layout.readBlob(layout.resolve('x'))).toString()) as { config: { digest: string; size: number } };
    const cfg = JSON.parse((await layout.readBlob(manifest.config)).toString()) as { rootfs: { diff_ids: string[] } };
    assert.deepEqual(cfg.rootfs.diff_ids, image.layers.map((l) => l.diffId));
  });
});

describe('refusals', () => {
  test('an existing output is kept unless overwrite is asked', async () => {
    const out = fresh('exists.tar');
    await writeFile(out, 'precious');
    await assert.rejects(exportImage(from(source), out, { format: 'oci-archive' }), (e: unknown) => e instanceof ShoalError && e.code === 'conflict');
    assert.equal(await readFile(out, 'utf8'), 'precious');
    await exportImage(from(source), out, { format: 'oci-archive', overwrite: true });
    assert.notEqual(await readFile(out, 'utf8'), 'precious');
  });

  test('an unknown image leaves no output', async () => {
    const out = fresh('none.tar');
    await assert.rejects(exportImage(from('exp/unknown:1'), out, { format: 'oci-archive' }), (e: unknown) => e instanceof ShoalError && e.code === 'not-found');
    assert.equal(await exists(out), false);
    assert.deepEqual((await listFiles(root)).filter((f) => f.includes('.tmp-')), []);
  });
});
