// Issue 9, item 8: the state `shoal up` leaves (.shoal/, its store, the SQLite registry
// with its -wal and -shm, the host's key and id) cannot be read or listed by another local
// user. The state is made by the same code `shoal up` runs; the reads are made as nobody
// (setpriv), and a control file shows that nobody can read what is meant to be readable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareStateDir } from '../../src/cli/commands/up.ts';
import { startHost } from '../../src/host/index.ts';
import { openRegistry } from '../../src/provider/registry/index.ts';

const SETPRIV = '/usr/bin/setpriv';
const why = process.getuid?.() !== 0 ? 'needs root (to act as another user)' : !existsSync(SETPRIV) ? `needs ${SETPRIV}` : undefined;

/** Runs argv as uid/gid 65534 with no supplementary groups; true if it succeeded. */
function asNobody(argv: string[]): { ok: boolean; stderr: string } {
  const r = spawnSync(SETPRIV, ['--reuid', '65534', '--regid', '65534', '--clear-groups', '--', ...argv], { encoding: 'utf8' });
  return { ok: r.status === 0, stderr: r.stderr };
}

test('secrets at rest: nobody can list the state or read the registry, its WAL, or the host key', { skip: process.env.CI === 'true' ? false : why }, async (t) => {
  if (why !== undefined) assert.fail(`CI=true: ${why}`);
  const root = await mkdtemp(join(tmpdir(), 'shoal-secrets-'));
  await chmod(root, 0o755); // like a project checkout: others may enter it
  const dataDir = join(root, '.shoal');
  await prepareStateDir(dataDir);
  const dbFile = join(dataDir, 'shoal.db');
  const registry = await openRegistry({ url: dbFile });
  await registry.upsertHost({ id: 'host-secret', controlUrl: 'http://127.0.0.1:1', dataUrl: 'http://127.0.0.1:2', controlToken: 'the-host-control-token' });
  const host = await startHost({
    dataDir: join(dataDir, 'host'),
    listen: { host: '127.0.0.1', port: 0 },
    token: 'the-host-control-token',
    capacity: { memoryMb: 1024, cpuMillis: 1000, instances: 2 },
    driver: 'process',
  });
  t.after(async () => {
    await host.close();
    await registry.close();
    await rm(root, { recursive: true, force: true });
  });

  // The harness works: nobody reads a file that is meant to be readable.
  const control = join(root, 'readable.txt');
  await writeFile(control, 'public', { mode: 0o644 });
  assert.ok(asNobody(['cat', control]).ok, 'nobody can read a 0644 file beside the state');

  const secrets = [dbFile, `${dbFile}-wal`, `${dbFile}-shm`, join(dataDir, 'host', 'host.key'), join(dataDir, 'host', 'host-id')];
  for (const f of secrets) {
    assert.ok(existsSync(f), `${f} exists (the test reads what is really there)`);
    assert.equal((await stat(f)).mode & 0o077, 0, `${f} is owner-only`);
    const r = asNobody(['cat', f]);
    assert.equal(r.ok, false, `nobody read ${f}`);
    assert.match(r.stderr, /Permission denied/);
  }
  for (const d of [dataDir, join(dataDir, 'store'), join(dataDir, 'host')]) {
    const r = asNobody(['ls', d]);
    assert.equal(r.ok, false, `nobody listed ${d}`);
    assert.match(r.stderr, /Permission denied/);
  }
  assert.equal((await stat(join(dataDir, 'store'))).mode & 0o777, 0o700);
});

test('secrets at rest: an older install’s world-readable database is narrowed when opened', { skip: process.env.CI === 'true' ? false : why }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-secrets-old-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const dbFile = join(dir, 'shoal.db');
  await (await openRegistry({ url: dbFile })).close();
  for (const f of [dbFile, `${dbFile}-wal`, `${dbFile}-shm`]) if (existsSync(f)) await chmod(f, 0o644);
  const registry = await openRegistry({ url: dbFile });
  t.after(() => registry.close());
  for (const f of [dbFile, `${dbFile}-wal`, `${dbFile}-shm`]) if (existsSync(f)) assert.equal((await stat(f)).mode & 0o777, 0o600, f);
});
