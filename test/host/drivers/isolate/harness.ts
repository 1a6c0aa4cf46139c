// The isolate driver's instances of the fixture service: test/host/fixtures/
// isolate-service.ts bundled once (as `shoal image build --driver isolate` bundles it) into
// a flat rootfs all instances share (the agent would mount the image per instance).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { cgroupPathsOf } from '../../../../src/host/drivers/runc/cgroups.ts';
import { createIsolateDriver, type IsolateDriverOptions } from '../../../../src/host/drivers/isolate/index.ts';
import { bundleService } from '../../../../src/image/index.ts';
import type { ContractInstance } from '../contract.ts';

const run = promisify(execFile);
export const isolateFixture = fileURLToPath(new URL('../../fixtures/isolate-service.ts', import.meta.url));
const CGROUP_PARENT = `shoal-test-iso-${process.pid}`;
/** A short CPU budget, so the limit test is quick. */
export const MESSAGE_CPU_MS = 1000;

export interface IsolateHarness {
  setUp(): Promise<void>;
  tearDown(): Promise<void>;
  instance(id: string, entry?: string): Promise<ContractInstance>;
  driver(extra?: Partial<IsolateDriverOptions>): ReturnType<typeof createIsolateDriver>;
  assertClean(): Promise<void>;
  readonly dir: string;
}

export function createIsolateHarness(): IsolateHarness {
  let dir = '';
  let rootfs = '';
  let entry = '';
  const h: IsolateHarness = {
    get dir() {
      return dir;
    },
    async setUp() {
      dir = await mkdtemp(join(tmpdir(), 'shoal-iso-'));
      await chmod(dir, 0o755);
      rootfs = join(dir, 'rootfs');
      entry = (await bundleService({ entry: isolateFixture, outDir: rootfs })).entry;
    },
    async tearDown() {
      await rm(dir, { recursive: true, force: true });
      // The parent cgroup runc made for the runners (empty by now).
      const own = await cgroupPathsOf(process.pid).catch(() => ({ v1: {}, unified: undefined }));
      for (const p of new Set([...Object.values(own.v1), ...(own.unified ? [own.unified] : [])])) await rmdir(join(p, CGROUP_PARENT)).catch(() => undefined);
    },
    driver(extra = {}) {
      return createIsolateDriver({ dataDir: join(dir, 'data'), messageCpuMs: MESSAGE_CPU_MS, runnerIdleMs: 1000, cgroupParent: CGROUP_PARENT, log: () => undefined, ...extra });
    },
    async instance(id) {
      const base = join(dir, 'i', id);
      const socketDir = join(base, 'sock');
      await mkdir(socketDir, { recursive: true, mode: 0o700 });
      await mkdir(join(socketDir, 'imports'), { mode: 0o700 });
      return {
        socketPath: join(socketDir, 'app.sock'),
        spec: {
          id,
          rootfs,
          args: [entry],
          env: ['PATH=/usr/local/bin:/bin', 'SHOAL_LISTEN=/run/shoal/app.sock', 'SHOAL_IMPORTS=/run/shoal/imports', `SHOAL_INSTANCE=${id}`],
          cwd: '/app',
          user: { uid: 65534, gid: 65534 },
          resources: { memoryBytes: 128 * 1024 * 1024, cpuMillis: 500, pids: 64 },
          listenSocket: join(socketDir, 'app.sock'),
          importsDir: join(socketDir, 'imports'),
          logFile: join(base, 'log'),
          stateDir: join(base, 'state'),
        },
        release: () => rm(base, { recursive: true, force: true }),
      };
    },
    async assertClean() {
      // No runner container is left behind by a closed driver.
      const { stdout } = await run('runc', ['--root', join(dir, 'data', 'isolate', 'runc'), 'list', '--quiet']).catch(() => ({ stdout: '' }));
      assert.deepEqual(stdout.split('\n').filter(Boolean), [], 'runner containers left');
    },
  };
  return h;
}
