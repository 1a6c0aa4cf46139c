// The process driver's instances of the fixture service (one flat rootfs for all), shared
// by the contract suite (../contract.test.ts) and the driver's own tests.
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ContractInstance } from '../contract.ts';
import { buildFlatRootfs, serviceArgs } from '../harness.ts';

export interface ProcessHarness {
  setUp(): Promise<void>;
  tearDown(): Promise<void>;
  instance(id: string): Promise<ContractInstance>;
  readonly rootfs: string;
}

export function createProcessHarness(): ProcessHarness {
  let dir = '';
  let rootfs = '';
  return {
    get rootfs() {
      return rootfs;
    },
    async setUp() {
      dir = await mkdtemp(join(tmpdir(), 'shoal-proc-'));
      // As root the instances run as nobody, which must reach the rootfs and sockets.
      await chmod(dir, 0o755);
      rootfs = await buildFlatRootfs(join(dir, 'rootfs'));
    },
    async tearDown() {
      await rm(dir, { recursive: true, force: true });
    },
    async instance(id) {
      const base = join(dir, 'i', id);
      const socketDir = join(base, 'sock');
      const stateDir = join(base, 'state');
      await mkdir(socketDir, { recursive: true });
      await mkdir(stateDir, { recursive: true });
      await chmod(join(dir, 'i'), 0o755);
      await chmod(base, 0o755);
      return {
        socketPath: join(socketDir, 'app.sock'),
        spec: {
          id,
          rootfs,
          args: serviceArgs,
          // No /run/shoal bind mount with this driver: the instance gets host paths.
          env: ['PATH=/usr/local/bin:/bin', `SHOAL_IMPORTS=${join(socketDir, 'imports')}`],
          cwd: '/app',
          user: { uid: 65534, gid: 65534 },
          resources: { memoryBytes: 128 * 1024 * 1024, cpuMillis: 500, pids: 64 },
          listenSocket: join(socketDir, 'app.sock'),
          importsDir: join(socketDir, 'imports'),
          logFile: join(base, 'log'),
          stateDir,
        },
        release: () => rm(base, { recursive: true, force: true }),
      };
    },
  };
}
