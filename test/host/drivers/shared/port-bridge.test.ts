// shoal-port-bridge (native/port-bridge) as the vm driver runs it: QEMU's parent, with
// descriptors meant for QEMU alone (its key directory, the live migration's stream).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Readable } from 'node:stream';
import { ensurePortBridge } from '../../../../src/host/drivers/shared/native.ts';
import { createInheritedListener } from '../../../../src/host/drivers/shared/listener.ts';
import { skipUnless } from '../../fixtures/requirements.ts';

describe('shoal-port-bridge', { skip: skipUnless(['cc']) }, () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-port-bridge-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps none of the program\'s descriptors: one the program closes reaches its end', async () => {
    const bridge = await ensurePortBridge({ cacheDir: join(dir, 'cache') });
    const listener = await createInheritedListener(join(dir, 'app.sock'));
    // fd 4 in the bridge and the program: the write end of a pipe the test reads. The
    // program closes its copy and sleeps; the reader sees the end only if the bridge
    // closed its copy too (it held the vm driver's migration stream open before).
    const child = spawn(bridge, ['1', '/bin/sh', '-c', 'exec 4>&-; exec sleep 30'], {
      stdio: ['ignore', 'ignore', 'inherit', listener.fd, 'pipe'],
    });
    try {
      await listener.release();
      const stream = child.stdio[4] as Readable;
      stream.resume();
      const ended = await Promise.race([
        new Promise<boolean>((resolve) => stream.once('end', () => resolve(true))),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5000).unref()),
      ]);
      assert.equal(ended, true, 'the descriptor stayed open in the bridge');
      assert.equal(child.exitCode, null, 'the bridge and its program still run');
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });
});
