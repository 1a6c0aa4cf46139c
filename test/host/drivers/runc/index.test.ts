import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { access, readFile, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { canPrepare, isPausable, type Driver } from '../../../../src/host/drivers/driver.ts';
import { cgroupPathsOf } from '../../../../src/host/drivers/runc/cgroups.ts';
import { capabilities, createRuncDriver, type RuncDriverOptions } from '../../../../src/host/drivers/runc/index.ts';
import { exitWithin } from '../contract.ts';
import { call, waitReady } from '../../../fixtures/instance-client.ts';
import { assertClean, cgroupParent, dir, driverOptions, instance, layers, runcList, setUp, tearDown, unavailable } from './harness.ts';

const run = promisify(execFile);
// The contract suite runs this driver (shim and foreground) from ../contract.test.ts.
before(async () => {
  if (!unavailable) await setUp();
});
after(async () => {
  if (!unavailable) await tearDown();
});

describe('runc driver', { skip: unavailable }, () => {
  let cleanups: Array<() => Promise<void>> = [];
  let seq = 0;
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups = [];
    await assertClean();
  });

  async function setup(options: { mode?: 'shim' | 'foreground'; resources?: Parameters<typeof instance>[1]; driver?: Partial<RuncDriverOptions> } = {}) {
    const driver = createRuncDriver(driverOptions(options.mode ?? 'shim', options.driver));
    const ci = await instance(`r-${process.pid}-${seq++}`, options.resources);
    cleanups.push(async () => {
      await driver.destroy(ci.spec.id, ci.spec.stateDir);
      await ci.release();
      await driver.close();
    });
    return { driver, ci };
  }

  async function started(options: Parameters<typeof setup>[0] = {}) {
    const { driver, ci } = await setup(options);
    const inst = await driver.start(ci.spec);
    await waitReady(ci.socketPath);
    return { driver, ci, inst };
  }

  it('declares namespace isolation with limits', () => {
    assert.equal(capabilities.isolation, 'namespaces');
    assert.equal(capabilities.enforcesLimits, true);
    assert.equal(capabilities.canPause, true);
  });

  it('isolates: own pid namespace, hostname, no capabilities, no_new_privs, seccomp', async () => {
    const { ci } = await started();
    const info = (await call(ci.socketPath, 'POST', '/Inspect', {})).json;
    assert.equal(info.pid, 1);
    assert.deepEqual(info.procPids, ['1']);
    assert.equal(info.hostname, ci.spec.id);
    assert.equal(info.uid, 65534);
    assert.equal(info.gid, 65534);
    assert.equal(info.capEff, '0000000000000000');
    assert.equal(info.capBnd, '0000000000000000');
    assert.equal(info.noNewPrivs, '1');
    assert.equal(info.seccomp, '2'); // filter mode
    assert.equal(info.cwd, '/app');
  });

  it('has only lo and cannot reach a host loopback port', async () => {
    const server: Server = createServer((s) => {
      accepted++;
      s.destroy();
    });
    let accepted = 0;
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const { ci } = await started();
      const info = (await call(ci.socketPath, 'POST', '/Inspect', {})).json;
      assert.deepEqual(info.interfaces, ['lo']);
      const r = (await call(ci.socketPath, 'POST', '/Connect', { port })).json;
      assert.equal(r.connected, undefined);
      assert.equal(r.error, 'ECONNREFUSED');
      assert.equal(accepted, 0);
    } finally {
      server.close();
    }
  });

  it('denies namespace, mount, ptrace and keyring syscalls by seccomp (and only seccomp denies some)', async () => {
    const { ci } = await started();
    const probe = (await call(ci.socketPath, 'POST', '/Exec', { file: '/app/probe' })).json;
    assert.equal(probe.code, 0, probe.stderr);
    assert.deepEqual(JSON.parse(probe.stdout), { unshare: 1, mount: 1, ptrace: 1, keyctl: 1 }); // EPERM
    // The x86_64-only filter: the same answers, and Node runs under it as well.
    const native = await started({ driver: { seccompArchitectures: 'native' } });
    const nativeProbe = (await call(native.ci.socketPath, 'POST', '/Exec', { file: '/app/probe' })).json;
    assert.deepEqual(JSON.parse(nativeProbe.stdout), { unshare: 1, mount: 1, ptrace: 1, keyctl: 1 });
    // Control: without the profile, unshare(CLONE_NEWUSER) and ptrace(TRACEME) succeed for
    // the same unprivileged user, so it is the profile that refuses them above.
    const loose = await started({ driver: { seccomp: false } });
    const info = (await call(loose.ci.socketPath, 'POST', '/Inspect', {})).json;
    assert.equal(info.seccomp, '0');
    const open = JSON.parse((await call(loose.ci.socketPath, 'POST', '/Exec', { file: '/app/probe' })).json.stdout);
    assert.equal(open.ptrace, 0);
    assert.equal(open.unshare, 0);
    assert.equal(open.mount, 1); // no capabilities
  });

  it('sends writes to the instance upper dir; /tmp is a private tmpfs; /proc/sys is read-only', async () => {
    const { ci, inst } = await started();
    const upper = (ci as Awaited<ReturnType<typeof instance>>).upperDir;
    const write = async (path: string): Promise<unknown> => (await call(ci.socketPath, 'POST', '/Write', { path, text: 'w' })).json;
    assert.deepEqual(await write('/app/data/out'), { written: true });
    assert.equal(await readFile(join(upper, 'app/data/out'), 'utf8'), 'w');
    await assert.rejects(access(join(layers.appLayer, 'app/data/out')), 'the image layer is never written');
    assert.deepEqual(await write('/tmp/scratch'), { written: true });
    await assert.rejects(access(join(upper, 'tmp/scratch')), '/tmp is not in the upper dir');
    // The image's own files belong to root: the service user cannot change them.
    assert.deepEqual(await write('/app/server.mjs'), { error: 'EACCES' });
    assert.deepEqual(await write('/proc/sys/kernel/hostname'), { error: 'EROFS' });
    await inst.stop({ graceMs: 1000 });
  });

  it('enforces the memory limit and reports oom', async () => {
    const { ci, inst } = await started({ resources: { memoryBytes: 64 * 1024 * 1024, cpuMillis: 1000, pids: 64 } });
    await call(ci.socketPath, 'POST', '/Hog', {});
    const exit = await exitWithin(inst, 10_000);
    assert.equal(exit.reason, 'oom');
    assert.equal(exit.signal, 'SIGKILL');
  });

  it('enforces the pids limit', async () => {
    const { ci, inst } = await started({ resources: { memoryBytes: 256 * 1024 * 1024, cpuMillis: 1000, pids: 24 } });
    const r = (await call(ci.socketPath, 'POST', '/Spawn', { n: 40 }, 20_000)).json;
    assert.ok(r.started < 40, `started ${r.started} of 40 children under a limit of 24 tasks`);
    assert.ok(r.errors.includes('EAGAIN'), `errors ${JSON.stringify(r.errors)}`);
    const s = await inst.stats();
    assert.ok(s.pids !== undefined && s.pids <= 24);
  });

  it('applies cpu and memory settings to the cgroup', async () => {
    const { inst } = await started({ resources: { memoryBytes: 96 * 1024 * 1024, cpuMillis: 250, pids: 32 } });
    const paths = await cgroupPathsOf(inst.pid as number);
    const read = async (ctrl: string, file: string): Promise<string> => (await readFile(join(paths.v1[ctrl] ?? paths.unified ?? '', file), 'utf8')).trim();
    if (paths.v1.memory) {
      assert.equal(await read('memory', 'memory.limit_in_bytes'), String(96 * 1024 * 1024));
      assert.equal(await read('cpu', 'cpu.shares'), '256');
      assert.equal(await read('cpu', 'cpu.cfs_quota_us'), '25000');
      assert.equal(await read('cpu', 'cpu.cfs_period_us'), '100000');
      assert.equal(await read('pids', 'pids.max'), '32');
    }
    assert.match(paths.v1.memory ?? paths.unified ?? '', new RegExp(`${cgroupParent}/${inst.id}$`));
  });

  it('prepares a container ahead and starts it on demand', async () => {
    const { driver, ci } = await setup();
    assert.ok(canPrepare(driver));
    await driver.prepare(ci.spec);
    const st = JSON.parse((await run('runc', ['--root', join(dir, 'runc-shim'), 'state', ci.spec.id])).stdout) as { status: string };
    assert.equal(st.status, 'created');
    // The host made the listener already (socket activation): its own, closed to others.
    const sock = await stat(ci.socketPath);
    assert.ok(sock.isSocket());
    assert.equal(sock.uid, 0);
    assert.equal(sock.mode & 0o777, 0o600);
    const inst = await driver.start(ci.spec);
    await waitReady(ci.socketPath);
    // Started through its exec fifo (no `runc start`): runc sees it running all the same.
    const running = JSON.parse((await run('runc', ['--root', join(dir, 'runc-shim'), 'state', ci.spec.id])).stdout) as { status: string };
    assert.equal(running.status, 'running');
    assert.equal((await call(ci.socketPath, 'POST', '/Crash', { code: 7 })).status, 200);
    assert.deepEqual({ ...(await exitWithin(inst)), at: 0 }, { reason: 'crashed', code: 7, signal: undefined, at: 0 });
  });

  it('close() discards prepared containers and leaves started ones running', async () => {
    const { driver, ci } = await setup();
    const other = await instance(`r-${process.pid}-${seq++}`);
    cleanups.push(async () => {
      const again = createRuncDriver(driverOptions('shim'));
      await again.destroy(other.spec.id, other.spec.stateDir);
      await again.close();
      await other.release();
    });
    assert.ok(canPrepare(driver));
    await driver.prepare(ci.spec);
    await driver.start(other.spec);
    await waitReady(other.socketPath);
    await driver.close();
    assert.deepEqual(await runcList(join(dir, 'runc-shim')), [other.spec.id]);
    assert.equal((await call(other.socketPath, 'GET', '/healthz')).status, 200);
    await assert.rejects(stat(join(ci.spec.stateDir, 'bundle')));
  });

  it('recover() deletes containers that no known instance claims', async () => {
    const { driver, ci } = await setup();
    await driver.start(ci.spec);
    await waitReady(ci.socketPath);
    await driver.close();
    const second = createRuncDriver(driverOptions('shim'));
    assert.deepEqual(await second.recover([]), []);
    assert.deepEqual(await runcList(join(dir, 'runc-shim')), []);
    await assert.rejects(call(ci.socketPath, 'GET', '/healthz', undefined, 1000));
    await second.close();
  });

  it('survives its agent being killed: the shim keeps the exit code for the next agent', async () => {
    const { ci } = await setup();
    const driverModule = new URL('../../../../src/host/drivers/runc/index.ts', import.meta.url).href;
    const script = `
      const { createRuncDriver } = await import(${JSON.stringify(driverModule)});
      const [options, spec] = JSON.parse(process.argv[1]);
      const d = createRuncDriver({ ...options, log: () => {} });
      await d.start(spec);
      console.log('started');
      setInterval(() => {}, 1000);
    `;
    const { log: _log, ...options } = driverOptions('shim');
    const agent = spawn(process.execPath, ['--input-type=module', '-e', script, JSON.stringify([options, ci.spec])], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      agent.stdout.on('data', (b: Buffer) => b.toString().includes('started') && resolve());
      agent.once('exit', (code) => reject(new Error(`agent exited with ${code}`)));
    });
    await waitReady(ci.socketPath);
    agent.kill('SIGKILL');
    await new Promise((r) => agent.once('exit', r));
    assert.equal((await call(ci.socketPath, 'GET', '/healthz')).status, 200, 'the instance outlives its agent');

    const second = createRuncDriver(driverOptions('shim'));
    cleanups.push(() => second.close());
    const [found] = await second.recover([{ id: ci.spec.id, stateDir: ci.spec.stateDir }]);
    assert.equal(found?.status, 'running');
    assert.ok(found?.instance);
    await call(ci.socketPath, 'POST', '/Crash', { code: 6 });
    const exit = await exitWithin(found.instance);
    assert.deepEqual([exit.reason, exit.code], ['crashed', 6]);
  });

  it('re-attaches a paused instance as paused', async () => {
    const { driver, ci, inst } = await started();
    assert.ok(isPausable(inst));
    await inst.pause();
    await driver.close();
    const second: Driver = createRuncDriver(driverOptions('shim'));
    cleanups.push(() => second.close());
    const [found] = await second.recover([{ id: ci.spec.id, stateDir: ci.spec.stateDir }]);
    assert.equal(found?.status, 'paused');
    assert.ok(found?.instance && isPausable(found.instance));
    await found.instance.resume();
    assert.equal((await call(ci.socketPath, 'GET', '/healthz')).status, 200);
    await found.instance.stop({ graceMs: 1000 });
    assert.equal((await found.instance.exited).reason, 'killed');
  });

  it('a failed create says why and leaves nothing behind', async () => {
    const { driver, ci } = await setup();
    await assert.rejects(driver.start({ ...ci.spec, args: ['/no/such/program'] }), (e: { code?: string; field?: string; message: string }) => e.code === 'invalid' && e.field === 'args' && /\/no\/such\/program.*no such file/.test(e.message));
    assert.deepEqual(await runcList(join(dir, 'runc-shim')), []);
    await assert.rejects(stat(join(ci.spec.stateDir, 'bundle')));
  });

  it('refuses invalid ids and resources with the field named', async () => {
    const { driver, ci } = await setup();
    await assert.rejects(driver.start({ ...ci.spec, id: 'bad/id' }), (e: { field?: string }) => e.field === 'id');
    await assert.rejects(driver.start({ ...ci.spec, resources: { ...ci.spec.resources, pids: 0 } }), (e: { field?: string }) => e.field === 'resources.pids');
  });
});

