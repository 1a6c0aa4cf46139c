// `shoal call` reaches echo running in a QEMU virtual machine: a real store (echo:1 on
// the node template, the same image runc runs), a host offering the vm driver, and a
// provider placing a service that declares `driver: "vm"`. One VM boot for the file.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startHost, type Host } from '../../src/host/index.ts';
import type { RunningStore } from '../../src/image/index.ts';
import { startProvider, type Provider } from '../../src/provider/index.ts';
import { createApiToken } from '../../src/provider/auth/index.ts';
import { skipUnless } from '../host/fixtures/requirements.ts';
import { startEchoStore } from '../provider/fixtures/echo-store.ts';
import { until } from '../fixtures/until.ts';
import { installTestKernel } from '../host/drivers/vm/kernel-cache.ts';

const skip = skipUnless(['root', 'qemu', 'cc']);
const SHOAL = fileURLToPath(new URL('../../bin/shoal.js', import.meta.url));
const TOKEN = 'host-token-for-tests';

describe('provider with a vm host', { skip }, () => {
  let store: RunningStore | undefined;
  let dir = '';
  let host: Host | undefined;
  let provider: Provider | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'spv-'));
    store = await startEchoStore();
    await installTestKernel(join(dir, 'h'));
    host = await startHost({
      dataDir: join(dir, 'h'),
      listen: { host: '127.0.0.1', port: 0 },
      token: TOKEN,
      capacity: { memoryMb: 2048, cpuMillis: 2000, instances: 4 },
      driver: 'vm',
    });
    provider = await startProvider({
      listen: { host: '127.0.0.1', port: 0 },
      database: join(dir, 'p.db'),
      storeUrl: store.url,
      joinToken: 'join-token-for-tests',
    });
    await provider.registerHost({ controlUrl: host.controlUrl, token: TOKEN });
  });

  after(async () => {
    await provider?.close();
    await host?.close({ stopInstances: true });
    await store?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('shoal call reaches echo in a VM, and removing it leaves no QEMU behind', async () => {
    const p = provider!;
    await p.registerService({
      name: 'echo-vm',
      version: '1',
      image: 'echo:1',
      driver: 'vm',
      operations: { Echo: { input: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] }, output: { type: 'object' }, idempotent: true } },
      resources: { memoryMb: 256, cpuMillis: 1000, pids: 64 },
      scaling: { min: 0, max: 1, idleTimeoutMs: 600_000 },
    });
    const token = (await createApiToken(p.registry, { role: 'invoke' })).secret;
    const { stdout } = await promisify(execFile)(process.execPath, [SHOAL, 'call', 'echo-vm', 'Echo', '{"message":"from a vm"}'], {
      env: { ...process.env, SHOAL_URL: p.url, SHOAL_TOKEN: token },
      timeout: 600_000,
    });
    assert.deepEqual(JSON.parse(stdout), { message: 'from a vm' });
    const instances = host!.agent.list().filter((i) => i.service.name === 'echo-vm');
    assert.equal(instances.length, 1);
    // The instance is a QEMU process (its pid is the VM's).
    const qemus = await qemuPidsUnder(join(dir, 'h'));
    assert.equal(qemus.length, 1);
    await host!.close({ stopInstances: true });
    host = undefined;
    await until('no QEMU left', async () => (await qemuPidsUnder(join(dir, 'h'))).length === 0, 30_000);
  });
});

/** QEMU processes whose command line names a path under `dir`. */
async function qemuPidsUnder(dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await import('node:fs/promises').then((f) => f.readFile(`/proc/${p}/cmdline`, 'utf8')).catch(() => '');
    if (cmd.startsWith('qemu-system') && cmd.includes(dir)) out.push(Number(p));
  }
  return out;
}
