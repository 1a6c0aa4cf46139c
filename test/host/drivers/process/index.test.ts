import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { capabilities, createProcessDriver } from '../../../../src/host/drivers/process/index.ts';
import { delay, isAlive } from '../../../../src/host/drivers/shared/proc.ts';
import { createProcessHarness } from './harness.ts';
import { call, waitReady } from '../../../fixtures/instance-client.ts';
import { buildFlatRootfs, serviceArgs } from '../harness.ts';
import { missing } from '../../fixtures/requirements.ts';

const asRoot = process.getuid?.() === 0;
// The contract suite runs this driver from ../contract.test.ts; these are its own cases.
const harness = createProcessHarness();
const instance = (id: string) => harness.instance(id);
let rootfs = '';

before(async () => {
  await harness.setUp();
  rootfs = harness.rootfs;
});
after(() => harness.tearDown());

const quiet = (): void => undefined;

describe('process driver', () => {
  it('declares that it does not isolate', () => {
    assert.equal(capabilities.isolation, 'none');
    assert.equal(capabilities.enforcesLimits, false);
  });

  it('warns once, loudly, when created', async () => {
    const lines: string[] = [];
    const driver = createProcessDriver({ log: (m) => lines.push(m) });
    assert.equal(lines.length, 1);
    assert.match(lines[0] as string, /does NOT isolate/);
    await driver.close();
  });

  it('runs the program from the rootfs with host paths, as the spec user when root', async () => {
    const driver = createProcessDriver({ log: quiet });
    const ci = await instance('p-paths');
    try {
      const inst = await driver.start(ci.spec);
      await waitReady(ci.socketPath);
      const info = (await call(ci.socketPath, 'POST', '/Inspect', {})).json;
      assert.equal(info.cwd, join(rootfs, 'app'));
      assert.equal(info.pid, inst.pid);
      if (asRoot) assert.equal(info.uid, 65534);
      // A bare program name is looked up on the spec's PATH inside the rootfs.
      const again = await instance('p-bare');
      const bare = await driver.start({ ...again.spec, args: ['node', 'server.mjs'] });
      await waitReady(again.socketPath);
      await bare.stop({ graceMs: 1000 });
      await driver.destroy(again.spec.id, again.spec.stateDir);
      await again.release();
      await inst.stop({ graceMs: 1000 });
    } finally {
      await driver.destroy(ci.spec.id, ci.spec.stateDir);
      await ci.release();
      await driver.close();
    }
  });

  it('runs a program that listens on TCP $PORT behind the socket (a free loopback port; nothing isolated)', { skip: missing(['cc']) ?? false }, async () => {
    const driver = createProcessDriver({ log: quiet });
    const ci = await instance('p-port');
    const program = `require('node:http').createServer((q, s) => s.end(JSON.stringify({ url: q.url, port: process.env.PORT, listenFds: process.env.LISTEN_FDS ?? null }))).listen(Number(process.env.PORT), '127.0.0.1')`;
    try {
      const inst = await driver.start({ ...ci.spec, args: ['/usr/local/bin/node', '-e', program], env: [...ci.spec.env, 'PORT=8080'], tcpPort: 8080 });
      await waitReady(ci.socketPath);
      const reply = (await call(ci.socketPath, 'POST', '/Echo', { message: 'hi' })).json;
      assert.equal(reply.url, '/Echo');
      assert.equal(reply.listenFds, null, 'the program does not see the inherited socket');
      assert.ok(Number(reply.port) > 0, 'PORT is the free port the driver chose');
      await inst.stop({ graceMs: 2000 });
      // A program that does not listen: the bridge answers 502, saying so, and the probe retries.
      const deaf = await instance('p-port-deaf');
      const quietInst = await driver.start({ ...deaf.spec, args: ['/usr/local/bin/node', '-e', 'setInterval(() => {}, 1000)'], tcpPort: 8080 });
      try {
        const refused = await call(deaf.socketPath, 'GET', '/healthz');
        assert.equal(refused.status, 502);
        assert.match(refused.json.error.message, /nothing listens on 127\.0\.0\.1:\d+ inside the instance/);
      } finally {
        await quietInst.stop({ graceMs: 1000 });
        await driver.destroy(deaf.spec.id, deaf.spec.stateDir);
        await deaf.release();
      }
      const exit = await inst.exited;
      assert.ok(exit.reason === 'killed' || exit.reason === 'exited' || exit.reason === 'crashed', JSON.stringify(exit));
    } finally {
      await driver.destroy(ci.spec.id, ci.spec.stateDir);
      await ci.release();
      await driver.close();
    }
  });

  it('a program that exits at once still settles its instance with the code', async () => {
    // The exit may come while start() is still writing its state file (under load it did,
    // and the instance never settled); the listener is now attached before any await.
    const driver = createProcessDriver({ log: quiet });
    try {
      for (let i = 0; i < 10; i++) {
        const ci = await instance(`p-quick-${i}`);
        try {
          const inst = await driver.start({ ...ci.spec, args: ['/usr/local/bin/node', '-e', 'process.exit(5)'] });
          const exit = await Promise.race([inst.exited, delay(5000).then(() => undefined)]);
          assert.equal(exit?.code, 5, `run ${i}: the exit was not delivered`);
        } finally {
          await driver.destroy(ci.spec.id, ci.spec.stateDir);
          await ci.release();
        }
      }
    } finally {
      await driver.close();
    }
  });

  it('kills what the program left in its group when it exits', async () => {
    const driver = createProcessDriver({ log: quiet });
    const ci = await instance('p-group');
    try {
      const inst = await driver.start(ci.spec);
      await waitReady(ci.socketPath);
      const spawned = await call(ci.socketPath, 'POST', '/Spawn', { n: 2, keep: true });
      assert.equal(spawned.json.started, 2);
      const pids = spawned.json.pids as number[];
      for (const pid of pids) assert.ok(await isAlive(pid, undefined), `child ${pid} runs`);
      await call(ci.socketPath, 'POST', '/Crash', { code: 1 });
      assert.equal((await inst.exited).reason, 'crashed');
      await delay(100);
      for (const pid of pids) assert.equal(await isAlive(pid, undefined), false, `child ${pid} was left running`);
    } finally {
      await driver.destroy(ci.spec.id, ci.spec.stateDir);
      await ci.release();
      await driver.close();
    }
  });

  it('refuses a program that is not in the rootfs', async () => {
    const driver = createProcessDriver({ log: quiet });
    const ci = await instance('p-missing');
    try {
      await assert.rejects(driver.start({ ...ci.spec, args: ['no-such-program'] }), (e: { code?: string; field?: string }) => e.code === 'invalid' && e.field === 'args[0]');
      await assert.rejects(driver.start({ ...ci.spec, args: ['/bin/no-such'] }), (e: { code?: string }) => e.code === 'invalid');
    } finally {
      await ci.release();
      await driver.close();
    }
  });
});
