// The host end to end with real runc, real overlayfs and a real store holding the node
// template and the echo image: deploy, call through the forwarder, isolation, limits,
// events, admission under concurrency, cleanup, and re-adoption after a restart.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { echoPlan, leftovers, leftoversOf, runcMissing, startEchoStore, startTestHost, TOKEN, type HostFixture, type StoreFixture } from './host-fixture.ts';
import type { DeploymentResult, HostEvent } from '../../src/protocol/deployment.ts';
import { post } from '../fixtures/instance-client.ts';
import { until } from '../fixtures/until.ts';

const run = promisify(execFile);
const missing = await runcMissing();
if (missing && process.env.CI === 'true') throw new Error(`host integration tests need root and runc in CI: ${missing}`);

/** Reads the host's SSE stream into a list until stopped. */
function watchEvents(fx: HostFixture): { events: HostEvent[]; next(match: (e: HostEvent) => boolean, timeoutMs: number): Promise<HostEvent>; stop(): void } {
  const ac = new AbortController();
  const events: HostEvent[] = [];
  const waiters: Array<{ match: (e: HostEvent) => boolean; resolve: (e: HostEvent) => void }> = [];
  void (async () => {
    const res = await fetch(`${fx.host.controlUrl}/v1/events`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: ac.signal });
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body!) {
      buf += decoder.decode(chunk as Uint8Array, { stream: true });
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block.split('\n').find((l) => l.startsWith('data: '));
        if (!data) continue;
        const e = JSON.parse(data.slice(6)) as HostEvent;
        events.push(e);
        for (const w of [...waiters]) if (w.match(e)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(e);
        }
      }
    }
  })().catch(() => {});
  return {
    events,
    next(match, timeoutMs) {
      const seen = events.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching event within ${timeoutMs} ms; saw ${events.map((e) => `${e.type}:${e.instance}`).join(', ')}`)), timeoutMs);
        waiters.push({ match, resolve: (e) => (clearTimeout(timer), resolve(e)) });
      });
    },
    stop: () => ac.abort(),
  };
}

let fx: StoreFixture;
before(async () => {
  fx = await startEchoStore();
});
after(async () => {
  await fx?.close();
});

describe('host with runc', { skip: missing }, () => {
  let h: HostFixture;
  let sse: ReturnType<typeof watchEvents>;
  const ids = new Set<string>();

  before(async () => {
    h = await startTestHost(fx);
    sse = watchEvents(h);
  });
  after(async () => {
    sse?.stop();
    await h?.close();
  });

  const deployOk = async (over: Parameters<HostFixture['deploy']>[0] = {}): Promise<DeploymentResult> => {
    const r = await h.deploy(over);
    assert.equal(r.status, 201, JSON.stringify(r.json));
    ids.add(r.json.endpoint.instance);
    return r.json as DeploymentResult;
  };

  let first: DeploymentResult;

  test('concurrent deployments of one image pull each layer once, bytes counted once', async () => {
    const results = await Promise.all([deployOk(), deployOk(), deployOk()]);
    const bytes = results.reduce((n, r) => n + r.timeline.pull.bytes, 0);
    const fetched = results.reduce((n, r) => n + r.timeline.pull.layersFetched, 0);
    assert.equal(bytes, fx.echoLayerBytes, 'the image crossed the wire once');
    assert.equal(fetched, 2, 'template layer + overlay layer');
    const report = await h.api('/v1/report');
    assert.equal(report.status, 200);
    assert.equal(report.json.layers.length, 2);
    assert.ok(report.json.layers.every((l: { inUse: boolean }) => l.inUse));
    assert.equal(report.json.load.instances, 3);
    assert.equal(report.json.reserved.instances, 3);
    assert.ok(report.json.drivers.some((d: { name: string; capabilities: { isolation: string } }) => d.name === 'runc' && d.capabilities.isolation === 'namespaces'));
    const metrics = await h.api('/metrics');
    assert.match(metrics.text, /^shoal_host_instances 3$/m);
    assert.match(metrics.text, /^shoal_host_deployments_total\{result="ok"\} 3$/m);
    assert.match(metrics.text, new RegExp(`^shoal_host_pulled_bytes_total ${fx.echoLayerBytes}$`, 'm'));
    assert.equal((await h.api('/openapi.json', { token: null })).json.openapi, '3.1.0');
    first = results[0]!;
    for (const r of results.slice(1)) {
      assert.equal((await h.api(`/v1/instances/${r.endpoint.instance}`, { method: 'DELETE' })).status, 200);
    }
  });

  test('a warm deployment pulls nothing and its timeline has every phase', async () => {
    const r = await deployOk();
    assert.deepEqual(r.timeline.pull, { bytes: 0, layersFetched: 0, layersCached: 2 });
    assert.deepEqual(
      r.timeline.phases.map((p) => p.name),
      ['admit', 'pull', 'unpack', 'mount', 'create', 'start', 'ready'],
    );
    console.log(`warm deploy: ${r.timeline.totalMs} ms`, r.timeline.phases.map((p) => `${p.name} ${(p.endMs - p.startMs).toFixed(1)}`).join(', '));
    await h.api(`/v1/instances/${r.endpoint.instance}`, { method: 'DELETE' });
  });

  test('the next deployment of a plan starts a container created ahead', async () => {
    const runcList = async () => {
      const { stdout } = await run('runc', ['--root', join(h.dataDir, 'runc'), 'list', '--format', 'json']);
      return (JSON.parse(stdout || 'null') ?? []) as Array<{ id: string; status: string }>;
    };
    // The plan's own (pool-… is the template pool's, for other services' first deployments).
    const ahead = (c: { id: string; status: string }) => c.status === 'created' && !c.id.startsWith('pool-');
    await until('a created container', async () => (await runcList()).some(ahead), 5000, 50);
    const created = (await runcList()).find(ahead)!.id;
    const r = await deployOk();
    try {
      // The pre-created container is the one that was started (how much sooner it is ready
      // is measured by bench/host-deploy.ts, not asserted here).
      assert.equal(r.endpoint.instance, created);
      console.log(`deploy from a pre-created container: ${r.timeline.totalMs} ms`, r.timeline.phases.map((p) => `${p.name} ${(p.endMs - p.startMs).toFixed(1)}`).join(', '));
      assert.deepEqual((await h.call(r.endpoint, 'Echo', { message: 'warm' })).json, { message: 'warm' });
    } finally {
      await h.api(`/v1/instances/${r.endpoint.instance}`, { method: 'DELETE' });
    }
  });

  test('Echo through the forwarder with the route token', async () => {
    const r = await h.call(first.endpoint, 'Echo', { message: 'hello shoal' });
    assert.deepEqual(r, { status: 200, json: { message: 'hello shoal' } });
  });

  test('Inspect: own pid namespace, only lo, few processes, unprivileged', async () => {
    const r = await h.call(first.endpoint, 'Inspect', {});
    assert.equal(r.status, 200);
    assert.ok(r.json.pid <= 3, `pid ${r.json.pid}`);
    assert.deepEqual(r.json.interfaces, ['lo']);
    assert.ok(r.json.processes <= 3, `sees ${r.json.processes} processes`);
    assert.equal(r.json.uid, 65534);
  });

  test('an import socket beside the instance relays to the endpoint it was bound to', async () => {
    const b = await deployOk({ service: { name: 'caller', version: '1' }, imports: [{ name: 'peer', url: first.endpoint.url, token: first.endpoint.token }] });
    const sock = join(h.dataDir, 'instances', b.endpoint.instance, 'sock', 'imports', 'peer.sock');
    const st = await stat(sock);
    assert.ok(st.isSocket());
    // In a directory of the host's that the instance sees read-only.
    const dirStat = await stat(join(sock, '..'));
    assert.equal(dirStat.uid, 0);
    assert.equal(dirStat.mode & 0o022, 0);
    const reply = await post(sock, 'Echo', { message: 'via import' });
    assert.deepEqual(reply.json, { message: 'via import' });
    await h.api(`/v1/instances/${b.endpoint.instance}`, { method: 'DELETE' });
    await assert.rejects(stat(sock));
  });

  test('forged, altered or missing route tokens are refused', async () => {
    const t = first.endpoint.token;
    const forged = t.slice(0, -2) + (t.endsWith('AA') ? 'BA' : 'AA');
    assert.equal((await h.call(first.endpoint, 'Echo', { message: 'x' }, forged)).status, 403);
    const [v, payload, sig] = t.split('.');
    const other = Buffer.from(JSON.stringify(['echo-00000000', 'echo', Date.now() + 60_000])).toString('base64url');
    assert.notEqual(other, payload);
    assert.equal((await h.call(first.endpoint, 'Echo', { message: 'x' }, `${v}.${other}.${sig}`)).status, 403);
    const res = await fetch(`${first.endpoint.url}/Echo`, { method: 'POST', body: '{}' });
    assert.equal(res.status, 401);
  });

  test('pause stops answering, resume answers again', async () => {
    const id = first.endpoint.instance;
    const p = await h.api(`/v1/instances/${id}/pause`, { method: 'POST' });
    assert.equal(p.status, 200);
    assert.equal(p.json.state, 'paused');
    await sse.next((e) => e.type === 'paused' && e.instance === id, 2000);
    const during = await h.call(first.endpoint, 'Echo', { message: 'paused?' });
    assert.equal(during.status, 503);
    const { stdout } = await run('runc', ['--root', join(h.dataDir, 'runc'), 'state', id]);
    assert.equal(JSON.parse(stdout).status, 'paused');
    const r = await h.api(`/v1/instances/${id}/resume`, { method: 'POST' });
    assert.equal(r.json.state, 'ready');
    assert.deepEqual((await h.call(first.endpoint, 'Echo', { message: 'back' })).json, { message: 'back' });
    const info = await h.api(`/v1/instances/${id}`);
    assert.equal(info.json.state, 'ready');
    assert.ok(info.json.stats.memoryBytes > 0, JSON.stringify(info.json.stats));
    assert.ok(info.json.timeline.totalMs > 0);
    const logs = await h.api(`/v1/instances/${id}/logs?tail=5`);
    assert.equal(logs.status, 200);
  });

  test('delete leaves no mount, no container, no upper dir; its token then gets 404', async () => {
    const id = first.endpoint.instance;
    const upper = join(h.dataDir, 'instances', id, 'upper');
    assert.ok((await stat(upper)).isDirectory());
    assert.equal((await h.api(`/v1/instances/${id}`, { method: 'DELETE' })).status, 200);
    await sse.next((e) => e.type === 'removed' && e.instance === id, 2000);
    const left = await leftoversOf(h.dataDir, id);
    assert.deepEqual(left, { mounts: [], containers: [], cgroups: [], instanceDirs: [] });
    await assert.rejects(stat(upper));
    assert.equal((await h.call(first.endpoint, 'Echo', { message: 'gone' })).status, 404);
    assert.equal((await h.api(`/v1/instances/${id}`)).status, 404);
  });

  test('no token or a wrong one: 401 and nothing is created', async () => {
    const before = await leftovers(h.dataDir, []);
    for (const token of [null, 'wrong-token-wrong']) {
      const r = await h.api('/v1/instances', { method: 'POST', body: echoPlan(fx), token });
      assert.equal(r.status, 401);
      assert.equal(r.json.error.code, 'unauthorized');
    }
    assert.deepEqual((await h.api('/v1/instances')).json.instances, []);
    assert.deepEqual(await leftovers(h.dataDir, []), before);
  });

  test('malformed plans: 400 naming the field, nothing created', async () => {
    const before = await leftovers(h.dataDir, []);
    const cases: Array<[unknown, string]> = [
      [{ ...echoPlan(fx), resources: { memoryMb: 64, cpuMillis: 100 } }, 'resources.pids'],
      [{ ...echoPlan(fx), image: 'Not An Image' }, 'image'],
      [{ ...echoPlan(fx), driver: 'vmware' }, 'driver'],
      [{ ...echoPlan(fx), env: { SHOAL_LISTEN: '/etc/passwd' } }, 'env.SHOAL_LISTEN'],
      ['{"service":', 'body'],
    ];
    for (const [body, field] of cases) {
      const r = await h.api('/v1/instances', { method: 'POST', body });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.json.error.field, field);
    }
    assert.deepEqual(await leftovers(h.dataDir, []), before);
  });

  test('a crash is a crashed event with its exit code within a second', async () => {
    const r = await deployOk();
    const id = r.endpoint.instance;
    const sent = performance.now();
    assert.equal((await h.call(r.endpoint, 'Crash', { code: 3 })).status, 200);
    const e = await sse.next((x) => x.type === 'crashed' && x.instance === id, 2000);
    const ms = performance.now() - sent;
    assert.equal(e.code, 3);
    assert.ok(ms < 1000, `crash noticed after ${ms} ms`);
    assert.equal((await h.call(r.endpoint, 'Echo', { message: 'x' })).status, 404, 'no longer routable');
    const info = await h.api(`/v1/instances/${id}`);
    assert.equal(info.json.state, 'crashed');
    // resources were released at once
    await until('its mounts to go', async () => (await leftoversOf(h.dataDir, id)).mounts.length === 0, 3000, 50);
    assert.equal((await h.api(`/v1/instances/${id}`, { method: 'DELETE' })).status, 200);
    assert.deepEqual(await leftoversOf(h.dataDir, id), { mounts: [], containers: [], cgroups: [], instanceDirs: [] });
  });

  test('over its memory limit an instance is killed and an oom event says so', async () => {
    const r = await deployOk({ resources: { memoryMb: 64, cpuMillis: 500, pids: 64 } });
    const id = r.endpoint.instance;
    await h.call(r.endpoint, 'Hog', { mb: 512 });
    const e = await sse.next((x) => x.type === 'oom' && x.instance === id, 5000);
    assert.equal(e.instance, id);
    assert.equal((await h.api(`/v1/instances/${id}`)).json.state, 'oom');
    await h.api(`/v1/instances/${id}`, { method: 'DELETE' });
  });

  test('the pids limit holds', async () => {
    const r = await deployOk({ resources: { memoryMb: 256, cpuMillis: 500, pids: 32 } });
    const s = await h.call(r.endpoint, 'Spawn', { count: 40 });
    assert.equal(s.status, 200, JSON.stringify(s.json));
    assert.ok(s.json.spawned < 40, `spawned ${s.json.spawned} of 40 under pids=32`);
    assert.ok(s.json.errors?.length > 0 || s.json.spawned < 40);
    await h.api(`/v1/instances/${r.endpoint.instance}`, { method: 'DELETE' });
  });

  test('admission: 20 plans at once on room for 5 → exactly 5 admitted, 15 refused with 409', async () => {
    const small = await startTestHost(fx, { capacity: { memoryMb: 4096, cpuMillis: 8000, instances: 5 } });
    try {
      const results = await Promise.all(Array.from({ length: 20 }, () => small.deploy({ resources: { memoryMb: 64, cpuMillis: 100, pids: 64 } })));
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((s) => s === 201).length, 5, statuses.join(','));
      assert.equal(statuses.filter((s) => s === 409).length, 15, statuses.join(','));
      for (const r of results.filter((x) => x.status === 409)) assert.match(r.json.error.message, /instance limit/);
      const report = await small.api('/v1/report');
      assert.deepEqual(report.json.reserved, { memoryMb: 320, cpuMillis: 500, instances: 5 });
      // a failed deployment releases: an image the store lacks
      const bad = await small.deploy({ image: 'nothing:here' });
      assert.equal(bad.status, 409, 'still full');
      await small.api(`/v1/instances/${results.find((r) => r.status === 201)!.json.endpoint.instance}`, { method: 'DELETE' });
      const missingImage = await small.deploy({ image: 'nothing:here' });
      assert.equal(missingImage.status, 404, missingImage.text);
      assert.equal((await small.api('/v1/report')).json.reserved.instances, 4, 'the failed deployment released its reservation');
    } finally {
      await small.close();
    }
  });

  test('a restarted host re-adopts the live instance, cleans the dead one, and leaks nothing', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'shoal-h-'));
    const a = await startTestHost(fx, {}, dataDir);
    try {
      const live = (await a.deploy({})).json as DeploymentResult;
      const dead = (await a.deploy({})).json as DeploymentResult;
      assert.ok(live.endpoint && dead.endpoint);
      await a.close({ stopInstances: false });
      // the host is gone; one instance dies meanwhile
      await run('runc', ['--root', join(dataDir, 'runc'), 'kill', dead.endpoint.instance, 'KILL']);
      await new Promise((r) => setTimeout(r, 200));
      const host = await a.restart();
      const list = (await a.api('/v1/instances')).json.instances as Array<{ id: string; state: string }>;
      assert.deepEqual(list.map((i) => [i.id, i.state]), [[live.endpoint.instance, 'ready']]);
      // same key, so the old token still routes, through the new forwarder
      const moved = { ...live.endpoint, url: `${host.dataUrl}/i` };
      assert.deepEqual((await a.call(moved, 'Echo', { message: 'still here' })).json, { message: 'still here' });
      const left = await leftovers(dataDir, [dead.endpoint.instance]);
      assert.deepEqual(left.containers, [live.endpoint.instance]);
      assert.deepEqual(left.instanceDirs, [live.endpoint.instance]);
      assert.deepEqual(left.cgroups, []);
      // One root: the overlay on its bounded tmpfs, both at the same mount point.
      assert.deepEqual([...new Set(left.mounts)].length, 1);
      assert.equal((await a.api('/v1/report')).json.reserved.instances, 1);
      await a.close({ stopInstances: true });
      assert.deepEqual(await leftovers(dataDir, [live.endpoint.instance, dead.endpoint.instance]), {
        mounts: [],
        containers: [],
        cgroups: [],
        instanceDirs: [],
      });
    } finally {
      await a.close().catch(() => {});
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test('a host restarted with another driver still recovers and cleans up what runc ran', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'shoal-h-'));
    const a = await startTestHost(fx, { warmPool: { perImage: 0 } }, dataDir);
    try {
      const r = (await a.deploy({})).json as DeploymentResult;
      await a.close({ stopInstances: false });
      const host = await a.restart({ driver: 'process' });
      const list = (await a.api('/v1/instances')).json.instances as Array<{ id: string; driver: string }>;
      assert.deepEqual(list.map((i) => [i.id, i.driver]), [[r.endpoint.instance, 'runc']]);
      assert.deepEqual((await a.call({ ...r.endpoint, url: `${host.dataUrl}/i` }, 'Echo', { message: 'standby' })).json, { message: 'standby' });
      const report = (await a.api('/v1/report')).json;
      assert.deepEqual(report.drivers.map((d: { name: string }) => d.name), ['process'], 'runc is not offered to new plans');
      await a.close({ stopInstances: true });
      assert.deepEqual(await leftovers(dataDir, [r.endpoint.instance]), { mounts: [], containers: [], cgroups: [], instanceDirs: [] });
    } finally {
      await a.close().catch(() => {});
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test('after everything, the main host has nothing left running', async () => {
    await h.close();
    assert.deepEqual(await leftovers(h.dataDir, [...ids]), { mounts: [], containers: [], cgroups: [], instanceDirs: [] });
  });
});

describe('host with the process driver', () => {
  test('deploys the same image as a flat tree, answers through the forwarder, and cleans up', async () => {
    const h = await startTestHost(fx, { driver: 'process' });
    try {
      const r = await h.deploy({});
      assert.equal(r.status, 201, r.text);
      const res = r.json as DeploymentResult;
      assert.equal(res.instance.driver, 'process');
      assert.deepEqual((await h.call(res.endpoint, 'Echo', { message: 'plain' })).json, { message: 'plain' });
      const inspect = await h.call(res.endpoint, 'Inspect', {});
      assert.ok(inspect.json.interfaces.length >= 1);
      const report = (await h.api('/v1/report')).json;
      assert.equal(report.drivers[0].capabilities.isolation, 'none');
      assert.equal(report.layers.length, 2, 'the compressed blobs are cached');
      const second = await h.deploy({});
      assert.deepEqual(second.json.timeline.pull, { bytes: 0, layersFetched: 0, layersCached: 2 });
      for (const id of [res.endpoint.instance, second.json.endpoint.instance]) {
        assert.equal((await h.api(`/v1/instances/${id}`, { method: 'DELETE' })).status, 200);
      }
      assert.deepEqual((await leftovers(h.dataDir, [])).instanceDirs, []);
    } finally {
      await h.close();
    }
  });
});
