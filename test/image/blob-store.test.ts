import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { createBlobStore, readBlob, writeBlob, type BlobStore } from '../../src/image/blob-store.ts';
import { digestOf } from '../../src/protocol/digest.ts';
import { ShoalError } from '../../src/protocol/errors.ts';

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'shoal-blob-store-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

let n = 0;
async function freshStore(): Promise<BlobStore> {
  return createBlobStore({ dir: join(root, `s${n++}`) });
}

async function collect(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function blobFiles(store: BlobStore): Promise<string[]> {
  return readdir(join(store.dir, 'blobs', 'sha256'));
}
async function tempFiles(store: BlobStore): Promise<string[]> {
  return readdir(join(store.dir, 'ingest'));
}

function chunks(...parts: Buffer[]): Readable {
  return Readable.from(parts);
}

/** A stream that yields some bytes and then fails, like a client that hangs up. */
function failingStream(bytes: Buffer): Readable {
  let sent = false;
  return new Readable({
    read() {
      if (!sent) {
        sent = true;
        this.push(bytes);
      } else {
        this.destroy(new Error('client went away'));
      }
    },
  });
}

describe('blob store', () => {
  test('ingest writes the blob atomically under its digest and leaves no temp file', async () => {
    const store = await freshStore();
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const d = digestOf(data);
    assert.equal(await store.has(d), false);
    assert.equal(await store.stat(d), undefined);
    const info = await store.ingest(chunks(data.subarray(0, 1000), data.subarray(1000)), { expected: d, expectedSize: data.length });
    assert.deepEqual(info, { digest: d, size: data.length });
    assert.equal(await store.has(d), true);
    assert.deepEqual(await store.stat(d), { size: data.length });
    assert.deepEqual(await readFile(store.path(d)), data);
    assert.deepEqual(await collect(await store.open(d)), data);
    assert.deepEqual(await tempFiles(store), []);
    assert.deepEqual(await store.list(), [{ digest: d, size: data.length }]);
  });

  test('a digest mismatch stores nothing and removes the temp file', async () => {
    const store = await freshStore();
    const data = Buffer.from('hello');
    const wrong = digestOf('other');
    await assert.rejects(store.ingest(chunks(data), { expected: wrong }), (e: unknown) => {
      assert.ok(e instanceof ShoalError);
      assert.equal(e.code, 'digest-mismatch');
      return true;
    });
    assert.equal(await store.has(wrong), false);
    assert.equal(await store.has(digestOf(data)), false);
    assert.deepEqual(await blobFiles(store), []);
    assert.deepEqual(await tempFiles(store), []);
  });

  test('a size mismatch and a size limit store nothing', async () => {
    const store = await freshStore();
    const data = randomBytes(10_000);
    await assert.rejects(store.ingest(chunks(data), { expectedSize: 9_999 }), { code: 'invalid', field: 'size' });
    await assert.rejects(store.ingest(chunks(data), { maxBytes: 5_000 }), { code: 'too-large' });
    assert.deepEqual(await blobFiles(store), []);
    assert.deepEqual(await tempFiles(store), []);
  });

  test('an interrupted stream leaves no blob and no temp file', async () => {
    const store = await freshStore();
    await assert.rejects(store.ingest(failingStream(randomBytes(100_000))), /client went away/);
    assert.deepEqual(await blobFiles(store), []);
    assert.deepEqual(await tempFiles(store), []);
  });

  test('two concurrent ingests of the same blob both succeed and store it once', async () => {
    const store = await freshStore();
    const data = randomBytes(2 * 1024 * 1024);
    const d = digestOf(data);
    const slow = (buf: Buffer) =>
      Readable.from(
        (async function* () {
          for (let i = 0; i < buf.length; i += 65536) {
            yield buf.subarray(i, i + 65536);
            await new Promise((r) => setImmediate(r));
          }
        })(),
      );
    const results = await Promise.all([
      store.ingest(slow(data), { expected: d }),
      store.ingest(slow(data), { expected: d }),
      store.ingest(slow(data)),
    ]);
    for (const r of results) assert.deepEqual(r, { digest: d, size: data.length });
    assert.deepEqual(await blobFiles(store), [d.slice(7)]);
    assert.deepEqual(await tempFiles(store), []);
    assert.equal(await store.verify(d), true);
  });

  test('range reads', async () => {
    const store = await freshStore();
    const data = randomBytes(100_000);
    const { digest } = await writeBlob(store, data);
    assert.deepEqual(await collect(await store.open(digest, { start: 10, end: 19 })), data.subarray(10, 20));
    assert.deepEqual(await collect(await store.open(digest, { start: 99_990 })), data.subarray(99_990));
    assert.deepEqual(await collect(await store.open(digest, { end: 0 })), data.subarray(0, 1));
    await assert.rejects(store.open(digestOf('absent')), { code: 'not-found' });
  });

  test('chunked upload: appends keep the hash state, commit verifies', async () => {
    const store = await freshStore();
    const data = randomBytes(300_000);
    const d = digestOf(data);
    const up = await store.beginUpload();
    assert.equal(up.offset, 0);
    assert.equal(await up.append(chunks(data.subarray(0, 100_000))), 100_000);
    assert.equal(await up.append(chunks(data.subarray(100_000, 250_000))), 250_000);
    // The temp file exists while the upload is open, the blob does not.
    assert.deepEqual(await tempFiles(store), [up.id]);
    assert.equal(await store.has(d), false);
    assert.equal(await store.getUpload(up.id), up);
    assert.equal(await up.append(chunks(data.subarray(250_000))), 300_000);
    assert.deepEqual(await up.commit(d, { expectedSize: 300_000 }), { digest: d, size: 300_000 });
    assert.deepEqual(await readFile(store.path(d)), data);
    assert.deepEqual(await tempFiles(store), []);
    assert.equal(await store.getUpload(up.id), undefined);
  });

  test('a failed append rolls the upload back to its previous offset', async () => {
    const store = await freshStore();
    const a = randomBytes(50_000);
    const b = randomBytes(70_000);
    const up = await store.beginUpload();
    await up.append(chunks(a));
    await assert.rejects(up.append(failingStream(randomBytes(30_000))), /client went away/);
    assert.equal(up.offset, 50_000);
    await assert.rejects(up.append(chunks(b), { maxBytes: 100_000 }), { code: 'too-large' });
    assert.equal(up.offset, 50_000);
    await up.append(chunks(b));
    const whole = Buffer.concat([a, b]);
    assert.deepEqual(await up.commit(digestOf(whole)), { digest: digestOf(whole), size: whole.length });
    assert.deepEqual(await readFile(store.path(digestOf(whole))), whole);
  });

  test('a wrong digest at commit discards the upload', async () => {
    const store = await freshStore();
    const up = await store.beginUpload();
    await up.append(chunks(Buffer.from('abc')));
    await assert.rejects(up.commit(digestOf('abd')), { code: 'digest-mismatch' });
    assert.deepEqual(await blobFiles(store), []);
    assert.deepEqual(await tempFiles(store), []);
    assert.equal(await store.getUpload(up.id), undefined);
  });

  test('after a restart an upload resumes by re-hashing its temp file', async () => {
    const dir = join(root, `s${n++}`);
    const first = createBlobStore({ dir });
    const data = randomBytes(200_000);
    const up = await first.beginUpload();
    await up.append(chunks(data.subarray(0, 120_000)));
    const second = createBlobStore({ dir });
    const resumed = await second.getUpload(up.id);
    assert.ok(resumed);
    assert.equal(resumed.offset, 120_000);
    await resumed.append(chunks(data.subarray(120_000)));
    assert.equal((await resumed.commit(digestOf(data))).size, 200_000);
    assert.equal(await second.getUpload('not-an-id'), undefined);
    assert.equal(await second.getUpload('00000000-0000-4000-8000-000000000000'), undefined);
  });

  test('cancel and expiry remove temp files', async () => {
    const store = await freshStore();
    const a = await store.beginUpload();
    await a.append(chunks(Buffer.from('x')));
    await a.cancel();
    assert.deepEqual(await tempFiles(store), []);
    const b = await store.beginUpload();
    await writeFile(join(store.dir, 'ingest', 'stray'), 'left by a crash');
    assert.equal(await store.expireUploads(60_000), 0);
    assert.equal((await tempFiles(store)).length, 2);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await store.expireUploads(5), 2);
    assert.deepEqual(await tempFiles(store), []);
    assert.equal(await store.getUpload(b.id), undefined);
  });

  test('verify detects a corrupted file; delete and list', async () => {
    const store = await freshStore();
    const { digest } = await writeBlob(store, Buffer.from('precious'));
    const other = await writeBlob(store, Buffer.from('other'));
    assert.equal(await store.verify(digest), true);
    await writeFile(store.path(digest), 'tampered');
    assert.equal(await store.verify(digest), false);
    assert.equal(await store.delete(digest), true);
    assert.equal(await store.delete(digest), false);
    assert.deepEqual(await store.list(), [other]);
    assert.deepEqual(await readBlob(store, other.digest, 100), Buffer.from('other'));
    await assert.rejects(readBlob(store, other.digest, 2), { code: 'too-large' });
    await assert.rejects(store.has('sha256:nope' as never), { code: 'invalid' });
  });
});
