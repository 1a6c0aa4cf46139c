// package.json "exports": each public subpath resolves (through Node's self-reference by
// package name) to a door that offers what its users need.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

test('every subpath in package.json exports resolves to a file', async () => {
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { name: string; exports: Record<string, string> };
  assert.deepEqual(Object.keys(pkg.exports).sort(), ['.', './compose', './service']);
  for (const sub of Object.keys(pkg.exports)) {
    const mod = (await import(sub === '.' ? pkg.name : `${pkg.name}/${sub.slice(2)}`)) as Record<string, unknown>;
    assert.ok(Object.keys(mod).length > 0, sub);
  }
});

test('shoal offers the roles as libraries and the shared errors', async () => {
  const shoal = await import('shoal');
  for (const fn of [shoal.startProvider, shoal.startHost, shoal.startStore, shoal.createRegistryClient, shoal.buildServiceImage]) assert.equal(typeof fn, 'function');
  const e = new shoal.ShoalError('not-found', 'no service x');
  assert.equal(shoal.isShoalError(e), true);
  assert.ok(shoal.errorCodes.includes(e.code));
});

test('shoal/service and shoal/compose offer what services and farm scripts import', async () => {
  const service = await import('shoal/service');
  const compose = await import('shoal/compose');
  for (const fn of [service.defineService, service.serve, service.connect]) assert.equal(typeof fn, 'function');
  for (const fn of [compose.farm, compose.role, compose.or, compose.par, compose.applyFarm]) assert.equal(typeof fn, 'function');
});
