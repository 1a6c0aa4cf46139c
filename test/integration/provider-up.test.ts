// `shoal up` as a child process: it starts (store + provider + host on one address),
// `shoal call` reaches echo through it, `shoal ps` lists the instance, SIGTERM stops
// everything, and no container, mount or process is left behind.
// The store is seeded from the cached echo store so the test does not spend ~10 s
// building the node template (`shoal up` skips the build when the images are there).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { skipUnless } from '../host/fixtures/requirements.ts';
import { freePort } from '../fixtures/free-port.ts';
import { echoStoreDir } from '../provider/fixtures/echo-store.ts';

const skip = skipUnless(['root', 'runc']);
const SHOAL = fileURLToPath(new URL('../../bin/shoal.js', import.meta.url));

async function shoal(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [SHOAL, ...args], { env: { ...process.env, ...env }, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : 1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** Pids whose command line or working directory mentions `dir`. */
async function processesUsing(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    const cmdline = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(dir)) pids.push(Number(p));
  }
  return pids;
}

describe('shoal up', { skip }, () => {
  let dir: string | undefined;
  let child: ChildProcess | undefined;
  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('starts, serves echo through shoal call, and leaves nothing behind on SIGTERM', async () => {
    dir = await mkdtemp(join(tmpdir(), 'su-'));
    const data = join(dir, 'state');
    await cp(await echoStoreDir(), join(data, 'store'), { recursive: true });

    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    child = spawn(process.execPath, [SHOAL, 'up', '--listen', `127.0.0.1:${port}`, '--data', data], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SHOAL_LOG_LEVEL: 'warn' },
    });
    let out = '';
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    await new Promise<void>((resolve, reject) => {
      child!.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('Ctrl-C stops everything')) resolve();
      });
      child!.once('exit', (code) => reject(new Error(`shoal up exited (${code}): ${err}`)));
    });
    assert.match(out, new RegExp(`provider +${url}`));
    assert.match(out, /registered the echo service/);

    // The admin token made on first start: 0600 in the 0700 state directory, found there by the CLI.
    assert.match(out, /made an admin token: .*admin-token/);
    assert.equal((await stat(data)).mode & 0o777, 0o700);
    assert.equal((await stat(join(data, 'admin-token'))).mode & 0o777, 0o600);
    const env = { SHOAL_URL: url, SHOAL_STATE: data };
    const refused = await shoal(['ps', '--json'], { SHOAL_URL: url, SHOAL_STATE: join(dir, 'elsewhere') });
    assert.notEqual(refused.code, 0, 'no token, no listing');
    assert.match(refused.stderr, /missing token/);
    const echo = await shoal(['call', 'echo', 'Echo', '{"message":"hello"}'], env);
    assert.equal(echo.code, 0, echo.stderr);
    assert.deepEqual(JSON.parse(echo.stdout), { message: 'hello' });
    const inspect = await shoal(['call', 'echo', 'Inspect', '--json'], env);
    assert.equal(inspect.code, 0, inspect.stderr);
    const seen = JSON.parse(inspect.stdout);
    assert.deepEqual(seen.interfaces, ['lo'], 'isolated: only loopback inside');
    assert.equal(seen.pid, 1);
    const bad = await shoal(['call', 'echo', 'Echo', '{"message":3}'], env);
    assert.equal(bad.code, 2, 'invalid input exits 2');
    assert.match(bad.stderr, /\/message must be string/);
    const missing = await shoal(['call', 'nope', 'Echo'], env);
    assert.equal(missing.code, 3, 'not found exits 3');
    const ps = await shoal(['ps', '--json'], env);
    assert.equal(ps.code, 0, ps.stderr);
    const instances = JSON.parse(ps.stdout).instances;
    assert.equal(instances.length, 1);
    assert.equal(instances[0].service, 'echo');
    assert.equal(instances[0].driver, 'runc');
    const deps = await shoal(['deployments', 'echo'], env);
    assert.match(deps.stdout, /ready .* echo-/);
    assert.match(deps.stdout, /first-reply/);
    // The store answers on the same address.
    const admin = (await readFile(join(data, 'admin-token'), 'utf8')).trim();
    assert.equal((await fetch(`${url}/v2/`, { headers: { authorization: `Bearer ${admin}` } })).status, 200);
    assert.equal((await fetch(`${url}/v2/`)).status, 401, 'the challenge docker-style clients ask for');
    // Tokens from the CLI: a read token lists, cannot deploy; revoked, it lists no more.
    const made = await shoal(['token', 'create', '--role', 'read', '--ttl', '1h', '--json'], env);
    assert.equal(made.code, 0, made.stderr);
    const read = JSON.parse(made.stdout) as { secret: string; token: { id: string } };
    assert.equal((await shoal(['hosts', '--json', '--token', read.secret], env)).code, 0);
    assert.notEqual((await shoal(['service', 'rm', 'echo', '--token', read.secret], env)).code, 0);
    assert.match((await shoal(['token', 'ls'], env)).stdout, new RegExp(`${read.token.id} +read`));
    assert.equal((await shoal(['token', 'revoke', read.token.id], env)).code, 0);
    assert.notEqual((await shoal(['hosts', '--token', read.secret], env)).code, 0);
    const audit = await shoal(['audit', '--service', 'echo', '--json'], env);
    assert.equal(audit.code, 0, audit.stderr);
    assert.ok((JSON.parse(audit.stdout).entries as Array<{ status: number; role?: string }>).some((e) => e.status === 403 && e.role === 'read'), audit.stdout);

    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child!.once('exit', (c) => resolve(c)));
    assert.equal(code, 0, err);
    const mounts = (await readFile('/proc/mounts', 'utf8')).split('\n').filter((l) => l.includes(data));
    assert.deepEqual(mounts, [], 'no mount left');
    assert.deepEqual(await processesUsing(data), [], 'no process left');
    const runcRoot = join(data, 'host', 'runc');
    const containers = await readdir(runcRoot).catch(() => [] as string[]);
    assert.deepEqual(containers, [], 'no container left');
  });
});
