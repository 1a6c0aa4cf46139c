// What a vm restore refuses before QEMU runs, and what a capture writes at most: needs
// neither QEMU nor root (zstd, from scripts/setup-system.sh).
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import tar from 'tar-stream';
import type { InstanceSpec } from '../../../../src/host/drivers/driver.ts';
import { createVmDriver, unpackState, VM_STATE_MEDIA_TYPE } from '../../../../src/host/drivers/vm/index.ts';
import { receiveOnce } from '../../../../src/host/drivers/vm/saved-state.ts';
import { skipUnless } from '../../fixtures/requirements.ts';

let dir: string;

async function stateFile(name: string, diskBytes: number): Promise<string> {
  const pack = tar.pack();
  pack.entry({ name: 'memory.zst' }, zstdCompressSync(Buffer.from('ram')));
  pack.entry({ name: 'disk.qcow2.zst' }, zstdCompressSync(Buffer.alloc(diskBytes)));
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  const file = join(dir, name);
  await writeFile(file, Buffer.concat(chunks));
  return file;
}

describe('vm restore bounds', { skip: skipUnless(['zstd']) }, () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-vm-bounds-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a state whose disk or memory decompresses past its bound', async () => {
    const file = await stateFile('bomb.tar', 8 * 1024 * 1024); // a few KiB compressed
    const targets = { 'memory.zst': { path: join(dir, 'm1'), maxBytes: 1024 }, 'disk.qcow2.zst': { path: join(dir, 'd1.qcow2'), maxBytes: 1024 * 1024 } };
    await assert.rejects(unpackState(file, targets), /decompresses to more than 1048576 bytes/);
    await unpackState(file, { 'memory.zst': { path: join(dir, 'm2'), maxBytes: 1024 }, 'disk.qcow2.zst': { path: join(dir, 'd2.qcow2'), maxBytes: 16 * 1024 * 1024 } });
    assert.equal(await readFile(join(dir, 'm2'), 'utf8'), 'ram');
    // The memory has its bound too (it is decompressed before QEMU reads it).
    const small = { 'memory.zst': { path: join(dir, 'm3'), maxBytes: 2 }, 'disk.qcow2.zst': { path: join(dir, 'd3.qcow2'), maxBytes: 16 * 1024 * 1024 } };
    await assert.rejects(unpackState(file, small), /memory.zst in the vm state decompresses to more than 2 bytes/);
    assert.equal((await stat(join(dir, 'd2.qcow2'))).size, 8 * 1024 * 1024);
  });

  it('refuses a state with an unknown, repeated or non-zstd entry, naming it', async () => {
    const targets = { 'memory.zst': { path: join(dir, 'm5'), maxBytes: 1024 * 1024 }, 'disk.qcow2.zst': { path: join(dir, 'd5.qcow2'), maxBytes: 1024 * 1024 } };
    const disk = zstdCompressSync(Buffer.alloc(4096));
    const cases: Array<[Array<[string, Buffer]>, RegExp]> = [
      [[['../escape', disk]], /unexpected entry "\.\.\/escape"/],
      [[['disk.qcow2.zst', disk], ['disk.qcow2.zst', disk]], /unexpected entry "disk\.qcow2\.zst"/],
      [[['disk.qcow2.zst', disk], ['memory.zst', Buffer.from('not zstd')]], /memory\.zst in the vm state is not zstd/],
      [[['disk.qcow2.zst', disk], ['memory.zst', disk.subarray(0, disk.length - 3)]], /memory\.zst in the vm state is not zstd/],
      [[['disk.qcow2.zst', disk]], /vm state lacks memory\.zst/],
    ];
    for (const [entries, message] of cases) {
      const pack = tar.pack();
      for (const [name, bytes] of entries) pack.entry({ name }, bytes);
      pack.finalize();
      const chunks: Buffer[] = [];
      for await (const c of pack) chunks.push(c as Buffer);
      const file = join(dir, 'odd.tar');
      await writeFile(file, Buffer.concat(chunks));
      await assert.rejects(unpackState(file, targets), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'invalid');
        assert.match(e.message, message);
        return true;
      });
    }
  });

  it('returns only once the last entry is written whole, even from a tar without its end blocks', async () => {
    // 64 MiB that takes zstd a while to write; the entry padded (a skippable frame) to a
    // multiple of 512 bytes, and the tar cut before its end-of-archive blocks, so the
    // archive is parsed to its end before zstd is done.
    const block = randomBytes(1024 * 1024);
    const ram = Buffer.concat(Array.from({ length: 64 }, () => block));
    const frame = zstdCompressSync(ram);
    const padLength = (512 - ((frame.length + 8) % 512)) % 512;
    const pad = Buffer.alloc(8 + padLength);
    pad.writeUInt32LE(0x184d2a50, 0);
    pad.writeUInt32LE(padLength, 4);
    const pack = tar.pack();
    pack.entry({ name: 'disk.qcow2.zst' }, zstdCompressSync(Buffer.alloc(4096)));
    pack.entry({ name: 'memory.zst' }, Buffer.concat([frame, pad]));
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const c of pack) chunks.push(c as Buffer);
    const whole = Buffer.concat(chunks);
    const file = join(dir, 'no-end.tar');
    await writeFile(file, whole.subarray(0, whole.length - 1024));
    const written: string[] = [];
    const memory = join(dir, 'm6');
    await unpackState(file, { 'memory.zst': { path: memory, maxBytes: 128 * 1024 * 1024 }, 'disk.qcow2.zst': { path: join(dir, 'd6.qcow2'), maxBytes: 1024 * 1024 } }, (name) => written.push(name));
    assert.equal((await stat(memory)).size, ram.length);
    assert.deepEqual(written, ['disk.qcow2.zst', 'memory.zst']);
  });

  it('says why zstd stopped, not that its input pipe broke, and refuses a cut archive as invalid', async () => {
    const targets = { 'memory.zst': { path: join(dir, 'm7'), maxBytes: 1024 * 1024 * 1024 }, 'disk.qcow2.zst': { path: join(dir, 'd7.qcow2'), maxBytes: 1024 * 1024 } };
    const pack = tar.pack();
    pack.entry({ name: 'disk.qcow2.zst' }, zstdCompressSync(Buffer.alloc(4096)));
    pack.entry({ name: 'memory.zst' }, randomBytes(20 * 1024 * 1024)); // zstd refuses it at once; the feed then breaks
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const c of pack) chunks.push(c as Buffer);
    const whole = Buffer.concat(chunks);
    await writeFile(join(dir, 'big-junk.tar'), whole);
    await assert.rejects(unpackState(join(dir, 'big-junk.tar'), targets), /memory\.zst in the vm state is not zstd/);
    // Cut inside the second entry's header.
    await writeFile(join(dir, 'cut.tar'), whole.subarray(0, 512 + 512 + 100));
    await assert.rejects(unpackState(join(dir, 'cut.tar'), targets), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'invalid');
      return true;
    });
  });

  it('bounds what a capture writes of the memory stream it receives', async () => {
    // The stream comes from QEMU, which runs the guest: an endless one must not fill the disk.
    const out = join(dir, 'captured.zst');
    const received = await receiveOnce(out, 4096);
    const sock = connect(received.port, '127.0.0.1');
    sock.on('error', () => undefined); // reset once zstd is killed
    sock.end(randomBytes(1024 * 1024)); // incompressible: ~1 MiB of output
    await assert.rejects(received.done, /memory compressed to more than 4096 bytes/);
    assert.ok((await stat(out)).size <= 4096);
    // Within its bound, the stream round-trips.
    const ok = await receiveOnce(join(dir, 'ok.zst'), 1024 * 1024);
    connect(ok.port, '127.0.0.1').end('the guest RAM');
    await ok.done;
    assert.equal(zstdDecompressSync(await readFile(join(dir, 'ok.zst'))).toString(), 'the guest RAM');
    // Someone holds the connection open (a stranger that connected first): close() ends zstd too.
    const held = await receiveOnce(join(dir, 'held.zst'), 1024 * 1024);
    const holder = connect(held.port, '127.0.0.1');
    holder.on('error', () => undefined);
    holder.write('not all of it');
    await new Promise((r) => setTimeout(r, 200));
    held.close();
    const outcome = await Promise.race([held.done.then(() => 'finished', () => 'ended'), new Promise((r) => setTimeout(() => r('still running'), 5000))]);
    holder.destroy();
    assert.equal(outcome, 'ended');
    // No connection (QEMU's migrate failed first): close() ends the wait, and the port.
    const never = await receiveOnce(join(dir, 'never.zst'), 1024);
    never.close();
    await assert.rejects(never.done, /QEMU never connected/);
    await assert.rejects(new Promise((resolve, reject) => connect(never.port, '127.0.0.1').on('connect', resolve).on('error', reject)), /ECONNREFUSED/);
  });

  it('takes the machine size from spec.resources and refuses a state that says otherwise', async () => {
    const driver = createVmDriver({ dataDir: join(dir, 'driver'), log: () => undefined });
    const stateDir = join(dir, 'inst');
    const spec: InstanceSpec = {
      id: 'vm-bounds',
      rootfs: join(dir, 'rootfs'),
      args: ['/app/x'],
      env: [],
      cwd: '/',
      user: { uid: 0, gid: 0 },
      resources: { memoryBytes: 256 * 1024 * 1024, cpuMillis: 1000, pids: 64 },
      stateDir,
      listenSocket: join(dir, 'l.sock'),
      importsDir: join(dir, 'imports'),
      logFile: join(dir, 'log'),
    } as InstanceSpec;
    const file = await stateFile('ok.tar', 1024);
    // A state of another format (the status disk came with format 2) is refused first.
    await assert.rejects(driver.restore(spec, { mediaType: VM_STATE_MEDIA_TYPE, file, annotations: { 'org.shoal.vm.format': '1' } }), /vm format 1; this driver restores format 2/);
    const annotations = { 'org.shoal.vm.format': '2', 'org.shoal.vm.memory-mib': '65536', 'org.shoal.vm.cpus': '64' };
    await assert.rejects(driver.restore(spec, { mediaType: VM_STATE_MEDIA_TYPE, file, annotations }), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'conflict');
      assert.match(e.message, /65536 MiB and 64 cpus; this spec's resources give 256 MiB and 1 cpus/);
      return true;
    });
    assert.deepEqual(await readdir(stateDir), []); // refused before anything was unpacked
    await driver.close();
  });
});
