// Messages/s through the provider for the same echo service on each driver (issue 13):
// one store, one provider and one host offering process, runc (when root), isolate and wasm;
// echo registered once per driver (echo-process, echo-runc: the node-template image;
// echo-isolate, echo-wasm: the component images, wasm running it on QuickJS), then 16
// concurrent callers for 3 s on each.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHost, type Host } from '../src/host/index.ts';
import { buildComponentImage, buildNodeTemplate, buildServiceImage, createRegistryClient, startStore } from '../src/image/index.ts';
import { parseImageRef } from '../src/protocol/image-ref.ts';
import { startProvider } from '../src/provider/index.ts';
import { createApiToken } from '../src/provider/auth/index.ts';
import { toServiceDescription } from '../src/service/index.ts';
import { Echo } from '../examples/echo/echo.ts';

const ECHO = fileURLToPath(new URL('../examples/echo/service.ts', import.meta.url));

export async function runComponentsProviderBench(options: { seconds?: number; connections?: number; log?: (m: string) => void } = {}): Promise<Record<string, number>> {
  const seconds = options.seconds ?? 3;
  const connections = options.connections ?? 16;
  const log = options.log ?? (() => undefined);
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-compprov-'));
  await chmod(dir, 0o755); // the process driver's instances run as nobody and must reach their roots
  const out: Record<string, number> = {};
  const store = await startStore({ dataDir: join(dir, 'store') });
  let host: Host | undefined;
  const provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database: join(dir, 'shoal.db'), storeUrl: store.url, joinToken: 'bench-join' });
  try {
    const client = createRegistryClient({ baseUrl: store.url });
    const template = await buildNodeTemplate({ client });
    await buildServiceImage({ client, entry: ECHO, template: parseImageRef(template.name), ref: parseImageRef('echo-node:1'), owner: { uid: 0, gid: 0 } });
    await buildComponentImage({ client, entry: ECHO, ref: parseImageRef('echo-iso:1'), driver: 'isolate' });
    await buildComponentImage({ client, entry: ECHO, ref: parseImageRef('echo-wasm:1'), driver: 'wasm' });
    const drivers = process.getuid?.() === 0 ? (['process', 'runc', 'isolate', 'wasm'] as const) : (['process', 'isolate', 'wasm'] as const);
    host = await startHost({ dataDir: join(dir, 'host'), listen: { host: '127.0.0.1', port: 0 }, token: 'bench-host', capacity: { memoryMb: 4096, cpuMillis: 8000, instances: 16 }, driver: 'process', drivers: [...drivers] });
    const admin = (await createApiToken(provider.registry, { role: 'admin' })).secret;
    const post = (path: string, body: unknown, token = admin) =>
      fetch(`${provider.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const joined = await post('/api/v1/hosts', { controlUrl: host.controlUrl, token: 'bench-host' }, 'bench-join');
    if (!joined.ok) throw new Error(`join: ${await joined.text()}`);
    for (const driver of drivers) {
      const name = `echo-${driver}`;
      const image = driver === 'isolate' ? 'echo-iso:1' : driver === 'wasm' ? 'echo-wasm:1' : 'echo-node:1';
      const r = await post('/api/v1/services', { ...toServiceDescription(Echo, { image }), name, driver, access: 'public', scaling: { min: 1, max: 1 } });
      if (!r.ok) throw new Error(`register ${name}: ${await r.text()}`);
      const url = `${provider.url}/s/${name}/Echo`;
      const call = () => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"message":"hello"}' });
      const first = await call();
      if (first.status !== 200) throw new Error(`${name}: ${first.status} ${await first.text()}`);
      log(`components-provider: ${name} for ${seconds} s`);
      let n = 0;
      const end = performance.now() + seconds * 1000;
      await Promise.all(
        Array.from({ length: connections }, async () => {
          while (performance.now() < end) {
            const res = await call();
            await res.arrayBuffer();
            if (res.status === 200) n++;
          }
        }),
      );
      out[driver] = n / seconds;
    }
  } finally {
    await host?.close();
    await provider.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
  return out;
}

if (import.meta.main) {
  const r = await runComponentsProviderBench({ log: (m) => process.stderr.write(`${m}\n`) });
  for (const [k, v] of Object.entries(r)) console.log(`${k}: ${v.toFixed(0)} messages/s through the provider`);
}
