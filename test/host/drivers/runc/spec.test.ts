import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { InstanceSpec } from '../../../../src/host/drivers/driver.ts';
import { buildRuntimeSpec, cpuControls, PORT_BRIDGE_INSIDE, validateInstanceId } from '../../../../src/host/drivers/runc/spec.ts';
import { isShoalError } from '../../../../src/protocol/errors.ts';

const spec: InstanceSpec = {
  id: 'svc-1',
  rootfs: '/data/instances/svc-1/rootfs',
  args: ['/usr/local/bin/node', '/app/server.js'],
  env: ['PATH=/usr/local/bin:/bin', 'SHOAL_LISTEN=/run/shoal/app.sock'],
  cwd: '/app',
  user: { uid: 65534, gid: 65534 },
  resources: { memoryBytes: 128 * 1024 * 1024, cpuMillis: 500, pids: 64 },
  listenSocket: '/data/instances/svc-1/sock/app.sock',
  importsDir: '/data/instances/svc-1/sock/imports',
  logFile: '/data/instances/svc-1/log',
  stateDir: '/data/instances/svc-1/state',
};

describe('runc runtime spec', () => {
  it('turns millicores into shares and a quota per 100 ms', () => {
    assert.deepEqual(cpuControls(1000), { shares: 1024, quota: 100_000, period: 100_000 });
    assert.deepEqual(cpuControls(500), { shares: 512, quota: 50_000, period: 100_000 });
    assert.deepEqual(cpuControls(2500), { shares: 2560, quota: 250_000, period: 100_000 });
    // The kernel's minimums: 2 shares, 1 ms of quota.
    assert.deepEqual(cpuControls(1), { shares: 2, quota: 1000, period: 100_000 });
  });

  it('runs the spec program unprivileged, without a terminal', () => {
    const c = buildRuntimeSpec(spec, { cgroupsPath: 'shoal/svc-1' });
    assert.equal(c.process.terminal, false);
    assert.deepEqual(c.process.args, spec.args);
    assert.deepEqual(c.process.env, [...spec.env, 'LISTEN_FDS=1', 'LISTEN_FDNAMES=shoal']);
    assert.equal(c.process.cwd, '/app');
    assert.deepEqual(c.process.user, { uid: 65534, gid: 65534 });
    assert.deepEqual(c.process.capabilities, { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] });
    assert.equal(c.process.noNewPrivileges, true);
    assert.deepEqual(c.process.rlimits, [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }]);
    assert.equal(c.hostname, 'svc-1');
  });

  it('isolates with new namespaces (a network one too) and limits', () => {
    const c = buildRuntimeSpec(spec, { cgroupsPath: 'shoal/svc-1' });
    assert.deepEqual(c.linux.namespaces.map((n) => n.type).sort(), ['ipc', 'mount', 'network', 'pid', 'uts']);
    assert.equal(c.linux.cgroupsPath, 'shoal/svc-1');
    assert.deepEqual(c.linux.resources.memory, { limit: 134217728, swap: 134217728 });
    assert.deepEqual(c.linux.resources.cpu, { shares: 512, quota: 50_000, period: 100_000 });
    assert.deepEqual(c.linux.resources.pids, { limit: 64 });
    assert.deepEqual(c.linux.resources.devices, [{ allow: false, access: 'rwm' }]);
    assert.ok(c.linux.maskedPaths.includes('/proc/kcore'));
    assert.ok(c.linux.readonlyPaths.includes('/proc/sys'));
    assert.equal(c.linux.seccomp?.defaultAction, 'SCMP_ACT_ERRNO');
    assert.equal(buildRuntimeSpec(spec, { cgroupsPath: 'x', seccomp: false }).linux.seccomp, undefined);
    assert.deepEqual(buildRuntimeSpec(spec, { cgroupsPath: 'x', seccompArchitectures: 'native' }).linux.seccomp?.architectures, ['SCMP_ARCH_X86_64']);
  });

  it('mounts the rootfs, a bounded /tmp and /run/shoal, and the imports read-only', () => {
    const c = buildRuntimeSpec(spec, { cgroupsPath: 'shoal/svc-1' });
    assert.deepEqual(c.root, { path: spec.rootfs, readonly: false });
    const byDest = new Map(c.mounts.map((m) => [m.destination, m]));
    // Nothing of the host is writable at /run/shoal: a bounded tmpfs of its own.
    assert.deepEqual(byDest.get('/run/shoal'), { destination: '/run/shoal', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'noexec', 'mode=1777', 'size=16384k'] });
    assert.deepEqual(byDest.get('/run/shoal/imports'), {
      destination: '/run/shoal/imports',
      type: 'bind',
      source: spec.importsDir,
      options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'],
    });
    assert.ok(c.mounts.findIndex((m) => m.destination === '/run/shoal') < c.mounts.findIndex((m) => m.destination === '/run/shoal/imports'));
    assert.deepEqual(byDest.get('/tmp')?.options, ['nosuid', 'nodev', 'mode=1777', 'size=65536k']);
    assert.ok(byDest.get('/sys')?.options?.includes('ro'));
    for (const d of ['/proc', '/dev', '/dev/pts', '/dev/shm', '/dev/mqueue']) assert.ok(byDest.has(d), d);
    const small = buildRuntimeSpec(spec, { cgroupsPath: 'x', tmpSizeBytes: 1024 * 1024 });
    assert.ok(small.mounts.find((m) => m.destination === '/tmp')?.options?.includes('size=1024k'));
  });

  it('keeps the hostname within 63 characters', () => {
    const long = 'a'.repeat(100);
    assert.equal(buildRuntimeSpec({ ...spec, id: long }, { cgroupsPath: 'x' }).hostname, 'a'.repeat(63));
  });

  it('refuses bad input, naming the field', () => {
    const cases: Array<[Partial<InstanceSpec>, string]> = [
      [{ id: 'has/slash' }, 'id'],
      [{ id: '' }, 'id'],
      [{ args: [] }, 'args'],
      [{ cwd: 'app' }, 'cwd'],
      [{ resources: { ...spec.resources, memoryBytes: 1024 } }, 'resources.memoryBytes'],
      [{ resources: { ...spec.resources, cpuMillis: 0.5 } }, 'resources.cpuMillis'],
      [{ resources: { ...spec.resources, pids: -1 } }, 'resources.pids'],
    ];
    for (const [patch, field] of cases) {
      assert.throws(() => buildRuntimeSpec({ ...spec, ...patch }, { cgroupsPath: 'x' }), (e: unknown) => isShoalError(e) && e.code === 'invalid' && e.field === field, field);
    }
    assert.doesNotThrow(() => validateInstanceId('svc_1.a+b-c'));
  });
});

