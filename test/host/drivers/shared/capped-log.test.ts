import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openCappedLog } from '../../../../src/host/drivers/shared/capped-log.ts';

describe('capped log', () => {
  it('keeps at most twice maxBytes on disk, rotating once to .1', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-capped-'));
    try {
      const file = join(dir, 'log');
      const log = openCappedLog(file, { maxBytes: 1000, maxPendingBytes: 1 << 20 });
      for (let i = 0; i < 500; i++) log.write(`line ${String(i).padStart(4, '0')}\n`); // 5000 bytes
      await log.close();
      assert.ok((await stat(file)).size <= 1000);
      assert.ok((await stat(`${file}.1`)).size <= 1000);
      assert.match(await readFile(file, 'utf8'), /line 0499\n$/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('drops output beyond the pending buffer and says so once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-capped-'));
    try {
      const file = join(dir, 'log');
      const log = openCappedLog(file, { maxBytes: 1 << 20, maxPendingBytes: 100 });
      // Written synchronously: nothing reaches the disk in between, so all but 100 bytes are dropped.
      for (let i = 0; i < 100; i++) log.write('0123456789');
      await log.close();
      const text = await readFile(file, 'utf8');
      assert.equal(text.match(/log truncated/g)?.length, 1);
      assert.match(text, /\d{3} bytes of output dropped/);
      assert.ok(text.length < 300);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
