// `shoal image build <entry> --driver isolate`: a component image in a real store (the
// bundle alone, labelled with its driver and entry); flags that belong to runtime images
// are refused, and so is a driver that runs no component images.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRegistryClient, resolveRemoteImage, startStore } from '../../src/image/index.ts';

const SHOAL = fileURLToPath(new URL('../../bin/shoal.js', import.meta.url));
const ECHO = fileURLToPath(new URL('../../examples/echo/service.ts', import.meta.url));

function shoal(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env };
    delete env.SHOAL_STORE;
    execFile(process.execPath, [SHOAL, ...args], { env, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
    });
  });
}

test('image build --driver isolate|wasm makes a component image; runtime flags and other drivers are refused', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-cli-comp-'));
  const store = await startStore({ dataDir: dir });
  t.after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  const built = await shoal(['image', 'build', ECHO, '--driver', 'isolate', '--tag', 'echo-iso:1', '--store', store.url, '--json']);
  assert.equal(built.code, 0, built.stderr);
  const image = await resolveRemoteImage(createRegistryClient({ baseUrl: store.url }), 'echo-iso:1');
  assert.equal(image.driver, 'isolate');
  assert.equal(image.layers.length, 1);
  assert.deepEqual(image.process.args, ['/app/service.mjs']);

  // The same entry for the wasm driver: a bundle it runs on QuickJS.
  const wasm = await shoal(['image', 'build', ECHO, '--driver', 'wasm', '--tag', 'echo-wasm:1', '--store', store.url, '--json']);
  assert.equal(wasm.code, 0, wasm.stderr);
  const wasmImage = await resolveRemoteImage(createRegistryClient({ baseUrl: store.url }), 'echo-wasm:1');
  assert.equal(wasmImage.driver, 'wasm');
  assert.deepEqual(wasmImage.process.args, ['/app/service.mjs']);

  const withTemplate = await shoal(['image', 'build', ECHO, '--driver', 'isolate', '--template', 'template://node/24', '--tag', 'x:1', '--store', store.url]);
  assert.notEqual(withTemplate.code, 0);
  assert.match(withTemplate.stderr, /component image \(--driver\) is its bundle alone/);
  const runc = await shoal(['image', 'build', ECHO, '--driver', 'runc', '--tag', 'x:1', '--store', store.url]);
  assert.notEqual(runc.code, 0);
  assert.match(runc.stderr, /driver runc does not run component images/);
  const noTemplate = await shoal(['image', 'build', ECHO, '--tag', 'x:1', '--store', store.url]);
  assert.notEqual(noTemplate.code, 0);
  assert.match(noTemplate.stderr, /--template is required/);
});
