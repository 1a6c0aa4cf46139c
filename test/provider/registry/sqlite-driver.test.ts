import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runRegistryContract } from './registry-contract.ts';
import { sqliteDatabases } from './fixtures/databases.ts';
import { openRegistry } from '../../../src/provider/registry/index.ts';
import { openSqliteDriver } from '../../../src/provider/registry/sqlite-driver.ts';
import { toSqlitePlaceholders } from '../../../src/provider/registry/sql-driver.ts';
import { MIGRATIONS } from '../../../src/provider/registry/migrations.ts';

runRegistryContract('sqlite', sqliteDatabases);

const here = path.dirname(fileURLToPath(import.meta.url));

test('placeholders: $N becomes ?N, repeated ones bind the same value', async () => {
  assert.equal(toSqlitePlaceholders('SELECT $1, $2, $1, $10'), 'SELECT ?1, ?2, ?1, ?10');
  const driver = await openSqliteDriver({ path: ':memory:' });
  try {
    assert.deepEqual(
      (await driver.query('SELECT $2 AS b, $1 AS a, $1 AS a2', [1, 'x'])).map((r) => ({ ...r })),
      [{ b: 'x', a: 1, a2: 1 }],
    );
  } finally {
    await driver.close();
  }
});

test('opening: WAL, synchronous=FULL, directories created, file: and sqlite: URLs', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'shoal-registry-open-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const [url, file] of [
    [`file:${dir}/a/b/one.db`, `${dir}/a/b/one.db`],
    [`sqlite:${dir}/two.db`, `${dir}/two.db`],
    [`file://${dir}/three.db`, `${dir}/three.db`],
  ] as const) {
    const r = await openRegistry({ url });
    const info = await r.info();
    await r.close();
    assert.deepEqual(info, { dialect: 'sqlite', location: file, schemaVersion: MIGRATIONS.length, journalMode: 'wal', synchronous: 2 });
  }
  const r = await openRegistry({ sqlitePath: path.join(dir, 'deep', 'er', 'four.db') });
  assert.equal((await r.info()).location, path.join(dir, 'deep', 'er', 'four.db'));
  await r.close();
  await assert.rejects(r.listServices(), /closed/, 'a closed registry refuses work');
});

test('a transaction that throws leaves nothing behind, and the connection stays usable', async () => {
  const driver = await openSqliteDriver({ path: ':memory:' });
  try {
    await driver.exec('CREATE TABLE t (x INTEGER)');
    await assert.rejects(
      driver.transaction(async (tx) => {
        await tx.query('INSERT INTO t (x) VALUES ($1)', [1]);
        throw new Error('boom');
      }),
      /boom/,
    );
    await driver.query('INSERT INTO t (x) VALUES ($1)', [2]);
    assert.deepEqual((await driver.query<{ x: number }>('SELECT x FROM t')).map((r) => r.x), [2]);
  } finally {
    await driver.close();
  }
});

test('kill -9 mid-stream loses no acknowledged service or deployment', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'shoal-registry-kill-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'shoal.db');
  const child = spawn(process.execPath, [path.join(here, 'fixtures', 'write-until-killed.ts'), file], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));

  const services = new Set<string>();
  const deployments = new Map<string, string>(); // id → service
  const ready = new Set<string>();
  const target = 150; // acknowledged writes before the kill
  let count = 0;
  let buffered = '';
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  await new Promise<void>((resolve, reject) => {
    child.on('exit', () => reject(new Error(`child exited early: ${stderr}`)));
    child.stdout.on('data', (b: Buffer) => {
      buffered += b.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        const [w, kind, a, b2] = line.split(' ');
        if (w !== 'written') continue;
        if (kind === 'service') services.add(a!);
        else if (kind === 'deployment') deployments.set(a!, b2!);
        else if (kind === 'ready') ready.add(a!);
        if (++count === target) {
          // Killed at once, while it is in the middle of its next write.
          child.kill('SIGKILL');
          resolve();
        }
      }
    });
  });
  const { signal } = await exited;
  assert.equal(signal, 'SIGKILL');
  assert.ok(services.size >= 40 && deployments.size >= 40, `acknowledged ${services.size} services, ${deployments.size} deployments`);

  const driver = await openSqliteDriver({ path: file });
  try {
    const check = await driver.query<{ integrity_check: string }>('PRAGMA integrity_check');
    assert.deepEqual(check.map((r) => r.integrity_check), ['ok']);
  } finally {
    await driver.close();
  }
  const r = await openRegistry({ url: file });
  try {
    const stored = new Set((await r.listServices()).map((s) => s.name));
    for (const s of services) assert.ok(stored.has(s), `service ${s} was acknowledged, then lost`);
    const rows = new Map((await r.listDeployments()).map((d) => [d.id, d]));
    for (const [id, service] of deployments) {
      assert.equal(rows.get(id)?.service, service, `deployment ${id} was acknowledged, then lost`);
    }
    for (const id of ready) assert.equal(rows.get(id)?.state, 'ready', `deployment ${id}'s ready state was acknowledged, then lost`);
  } finally {
    await r.close();
  }
});
