// The module path in spec.args must stay inside the image: refused before any runner starts.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { InstanceSpec } from '../../../../src/host/drivers/driver.ts';
import { createIsolateDriver } from '../../../../src/host/drivers/isolate/index.ts';

let dir: string;

describe('isolate bundle path', () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-iso-path-'));
    await mkdir(join(dir, 'root/app'), { recursive: true });
    await writeFile(join(dir, 'root/app/main.mjs'), 'export default {};\n');
    // Outside the image root: a path in args must never reach it.
    await mkdir(join(dir, 'outside'));
    await writeFile(join(dir, 'outside/x.mjs'), 'export default {};\n');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const entry of ['/../outside/x.mjs', '/app/../../outside/x.mjs', '/app/./main.mjs', '//app/main.mjs']) {
    it(`refuses ${entry}`, async () => {
      const driver = createIsolateDriver({ dataDir: join(dir, 'data'), confinement: 'process', log: () => undefined });
      const spec = {
        id: 'iso-path',
        rootfs: join(dir, 'root'),
        args: ['node', entry],
        env: [],
        cwd: '/',
        user: { uid: 0, gid: 0 },
        resources: { memoryBytes: 64 * 1024 * 1024, cpuMillis: 1000, pids: 64 },
        stateDir: join(dir, 'inst'),
        listenSocket: join(dir, 'l.sock'),
        importsDir: join(dir, 'imports'),
        logFile: join(dir, 'log'),
      } as InstanceSpec;
      try {
        await assert.rejects(driver.start(spec), (e: Error & { code?: string; field?: string }) => {
          assert.equal(e.code, 'invalid');
          assert.match(e.message, /not a module path inside the image/);
          return true;
        });
      } finally {
        await driver.close();
      }
    });
  }
});
