import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHost } from '../../src/host/index.ts';

const base = {
  listen: { host: '127.0.0.1', port: 0 },
  token: 'index-test-token',
  capacity: { memoryMb: 1024, cpuMillis: 2000, instances: 4 },
  driver: 'process' as const,
};

test('startHost listens, keeps its key across restarts, and locks its data dir', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'shoal-hi-'));
  t.after(() => rm(dataDir, { recursive: true, force: true }));
  const a = await startHost({ ...base, dataDir });
  assert.match(a.controlUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.match(a.dataUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal((await fetch(`${a.controlUrl}/healthz`)).status, 200);
  const report = (await (await fetch(`${a.controlUrl}/v1/report`, { headers: { authorization: `Bearer ${base.token}` } })).json()) as any;
  assert.equal(report.hostId, a.hostId);
  assert.equal(report.drivers[0].name, 'process');
  assert.equal(report.drivers[0].fingerprint.healthy, true);
  // the data plane refuses what carries no token
  assert.equal((await fetch(`${a.dataUrl}/i/Echo`, { method: 'POST' })).status, 401);
  await assert.rejects(startHost({ ...base, dataDir }), (e: any) => e.code === 'conflict' && /already uses/.test(e.message));
  const key = await readFile(join(dataDir, 'host.key'));
  assert.equal((await stat(join(dataDir, 'host.key'))).mode & 0o777, 0o600);
  await a.close();
  await assert.rejects(fetch(`${a.controlUrl}/healthz`));
  const b = await startHost({ ...base, dataDir });
  assert.equal(b.hostId, a.hostId);
  assert.deepEqual(await readFile(join(dataDir, 'host.key')), key);
  await b.close();
});

test('a data dir too long for Unix socket paths is refused up front', async () => {
  await assert.rejects(startHost({ ...base, dataDir: join(tmpdir(), 'x'.repeat(80)) }), (e: any) => e.code === 'invalid' && e.field === 'dataDir');
});
