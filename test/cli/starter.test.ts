// The starter service `shoal up` builds on first run (src/cli/starter/): it bundles from
// inside src/ and runs with plain node, answering Echo and Inspect as registered.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { bundleService } from '../../src/image/index.ts';
import { STARTER_ENTRY, starterDescription } from '../../src/cli/starter/echo.ts';
import { startChildService } from '../fixtures/child-service.ts';
import { post } from '../fixtures/instance-client.ts';

test('the starter bundles with the SDK and serves what the provider registers', async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'shoal-starter-'));
  t.after(() => rm(work, { recursive: true, force: true }));
  const bundle = await bundleService({ entry: STARTER_ENTRY, outDir: work });
  assert.ok(!bundle.files.some((f) => f.endsWith('.ts')), bundle.files.join(' '));
  assert.ok(!bundle.files.some((f) => f.includes('/cli/commands/')), 'the CLI itself stays out of the image');

  const running = await startChildService(join(work, bundle.entry), { socket: join(work, 'app.sock'), cwd: join(work, 'app'), env: { PATH: process.env.PATH ?? '' }, stderr: 'pipe' });
  t.after(async () => {
    running.child.kill('SIGTERM');
    await running.exited;
  });
  assert.deepEqual(Object.keys(starterDescription.operations).sort(), ['Echo', 'Inspect']);
  const echo = await post(running.socket, 'Echo', { message: 'hi' });
  assert.deepEqual([echo.status, echo.json], [200, { message: 'hi' }]);
  const inspect = await post(running.socket, 'Inspect', {});
  assert.equal(inspect.status, 200);
  assert.equal(inspect.json.pid, running.child.pid);
  const bad = await post(running.socket, 'Echo', { message: 1 });
  assert.equal(bad.status, 400);
});
