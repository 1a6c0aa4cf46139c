// shoal apply against a real provider on fake hosts: type-check first, idempotent apply,
// import bindings in the plans, and a crash rule carried out by the provider alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { applyFarm } from '../../src/compose/apply.ts';
import { adminAuth, startFarm, until } from '../provider/fixtures/provider.ts';

const here = dirname(fileURLToPath(import.meta.url));
const script = join(here, 'fixtures/who-farm.ts');

const call = async (url: string) => {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...adminAuth(new URL(url).origin) }, body: '{}' });
  return { status: res.status, body: (await res.json()) as { instance?: string } };
};

test('apply: realises the farm once, the second apply changes nothing; a crash rebinds the ref with no script running', async (t) => {
  const f = await startFarm(t, { hosts: 1, register: false });
  await f.provider.registerHost({ controlUrl: f.hosts[0]!.controlUrl, token: f.hosts[0]!.token });
  const first = await applyFarm(script, { url: f.provider.url, token: f.token });
  assert.equal(first.changed, true);
  assert.deepEqual(first.services.sort(), ['wf-c1', 'wf-w1', 'wf-w2']);
  const second = await applyFarm(script, { url: f.provider.url, token: f.token });
  assert.deepEqual([second.changed, second.changes], [false, []]);
  const applied = (await f.provider.registry.listEvents({ kind: 'farm-applied' })).length;
  assert.equal(applied, 1);

  await until('all three instances up', () => ['wf-w1', 'wf-w2', 'wf-c1'].every((s) => f.provider.table.endpoints(s).length === 1), 10_000);
  const plan = f.hosts[0]!.plans.find((p) => p.service.name === 'wf-c1')!;
  assert.deepEqual(plan.imports?.map((i) => ({ ...i, token: undefined })), [{ name: 'who', url: `${f.provider.url}/x/wf/c1/who`, token: undefined }]);
  // The binding carries the provider's farm token (invoke): the import socket sends it as the route token.
  const importToken = plan.imports![0]!.token!;
  assert.equal((await f.provider.registry.getApiToken(importToken.split('_')[1]!))?.role, 'invoke');
  const viaImport = await fetch(`${f.provider.url}/x/wf/c1/who/Who`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-shoal-route': importToken }, body: '{}' });
  assert.equal(viaImport.status, 200);
  assert.equal((await fetch(`${f.provider.url}/x/wf/c1/who/Who`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status, 401, 'token-access farm');

  const w1 = f.provider.table.endpoints('wf-w1')[0]!.id;
  const w2 = f.provider.table.endpoints('wf-w2')[0]!.id;
  assert.equal((await call(`${f.provider.url}/s/who/Who`)).body.instance, w1, 'the export reaches w1 through the ref');
  assert.equal((await call(`${f.provider.url}/x/wf/c1/who/Who`)).body.instance, w1, "c1's import socket reaches w1 too");
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) seen.add((await call(`${f.provider.url}/s/who-any/Who`)).body.instance!);
  assert.deepEqual([...seen].sort(), [w1, w2].sort(), 'or spreads over both');

  // Crash w1 (the fake host reports it crashed); the provider applies the rule by itself.
  await call(`${f.provider.url}/x/wf/w1/Crash`).catch(() => undefined);
  await until('ref rebound', () => f.provider.farms.get('wf')!.refs.r === 'w2', 5000);
  for (let i = 0; i < 5; i++) assert.equal((await call(`${f.provider.url}/s/who/Who`)).body.instance, w2);
  assert.equal((await call(`${f.provider.url}/x/wf/c1/who/Who`)).body.instance, w2);
  const status = (await (await fetch(`${f.provider.url}/api/v1/farms/wf`, { headers: adminAuth(f.provider.url) })).json()) as { crashes: Array<{ instance: string }> };
  assert.deepEqual(status.crashes.map((c) => c.instance), ['w1']);
});

test('shoal apply refuses a script that does not type-check, prints the diagnostics, exits non-zero, applies nothing', async (t) => {
  const f = await startFarm(t, { hosts: 0, register: false });
  const bad = join(here, 'fixtures/bad-or-mixed.ts'); // its @ts-expect-error keeps it compiling: use a temp copy without it
  const { mkdtemp, readFile, writeFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const dir = await mkdtemp(join(tmpdir(), 'shoal-apply-bad-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const text = (await readFile(bad, 'utf8'))
    .replace(/^\s*\/\/ @ts-expect-error.*$/m, '')
    .replace(/from '(\.\.?\/[^']+)'/g, (_m, rel: string) => `from '${join(dirname(bad), rel)}'`)
    .replace("farm('bad'", "export default farm('bad'");
  await writeFile(join(dir, 'package.json'), '{ "type": "module" }\n');
  await writeFile(join(dir, 'farm.ts'), text);
  const node = process.execPath;
  const r = spawnSync(node, [join(here, '../../bin/shoal.js'), 'apply', join(dir, 'farm.ts'), '--url', f.provider.url], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /does not type-check/);
  assert.match(r.stderr + r.stdout, /farm\.ts\(\d+,\d+\): error TS2345/);
  const farms = (await (await fetch(`${f.provider.url}/api/v1/farms`, { headers: adminAuth(f.provider.url) })).json()) as { farms: unknown[] };
  assert.deepEqual(farms.farms, []);
  const ok = spawnSync(node, [join(here, '../../bin/shoal.js'), 'graph', script], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).name, 'wf');
});
