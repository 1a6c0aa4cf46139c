// Live migration between two vm drivers (two data dirs, as two hosts would have) on a real
// QEMU. One source VM serves every case (a boot costs seconds under TCG): strangers and a
// wrong key are refused and their targets torn down while the source keeps counting, a
// target with other facts is refused before a byte is sent, and a real move keeps the count.
import assert from 'node:assert/strict';
import { chmod, copyFile, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { canCapture, canMigrateLive, canReceiveLive, type Driver, type InstanceSpec, type LiveMigratingInstance, type MigrationOffer, type RunningInstance } from '../../../../src/host/drivers/driver.ts';
import { createVmDriver } from '../../../../src/host/drivers/vm/index.ts';
import { isAlive } from '../../../../src/host/drivers/shared/proc.ts';
import { call, waitReady } from '../../../fixtures/instance-client.ts';
import { skipUnless } from '../../fixtures/requirements.ts';
import { buildFlatRootfs } from '../harness.ts';
import { testKernelDir } from './kernel-cache.ts';

const unavailable = skipUnless(['root', 'qemu', 'cc']);
const counterSource = fileURLToPath(new URL('./counter.mjs', import.meta.url));
const BOOT_MS = 300_000;
const quiet = (): void => undefined;

let dir = '';
let rootfs = '';
let kernelDir = '';
const drivers: Driver[] = [];
const started: RunningInstance[] = [];

describe('vm driver: live migration', { skip: unavailable }, () => {
  let source: LiveMigratingInstance;
  let sourceSpec: InstanceSpec & { socketPath: string };
  let target: ReturnType<typeof createVmDriver>;
  let bootId = '';

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-vm-live-'));
    await chmod(dir, 0o755);
    rootfs = await buildFlatRootfs(join(dir, 'rootfs'));
    await copyFile(counterSource, join(rootfs, 'app/counter.mjs'));
    kernelDir = await testKernelDir();
    const a = newDriver('host-a');
    target = newDriver('host-b');
    sourceSpec = await spec('vm-src');
    const inst = await a.start(sourceSpec);
    started.push(inst);
    assert.ok(canMigrateLive(inst));
    assert.ok(canReceiveLive(target));
    source = inst;
    await waitReady(sourceSpec.socketPath, BOOT_MS);
    for (let i = 1; i <= 3; i++) assert.equal((await count(sourceSpec)).count, i);
    bootId = (await count(sourceSpec, 'GET')).bootId;
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

  async function spec(id: string): Promise<InstanceSpec & { socketPath: string }> {
    const base = join(dir, 'i', id);
    const socketDir = join(base, 'sock');
    await mkdir(socketDir, { recursive: true });
    await mkdir(join(base, 'state'), { recursive: true });
    return {
      id,
      rootfs,
      rootLayers: ['sha256:test-node-and-counter'],
      args: ['/usr/local/bin/node', '/app/counter.mjs'],
      env: ['PATH=/usr/local/bin:/bin', `SHOAL_INSTANCE=${id}`],
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

  async function count(s: { socketPath: string }, method: 'POST' | 'GET' = 'POST'): Promise<{ count: number; bootId: string }> {
    return (await call(s.socketPath, method, method === 'POST' ? '/Count' : '/healthz', method === 'POST' ? {} : undefined, 30_000)).json;
  }

  /** A hold that records its call (the agent's forwarder is not here: nothing is in flight). */
  function recordingHold() {
    const calls: number[] = [];
    return { calls, hold: async () => void calls.push(Date.now()) };
  }

  /** The target's QEMU is gone and its state dir holds nothing (overlay, spec disk, key). */
  async function assertTornDown(s: InstanceSpec, pid: number | undefined): Promise<void> {
    if (pid !== undefined) assert.equal(await isAlive(pid, undefined), false, 'the target QEMU is gone');
    assert.deepEqual(await readdir(s.stateDir), [], 'the target left no disk or key behind');
  }

  it('a stranger without the key (not a QEMU stream) is refused; the target is torn down', async () => {
    const s = await spec('vm-stranger');
    const incoming = await target.receive(s);
    assert.match(incoming.offer.key, /^[0-9a-f]{64}$/);
    const pids = await qemuPidsOf(s);
    const [host, port] = incoming.offer.address.split(':');
    // It keeps its side open: the target must not wait for it to leave.
    const sock = connect({ host: host!, port: Number(port), allowHalfOpen: true });
    sock.on('error', () => undefined);
    sock.write('QEVM\x00\x00\x00\x03 pretend state from someone without the key\n');
    await assert.rejects(incoming.instance, (e: Error & { code?: string }) => {
      assert.equal(e.code, 'forbidden', e.message);
      return true;
    });
    sock.destroy();
    await assertTornDown(s, pids);
  });

  it('a source with a wrong key is refused, the target torn down, and the source runs on with its count', async () => {
    const s = await spec('vm-wrongkey');
    const incoming = await target.receive(s);
    const pid = await qemuPidsOf(s);
    const wrong: MigrationOffer = { ...incoming.offer, key: 'ab'.repeat(32) };
    const h = recordingHold();
    await assert.rejects(source.migrateTo(wrong, h), /live migration failed/);
    await assert.rejects(incoming.instance, (e: Error & { code?: string }) => {
      // The handshake failed: the one connection is spent and QEMU got no state.
      assert.equal(e.code, 'forbidden', e.message);
      return true;
    });
    await assertTornDown(s, pid);
    assert.equal((await count(sourceSpec)).count, 4, 'the source kept its state and serves');
  });

  it('a target with another root disk is refused before anything is sent', async () => {
    const s = await spec('vm-other');
    const incoming = await target.receive(s);
    const other = { ...incoming.offer, annotations: { ...incoming.offer.annotations, 'org.shoal.vm.root-template': 'sha256:' + '0'.repeat(64) } };
    await assert.rejects(source.migrateTo(other, recordingHold()), /root-template/);
    await incoming.cancel();
    await assert.rejects(incoming.instance, /cancelled/);
    await assertTornDown(s, undefined);
    assert.equal((await count(sourceSpec)).count, 5);
  });

  it('moves the running VM to the other driver: the count and the boot continue there', async () => {
    const s = await spec('vm-dst');
    const incoming = await target.receive(s);
    const h = recordingHold();
    const stats = await source.migrateTo(incoming.offer, h);
    console.log(`live migration: total ${stats.totalMs} ms, downtime ${stats.downtimeMs} ms, held ${stats.heldMs.toFixed(1)} ms, ${(stats.bytes / 1048576).toFixed(1)} MiB`);
    assert.equal(h.calls.length, 1, 'messages were held once, before the switch-over');
    assert.ok(stats.downtimeMs >= 0 && stats.totalMs >= stats.downtimeMs, JSON.stringify(stats));
    assert.ok(stats.bytes > 1024 * 1024, `sent ${stats.bytes} bytes`);
    const moved = await incoming.instance;
    started.push(moved);
    await waitReady(s.socketPath, BOOT_MS);
    const after = await count(s);
    assert.equal(after.count, 6, 'the count (5) continues on the target');
    assert.equal(after.bootId, bootId, 'the same boot: nothing restarted');
    // The moved VM captures like any other (its migration settings are a plain capture's again).
    assert.ok(canCapture(moved));
    const state = await moved.capture(s.stateDir);
    await rm(state.file);
    assert.equal((await count(s)).count, 7, 'and keeps serving after the capture');
    // The source is spent: it refuses further operations.
    await assert.rejects(source.migrateTo(incoming.offer, h), /migrated away/);
    // A target that failed after the move (gone for good): the source takes over from its stop.
    await target.destroy(s.id, s.stateDir);
    assert.equal(await isAlive(moved.pid as number, undefined), false);
    await source.resumeHere();
    assert.equal((await count(sourceSpec)).count, 6, 'the source continues from where it stopped (5)');
    // And it moves or captures again (its settings were reset after the completed move).
    assert.ok(canCapture(source));
    await rm((await source.capture(sourceSpec.stateDir)).file);
    await drivers[0]!.destroy(sourceSpec.id, sourceSpec.stateDir);
    assert.equal((await source.exited).reason, 'killed');
  });
});

/** The pid QEMU wrote into its state file (vm.json), to check it is gone later. */
async function qemuPidsOf(s: InstanceSpec): Promise<number | undefined> {
  const { readFile } = await import('node:fs/promises');
  try {
    return (JSON.parse(await readFile(join(s.stateDir, 'vm.json'), 'utf8')) as { pid: number }).pid;
  } catch {
    return undefined;
  }
}
