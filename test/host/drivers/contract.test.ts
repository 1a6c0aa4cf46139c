// One contract suite for every driver (issue 13, item 6): the same service behaviour,
// exit events, limits and teardown, run against each driver in the table below. A row
// skips what its driver's capabilities exclude, with the reason. Adding a driver is one
// row: its factory, how to prepare an instance of the fixture service, its skips.
import { createProcessDriver } from '../../../src/host/drivers/process/index.ts';
import { createRuncDriver } from '../../../src/host/drivers/runc/index.ts';
import { createWasmDriver } from '../../../src/host/drivers/wasm/index.ts';
import { runDriverContract, type DriverContractOptions } from './contract.ts';
import { createIsolateHarness } from './isolate/harness.ts';
import { createProcessHarness } from './process/harness.ts';
import * as runc from './runc/harness.ts';

const NO_LIMITS = 'the process driver enforces no limits (capabilities.enforcesLimits is false)';
const CPU_IS_A_SHARE = 'runc bounds CPU as a share (cgroup cpu.max): a busy instance is slowed, never ended';

const processHarness = createProcessHarness();
const isolate = createIsolateHarness();
// The same bundle on the wasm driver runs on QuickJS (a .mjs entry).
const quickjs = createIsolateHarness();
const RUNNERS_END_WITH_THE_DRIVER = 'runners end with the driver that started them (their IPC channel closes), so a restarted agent finds its instances stopped';

export const driverRows: DriverContractOptions[] = [
  {
    name: 'process',
    before: () => processHarness.setUp(),
    after: () => processHarness.tearDown(),
    create: () => createProcessDriver({ log: () => undefined }),
    instance: (id) => processHarness.instance(id),
    skip: [{ reason: NO_LIMITS, tests: ['ends an instance over its memory limit as oom', 'ends an instance over its CPU-time limit as killed'] }],
  },
  ...(['shim', 'foreground'] as const).map(
    (mode): DriverContractOptions => ({
      name: `runc-${mode}`,
      unavailable: runc.unavailable,
      before: runc.setUp,
      after: runc.tearDown,
      create: () => createRuncDriver(runc.driverOptions(mode)),
      instance: (id) => runc.instance(id),
      assertClean: runc.assertClean,
      skip: [{ reason: CPU_IS_A_SHARE, tests: ['ends an instance over its CPU-time limit as killed'] }],
    }),
  ),
  {
    name: 'isolate',
    before: () => isolate.setUp(),
    after: () => isolate.tearDown(),
    create: () => isolate.driver(),
    instance: (id) => isolate.instance(id),
    assertClean: () => isolate.assertClean(),
    skip: [
      { reason: 'canPause is false: an isolate shares its runner process, which is never frozen for one instance', tests: ['pause holds requests until resume'] },
      {
        reason: 'runners end with the driver that started them (their IPC channel closes), so a restarted agent finds its isolate instances stopped (see isolate/index.test.ts)',
        tests: ['recover re-attaches a running instance and cleans a dead one'],
      },
    ],
  },
  {
    name: 'wasm (QuickJS)',
    before: () => quickjs.setUp(),
    after: () => quickjs.tearDown(),
    create: () => createWasmDriver({ callTimeoutMs: 1000, log: () => undefined }),
    instance: (id) => quickjs.instance(id),
    skip: [
      { reason: 'canPause is false: the wasm driver snapshots and forks instead', tests: ['pause holds requests until resume'] },
      { reason: RUNNERS_END_WITH_THE_DRIVER, tests: ['recover re-attaches a running instance and cleans a dead one'] },
    ],
  },
];

for (const row of driverRows) runDriverContract(row);
