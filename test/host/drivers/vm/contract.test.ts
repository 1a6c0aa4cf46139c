// The driver contract (test/host/drivers/contract.ts) on the vm driver: a row of its own
// file, so its cold boots (seconds each under TCG) run beside the other drivers' rows
// instead of after them.
import { runDriverContract } from '../contract.ts';
import * as vm from './harness.ts';

runDriverContract({
  name: 'vm',
  unavailable: vm.unavailable,
  before: vm.setUp,
  after: vm.tearDown,
  create: () => vm.driver(),
  instance: (id) => vm.instance(id),
  assertClean: vm.assertClean,
  readyTimeoutMs: vm.BOOT_MS,
  skip: [{ reason: 'the vm driver bounds CPU as a share (the QEMU process\'s cgroup cpu.max): a busy guest is slowed, never ended', tests: ['ends an instance over its CPU-time limit as killed'] }],
});
