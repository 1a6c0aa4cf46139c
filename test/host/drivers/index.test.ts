import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createDriver, defaultDriverName, driverNames, drivers, findOnPath, isDriverName, processCapabilities, runcCapabilities, wasmCapabilities } from '../../../src/host/drivers/index.ts';
import { missing } from '../fixtures/requirements.ts';

describe('driver registry', () => {
  it('maps each name to a factory whose driver carries that name and its capabilities', async () => {
    assert.deepEqual(Object.keys(drivers).sort(), ['isolate', 'process', 'runc', 'vm', 'wasm']);
    const dir = await mkdtemp(join(tmpdir(), 'shoal-reg-'));
    try {
      const p = await createDriver('process', { dataDir: dir, log: () => undefined });
      assert.equal(p.name, 'process');
      assert.equal(p.capabilities, processCapabilities);
      await p.close();
      const r = await createDriver('runc', { dataDir: dir, log: () => undefined });
      assert.equal(r.name, 'runc');
      assert.equal(r.capabilities, runcCapabilities);
      await r.close();
      const w = await createDriver('wasm', { dataDir: dir, log: () => undefined });
      assert.equal(w.name, 'wasm');
      assert.equal(w.capabilities, wasmCapabilities);
      await w.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('derives the driver names from the registry alone', () => {
    assert.deepEqual([...driverNames].sort(), Object.keys(drivers).sort());
    for (const name of driverNames) assert.equal(isDriverName(name), true);
    for (const name of ['docker', 'xen', 'toString', '__proto__', '']) assert.equal(isDriverName(name), false, name);
  });

  it('defaults to runc when root with runc on PATH, else process', async () => {
    const expected = missing(['root', 'runc']) === undefined ? 'runc' : 'process';
    assert.equal(await defaultDriverName(), expected);
    const saved = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      assert.equal(await defaultDriverName(), 'process');
    } finally {
      process.env.PATH = saved;
    }
  });

  it('finds executables on a PATH', async () => {
    assert.equal(await findOnPath('sh', '/nonexistent:/bin'), '/bin/sh');
    assert.equal(await findOnPath('no-such-binary-here', '/bin'), undefined);
  });
});
