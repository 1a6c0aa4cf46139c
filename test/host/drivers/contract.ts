// The behaviour every instance driver must have (containerd's snapshotter test suite,
// Hono's shared router cases). A driver's test calls runDriverContract() once; a case a
// driver cannot pass is skipped with its reason.
import assert from 'node:assert/strict';
import { access, readdir } from 'node:fs/promises';
import { after, afterEach, before, describe, it } from 'node:test';
import { isPausable, type Driver, type InstanceExit, type InstanceSpec, type RunningInstance } from '../../../src/host/drivers/driver.ts';
import { call, waitReady } from '../../fixtures/instance-client.ts';

export interface ContractInstance {
  spec: InstanceSpec;
  /** Host path of the instance's socket (spec.socketDir/app.sock). */
  socketPath: string;
  /** Removes what instance() prepared (overlay mount, dirs); called after the driver's destroy(). */
  release(): Promise<void>;
}

export interface DriverContractOptions {
  name: string;
  /** A fresh driver over the same state; a second call plays an agent restart. */
  create: () => Driver | Promise<Driver>;
  /** Prepares one instance of the fixture service (test/host/fixtures/service.mjs). */
  instance: (id: string) => Promise<ContractInstance>;
  /** Runs after each test's cleanup: assert nothing of the driver is left behind. */
  assertClean?: () => Promise<void>;
  skip?: Array<{ reason: string; tests: string[] }>;
  /** Why the whole suite cannot run on this machine (from skipUnless), or false. */
  unavailable?: string | false;
  /** Runs once before the suite's tests (builds what `instance` needs). */
  before?: () => Promise<void>;
  /** Runs once after them. */
  after?: () => Promise<void>;
  /** How long a new instance may take to answer (default 10 s; a VM under TCG boots for seconds). */
  readyTimeoutMs?: number;
}

const EXIT_TIMEOUT_MS = 2000;

export const contractTests = [
  'starts an instance that answers over its socket',
  'stop ends the instance and reports it killed',
  'delivers the exit code of a crash promptly',
  'reports a clean exit as exited',
  'pause holds requests until resume',
  'reports stats of a running instance',
  'destroy is idempotent',
  'recover re-attaches a running instance and cleans a dead one',
  'fingerprint describes the host',
  'refuses a second start of a running id',
  'ends an instance over its memory limit as oom',
  'ends an instance over its CPU-time limit as killed',
] as const;

/** How long a limit may take to end an instance (a hog fills 128 MiB in well under a second). */
const LIMIT_TIMEOUT_MS = 30_000;

