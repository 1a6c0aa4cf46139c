// The root template is the same bytes on every host for the same layers: a live migration's
// target and a restore elsewhere check its digest. The root directory is the instance's
// upper layer, made on each host at its own time: it must not reach the template.
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ensureRootTemplate } from '../../../../src/host/drivers/vm/disks.ts';
import { skipUnless } from '../../fixtures/requirements.ts';

describe('vm root template', { skip: skipUnless(['root', 'qemu']) }, () => {
  it('is the same for the same tree whatever the root directory\'s time and mode on this host', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-vm-disks-'));
    try {
      const trees = [join(dir, 'host-a'), join(dir, 'host-b')];
      for (const [i, t] of trees.entries()) {
        await mkdir(join(t, 'app'), { recursive: true });
        await writeFile(join(t, 'app', 'main.js'), 'console.log(1)\n');
        await utimes(join(t, 'app', 'main.js'), 1_600_000_000, 1_600_000_000);
        await utimes(join(t, 'app'), 1_600_000_000, 1_600_000_000);
        // The root: made at another time, with another mode, on each host.
        await chmod(t, i === 0 ? 0o755 : 0o700);
        await utimes(t, 1_700_000_000 + i * 1000, 1_700_000_000 + i * 1000);
      }
      const a = await ensureRootTemplate(join(dir, 'cache-a'), 'k', trees[0]!);
      const b = await ensureRootTemplate(join(dir, 'cache-b'), 'k', trees[1]!);
      assert.equal(a.digest, b.digest);
      // A file's content does reach it.
      await writeFile(join(trees[1]!, 'app', 'main.js'), 'console.log(2)\n');
      await utimes(join(trees[1]!, 'app', 'main.js'), 1_600_000_000, 1_600_000_000);
      const c = await ensureRootTemplate(join(dir, 'cache-c'), 'k', trees[1]!);
      assert.notEqual(c.digest, a.digest);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
