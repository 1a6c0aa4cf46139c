// Live state as everyday operations (issue 15), real parts: one store, a provider, two
// host agents with the wasm driver, a counter component, and the CLI. Snapshot → restore
// continues the count on the other host; suspend frees the host and the next message
// brings the instance back with its count; fork diverges; a driver without a capability
// is refused with it named and a non-zero exit.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { buildWasmComponentImage, createRegistryClient, startStore, type RunningStore } from '../../src/image/index.ts';
import { startHost, type Host } from '../../src/host/index.ts';
import { startProvider, type Provider } from '../../src/provider/index.ts';
import { createApiToken } from '../../src/provider/auth/index.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import { componentWasm } from '../fixtures/components.ts';
import { FAST } from '../provider/fixtures/provider.ts';
import { skipUnless } from '../host/fixtures/requirements.ts';

const skip = skipUnless(['root']);
const HOST_TOKEN = 'host-test-token-0123456789';
const SHOAL = fileURLToPath(new URL('../../bin/shoal.js', import.meta.url));

describe('live state through the provider and the CLI (wasm)', { skip, timeout: 300_000 }, () => {
  let dir: string;
  let store: RunningStore;
  let provider: Provider;
  let token: string;
  const hosts: Host[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-live-ops-'));
    store = await startStore({ dataDir: join(dir, 'store') });
    await writeFile(join(dir, 'counter.wasm'), await componentWasm(4));
    await buildWasmComponentImage({ client: createRegistryClient({ baseUrl: store.url }), module: join(dir, 'counter.wasm'), ref: parseImageRef('counter:1') });
    provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database: join(dir, 'shoal.db'), storeUrl: store.url, joinToken: 'join-token-for-tests', tuning: FAST });
    token = (await createApiToken(provider.registry, { role: 'admin', note: 'test' })).secret;
    for (const name of ['a', 'b']) {
      const h = await startHost({ dataDir: join(dir, name), listen: { host: '127.0.0.1', port: 0 }, token: HOST_TOKEN, capacity: { memoryMb: 4096, cpuMillis: 8000, instances: 20 }, driver: 'wasm' });
      hosts.push(h);
      await provider.registerHost({ controlUrl: h.controlUrl, token: HOST_TOKEN });
    }
    const op = { input: { type: 'object' }, output: { type: 'object' } };
    await provider.registerService({ name: 'counter', version: '1', image: 'counter:1', driver: 'wasm', resources: { memoryMb: 16, cpuMillis: 100, pids: 4 }, scaling: { min: 0, max: 4 }, operations: { inc: op, get: { ...op, idempotent: true } } });
  });
  after(async () => {
    await provider?.close();
    for (const h of hosts) await h.close({ stopInstances: true });
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(provider.url + path, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, text, json: text ? JSON.parse(text) : undefined };
  };
  const shoal = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(process.execPath, [SHOAL, ...args], { env: { ...process.env, SHOAL_URL: provider.url, SHOAL_TOKEN: token }, timeout: 120_000 }, (error, stdout, stderr) =>
        resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr }),
      );
    });
  const instances = async () => ((await api('GET', '/api/v1/instances')).json.instances as Array<{ id: string; hostId: string; service: string; liveOps?: string[] }>).filter((i) => i.service === 'counter');
  /** Calls one instance directly through the provider's routing: with one instance routed, /s/ reaches it. */
  const inc = async () => {
    const r = await api('POST', '/s/counter/inc', {});
    assert.equal(r.status, 200, r.text);
    return r.json.count as number;
  };

  it('snapshot, then restore on the other host: the restored instance continues from the snapshot', async () => {
    for (let i = 1; i <= 3; i++) assert.equal(await inc(), i);
    const [src] = await instances();
    assert.ok(src);
    // What the dashboard offers for it: the wasm driver's declared operations (no pause).
    assert.deepEqual(src.liveOps, ['snapshot', 'suspend', 'fork', 'migrate']);
    const snap = await shoal(['snapshot', src.id, '--label', 'three', '--json']);
    assert.equal(snap.code, 0, snap.stderr);
    const state = JSON.parse(snap.stdout).state;
    assert.equal(state.driver, 'wasm');
    assert.equal(state.label, 'three');
    assert.equal(state.reason, 'snapshot');
    assert.equal(await inc(), 4, 'the source keeps serving after a snapshot');

    const listed = await shoal(['states', 'counter', '--json']);
    assert.deepEqual(JSON.parse(listed.stdout).states.map((s: { id: string }) => s.id), [state.id]);

    // Stop the source, then restore the snapshot elsewhere: the count is the snapshot's.
    const other = hosts.find((h) => h.hostId !== src.hostId)!;
    assert.equal((await api('DELETE', `/api/v1/instances/${src.id}`)).status, 200);
    const restored = await shoal(['restore', state.id, '--to', other.hostId, '--json']);
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal(JSON.parse(restored.stdout).instance.host, other.hostId);
    assert.equal(await inc(), 4, 'continues from 3, the snapshot, not from 4 and not from 0');
    const forgot = await shoal(['states', '--json']);
    assert.equal(JSON.parse(forgot.stdout).states.length, 1, 'a restored snapshot is kept (it may be restored again)');
    assert.equal((await api('DELETE', `/api/v1/states/${state.id}`)).status, 200);
    assert.equal((await api('DELETE', `/api/v1/states/${state.id}`)).status, 404);
  });

  it('suspend frees the host; the next message brings the instance back with its count', async () => {
    const [inst] = await instances();
    assert.ok(inst);
    const before = await inc();
    const suspended = await shoal(['suspend', inst.id, '--keep', '1h', '--json']);
    assert.equal(suspended.code, 0, suspended.stderr);
    const state = JSON.parse(suspended.stdout).state;
    assert.equal(state.reason, 'suspend');
    assert.ok(state.expiresAt > Date.now() + 3500_000);
    assert.deepEqual(await instances(), [], 'nothing of it runs');
    for (const h of hosts) assert.equal(((await (await fetch(`${h.controlUrl}/v1/instances`, { headers: { authorization: `Bearer ${HOST_TOKEN}` } })).json()) as { instances: Array<{ state: string }> }).instances.filter((i: { state: string }) => i.state === 'ready').length, 0);
    assert.equal(await inc(), before + 1, 'the first message after suspend restored the state');
    assert.equal((await instances()).length, 1);
    assert.deepEqual((await api('GET', '/api/v1/states?service=counter')).json.states, [], 'the suspended state was consumed by its restore');
    // Cold-start attribution: the path taken, where, how long, and what else was considered.
    const events = (await api('GET', '/api/v1/events?service=counter&limit=50')).json.events as Array<{ kind: string; detail: { path: string; ms: number; considered: Array<{ path: string }> } }>;
    const activation = events.filter((e) => e.kind === 'activated').at(-1);
    assert.equal(activation?.detail.path, 'restore', JSON.stringify(events.map((e) => e.kind)));
    // A suspended instance's state is owed: restores on up to three hosts were weighed, a cold start (which would lose it) was not.
    assert.ok(activation!.detail.considered.length >= 2, JSON.stringify(activation!.detail));
    assert.ok(activation!.detail.considered.every((c) => c.path === 'restore'), JSON.stringify(activation!.detail));
    const metrics = await (await fetch(`${provider.url}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text();
    const shown = await shoal(['deployments', 'counter']);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /activations \(messages that found no warm instance\):\n/);
    assert.match(shown.stdout, /counter {2}restore on host-\S+ \(wasm\) in [\d.]+ m?s; weighed against restore@host-/);
    assert.match(metrics, /shoal_activations_total\{service="counter",path="restore"\} 1/);
  });

  it('fork: two instances, counts diverge', async () => {
    const [src] = await instances();
    assert.ok(src);
    const base = await inc();
    const forked = await shoal(['fork', src.id, '--json']);
    assert.equal(forked.code, 0, forked.stderr);
    const copy = JSON.parse(forked.stdout).instance;
    assert.notEqual(copy.id, src.id);
    assert.equal(copy.host, src.hostId, 'a fork runs on its source host');
    assert.equal((await instances()).length, 2);
    // Each answers from its own memory: both start from base.
    const counts = new Set<number>();
    for (let i = 0; i < 8; i++) counts.add(await inc());
    assert.ok([...counts].every((c) => c > base && c <= base + 8), [...counts].join(','));
    assert.equal((await api('DELETE', `/api/v1/instances/${copy.id}`)).status, 200);
  });

  it("a service with idle: 'suspend' scales to zero by suspending; the next message restores its count", async () => {
    const op = { input: { type: 'object' }, output: { type: 'object' } };
    await provider.registerService({ name: 'sleepy', version: '1', image: 'counter:1', driver: 'wasm', resources: { memoryMb: 16, cpuMillis: 100, pids: 4 }, scaling: { min: 0, max: 1, idleTimeoutMs: 1000, idle: 'suspend', keepStateMs: 3600_000 }, operations: { inc: op } });
    for (let i = 1; i <= 3; i++) assert.equal((await api('POST', '/s/sleepy/inc', {})).json.count, i);
    const deadline = Date.now() + 60_000;
    let states: Array<{ reason: string }> = [];
    for (;;) {
      states = (await api('GET', '/api/v1/states?service=sleepy')).json.states;
      const running = ((await api('GET', '/api/v1/instances')).json.instances as Array<{ service: string }>).filter((i) => i.service === 'sleepy');
      if (states.length === 1 && running.length === 0) break;
      assert.ok(Date.now() < deadline, `not suspended: ${JSON.stringify({ states, running })}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(states[0]!.reason, 'suspend');
    assert.equal((await api('POST', '/s/sleepy/inc', {})).json.count, 4, 'restored, not started afresh');
  });

  it('a farm snapshot is taken on its schedule, and a crash rule restores the instance with that memory', async () => {
    const op = { input: { type: 'object' }, output: { type: 'object' } };
    const graph = {
      format: 'shoal.farm/v1',
      name: 'counting',
      services: { tally: { name: 'tally', version: '1', image: 'counter:1', driver: 'wasm', resources: { memoryMb: 16, cpuMillis: 100, pids: 4 }, operations: { inc: op, trap: op } } },
      nodes: [{ kind: 'instance', id: 'c', service: 'tally', imports: {} }],
      exports: [{ path: 'tally', node: 'c', service: 'tally' }],
      crashRules: [{ instance: 'c', actions: [{ kind: 'restore', snapshot: 's1' }] }],
      snapshots: [{ id: 's1', instance: 'c', everyMs: 10_000 }],
    };
    const applied = await api('PUT', '/api/v1/farms/counting', graph);
    assert.ok(applied.status === 200 || applied.status === 201, applied.text);
    const states = async () => (await api('GET', '/api/v1/states?service=counting-c')).json.states as Array<{ label: string; createdAt: number }>;
    const wait = async (what: string, check: () => Promise<boolean>) => {
      const deadline = Date.now() + 60_000;
      while (!(await check())) {
        assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    await wait('the snapshot taken at apply', async () => (await states()).length >= 1);
    assert.equal((await states())[0]!.label, 'counting.s1');
    const call = async (operation: string) => api('POST', `/s/tally/${operation}`, {});
    for (let i = 1; i <= 3; i++) assert.equal((await call('inc')).json.count, i);
    const taken = (await states()).length;
    await wait('the scheduled snapshot (every 10 s)', async () => (await states()).length > taken);
    for (let i = 4; i <= 5; i++) assert.equal((await call('inc')).json.count, i);
    const crashed = await call('trap');
    assert.notEqual(crashed.status, 200, 'the instance trapped');
    let after = 0;
    await wait('the restored instance', async () => {
      const r = await call('inc');
      if (r.status !== 200) return false;
      after = r.json.count;
      return true;
    });
    assert.equal(after, 4, 'back with the memory of the scheduled snapshot (count 3), not from the image (1) nor as before the crash (6)');
    assert.equal((await api('DELETE', '/api/v1/farms/counting')).status, 200);
  });

  it('a farm naming a snapshot of an instance whose driver cannot snapshot is refused, naming the field', async () => {
    const op = { input: { type: 'object' }, output: { type: 'object' } };
    const r = await api('PUT', '/api/v1/farms/nosnap', {
      format: 'shoal.farm/v1',
      name: 'nosnap',
      services: { plain: { name: 'plain', version: '1', image: 'counter:1', driver: 'isolate', operations: { inc: op } } },
      nodes: [{ kind: 'instance', id: 'p', service: 'plain', imports: {} }],
      exports: [],
      crashRules: [],
      snapshots: [{ id: 's', instance: 'p' }],
    });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.field, 'snapshots/0/instance');
    assert.match(r.json.error.message, /cannot snapshot/);
  });

  it("refuses what the instance's driver cannot do, naming it, with a non-zero exit; bad input names the field", async () => {
    const [inst] = await instances();
    assert.ok(inst);
    const paused = await shoal(['pause', inst.id]);
    assert.notEqual(paused.code, 0);
    assert.match(paused.stderr, /runs on driver wasm, which cannot pause/);
    const r = await api('POST', `/api/v1/instances/${inst.id}/pause`);
    assert.equal(r.status, 415, r.text);
    assert.equal(r.json.error.code, 'unsupported');
    assert.equal(r.json.error.detail.capability, 'canPause');
    assert.equal(r.json.error.field, 'id');
    const unknown = await shoal(['snapshot', 'no-such-instance']);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /no instance "no-such-instance"/);
    const badTtl = await api('POST', `/api/v1/instances/${inst.id}/snapshot`, { ttlSeconds: -5 });
    assert.equal(badTtl.status, 400);
    assert.equal(badTtl.json.error.field, 'ttlSeconds');
    const badKeep = await shoal(['suspend', inst.id, '--keep', 'forever']);
    assert.notEqual(badKeep.code, 0);
    assert.match(badKeep.stderr, /--keep: a duration/);
    assert.equal((await instances()).length, 1, 'a refused suspend left the instance running');
    // Every operation is in the audit trail.
    const audit = (await api('GET', '/api/v1/audit?limit=200')).json.entries as Array<{ route: string; status: number }>;
    for (const route of ['/api/v1/instances/:id/snapshot', '/api/v1/instances/:id/suspend', '/api/v1/instances/:id/fork', '/api/v1/states/:id/restore', '/api/v1/instances/:id/pause']) {
      assert.ok(audit.some((e) => e.route === route), `${route} is audited`);
    }
  });
});