/** Fails unless the instance reports its exit within EXIT_TIMEOUT_MS. */
export async function exitWithin(inst: RunningInstance, ms = EXIT_TIMEOUT_MS): Promise<InstanceExit> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      inst.exited,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`instance ${inst.id} did not report its exit within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export function runDriverContract(options: DriverContractOptions): void {
  const skipped = new Map<string, string>();
  for (const s of options.skip ?? []) for (const t of s.tests) skipped.set(t, s.reason);

  describe(`driver contract: ${options.name}`, { skip: options.unavailable ?? false }, () => {
    if (options.before) before(options.before);
    if (options.after) after(options.after);
    /** Everything a test started, torn down after it whatever happened. */
    let cleanups: Array<() => Promise<void>> = [];
    let seq = 0;

    afterEach(async () => {
      const pending = cleanups.reverse();
      cleanups = [];
      for (const c of pending) await c();
      await options.assertClean?.();
    });

    async function fresh(driver: Driver, label: string): Promise<ContractInstance> {
      const id = `c-${options.name}-${label}-${process.pid}-${seq++}`;
      const ci = await options.instance(id);
      cleanups.push(async () => {
        await driver.destroy(ci.spec.id, ci.spec.stateDir);
        await ci.release();
      });
      return ci;
    }

    async function newDriver(): Promise<Driver> {
      const d = await options.create();
      cleanups.push(() => d.close());
      return d;
    }

    async function startReady(driver: Driver, label: string): Promise<{ ci: ContractInstance; inst: RunningInstance }> {
      const ci = await fresh(driver, label);
      const inst = await driver.start(ci.spec);
      await waitReady(ci.socketPath, options.readyTimeoutMs);
      return { ci, inst };
    }

    const test = (name: (typeof contractTests)[number], fn: () => Promise<void>): void => {
      it(name, { skip: skipped.get(name) ?? false }, fn);
    };

    test('starts an instance that answers over its socket', async () => {
      process.env.SHOAL_TEST_SECRET = 'the agent environment must not leak';
      const driver = await newDriver();
      const { ci, inst } = await startReady(driver, 'start');
      delete process.env.SHOAL_TEST_SECRET;
      assert.equal(inst.id, ci.spec.id);
      const echo = await call(ci.socketPath, 'POST', '/Echo', { hello: 'shoal', n: [1, 2] });
      assert.equal(echo.status, 200);
      assert.deepEqual(echo.json, { hello: 'shoal', n: [1, 2] });
      const env = (await call(ci.socketPath, 'POST', '/Inspect', {})).json.env as Record<string, string>;
      // The instance's environment is the spec's and nothing of the agent's.
      for (const entry of ci.spec.env) {
        const [k, ...v] = entry.split('=');
        assert.equal(env[k as string], v.join('='));
      }
      assert.equal(env.SHOAL_TEST_SECRET, undefined);
      await inst.stop({ graceMs: 2000 });
    });

    test('stop ends the instance and reports it killed', async () => {
      const driver = await newDriver();
      const { ci, inst } = await startReady(driver, 'stop');
      await inst.stop({ graceMs: 2000 });
      const exit = await exitWithin(inst, 100); // stop() resolves after the exit
      assert.equal(exit.reason, 'killed');
      await assert.rejects(call(ci.socketPath, 'GET', '/healthz', undefined, 1000));
      await inst.stop(); // again: nothing to do
    });

    test('delivers the exit code of a crash promptly', async () => {
      const driver = await newDriver();
      const { ci, inst } = await startReady(driver, 'crash');
      const r = await call(ci.socketPath, 'POST', '/Crash', { code: 3 });
      assert.equal(r.status, 200);
      const exit = await exitWithin(inst);
      assert.equal(exit.reason, 'crashed');
      assert.equal(exit.code, 3);
      assert.equal(exit.signal, undefined);
    });

    test('reports a clean exit as exited', async () => {
      const driver = await newDriver();
      const { ci, inst } = await startReady(driver, 'clean');
      await call(ci.socketPath, 'POST', '/Crash', { code: 0 });
      const exit = await exitWithin(inst);
      assert.equal(exit.reason, 'exited');
      assert.equal(exit.code, 0);
    });

    test('pause holds requests until resume', async () => {
      const driver = await newDriver();
      assert.equal(driver.capabilities.canPause, true);
      const { ci, inst } = await startReady(driver, 'pause');
      assert.ok(isPausable(inst));
      await inst.pause();
      let answered = false;
      const pending = call(ci.socketPath, 'POST', '/Echo', { while: 'paused' }, 10_000).then((r) => {
        answered = true;
        return r;
      });
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(answered, false, 'a paused instance must not answer');
      await inst.resume();
      assert.deepEqual((await pending).json, { while: 'paused' });
      await inst.stop({ graceMs: 2000 });
    });

    test('reports stats of a running instance', async () => {
      const driver = await newDriver();
      const { inst } = await startReady(driver, 'stats');
      const s = await inst.stats();
      assert.ok(s.memoryBytes !== undefined && s.memoryBytes > 1024 * 1024, `memory ${s.memoryBytes}`);
      assert.ok(s.cpuUsageNanos !== undefined && s.cpuUsageNanos > 0, `cpu ${s.cpuUsageNanos}`);
      assert.ok(s.pids !== undefined && s.pids >= 1, `pids ${s.pids}`);
      await inst.stop({ graceMs: 2000 });
    });

    test('destroy is idempotent', async () => {
      const driver = await newDriver();
      const { ci, inst } = await startReady(driver, 'destroy');
      await driver.destroy(ci.spec.id, ci.spec.stateDir); // destroys a running instance
      const exit = await exitWithin(inst);
      assert.equal(exit.reason, 'killed');
      await driver.destroy(ci.spec.id, ci.spec.stateDir);
      await driver.destroy(ci.spec.id, ci.spec.stateDir);
      // The driver's own leftovers in stateDir are gone.
      const left = await readdir(ci.spec.stateDir).catch(() => []);
      assert.deepEqual(left, []);
      // Never started at all.
      const never = await fresh(driver, 'never');
      await driver.destroy(never.spec.id, never.spec.stateDir);
    });

    test('recover re-attaches a running instance and cleans a dead one', async () => {
      const first = await options.create();
      const alive = await fresh(first, 'alive');
      const dead = await fresh(first, 'dead');
      const aliveInst = await first.start(alive.spec);
      const deadInst = await first.start(dead.spec);
      await waitReady(alive.socketPath, options.readyTimeoutMs);
      await waitReady(dead.socketPath, options.readyTimeoutMs);
      // The agent goes away (its driver lets go of its instances) ...
      await first.close();
      // ... and meanwhile one instance dies.
      await call(dead.socketPath, 'POST', '/Crash', { code: 4 });
      await new Promise((r) => setTimeout(r, 300));
      void aliveInst;
      void deadInst;

      const second = await newDriver();
      const gone = `c-${options.name}-unknown-${process.pid}-${seq++}`;
      const goneInstance = await options.instance(gone);
      cleanups.push(() => goneInstance.release());
      const found = await second.recover([
        { id: alive.spec.id, stateDir: alive.spec.stateDir },
        { id: dead.spec.id, stateDir: dead.spec.stateDir },
        { id: gone, stateDir: goneInstance.spec.stateDir },
      ]);
      const byId = new Map(found.map((f) => [f.id, f]));
      const a = byId.get(alive.spec.id);
      assert.equal(a?.status, 'running');
      assert.ok(a?.instance, 'the running instance is re-attached');
      assert.equal(byId.get(dead.spec.id)?.status, 'stopped');
      assert.equal(byId.get(dead.spec.id)?.instance, undefined);
      assert.equal(byId.get(gone)?.status, 'stopped');
      // The re-attached instance still answers, and its exit is still noticed.
      assert.equal((await call(alive.socketPath, 'POST', '/Echo', { again: true })).status, 200);
      await call(alive.socketPath, 'POST', '/Crash', { code: 5 });
      const exit = await exitWithin(a.instance);
      assert.ok(exit.reason === 'crashed', `reason ${exit.reason}`);
      assert.ok(exit.code === 5 || exit.code === undefined, `code ${exit.code}`);
      // Nothing of the dead one is left to the driver.
      const left = await readdir(dead.spec.stateDir).catch(() => []);
      assert.deepEqual(left, []);
    });

    test('fingerprint describes the host', async () => {
      const driver = await newDriver();
      const fp = await driver.fingerprint();
      assert.equal(fp.healthy, true, fp.detail);
      assert.equal(typeof fp.detail, 'string');
      assert.equal(fp.attributes.isolation, driver.capabilities.isolation);
    });

    test('ends an instance over its memory limit as oom', async () => {
      const driver = await newDriver();
      const { ci, inst } = await startReady(driver, 'oom');
      await call(ci.socketPath, 'POST', '/Hog', {}).catch(() => undefined); // may end before it answers
      const exit = await exitWithin(inst, LIMIT_TIMEOUT_MS);
      assert.equal(exit.reason, 'oom');
    });

    test('ends an instance over its CPU-time limit as killed', async () => {
      const driver = await newDriver();
      const { ci, inst } = await startReady(driver, 'cpu');
      const r = await call(ci.socketPath, 'POST', '/Spin', {}, LIMIT_TIMEOUT_MS).catch(() => undefined);
      if (r !== undefined) assert.ok(r.status >= 500, `a message stopped by the limit fails, got ${r.status}`);
      const exit = await exitWithin(inst, LIMIT_TIMEOUT_MS);
      assert.equal(exit.reason, 'killed');
      assert.equal(exit.signal, 'SIGXCPU');
    });

    test('refuses a second start of a running id', async () => {
      const driver = await newDriver();
      const { ci, inst } = await startReady(driver, 'twice');
      await assert.rejects(driver.start(ci.spec), (e: { code?: string }) => e.code === 'conflict');
      assert.equal((await call(ci.socketPath, 'GET', '/healthz')).status, 200);
      await inst.stop({ graceMs: 2000 });
      await access(ci.spec.rootfs);
    });
  });
}
