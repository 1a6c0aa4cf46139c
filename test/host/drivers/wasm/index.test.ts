// The wasm driver with real runner processes: the counter/echo component built from WAT
// (test/fixtures/components.ts), its live state captured, restored and forked.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ANNOTATION, createWasmDriver, STATE_MEDIA_TYPE } from '../../../../src/host/drivers/wasm/index.ts';
import { canCapture } from '../../../../src/host/drivers/driver.ts';
import { componentWasm } from '../../../fixtures/components.ts';
import { post } from '../../../fixtures/instance-client.ts';
import { exitWithin } from '../contract.ts';
import { createWasmRig } from './rig.ts';

describe('wasm driver', () => {
  let dir: string;
  let rootfs: string;
  const driver = createWasmDriver({ callTimeoutMs: 300 });
  const { specFor, run, started } = createWasmRig(driver, { dir: () => dir, rootfs: () => rootfs, args: () => ['/component.wasm'], cwd: '/', memoryMb: 16 });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-wasm-'));
    rootfs = join(dir, 'rootfs');
    await mkdir(rootfs);
    await writeFile(join(rootfs, 'component.wasm'), await componentWasm(4));
  });
  after(async () => {
    for (const i of started) await i.stop({ graceMs: 0 });
    await driver.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves the counter and echo operations over its socket, and logs fd_write', async () => {
    const { socket, spec } = await run('a');
    assert.deepEqual((await post(socket, 'inc')).json, { count: 1, calls: 1 });
    assert.deepEqual((await post(socket, 'inc')).json, { count: 2, calls: 2 });
    const echo = await post(socket, 'echo', { hello: 'wasm' });
    assert.equal(echo.status, 200);
    assert.deepEqual(echo.json, { hello: 'wasm' });
    const missing = await post(socket, 'nope');
    assert.equal(missing.status, 404);
    assert.equal(missing.json.error.code, 'not-found');
    await new Promise((r) => setTimeout(r, 100));
    assert.match(await readFile(spec.logFile, 'utf8'), /echo\n/);
  });

  it('captures a state that restores elsewhere and continues the count', async () => {
    const { inst, socket } = await run('b');
    for (let i = 0; i < 5; i++) await post(socket, 'inc');
    assert.ok(canCapture(inst));
    const state = await inst.capture(dir);
    assert.equal(state.mediaType, STATE_MEDIA_TYPE);
    assert.equal(state.annotations['dev.shoal.driver'], 'wasm');
    assert.match(state.annotations['dev.shoal.wasm.module'] ?? '', /^sha256:/);
    const restored = await run('b2', (s) => driver.restore(s, state));
    assert.deepEqual((await post(restored.socket, 'inc')).json, { count: 6, calls: 6 });
    // the source is untouched by the capture
    assert.deepEqual((await post(socket, 'get')).json, { count: 5, calls: 6 });
  });

  it('refuses a state that does not name its module, or is bigger than the spec memory allows', async () => {
    const { inst } = await run('r');
    assert.ok(canCapture(inst));
    const state = await inst.capture(dir);
    const { [ANNOTATION.module]: _module, ...unnamed } = state.annotations;
    await assert.rejects(driver.restore(await specFor('r2'), { ...state, annotations: unnamed }), (e: Error & { code?: string }) => e.code === 'conflict' && /not named/.test(e.message));
    // 16 MiB of memory in the spec: a 40 MiB file (sparse) is not read.
    const big = join(dir, 'big.state');
    await writeFile(big, '');
    await truncate(big, 40 * 1024 * 1024);
    await assert.rejects(driver.restore(await specFor('r3'), { ...state, file: big }), (e: Error & { code?: string }) => e.code === 'invalid' && /more than this spec's memory allows/.test(e.message));
  });

  it('forks a running instance; source and fork diverge independently', async () => {
    const { inst, socket } = await run('c');
    for (let i = 0; i < 3; i++) await post(socket, 'inc');
    const fork = await run('c2', (s) => driver.fork(inst, s));
    assert.deepEqual((await post(fork.socket, 'inc')).json, { count: 4, calls: 4 });
    assert.deepEqual((await post(fork.socket, 'inc')).json, { count: 5, calls: 5 });
    assert.deepEqual((await post(socket, 'inc')).json, { count: 4, calls: 4 });
    assert.deepEqual((await post(fork.socket, 'get')).json, { count: 5, calls: 6 });
  });

  it('keeps linear memory within the instance limit: growing past it fails inside the module', async () => {
    const { socket } = await run('d');
    // 16 MiB limit = 256 pages; the module has 4 and asks for 1024 more.
    assert.deepEqual((await post(socket, 'hog')).json, { refused: 1 });
    assert.deepEqual((await post(socket, 'inc')).json, { count: 1, calls: 2 });
  });

  it('ends a call that runs past the call limit and reports the exit as killed', async () => {
    const { inst, socket } = await run('e');
    await post(socket, 'spin').catch(() => undefined);
    const exit = await exitWithin(inst, 3000);
    assert.equal(exit.reason, 'killed');
  });

  it('reports a trap as a crash', async () => {
    const { inst, socket } = await run('f');
    const r = await post(socket, 'trap');
    assert.equal(r.status, 500);
    assert.equal((await exitWithin(inst, 3000)).reason, 'crashed');
  });

  it('stop ends the runner and reports it killed', async () => {
    const { inst } = await run('g');
    await inst.stop({ graceMs: 500 });
    assert.equal((await exitWithin(inst)).reason, 'killed');
  });

  it('refuses a module that imports beyond WASI or breaks the ABI', async () => {
    const spec = await specFor('h');
    await writeFile(join(rootfs, 'bad.wasm'), Buffer.from('not wasm'));
    await assert.rejects(driver.start({ ...spec, args: ['/bad.wasm'] }), /starting wasm instance h failed/);
    await assert.rejects(driver.start({ ...spec, id: 'h2', args: ['/../../../etc/passwd'] }), /not in the image|out of the image/);
  });

  it('fingerprint says how runners are confined', async () => {
    const fp = await driver.fingerprint();
    assert.equal(fp.healthy, true);
    assert.match(fp.detail, /runner:/);
  });
});
