import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createLayerVetting, parseVerdict } from '../../../src/image/store/vetting.ts';
import { digestOf, type Digest } from '../../../src/protocol/digest.ts';
import { ShoalError } from '../../../src/protocol/errors.ts';

let root: string;
let n = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'shoal-vetting-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});
const fresh = () => join(root, `v${n++}`);
const layer = (d: Digest, diffId?: string) => ({ digest: d, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffId });

test('parseVerdict reads both formats and refuses what it does not know', () => {
  assert.deepEqual(parseVerdict('sha256:ab'), { ok: true, diffId: 'sha256:ab' });
  assert.deepEqual(parseVerdict(''), { ok: true, diffId: '' });
  assert.deepEqual(parseVerdict('{"ok":true,"diffId":"sha256:cd"}'), { ok: true, diffId: 'sha256:cd' });
  assert.deepEqual(parseVerdict('{"ok":false,"code":"invalid","message":"bad"}'), { ok: false, code: 'invalid', message: 'bad' });
  assert.equal(parseVerdict('{"ok":tr'), undefined);
  assert.equal(parseVerdict('{"ok":false}'), undefined);
});

test('each digest is vetted once, also by concurrent callers; the verdict is on disk', async () => {
  const dir = fresh();
  const calls: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const v = createLayerVetting({
    dir,
    vetLayer: async (d) => {
      calls.push(d);
      await gate;
      return { diffId: `sha256:${'1'.repeat(64)}` };
    },
  });
  const d = digestOf('a layer');
  const both = Promise.all([v.check([layer(d)]), v.check([layer(d)])]);
  release();
  await both;
  assert.deepEqual(calls, [d]);
  assert.deepEqual(JSON.parse(await readFile(join(dir, d.slice(7)), 'utf8')), { ok: true, diffId: `sha256:${'1'.repeat(64)}` });
  assert.deepEqual(await v.verdict(d), { ok: true, diffId: `sha256:${'1'.repeat(64)}` });
  await v.forget(d);
  assert.equal(await v.verdict(d), undefined);
});

test('a lasting refusal is remembered and names the layer; another claimed diffId is refused', async () => {
  const dir = fresh();
  let calls = 0;
  const bad = digestOf('bad');
  const good = digestOf('good');
  const v = createLayerVetting({
    dir,
    vetLayer: async (d) => {
      calls++;
      if (d === bad) throw new ShoalError('invalid', 'entry "../x" has a ".." component', { field: 'layer' });
      return { diffId: digestOf('tar') };
    },
  });
  await assert.rejects(v.check([layer(good), layer(bad)]), { code: 'invalid', field: 'layers/1', message: /"\.\.\/x"/ });
  await assert.rejects(createLayerVetting({ dir, vetLayer: async () => assert.fail('not read again') }).check([layer(bad)]), {
    code: 'invalid',
    field: 'layers/0',
  });
  await assert.rejects(v.check([layer(good, digestOf('another tar'))]), { code: 'invalid', field: 'config/rootfs/diff_ids/0' });
  await v.check([layer(good, digestOf('tar'))]);
  assert.equal(calls, 2);
});

test('without vetLayer every layer passes; a verdict file from an older store counts', async () => {
  await createLayerVetting({ dir: fresh() }).check([layer(digestOf('x'))]);
  const dir = fresh();
  const d = digestOf('old');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, d.slice(7)), digestOf('old tar'));
  const v = createLayerVetting({ dir, vetLayer: async () => assert.fail('the old verdict is used') });
  await assert.rejects(v.check([layer(d, digestOf('other'))]), { field: 'config/rootfs/diff_ids/0' });
  await v.check([layer(d, digestOf('old tar'))]);
});
