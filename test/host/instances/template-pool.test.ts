import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { graftMounts, templateKey, templatePlan, templateRootfs } from '../../../src/host/instances/template-pool.ts';
import type { RootfsSpec } from '../../../src/protocol/oci.ts';
import { fakeDriver, plan } from '../fixtures/fakes.ts';

const layer = (d: string) => ({ digest: d, diffId: d, size: 1, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
const rootfs = (digests: string[], user?: string): RootfsSpec => ({
  manifestDigest: `sha256:${digests.join('')}`,
  configDigest: 'sha256:c',
  layers: digests.map(layer),
  process: { args: ['/a'], env: [], cwd: '/', user },
});

test('template containers are shared by images on the same template, user and resources, whatever the service, program or env', () => {
  const d = fakeDriver('runc');
  const k = templateKey(d, plan(), rootfs(['t1', 't2', 'svc1']));
  assert.ok(k);
  assert.equal(templateKey(d, plan({ service: { name: 'other', version: '9' }, env: { A: '1' }, args: ['/b'] }), rootfs(['t1', 't2', 'svc2'])), k);
  assert.notEqual(templateKey(d, plan(), rootfs(['t1', 'tX', 'svc1'])), k, 'another template');
  assert.notEqual(templateKey(d, plan(), rootfs(['t1', 't2', 'svc1'], 'app')), k, 'another user');
  assert.notEqual(templateKey(d, plan({ resources: { memoryMb: 65, cpuMillis: 100, pids: 64 } }), rootfs(['t1', 't2', 'svc1'])), k, 'other resources');
  assert.notEqual(templateKey(fakeDriver('other'), plan(), rootfs(['t1', 't2', 'svc1'])), k);
  assert.equal(templateKey(d, plan(), rootfs(['only'])), undefined, 'a one-layer image has no template');
});

test('a template container is prepared from the template layers only, recorded under no service', () => {
  const r = templateRootfs(rootfs(['t1', 't2', 'svc1']));
  assert.deepEqual(r.layers.map((l) => l.digest), ['t1', 't2']);
  assert.match(r.manifestDigest, /^template:sha256:[0-9a-f]{64}$/);
  const p = templatePlan(plan({ env: { SECRET: 'x' }, args: ['/b'] }));
  assert.deepEqual(p.service, { name: 'template', version: '0' });
  assert.equal(p.env, undefined);
  assert.equal(p.args, undefined);
});

test('a service layer qualifies when it holds only top-level dirs the template lacks or has empty', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-graft-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const make = async (name: string, entries: Record<string, string | null>) => {
    const root = join(dir, name);
    await mkdir(root, { recursive: true });
    for (const [p, content] of Object.entries(entries)) {
      if (content === null) await mkdir(join(root, p), { recursive: true });
      else {
        await mkdir(join(root, p, '..'), { recursive: true });
        await writeFile(join(root, p), content);
      }
    }
    return root;
  };
  const tpl = await make('tpl', { usr: null, 'usr/bin/node': 'x', app: null, etc: null });
  const svc = await make('svc', { 'app/server.mjs': 'x', 'srv/data': 'y' });
  assert.deepEqual(await graftMounts([tpl, svc]), [
    { name: 'app', lowerDirs: [join(svc, 'app')] },
    { name: 'srv', lowerDirs: [join(svc, 'srv')] },
  ]);
  assert.equal(await graftMounts([tpl, await make('s2', { 'usr/lib/x': 'x' })]), undefined, 'a dir the template fills');
  assert.equal(await graftMounts([tpl, await make('s3', { 'etc/passwd': 'x' })]), undefined, '/etc (users are looked up there)');
  assert.equal(await graftMounts([tpl, await make('s4', { 'file.txt': 'x' })]), undefined, 'a top-level file');
  assert.equal(await graftMounts([tpl, await make('s5', { '.wh.usr': '' })]), undefined, 'a whiteout');
  assert.equal(await graftMounts([tpl, await make('s6', {})]), undefined, 'nothing to add');
  const tplWh = await make('tplwh', { '.wh.srv': '' });
  assert.equal(await graftMounts([tpl, tplWh, svc]), undefined, 'a whiteout of the name in the template');
  assert.equal(await graftMounts([svc]), undefined, 'no template');
});
