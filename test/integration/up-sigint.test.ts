// README: "Ctrl-C (SIGINT) or SIGTERM stops everything and leaves no container, mount or
// process." provider-up.test.ts proves it for SIGTERM; this is Ctrl-C, under the runc
// driver, with an instance running: after SIGINT to `shoal up` there is no runc container
// under its runc root, no mount under its state dir, no process it started and no cgroup
// of its instances.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { skipUnless } from '../host/fixtures/requirements.ts';
import { echoStoreDir } from '../provider/fixtures/echo-store.ts';
import { pidsMentioning } from '../fixtures/processes.ts';

const skip = skipUnless(['root', 'runc']);
const SHOAL = fileURLToPath(new URL('../../bin/shoal.js', import.meta.url));
const run = promisify(execFile);

/** Cgroup directories named `id` in any hierarchy (v2 or v1, under the driver's shoal/ parent or elsewhere one level down). */
async function cgroupsNamed(id: string): Promise<string[]> {
  const roots = ['/sys/fs/cgroup', ...(await readdir('/sys/fs/cgroup').catch(() => [] as string[])).map((h) => join('/sys/fs/cgroup', h))];
  const found: string[] = [];
  for (const root of roots) {
    const candidate = join(root, 'shoal', id);
    if (await stat(candidate).catch(() => undefined)) found.push(candidate);
  }
  return found;
}

describe('Ctrl-C (SIGINT) to shoal up under runc', { skip }, () => {
  let dir: string | undefined;
  let child: ChildProcess | undefined;
  after(async () => {
    // A failed assertion before the Ctrl-C: stop it in order (SIGKILL would leave the containers).
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT');
      const stopped = await Promise.race([new Promise((r) => child!.once('exit', r)), new Promise((r) => setTimeout(() => r('timeout'), 60_000))]);
      if (stopped === 'timeout') child.kill('SIGKILL');
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('stops every instance and leaves no container, mount, process or cgroup', async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigint-'));
    const data = join(dir, 'state');
    await cp(await echoStoreDir(), join(data, 'store'), { recursive: true });
    child = spawn(process.execPath, [SHOAL, 'up', '--listen', '127.0.0.1:0', '--data', data, '--driver', 'runc', '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SHOAL_LOG_LEVEL: 'warn', SHOAL_URL: '', SHOAL_TOKEN: '' },
    });
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    const ready = await new Promise<{ provider: string; hostData: string; driver: string }>((resolve, reject) => {
      let out = '';
      child!.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]!) as { provider: string; hostData: string; driver: string });
      });
      child!.once('exit', (code) => reject(new Error(`shoal up exited (${code}): ${err}`)));
    });
    assert.equal(ready.driver, 'runc');
    const env = { ...process.env, SHOAL_URL: ready.provider, SHOAL_STATE: data, SHOAL_TOKEN: '' };
    // Instances running: one deployed by a message, one by `service deploy`.
    const echo = await run(process.execPath, [SHOAL, 'call', 'echo', 'Echo', '{"message":"before ctrl-c"}'], { env });
    assert.deepEqual(JSON.parse(echo.stdout), { message: 'before ctrl-c' });
    const deployed = JSON.parse((await run(process.execPath, [SHOAL, 'service', 'deploy', 'echo', '--json'], { env })).stdout) as { deployments: Array<{ instanceId?: string }>; errors: string[] };
    assert.deepEqual(deployed.errors, []);
    const ps = JSON.parse((await run(process.execPath, [SHOAL, 'ps', '--json'], { env })).stdout) as { instances: Array<{ id: string }> };
    const ids = [...new Set([...ps.instances.map((i) => i.id), ...deployed.deployments.flatMap((d) => (d.instanceId === undefined ? [] : [d.instanceId]))])];
    assert.ok(ps.instances.length >= 1, JSON.stringify({ ps, deployed }));
    const runcRoot = join(ready.hostData, 'runc');
    const listed = (await run('runc', ['--root', runcRoot, 'list', '--quiet'])).stdout.split('\n').filter(Boolean);
    for (const { id } of ps.instances) {
      assert.ok(listed.includes(id), `${id} runs as a runc container (${listed.join(', ')})`);
      assert.notDeepEqual(await cgroupsNamed(id), [], `${id} has its cgroup while running`);
    }

    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child!.once('exit', (c) => resolve(c)));
    assert.equal(code, 0, err);

    const containers = (await run('runc', ['--root', runcRoot, 'list', '--quiet']).catch(() => ({ stdout: '' }))).stdout.split('\n').filter(Boolean);
    assert.deepEqual(containers, [], 'no runc container under its root');
    assert.deepEqual(await readdir(runcRoot).catch(() => [] as string[]), [], 'no container state left');
    const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(dir!));
    assert.deepEqual(mounts, [], 'no mount under its state dir');
    assert.deepEqual(await pidsMentioning(dir), [], 'no process it started');
    for (const id of ids) {
      assert.deepEqual(await pidsMentioning(id), [], `no process of ${id}`);
      assert.deepEqual(await cgroupsNamed(id), [], `no cgroup of ${id}`);
    }
  });
});
