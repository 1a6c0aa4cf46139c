import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tailLines } from '../../../src/host/instances/instance-log.ts';

test('the last lines of a log; nothing when there is no log yet; other failures are passed on', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-log-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'log');
  await writeFile(file, Array.from({ length: 100_000 }, (_, i) => `line ${i}`).join('\n') + '\n');
  assert.equal(await tailLines(file, 3), 'line 99997\nline 99998\nline 99999\n');
  await writeFile(file, 'only\n');
  assert.equal(await tailLines(file, 10), 'only\n');
  assert.equal(await tailLines(join(dir, 'none'), 10), '');
  await assert.rejects(tailLines(join(dir, 'log', 'below-a-file'), 10), /ENOTDIR/);
});
