// shoal/service programs on QuickJS in the wasm driver (real runner processes): state in
// the program's heap survives a capture → restore in a new instance, forks diverge, timers
// are part of the state, and a fork does not repeat its source's random values.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { canCapture } from '../../../../src/host/drivers/driver.ts';
import { ANNOTATION, createWasmDriver, STATE_MEDIA_TYPE } from '../../../../src/host/drivers/wasm/index.ts';
import { bundleService } from '../../../../src/image/index.ts';
import { post, waitReady } from '../../../fixtures/instance-client.ts';
import { exitWithin } from '../contract.ts';
import { createWasmRig } from './rig.ts';

const fixture = fileURLToPath(new URL('../../fixtures/js-counter-service.ts', import.meta.url));

describe('wasm driver: shoal/service programs on QuickJS', () => {
  let dir: string;
  let rootfs: string;
  let entry: string;
  const driver = createWasmDriver({ callTimeoutMs: 2000, log: () => undefined });
  const { specFor, run, started } = createWasmRig(driver, { dir: () => dir, rootfs: () => rootfs, args: () => [entry], cwd: '/app', memoryMb: 64, env: (id) => [`SHOAL_INSTANCE=${id}`] });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-qjs-'));
    await chmod(dir, 0o755);
    rootfs = join(dir, 'rootfs');
    entry = (await bundleService({ entry: fixture, outDir: rootfs })).entry;
  });
  after(async () => {
    for (const i of started) await i.stop({ graceMs: 0 });
    await driver.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves the operations, replies settled by timers, and validates input as the SDK does', async () => {
    const { socket } = await run('a');
    assert.deepEqual((await post(socket, 'Add', { by: 2 })).json, { count: 2, history: [2] });
    const later = await post(socket, 'Later', { ms: 30 });
    assert.equal(later.status, 200);
    assert.ok(later.json.waited >= 25, `waited ${later.json.waited} ms`);
    const bad = await post(socket, 'Add', { by: 'x' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, 'invalid');
    assert.equal((await post(socket, 'Nope', {})).status, 404);
    // The guest's SHA-256 is node:crypto's.
    for (const text of ['', 'abc', 'ünïcödé ✓', 'x'.repeat(1000)]) {
      assert.equal((await post(socket, 'Hash', { text })).json.sha256, createHash('sha256').update(text).digest('hex'), text.slice(0, 10));
    }
    // The interval set at start keeps ticking between messages.
    const t1 = (await post(socket, 'Get', {})).json.ticks;
    await new Promise((r) => setTimeout(r, 120));
    assert.ok((await post(socket, 'Get', {})).json.ticks > t1);
  });

  it('captures the heap; a restore in a new instance continues the count and the history', async () => {
    const { inst, socket } = await run('b');
    for (const by of [1, 2, 3]) await post(socket, 'Add', { by });
    assert.ok(canCapture(inst));
    const state = await inst.capture(dir);
    assert.equal(state.mediaType, STATE_MEDIA_TYPE);
    assert.match(state.annotations[ANNOTATION.module] ?? '', /^sha256:/);
    // Only the non-zero pages are stored: far less than the 16 MiB memory.
    assert.ok((await readFile(state.file)).length < 2 * 1024 * 1024);
    const restored = await run('b2', (s) => driver.restore(s, state));
    assert.deepEqual((await post(restored.socket, 'Add', { by: 10 })).json, { count: 16, history: [1, 3, 6, 16] });
    // Its timers came with it.
    const t1 = (await post(restored.socket, 'Get', {})).json.ticks;
    await new Promise((r) => setTimeout(r, 120));
    assert.ok((await post(restored.socket, 'Get', {})).json.ticks > t1, 'the restored interval ticks');
    // The source is untouched.
    assert.deepEqual((await post(socket, 'Add', { by: 0 })).json, { count: 6, history: [1, 3, 6, 6] });
  });

  it('forks a running instance: both continue from the same count and diverge, with their own random ids', async () => {
    const { inst, socket } = await run('c');
    await post(socket, 'Add', { by: 5 });
    const fork = await run('c2', (s) => driver.fork(inst, s));
    assert.deepEqual((await post(fork.socket, 'Add', { by: 1 })).json, { count: 6, history: [5, 6] });
    assert.deepEqual((await post(socket, 'Add', { by: 100 })).json, { count: 105, history: [5, 105] });
    const a = (await post(socket, 'Id', {})).json.id;
    const b = (await post(fork.socket, 'Id', {})).json.id;
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(a, b);
    // Math.random too: the fork's heap holds the source's generator, fresh entropy reseeds it.
    const ra = (await post(socket, 'Rand', {})).json.values as number[];
    const rb = (await post(fork.socket, 'Rand', {})).json.values as number[];
    for (const v of [...ra, ...rb]) assert.ok(v >= 0 && v < 1, String(v));
    assert.notDeepEqual(ra, rb);
    assert.equal(new Set(ra).size, 3);
  });

  it('each start runs the service module with its own env (later starts restore the libraries made by the first)', async () => {
    const first = await run('w1');
    const second = await run('w2');
    assert.deepEqual((await post(first.socket, 'Who', {})).json, { startedAs: 'w1' });
    assert.deepEqual((await post(second.socket, 'Who', {})).json, { startedAs: 'w2' });
    assert.deepEqual((await post(second.socket, 'Add', { by: 1 })).json, { count: 1, history: [1] });
  });

  it('a program that forges the protocol is ended as crashed, and a far timer does not spin the runner', async () => {
    const { copyFile } = await import('node:fs/promises');
    await copyFile(fileURLToPath(new URL('../../fixtures/js-hostile-service.mjs', import.meta.url)), join(rootfs, 'app', 'hostile.mjs'));
    const spec = await specFor('h');
    const inst = await driver.start({ ...spec, args: ['/app/hostile.mjs'] });
    started.push(inst);
    await waitReady(spec.socket);
    assert.deepEqual((await post(spec.socket, 'Good', {})).json, { ok: true });
    // A timer 10^12 ms away: the runner waits at most 2^31-1 ms. A longer Node timer fires
    // after 1 ms (with a TimeoutOverflowWarning in the log), and again, and again.
    await new Promise((r) => setTimeout(r, 200));
    assert.doesNotMatch(await readFile(spec.logFile, 'utf8').catch(() => ''), /TimeoutOverflowWarning/);
    const bad = await post(spec.socket, 'Bad', {});
    assert.equal(bad.status, 500);
    assert.match(bad.json.error.message, /malformed reply/);
    assert.equal((await exitWithin(inst, 3000)).reason, 'crashed');
  });

  it('refuses a state captured from another bundle', async () => {
    const { inst } = await run('d');
    assert.ok(canCapture(inst));
    const state = await inst.capture(dir);
    await assert.rejects(driver.restore(await specFor('d2'), { ...state, annotations: { ...state.annotations, [ANNOTATION.module]: 'sha256:00' } }), (e: Error & { code?: string }) => e.code === 'conflict');
  });

  it('a program that never calls serve() fails to start with the reason', async () => {
    const spec = await specFor('e');
    const other = join(rootfs, 'app', 'idle.mjs');
    await (await import('node:fs/promises')).writeFile(other, 'export const x = 1;\n');
    await assert.rejects(driver.start({ ...spec, args: ['/app/idle.mjs'] }), /did not call serve\(\)/);
  });
});
