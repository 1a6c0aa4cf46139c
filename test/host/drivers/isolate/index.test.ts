// The isolate driver's own cases (the shared ones are in ../contract.test.ts): its runner
// is confined like a runc instance, imports are reached by name through the host only,
// one runner serves many isolates of a version, and runners end with their driver.
import assert from 'node:assert/strict';
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { capabilities } from '../../../../src/host/drivers/isolate/index.ts';
import { readProcStat } from '../../../../src/host/drivers/shared/proc.ts';
import { bundleService } from '../../../../src/image/index.ts';
import { call, waitReady } from '../../../fixtures/instance-client.ts';
import { missing } from '../../fixtures/requirements.ts';
import { createIsolateHarness } from './harness.ts';

const h = createIsolateHarness();
before(() => h.setUp());
after(() => h.tearDown());

describe('isolate driver', () => {
  it('declares isolate isolation with limits and no live state', () => {
    assert.equal(capabilities.isolation, 'isolate');
    assert.equal(capabilities.enforcesLimits, true);
    assert.equal(capabilities.canSnapshot, false);
    assert.equal(capabilities.canMigrate, false);
    assert.equal(capabilities.canClone, false);
  });

  it('runs many isolates of one version in one runner, confined as a runc container when it can be', async () => {
    const driver = h.driver();
    const a = await h.instance(`iso-a-${process.pid}`);
    const b = await h.instance(`iso-b-${process.pid}`);
    try {
      const ia = await driver.start(a.spec);
      const ib = await driver.start(b.spec);
      await waitReady(a.socketPath);
      await waitReady(b.socketPath);
      assert.equal(ia.pid, ib.pid, 'one runner per service version');
      assert.deepEqual((await call(b.socketPath, 'POST', '/Echo', { n: 2 })).json, { n: 2 });
      const fp = await driver.fingerprint();
      if (missing(['root', 'runc']) === undefined) {
        assert.equal(fp.attributes.runner, 'runc');
        // ia.pid is `runc run`; the runner is its child, in namespaces of its own.
        let runner: string | undefined;
        for (const name of await readdir('/proc')) if (/^\d+$/.test(name) && (await readProcStat(Number(name)))?.ppid === ia.pid) runner = name;
        assert.ok(runner, 'the runner runs under runc');
        for (const ns of ['net', 'pid', 'mnt']) {
          assert.notEqual(await readlink(`/proc/${runner}/ns/${ns}`), await readlink(`/proc/self/ns/${ns}`), `the runner has its own ${ns} namespace`);
        }
        const status = await readFile(`/proc/${runner}/status`, 'utf8');
        assert.match(status, /^Seccomp:\s*2$/m);
        assert.match(status, /^NoNewPrivs:\s*1$/m);
        assert.match(status, /^CapEff:\s*0000000000000000$/m);
      } else {
        assert.equal(fp.attributes.runner, 'process');
        assert.match(fp.detail, /NOT confined/);
      }
    } finally {
      await driver.close();
      await a.release();
      await b.release();
    }
  });

  it('reaches a declared import through the host by name, and an import with no socket is refused', async () => {
    const rootfs = join(h.dir, 'importer');
    const entry = (await bundleService({ entry: new URL('../../fixtures/isolate-importer.ts', import.meta.url).pathname, outDir: rootfs })).entry;
    const driver = h.driver();
    const ci = await h.instance(`iso-imp-${process.pid}`);
    const spec = { ...ci.spec, rootfs, args: [entry] };
    // Another instance's import socket the isolate must not reach: it never names a path.
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c));
      req.on('end', () => res.end(JSON.stringify({ message: `echoed ${JSON.parse(body).message} at ${req.url}` })));
    });
    try {
      const inst = await driver.start(spec);
      await waitReady(ci.socketPath);
      // No echo.sock yet: the host refuses the import.
      const refused = (await call(ci.socketPath, 'POST', '/Relay', { message: 'early' })).json;
      assert.match(String(refused.failed), /not declared for this instance/);
      await new Promise<void>((r) => server.listen(join(spec.importsDir, 'echo.sock'), r));
      const relayed = (await call(ci.socketPath, 'POST', '/Relay', { message: 'hi' })).json;
      assert.deepEqual(relayed, { message: 'echoed hi at /Echo' });
      await inst.stop({ graceMs: 100 });
    } finally {
      server.close();
      await driver.close();
      await ci.release();
    }
  });

  it('a closed driver ends its runners; a new one recovers nothing and reports the instances stopped', async () => {
    const first = h.driver();
    const ci = await h.instance(`iso-rec-${process.pid}`);
    try {
      const inst = await first.start(ci.spec);
      await waitReady(ci.socketPath);
      await first.close();
      assert.equal((await inst.exited).reason, 'crashed');
      const second = h.driver();
      const found = await second.recover([{ id: ci.spec.id, stateDir: ci.spec.stateDir }]);
      assert.deepEqual(found, [{ id: ci.spec.id, status: 'stopped', instance: undefined }]);
      await second.close();
      await h.assertClean();
    } finally {
      await ci.release();
    }
  });

  it("caps an instance's log: at logMaxBytes it rotates once to .1, the rest is not kept", async () => {
    const driver = h.driver({ logMaxBytes: 64 * 1024 });
    const ci = await h.instance(`iso-log-${process.pid}`);
    try {
      const inst = await driver.start(ci.spec);
      await waitReady(ci.socketPath);
      assert.deepEqual((await call(ci.socketPath, 'POST', '/Shout', { kib: 1024 })).json, { shouted: 1024 });
      await inst.stop({ graceMs: 0 }); // the instance's exit waits for its log to be written
      assert.ok((await stat(ci.spec.logFile)).size <= 64 * 1024);
      assert.ok((await stat(`${ci.spec.logFile}.1`)).size <= 64 * 1024);
    } finally {
      await driver.close();
      await ci.release();
    }
  });

  it('a program that fails while starting is a crash with its message in the log', async () => {
    const driver = h.driver();
    const ci = await h.instance(`iso-bad-${process.pid}`);
    try {
      const inst = await driver.start({ ...ci.spec, args: ['/app/.shoal/src/service/define.mjs'] });
      const exit = await inst.exited;
      assert.equal(exit.reason, 'crashed');
      assert.match(await readFile(ci.spec.logFile, 'utf8'), /without calling serve\(\)/);
    } finally {
      await driver.close();
      await ci.release();
    }
  });
});