describe('runc runtime spec: hardening', () => {
  it('runs in a user namespace when given a mapping, and refuses a user outside it', () => {
    const c = buildRuntimeSpec(spec, { cgroupsPath: 'x', idMapping: { hostId: 0x10000000, count: 65536 } });
    assert.equal(c.linux.namespaces[0]?.type, 'user');
    assert.deepEqual(c.linux.uidMappings, [{ containerID: 0, hostID: 0x10000000, size: 65536 }]);
    assert.deepEqual(c.linux.gidMappings, [{ containerID: 0, hostID: 0x10000000, size: 65536 }]);
    assert.equal(buildRuntimeSpec(spec, { cgroupsPath: 'x' }).linux.uidMappings, undefined);
    assert.throws(
      () => buildRuntimeSpec({ ...spec, user: { uid: 70000, gid: 0 } }, { cgroupsPath: 'x', idMapping: { hostId: 0x10000000, count: 65536 } }),
      (e: unknown) => isShoalError(e) && e.field === 'user',
    );
  });

  it('adds the root layer size to the memory limit (its tmpfs pages are charged there)', () => {
    const c = buildRuntimeSpec({ ...spec, resources: { ...spec.resources, diskBytes: 64 * 1024 * 1024 } }, { cgroupsPath: 'x' });
    assert.deepEqual(c.linux.resources.memory, { limit: 192 * 1024 * 1024, swap: 192 * 1024 * 1024 });
  });

  it('masks the kernel files containerd masks and what names the host disks', () => {
    const c = buildRuntimeSpec(spec, { cgroupsPath: 'x', extraMaskedPaths: ['/sys/devices/pci0000:00/0000:00:02.0/virtio1/block'] });
    for (const p of ['/proc/kcore', '/proc/keys', '/sys/firmware', '/sys/devices/virtual/powercap', '/sys/block', '/sys/class/block', '/proc/partitions']) {
      assert.ok(c.linux.maskedPaths.includes(p), p);
    }
    assert.ok(c.linux.maskedPaths.includes('/sys/devices/pci0000:00/0000:00:02.0/virtio1/block'));
  });

  it('the $PORT contract: the bridge, bound read-only from a host copy, runs in front of the program', () => {
    const c = buildRuntimeSpec({ ...spec, tcpPort: 8080 }, { cgroupsPath: 'x', portBridge: '/host/driver/port-bridge' });
    assert.deepEqual(c.process.args, [PORT_BRIDGE_INSIDE, '8080', ...spec.args]);
    const m = c.mounts.find((x) => x.destination === PORT_BRIDGE_INSIDE);
    assert.deepEqual(m, { destination: PORT_BRIDGE_INSIDE, type: 'bind', source: '/host/driver/port-bridge', options: ['bind', 'ro', 'nosuid', 'nodev'] });
    assert.deepEqual(buildRuntimeSpec(spec, { cgroupsPath: 'x' }).process.args, spec.args, 'the socket contract is unchanged');
    assert.throws(() => buildRuntimeSpec({ ...spec, tcpPort: 8080 }, { cgroupsPath: 'x' }), (e: unknown) => isShoalError(e) && e.field === 'tcpPort');
  });
});
