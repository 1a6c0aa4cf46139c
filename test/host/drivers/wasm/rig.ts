// Instances of one image root on a wasm driver, for the driver's tests (WASI modules and
// QuickJS bundles alike): a spec per id under `dir`, started (or restored, forked) and
// waited on, and stopped by the test file's `after` through `started`.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { InstanceSpec, RunningInstance } from '../../../../src/host/drivers/driver.ts';
import { waitReady } from '../../../fixtures/instance-client.ts';

export interface WasmRigOptions {
  /** The instances' folder (created per id) and their image root (read at each call: set in `before`). */
  dir: () => string;
  rootfs: () => string;
  args: () => string[];
  cwd: string;
  memoryMb: number;
  env?: (id: string) => string[];
}

export function createWasmRig(driver: { start(spec: InstanceSpec): Promise<RunningInstance> }, o: WasmRigOptions) {
  const started: RunningInstance[] = [];
  async function specFor(id: string, memoryMb = o.memoryMb): Promise<InstanceSpec & { socket: string }> {
    const base = join(o.dir(), id);
    await mkdir(join(base, 'sock'), { recursive: true, mode: 0o755 });
    return {
      id,
      rootfs: o.rootfs(),
      args: o.args(),
      env: o.env?.(id) ?? [],
      cwd: o.cwd,
      user: { uid: 65534, gid: 65534 },
      resources: { memoryBytes: memoryMb * 1024 * 1024, cpuMillis: 100, pids: 1 },
      listenSocket: join(base, 'sock/app.sock'),
      importsDir: join(base, 'imports'),
      logFile: join(base, 'log'),
      stateDir: join(base, 'state'),
      socket: join(base, 'sock/app.sock'),
    };
  }
  async function run(id: string, how: (s: InstanceSpec) => Promise<RunningInstance> = (s) => driver.start(s)) {
    const spec = await specFor(id);
    const inst = await how(spec);
    started.push(inst);
    await waitReady(spec.socket);
    return { inst, spec, socket: spec.socket };
  }
  return { specFor, run, started };
}
