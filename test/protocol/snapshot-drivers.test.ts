// The compose types' list of drivers that can snapshot (SNAPSHOT_DRIVERS, src/protocol/farm-graph.ts)
// is the drivers' own word: every driver declaring canSnapshot is in it, and nothing else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SNAPSHOT_DRIVERS } from '../../src/protocol/index.ts';
import { capabilities as processCapabilities } from '../../src/host/drivers/process/index.ts';
import { capabilities as runcCapabilities } from '../../src/host/drivers/runc/index.ts';
import { capabilities as wasmCapabilities } from '../../src/host/drivers/wasm/index.ts';
import { capabilities as isolateCapabilities } from '../../src/host/drivers/isolate/index.ts';
import { capabilities as vmCapabilities } from '../../src/host/drivers/vm/index.ts';
import { driverNames } from '../../src/host/drivers/index.ts';

test('SNAPSHOT_DRIVERS is exactly the drivers that declare canSnapshot', () => {
  const all = { process: processCapabilities, runc: runcCapabilities, wasm: wasmCapabilities, isolate: isolateCapabilities, vm: vmCapabilities };
  assert.deepEqual(Object.keys(all).sort(), [...driverNames].sort(), 'every registered driver is checked');
  const capable = Object.entries(all)
    .filter(([, c]) => c.canSnapshot)
    .map(([n]) => n)
    .sort();
  assert.deepEqual([...SNAPSHOT_DRIVERS].sort(), capable);
});
