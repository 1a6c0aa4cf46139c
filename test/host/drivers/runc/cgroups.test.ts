import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { cgroupExists, cgroupMode, cgroupPathsOf, readCgroupStats, readOomKills } from '../../../../src/host/drivers/runc/cgroups.ts';

describe('cgroup readers', () => {
  it('finds this process cgroups and reads usage from them', async (t) => {
    const mode = await cgroupMode();
    if (mode === 'none') {
      t.skip('no cgroup hierarchy mounted');
      return;
    }
    const paths = await cgroupPathsOf(process.pid);
    if (mode !== 'v2') {
      assert.ok(paths.v1.memory, 'a memory hierarchy');
      await access(paths.v1.memory);
    } else {
      assert.ok(paths.unified);
    }
    assert.equal(await cgroupExists(paths), true);
    const stats = await readCgroupStats(paths);
    assert.ok(stats.memoryBytes !== undefined && stats.memoryBytes > 0);
    assert.ok(stats.cpuUsageNanos !== undefined && stats.cpuUsageNanos > 0);
    assert.equal(typeof (await readOomKills(paths)), 'number');
    assert.equal(await cgroupExists({ v1: { memory: '/sys/fs/cgroup/memory/no-such-group' }, unified: undefined }), false);
  });
});
