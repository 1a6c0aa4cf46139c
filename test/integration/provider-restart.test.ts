// `kill -9` of a provider in the middle of traffic and of a cold deployment, then a
// restart: no service and no deployment is lost, the instances it had are routed to
// again (no second deployment), the deployment it was making is adopted or marked failed
// (never left in flight), and the host holds no instance the registry does not know.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHost, type Host } from '../../src/host/index.ts';
import type { RunningStore } from '../../src/image/index.ts';
import { openRegistry } from '../../src/provider/registry/index.ts';
import { skipUnless } from '../host/fixtures/requirements.ts';
import { freePort } from '../fixtures/free-port.ts';
import { until } from '../fixtures/until.ts';
import { startEchoStore } from '../provider/fixtures/echo-store.ts';

const skip = skipUnless(['root', 'runc']);
const SHOAL = fileURLToPath(new URL('../../bin/shoal.js', import.meta.url));
const JOIN = 'join-token-for-tests';
const TOKEN = 'host-token-for-tests';

function service(name: string) {
  return {
    name,
    version: '1',
    image: 'echo:1',
    operations: { Echo: { input: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] }, output: { type: 'object' }, idempotent: true } },
    resources: { memoryMb: 64, cpuMillis: 200, pids: 32 },
    scaling: { targetConcurrency: 1000, idleTimeoutMs: 600_000 },
  };
}

/** `shoal provider` as a child process; resolves once it prints its URL. */
function startProviderProcess(args: string[]): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SHOAL, 'provider', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SHOAL_LOG_LEVEL: 'warn' } });
    let out = '';
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /^shoal provider \S+: (http:\/\/\S+)$/m.exec(out);
      if (m) resolve({ child, url: m[1]!, stderr: () => err });
    });
    child.once('exit', (code, signal) => reject(new Error(`shoal provider exited (${code ?? signal}) before it was ready: ${err}`)));
  });
}

/** The admin token `shoal provider` made in its state directory on first start. */
let auth: Record<string, string> = {};

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...auth, ...headers }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as any, instance: res.headers.get('x-shoal-instance') };
}

describe('provider killed with SIGKILL and restarted', { skip }, () => {
  let store: RunningStore;
  let host: Host;
  let dir: string;
  const children: ChildProcess[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sr-'));
    store = await startEchoStore();
    host = await startHost({ dataDir: join(dir, 'h'), listen: { host: '127.0.0.1', port: 0 }, token: TOKEN, capacity: { memoryMb: 2048, cpuMillis: 4000, instances: 16 }, driver: 'runc' });
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await host?.close({ stopInstances: true });
    await store?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('loses no service and no deployment', async () => {
    const port = await freePort();
    const db = join(dir, 'shoal.db');
    const args = ['--listen', `127.0.0.1:${port}`, '--db', db, '--store', store.url, '--join-token', JOIN, '--data', join(dir, 'state')];
    const first = await startProviderProcess(args);
    children.push(first.child);
    const url = first.url;
    auth = { authorization: `Bearer ${(await readFile(join(dir, 'state', 'admin-token'), 'utf8')).trim()}` };
    assert.equal((await post(`${url}/api/v1/hosts`, { controlUrl: host.controlUrl, token: TOKEN }, { authorization: `Bearer ${JOIN}` })).status, 201);
    for (const name of ['alpha', 'beta', 'gamma']) assert.equal((await post(`${url}/api/v1/services`, service(name))).status, 201);
    const before: Record<string, string> = {};
    for (const name of ['alpha', 'beta']) {
      const r = await post(`${url}/s/${name}/Echo`, { message: 'warm' });
      assert.equal(r.status, 200);
      before[name] = r.instance!;
    }

    // Traffic on alpha and beta, and a cold deployment of gamma, when the provider dies.
    let stop = false;
    let answered = 0;
    const traffic = ['alpha', 'beta'].map(async (name) => {
      while (!stop) {
        const r = await fetch(`${url}/s/${name}/Echo`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"message":"t"}' }).catch(() => undefined);
        if (r?.status === 200) answered++;
        await r?.arrayBuffer().catch(() => undefined);
      }
    });
    // Wait for traffic to flow (however loaded the machine) before the kill.
    await until('traffic on alpha and beta', () => answered > 10, 60_000);
    const cold = fetch(`${url}/s/gamma/Echo`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"message":"cold"}' }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 60));
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    stop = true;
    await Promise.all(traffic);
    await cold;
    assert.ok(answered > 10, `traffic was flowing (${answered} answered)`);

    const second = await startProviderProcess(args);
    children.push(second.child);
    assert.equal(second.url, url);

    // Every service is still registered.
    const services = (await (await fetch(`${url}/api/v1/services`, { headers: auth })).json()) as any;
    assert.deepEqual(services.services.map((s: any) => s.name).sort(), ['alpha', 'beta', 'gamma']);
    // The instances that were serving serve again, without a new deployment.
    for (const name of ['alpha', 'beta']) {
      const r = await post(`${url}/s/${name}/Echo`, { message: 'after' });
      assert.equal(r.status, 200);
      assert.equal(r.instance, before[name], `${name} is answered by the instance it had before the kill`);
    }
    // gamma's deployment was adopted or marked failed; either way gamma answers. A 503 (the
    // host still starting the instance the killed provider asked for, on a loaded machine:
    // seen once in CI) is retried as any client would, for a bounded time, and said.
    let later = await post(`${url}/s/gamma/Echo`, { message: 'later' });
    for (const deadline = Date.now() + 60_000; later.status === 503 && Date.now() < deadline; ) {
      console.log(`gamma after the restart: 503 ${JSON.stringify(later.body)}; retrying`);
      await new Promise((r) => setTimeout(r, 500));
      later = await post(`${url}/s/gamma/Echo`, { message: 'later' });
    }
    assert.equal(later.status, 200, JSON.stringify(later.body));

    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));

    const registry = await openRegistry({ url: db });
    try {
      const records = await registry.listDeployments();
      assert.deepEqual(records.filter((d) => d.state === 'pending' || d.state === 'deploying'), [], 'nothing left in flight');
      const ready = records.filter((d) => d.state === 'ready');
      for (const name of ['alpha', 'beta']) {
        const mine = ready.filter((d) => d.service === name);
        assert.deepEqual(mine.map((d) => d.instanceId), [before[name]], `${name}: its one deployment is still recorded`);
      }
      assert.equal(ready.filter((d) => d.service === 'gamma').length, 1);
      // The host runs exactly what the registry says is ready.
      const onHost = host.agent.list().filter((i) => i.state === 'ready').map((i) => i.id).sort();
      assert.deepEqual(onHost, ready.map((d) => d.instanceId).sort());
    } finally {
      await registry.close();
    }
  });
});
