import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, test } from 'node:test';
import {
  createDigestVerifier,
  createLayoutWriter,
  parseImageDocument,
  readLayout,
  REF_NAME_ANNOTATION,
  selectPlatform,
} from '../../src/image/oci-layout.ts';
import { digestOf } from '../../src/protocol/digest.ts';
import { ShoalError } from '../../src/protocol/errors.ts';
import { MediaType } from '../../src/protocol/oci.ts';

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'shoal-oci-layout-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});
let n = 0;
const fresh = (): string => join(root, `l${n++}`);

const code = (c: string, re?: RegExp) => (e: unknown): boolean => {
  assert.ok(e instanceof ShoalError, String(e));
  assert.equal(e.code, c, e.message);
  if (re) assert.match(e.message, re);
  return true;
};

const desc = (bytes: Buffer, mediaType: string = MediaType.ociManifest) => ({ mediaType, digest: digestOf(bytes), size: bytes.length });

test('a written layout reads back; named refs replace, other entries stay', async () => {
  const dir = fresh();
  const a = Buffer.from('{"schemaVersion":2,"config":{},"layers":[]}');
  const b = Buffer.from('{"schemaVersion":2,"config":{},"layers":[],"x":1}');
  const w = await createLayoutWriter(dir);
  assert.deepEqual(await w.addBlob(a), { digest: digestOf(a), size: a.length });
  await w.addBlob(Readable.from([b]), { digest: digestOf(b), size: b.length });
  w.setRef('one', desc(a));
  w.setRef('two', desc(a));
  await w.finish();

  const w2 = await createLayoutWriter(dir);
  w2.setRef('one', desc(b));
  await w2.finish();
  const layout = await readLayout(dir);
  assert.deepEqual(layout.refNames(), ['two', 'one']);
  assert.equal(layout.resolve('one').digest, digestOf(b));
  assert.equal(layout.resolve('two').digest, digestOf(a));
  assert.equal(layout.resolve('two').annotations?.[REF_NAME_ANNOTATION], 'two');
  assert.throws(() => layout.resolve(), code('invalid', /2 images.*two, one/));
  assert.throws(() => layout.resolve('three'), code('not-found', /"three".*two, one/));
  assert.deepEqual(await layout.readBlob(desc(b)), b);
  assert.equal(await layout.hasBlob(digestOf(a)), a.length);
  assert.equal(await layout.hasBlob(digestOf('nope')), undefined);
});

test('a blob that does not match what it claims leaves no file', async () => {
  const dir = fresh();
  const w = await createLayoutWriter(dir);
  await assert.rejects(w.addBlob(Readable.from([Buffer.from('abc')]), { digest: digestOf('xyz') }), code('digest-mismatch'));
  await assert.rejects(w.addBlob(Readable.from([Buffer.from('abcdef')]), { size: 3 }), code('digest-mismatch'));
  await assert.rejects(w.addBlob(Buffer.from('abc'), { digest: digestOf('abc'), size: 4 }), code('digest-mismatch'));
  assert.deepEqual(await readdir(join(dir, 'blobs', 'sha256')), []);
});

test('a tampered blob is refused on read', async () => {
  const dir = fresh();
  const w = await createLayoutWriter(dir);
  const real = Buffer.from('real');
  await w.addBlob(real);
  await w.finish();
  const layout = await readLayout(dir);
  await writeFile(layout.blobPath(digestOf(real)), 'fake');
  await assert.rejects(layout.readBlob(desc(real)), code('digest-mismatch', /hashes to/));
});

test('not a layout, or a layout of another version', async () => {
  const dir = fresh();
  await mkdir(dir);
  await assert.rejects(readLayout(dir), code('not-found', /no oci-layout file/));
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"2.0.0"}');
  await assert.rejects(readLayout(dir), code('unsupported', /2\.0\.0/));
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await assert.rejects(readLayout(dir), code('invalid', /index\.json/));
});

test('the digest verifier fails the stream on wrong content or length', async () => {
  const ok = Buffer.from('content');
  await pipeline(Readable.from([ok]), createDigestVerifier({ digest: digestOf(ok), size: ok.length }, 'blob'), async function* (s) {
    for await (const _ of s) yield;
  });
  for (const [expected, re] of [
    [{ digest: digestOf('other') }, /hashes to/],
    [{ digest: digestOf(ok), size: 3 }, /more than the 3 bytes/],
    [{ digest: digestOf(ok), size: 100 }, /7 bytes.*100/],
  ] as const) {
    await assert.rejects(
      pipeline(Readable.from([ok]), createDigestVerifier(expected, 'blob X'), async function* (s) {
        for await (const _ of s) yield;
      }),
      code('digest-mismatch', re),
    );
  }
});

test('documents: type from descriptor or content, unknown types unsupported, platforms chosen', () => {
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, config: desc(Buffer.from('{}'), MediaType.ociConfig), layers: [] }));
  assert.equal(parseImageDocument(manifest, undefined, 'm').kind, 'manifest');
  assert.equal(parseImageDocument(Buffer.from('{"schemaVersion":2,"manifests":[]}'), 'application/json', 'i').kind, 'index');
  assert.throws(() => parseImageDocument(manifest, 'application/x-nope', 'm'), code('unsupported', /unknown manifest media type "application\/x-nope"/));
  assert.throws(() => parseImageDocument(Buffer.from('{"schemaVersion":2}'), undefined, 'm'), code('invalid', /neither/));
  assert.throws(() => parseImageDocument(Buffer.from('nope'), undefined, 'm'), code('invalid', /not JSON/));
  assert.throws(() => parseImageDocument(Buffer.from('{"schemaVersion":2,"config":{},"layers":[]}'), MediaType.ociManifest, 'm'), code('invalid', /malformed image manifest/));

  const d = (arch: string, os = 'linux') => ({ ...desc(Buffer.from(arch)), platform: { os, architecture: arch } });
  const index = { schemaVersion: 2 as const, manifests: [d('unknown', 'unknown'), d('arm64'), d('amd64')] };
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'amd64' }, 'i').digest, digestOf('amd64'));
  assert.throws(() => selectPlatform(index, { os: 'linux', architecture: 'riscv64' }, 'i'), code('not-found', /riscv64.*arm64, linux\/amd64/));
  const single = { schemaVersion: 2 as const, manifests: [desc(Buffer.from('x'))] };
  assert.equal(selectPlatform(single, { os: 'linux', architecture: 'amd64' }, 'i').digest, digestOf('x'));
});
