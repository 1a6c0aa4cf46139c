// The vm driver's pure parts: QEMU's command line (confinement switches present, the
// device line the same for a start and a restore), exit codes, the spec disk's format.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { guestExitCode, qemuArgs, type QemuLaunch } from '../../../../src/host/drivers/vm/qemu.ts';
import { parseStatusLine } from '../../../../src/host/drivers/vm/status.ts';
import { layerStackKey, writeSpecDisk } from '../../../../src/host/drivers/vm/disks.ts';

const launch: QemuLaunch = {
  accel: 'tcg',
  vmlinux: '/k/vmlinux',
  initrd: '/k/initrd.img',
  overlay: '/s/disk.qcow2',
  pidFile: '/s/qemu.pid',
  statusDisk: '/s/status.img',
  specDisk: '/s/spec.img',
  hostPort: 40001,
  guestPort: 8080,
  memoryMiB: 256,
  cpus: 2,
  qmpSocket: '/s/qmp.sock',
  runAs: 'nobody',
};

describe('vm qemu command line', () => {
  it('confines QEMU: restricted user network on loopback only, seccomp sandbox, unprivileged user, no defaults', () => {
    const args = qemuArgs(launch);
    const after = (flag: string) => args[args.indexOf(flag) + 1];
    assert.match(after('-netdev')!, /^user,id=n0,restrict=on,hostfwd=tcp:127\.0\.0\.1:40001-:8080$/);
    assert.match(after('-sandbox')!, /^on,.*spawn=deny/);
    assert.equal(after('-runas'), 'nobody');
    assert.equal(after('-m'), '256');
    assert.equal(after('-smp'), '2');
    assert.ok(args.includes('-nodefaults'));
    assert.match(after('-M')!, /^pc-i440fx-\d/, 'a pinned machine type, so saved states restore elsewhere');
  });

  it('builds the same device line for a restore, plus -incoming from the inherited descriptor', () => {
    const start = qemuArgs(launch);
    const restore = qemuArgs({ ...launch, hostPort: 40002, overlay: '/t/disk.qcow2', incoming: 'fd:3' });
    assert.deepEqual(restore.slice(-2), ['-incoming', 'fd:3']);
    const devices = (a: string[]) => a.filter((x, i) => a[i - 1] === '-device');
    assert.deepEqual(devices(restore), devices(start));
    // A live migration's target: the same devices, its stream set up later over QMP.
    const target = qemuArgs({ ...launch, hostPort: 40003, overlay: '/u/disk.qcow2', incoming: 'defer' });
    assert.deepEqual(target.slice(-2), ['-incoming', 'defer']);
    assert.deepEqual(devices(target), devices(start));
  });

  it('reads the guest exit code from QEMU isa-debug-exit status', () => {
    assert.equal(guestExitCode((3 << 1) | 1), 3);
    assert.equal(guestExitCode(1), 0);
    assert.equal(guestExitCode(0), undefined, 'QEMU itself exited (killed or quit)');
    assert.equal(guestExitCode(null), undefined);
  });
});

describe('vm spec disk', () => {
  it('writes the launch spec as NUL-separated fields, padded to whole sectors', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-vm-spec-'));
    try {
      const file = join(dir, 'spec.img');
      await writeSpecDisk(
        {
          id: 'x', rootfs: '/r', args: ['/bin/node', 'a b'], env: ['A=1'], cwd: '/app', user: { uid: 65534, gid: 65533 },
          resources: { memoryBytes: 1, cpuMillis: 1, pids: 1 }, listenSocket: '/s', importsDir: '/i', logFile: '/l', stateDir: '/d',
        },
        file,
      );
      const bytes = await readFile(file);
      assert.equal(bytes.length % 512, 0);
      const fields = bytes.toString('utf8').replace(/\0+$/, '').split('\0');
      assert.deepEqual(fields, ['shoal-spec-1', '8080', '65534', '65533', '/app', '2', '/bin/node', 'a b', '1', 'A=1']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('keys root templates by the layer stack', () => {
    assert.equal(layerStackKey(['a', 'b']), layerStackKey(['a', 'b']));
    assert.notEqual(layerStackKey(['a', 'b']), layerStackKey(['b', 'a']));
  });

  it('reads the status line shoal-run writes, and nothing else', () => {
    assert.deepEqual(parseStatusLine('shoal-exit-1 200 0 0\n\0\0'), { code: 200, signal: undefined, oom: false });
    assert.deepEqual(parseStatusLine('shoal-exit-1 -1 9 1\n'), { code: undefined, signal: 'SIGKILL', oom: true });
    for (const bad of ['', '\0\0\0', 'shoal-exit-1 300 0 0\n', 'shoal-exit-1 1 0 2\n', 'shoal-exit-1 1 0 0', 'shoal-exit-2 1 0 0\n', 'shoal-exit-1 1e3 0 0\n']) {
      assert.equal(parseStatusLine(bad), undefined, JSON.stringify(bad));
    }
  });
});
