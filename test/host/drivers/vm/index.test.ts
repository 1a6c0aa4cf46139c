// The vm driver on a real QEMU (TCG here: each cold boot takes seconds, so this file
// boots few VMs): the instance contract, limits, pause, exit codes, and a saved state
// restored by a second driver with another data dir (the in-memory count continues).
import assert from 'node:assert/strict';
import { chmod, copyFile, mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { isPausable, canCapture, type Driver, type InstanceSpec, type RunningInstance } from '../../../../src/host/drivers/driver.ts';
import { capabilities, createVmDriver } from '../../../../src/host/drivers/vm/index.ts';
import { isAlive } from '../../../../src/host/drivers/shared/proc.ts';
import { call, waitReady } from '../../../fixtures/instance-client.ts';
import { skipUnless } from '../../fixtures/requirements.ts';
import { buildFlatRootfs, serviceArgs } from '../harness.ts';
import { testKernelDir } from './kernel-cache.ts';

const unavailable = skipUnless(['root', 'qemu', 'cc']);
const counterSource = fileURLToPath(new URL('./counter.mjs', import.meta.url));
/** Node under TCG: boot plus start-up takes several seconds. */
const BOOT_MS = 300_000;
const quiet = (): void => undefined;

let dir = '';
let rootfs = '';
let kernelDir = '';
const drivers: Driver[] = [];
const started: RunningInstance[] = [];

describe('vm driver', { skip: unavailable }, () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-vm-'));
    await chmod(dir, 0o755);
    rootfs = await buildFlatRootfs(join(dir, 'rootfs'));
    await copyFile(counterSource, join(rootfs, 'app/counter.mjs'));
    kernelDir = await testKernelDir();
  });

  after(async () => {
    for (const i of started) await i.stop({ graceMs: 0 }).catch(() => undefined);
    for (const d of drivers) await d.close();
    await rm(dir, { recursive: true, force: true });
  });

  function newDriver(name: string) {
    const d = createVmDriver({ dataDir: join(dir, name), kernelDir, log: quiet });
    drivers.push(d);
    return d;
  }

  async function spec(id: string, args: string[]): Promise<InstanceSpec & { socketPath: string }> {
    const base = join(dir, 'i', id);
    const socketDir = join(base, 'sock');
    await mkdir(socketDir, { recursive: true });
    await mkdir(join(base, 'state'), { recursive: true });
    return {
      id,
      rootfs,
      rootLayers: ['sha256:test-node-and-app'],
      args,
      env: ['PATH=/usr/local/bin:/bin', 'SHOAL_LISTEN=/run/shoal/app.sock', `SHOAL_INSTANCE=${id}`],
      cwd: '/app',
      user: { uid: 65534, gid: 65534 },
      resources: { memoryBytes: 192 * 1024 * 1024, cpuMillis: 1000, pids: 64 },
      listenSocket: join(socketDir, 'app.sock'),
      importsDir: join(socketDir, 'imports'),
      logFile: join(base, 'log'),
      stateDir: join(base, 'state'),
      socketPath: join(socketDir, 'app.sock'),
    };
  }

  it('declares vm isolation and fingerprints the accelerator a guest booted with', async () => {
    assert.equal(capabilities.isolation, 'vm');
    const fp = await newDriver('fp').fingerprint();
    assert.equal(fp.healthy, true, fp.detail);
    assert.ok(fp.attributes.accel === 'kvm' || fp.attributes.accel === 'tcg', fp.attributes.accel);
    assert.equal(fp.attributes.isolation, 'vm');
  });

  it('runs the fixture service in a guest: socket, env, user, pause, stats, no network, exit code', async () => {
    const driver = newDriver('a');
    const s = await spec('vm-a', serviceArgs);
    const inst = await driver.start(s);
    started.push(inst);
    await waitReady(s.socketPath, BOOT_MS);
    assert.deepEqual((await call(s.socketPath, 'POST', '/Echo', { hello: 'vm' })).json, { hello: 'vm' });
    const info = (await call(s.socketPath, 'POST', '/Inspect', {})).json;
    assert.equal(info.uid, 65534);
    assert.equal(info.cwd, '/app');
    assert.equal(info.env.SHOAL_INSTANCE, 'vm-a');
    assert.equal(info.env.LISTEN_FDS, '1');
    // restrict=on: the guest reaches neither QEMU's host alias nor anything else.
    const out = (await call(s.socketPath, 'POST', '/Connect', { host: '10.0.2.2', port: 22 }, 10_000)).json;
    assert.notEqual(out.connected, true, JSON.stringify(out));

    assert.ok(isPausable(inst));
    await inst.pause();
    let answered = false;
    const pending = call(s.socketPath, 'POST', '/Echo', { while: 'paused' }, 30_000).then((r) => {
      answered = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(answered, false, 'a paused VM must not answer');
    await inst.resume();
    assert.deepEqual((await pending).json, { while: 'paused' });

    const st = await inst.stats();
    assert.ok((st.memoryBytes ?? 0) > 16 * 1024 * 1024, `memory ${st.memoryBytes}`);
    assert.ok((st.cpuUsageNanos ?? 0) > 0);

    // 200: past the 7 bits QEMU's exit status carries (the status disk has the whole code).
    await call(s.socketPath, 'POST', '/Crash', { code: 200 });
    const exit = await inst.exited;
    assert.equal(exit.reason, 'crashed');
    assert.equal(exit.code, 200);
    assert.equal(await isAlive(inst.pid as number, undefined), false);
    await driver.destroy(s.id, s.stateDir);
    assert.deepEqual(await readdir(s.stateDir), []);
    await assert.rejects(stat(s.listenSocket));
  });

  it('captures a running VM and a second driver (another data dir) restores it: the count continues', async () => {
    const first = newDriver('b1');
    const s1 = await spec('vm-b1', ['/usr/local/bin/node', '/app/counter.mjs']);
    const inst = await first.start(s1);
    started.push(inst);
    await waitReady(s1.socketPath, BOOT_MS);
    for (let i = 1; i <= 3; i++) assert.equal((await call(s1.socketPath, 'POST', '/Count', {})).json.count, i);
    const boot = (await call(s1.socketPath, 'GET', '/healthz')).json.bootId as string;

    assert.ok(canCapture(inst));
    const stateDir = join(dir, 'captured');
    await mkdir(stateDir, { recursive: true });
    const state = await inst.capture(stateDir);
    assert.equal(state.annotations['org.shoal.driver'], 'vm');
    // The source keeps running after a capture.
    assert.equal((await call(s1.socketPath, 'POST', '/Count', {})).json.count, 4);
    await first.destroy(s1.id, s1.stateDir);
    assert.equal((await inst.exited).reason, 'killed');

    const second = newDriver('b2');
    const s2 = await spec('vm-b2', ['/usr/local/bin/node', '/app/counter.mjs']);
    const restored = await second.restore(s2, state);
    started.push(restored);
    await waitReady(s2.socketPath, BOOT_MS);
    const after = (await call(s2.socketPath, 'POST', '/Count', {})).json;
    assert.equal(after.count, 4, 'the count saved at capture (3) continues');
    assert.equal(after.bootId, boot);
    await second.destroy(s2.id, s2.stateDir);
    assert.equal(await isAlive(restored.pid as number, undefined), false);
    assert.deepEqual(await readdir(s2.stateDir), []);
  });
});
