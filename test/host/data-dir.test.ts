import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkDataDirLength, isAlive, loadIdentity, loadOrCreate, lockDataDir } from '../../src/host/data-dir.ts';

async function dir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'shoal-dd-'));
  t.after(() => rm(d, { recursive: true, force: true }));
  return d;
}

test('a data dir is refused when instance socket paths under it would pass 107 bytes', () => {
  checkDataDirLength('/var/lib/shoal');
  assert.throws(() => checkDataDirLength(`/${'x'.repeat(60)}`), (e: any) => e.code === 'invalid' && e.field === 'dataDir');
});

test('one lock per data dir; a dead owner\'s lock is taken over; release is idempotent', async (t) => {
  const d = await dir(t);
  const release = await lockDataDir(d);
  assert.equal(await readFile(join(d, 'host.lock'), 'utf8'), String(process.pid));
  await assert.rejects(lockDataDir(d), (e: any) => e.code === 'conflict' && /in this process/.test(e.message));
  release();
  release();
  await assert.rejects(stat(join(d, 'host.lock')), /ENOENT/);
  // a lock left by a process that is gone
  const dead = 2 ** 22 + 12345;
  assert.equal(isAlive(dead), false);
  await writeFile(join(d, 'host.lock'), String(dead));
  const again = await lockDataDir(d);
  assert.equal(await readFile(join(d, 'host.lock'), 'utf8'), String(process.pid));
  again();
  // a live owner (pid 1) keeps it
  await writeFile(join(d, 'host.lock'), '1');
  await assert.rejects(lockDataDir(d), (e: any) => e.code === 'conflict' && /host process 1/.test(e.message));
});

test('the identity is made once, 0600, and read back after', async (t) => {
  const d = await dir(t);
  const a = await loadIdentity(d);
  assert.equal(a.routeKey.length, 32);
  assert.match(a.hostId, /^host-[0-9a-f]{8}$/);
  assert.equal((await stat(join(d, 'host.key'))).mode & 0o777, 0o600);
  const b = await loadIdentity(d);
  assert.deepEqual(b, a);
  let made = 0;
  await loadOrCreate(join(d, 'host.key'), () => Buffer.from(String(++made)));
  assert.equal(made, 0);
  await assert.rejects(loadOrCreate(join(d, 'host.key', 'x'), () => Buffer.from('x')), /ENOTDIR/, 'a read failure other than a missing file is passed on');
});
