// The instance manager with the process driver and a fake store: deployment phases,
// readiness, failure cleanup, exit events, pause/resume, removal and recovery, without
// runc or root (the runc path is covered by test/integration/host-runc.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAdmission } from '../../src/host/admission.ts';
import { createAgent, type Agent } from '../../src/host/agent.ts';
import { createEventBus } from '../../src/host/events.ts';
import { createHostState } from '../../src/host/host-state.ts';
import { createLayerCache } from '../../src/host/layer-cache.ts';
import { createProcessDriver } from '../../src/host/drivers/process/index.ts';
import { listMounts, mountOverlay, unmountOverlay } from '../../src/host/rootfs/overlay.ts';
import { openImportSockets } from '../../src/host/data-plane/import-sockets.ts';
import type { DeploymentPlan } from '../../src/protocol/deployment.ts';
import { digestOf } from '../../src/protocol/digest.ts';
import type { RootfsSpec } from '../../src/protocol/oci.ts';
import { post } from '../fixtures/instance-client.ts';
import { linkNode } from '../fixtures/link-node.ts';

const echoServer = new URL('../../examples/echo/rootfs/app/server.mjs', import.meta.url).pathname;
const layerText = 'echo-layer-v1';
const layer = { digest: digestOf(layerText), diffId: digestOf(`diff:${layerText}`), size: layerText.length, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' };
const rootfs: RootfsSpec = {
  manifestDigest: digestOf('manifest'),
  configDigest: digestOf('config'),
  layers: [layer],
  process: { args: ['/usr/local/bin/node', '/app/server.mjs'], env: ['PATH=/usr/local/bin:/bin'], cwd: '/', user: undefined },
};

function plan(over: Partial<DeploymentPlan> = {}): DeploymentPlan {
  return {
    service: { name: 'echo', version: '1' },
    image: 'echo:1',
    store: 'http://127.0.0.1:9',
    resources: { memoryMb: 64, cpuMillis: 100, pids: 64 },
    readiness: { timeoutMs: 5000 },
    ...over,
  };
}

async function setup(t: { after(fn: () => Promise<void>): void }, capacity = { memoryMb: 1024, cpuMillis: 4000, instances: 4 }) {
  const dataDir = await mkdtemp(join(tmpdir(), 'shoal-agent-'));
  await chmod(dataDir, 0o711); // the service runs as nobody when we are root
  const events = createEventBus();
  let fetches = 0;
  const layerCache = createLayerCache({
    dir: join(dataDir, 'cache'),
    budgetBytes: 1 << 30,
    // "unpacking" builds the tree: node (a hard link to this node) and the echo server
    unpack: async () => {
      throw new Error('the process driver uses flat trees');
    },
    flatten: async (_layers, dest) => {
      await mkdir(join(dest, 'usr/local/bin'), { recursive: true });
      await mkdir(join(dest, 'app'), { recursive: true });
      await linkNode(join(dest, 'usr/local/bin/node'));
      await copyFile(echoServer, join(dest, 'app/server.mjs'));
    },
  });
  await layerCache.open();
  const make = (): Agent =>
    createAgent({
      state: createHostState(dataDir),
      admission: createAdmission(capacity),
      layerCache,
      events,
      drivers: { process: createProcessDriver({ log: () => {} }) },
      defaultDriver: 'process',
      images: {
        async resolve(_store, image) {
          if (image === 'missing:1') throw Object.assign(new Error('image missing:1 not found'), {});
          return {
            rootfs,
            fetchBlob: async (_d, dest, onBytes) => {
              fetches++;
              await writeFile(dest, layerText);
              onBytes(layerText.length);
            },
          };
        },
      },
      mounter: { mountOverlay, unmountOverlay, listMounts },
      openImportSockets: (dir, bindings, o) => openImportSockets(dir, bindings, o),
      routeKeys: [new Uint8Array(32).fill(7)],
      dataUrl: () => 'http://127.0.0.1:1',
    });
  const agent = make();
  t.after(async () => {
    await agent.close({ stopInstances: true });
    await rm(dataDir, { recursive: true, force: true });
  });
  return { dataDir, events, agent, make, fetches: () => fetches };
}

test('deploys, times every phase, answers on its socket, and removes cleanly', async (t) => {
  const { agent, events, dataDir, fetches } = await setup(t);
  const seen: string[] = [];
  events.subscribe((e) => seen.push(e.type));
  const r = await agent.deploy(plan({ env: { GREETING: 'hi' } }));
  assert.equal(r.instance.state, 'ready');
  assert.deepEqual(
    r.timeline.phases.map((p) => p.name),
    ['admit', 'pull', 'unpack', 'mount', 'create', 'start', 'ready'],
  );
  for (const p of r.timeline.phases) assert.ok(p.endMs >= p.startMs && p.startMs >= 0, JSON.stringify(p));
  assert.deepEqual(r.timeline.pull, { bytes: layerText.length, layersFetched: 1, layersCached: 0 });
  assert.ok(r.endpoint.token.startsWith('v1.'));
  assert.equal(r.endpoint.url, 'http://127.0.0.1:1/i');
  const routable = agent.resolve(r.endpoint.instance);
  assert.equal(routable?.state, 'ready');
  const echo = await post(routable!.socketPath, 'Echo', { message: 'hello' });
  assert.equal(echo.status, 200);
  assert.deepEqual(echo.json, { message: 'hello' });
  assert.deepEqual(seen, ['started', 'ready']);

  const second = await agent.deploy(plan());
  assert.deepEqual(second.timeline.pull, { bytes: 0, layersFetched: 0, layersCached: 1 }, 'warm cache');
  assert.equal(fetches(), 1);
  assert.equal(agent.list().length, 2);

  await agent.pause(r.endpoint.instance);
  assert.equal(agent.resolve(r.endpoint.instance)?.state, 'paused');
  await agent.resume(r.endpoint.instance);
  assert.equal((await agent.get(r.endpoint.instance)).state, 'ready');

  await agent.remove(r.endpoint.instance);
  assert.equal(agent.resolve(r.endpoint.instance), undefined);
  await assert.rejects(agent.get(r.endpoint.instance), /no instance/);
  assert.deepEqual((await readdir(join(dataDir, 'instances'))).sort(), [second.endpoint.instance]);
  assert.deepEqual(seen.slice(2), ['started', 'ready', 'paused', 'resumed', 'exited', 'removed']);
});

test('a crash is an event with its code within a second, and the instance leaves the routable set', async (t) => {
  const { agent, events } = await setup(t);
  const r = await agent.deploy(plan());
  const id = r.endpoint.instance;
  const crashed = events.next((e) => e.type === 'crashed' && e.instance === id, 2000);
  const sent = performance.now();
  await post(agent.resolve(id)!.socketPath, 'Crash', { code: 3 });
  const e = await crashed;
  assert.equal(e.code, 3);
  assert.ok(performance.now() - sent < 1000);
  assert.equal(agent.resolve(id), undefined);
  const info = await agent.get(id);
  assert.equal(info.state, 'crashed');
  assert.equal(info.exit?.code, 3);
  await agent.remove(id);
});

test('a failed deployment answers with the log tail and leaves nothing behind', async (t) => {
  const { agent, dataDir } = await setup(t, { memoryMb: 128, cpuMillis: 1000, instances: 2 });
  // the program exits at once
  await assert.rejects(agent.deploy(plan({ args: ['/usr/local/bin/node', '-e', 'console.error("boom: no socket"); process.exit(7)'] })), (e: any) => {
    assert.equal(e.code, 'unavailable');
    assert.match(e.message, /exited before it was ready.*code 7/);
    assert.match(e.detail.log, /boom: no socket/);
    return true;
  });
  // never ready
  await assert.rejects(
    agent.deploy(plan({ args: ['/usr/local/bin/node', '-e', 'setInterval(() => {}, 1000)'], readiness: { timeoutMs: 300 } })),
    (e: any) => e.code === 'timeout' && /not ready within 300 ms/.test(e.message),
  );
  // image the store lacks
  await assert.rejects(agent.deploy(plan({ image: 'missing:1' })), /deployment failed: image missing:1 not found/);
  // not admitted
  await assert.rejects(agent.deploy(plan({ resources: { memoryMb: 200, cpuMillis: 10, pids: 10 } })), (e: any) => e.code === 'conflict' && /memory/.test(e.message));
  assert.deepEqual(await readdir(join(dataDir, 'instances')), []);
  assert.equal(agent.list().length, 0);
  // everything was released: two fit again
  await agent.deploy(plan());
  await agent.deploy(plan());
});

test('a new agent re-adopts live instances and cleans up dead ones', async (t) => {
  const { agent, make, dataDir } = await setup(t);
  const live = await agent.deploy(plan());
  const dead = await agent.deploy(plan());
  await agent.close({ stopInstances: false });
  // kill one behind the agent's back
  const pid = JSON.parse(await readFile(join(dataDir, 'instances', dead.endpoint.instance, 'driver', 'process.json'), 'utf8')).pid as number;
  process.kill(-pid, 'SIGKILL');
  await new Promise((r) => setTimeout(r, 100));
  const next = make();
  t.after(() => next.close({ stopInstances: true }));
  const { adopted, cleaned } = await next.recover();
  assert.deepEqual(adopted, [live.endpoint.instance]);
  assert.deepEqual(cleaned, [dead.endpoint.instance]);
  const echo = await post(next.resolve(live.endpoint.instance)!.socketPath, 'Echo', { message: 'still here' });
  assert.equal(echo.json.message, 'still here');
  assert.deepEqual(await readdir(join(dataDir, 'instances')), [live.endpoint.instance]);
});
