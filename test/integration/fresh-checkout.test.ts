// The fresh-machine path: a copy of the checkout in a 0700 directory (root's home, a
// `mktemp -d` dir), `shoal up --driver process` there on an OS-chosen port, and
// `shoal call echo` answers. As root the process driver runs instances as uid 65534,
// which cannot enter the checkout, so the host keeps what they reach elsewhere
// (/var/lib/shoal/<hash>). Ctrl-C (SIGINT) then stops everything and leaves no process.
// The store is seeded from the cached echo store (no ~10 s template build), and
// node_modules is a symlink to this worktree's (an `npm ci` would take minutes).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmod, cp, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { echoStoreDir } from '../provider/fixtures/echo-store.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const run = promisify(execFile);

/** Tracked and untracked-but-not-ignored files: what a clone of the committed tree holds. */
async function copyCheckout(dest: string): Promise<void> {
  const { stdout } = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, maxBuffer: 64 << 20 });
  for (const file of stdout.split('\0').filter(Boolean)) {
    const from = join(ROOT, file);
    if (!(await stat(from).catch(() => undefined))?.isFile()) continue; // deleted in the work tree
    await mkdir(dirname(join(dest, file)), { recursive: true });
    await cp(from, join(dest, file));
  }
  await symlink(join(ROOT, 'node_modules'), join(dest, 'node_modules'));
}

async function pidsMentioning(text: string): Promise<number[]> {
  const pids: number[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    const cmdline = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(text)) pids.push(Number(p));
  }
  return pids;
}

describe('a fresh checkout in a 0700 directory', () => {
  let dir: string | undefined;
  let hostData: string | undefined;
  let child: ChildProcess | undefined;
  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
    if (hostData && !hostData.startsWith(dir ?? '\0')) await rm(hostData, { recursive: true, force: true });
  });

  it('shoal up --driver process serves shoal call, and Ctrl-C leaves nothing behind', async () => {
    dir = await mkdtemp(join(tmpdir(), 'fresh-'));
    await chmod(dir, 0o700);
    const checkout = join(dir, 'shoal');
    await copyCheckout(checkout);
    await cp(await echoStoreDir(), join(checkout, '.shoal', 'store'), { recursive: true });

    const shoal = join(checkout, 'bin', 'shoal.js');
    child = spawn(process.execPath, [shoal, 'up', '--driver', 'process', '--listen', '127.0.0.1:0', '--json'], {
      cwd: checkout,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SHOAL_LOG_LEVEL: 'warn', SHOAL_URL: '', SHOAL_TOKEN: '' },
    });
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    const ready = await new Promise<{ provider: string; hostData: string; adminToken: string; driver: string }>((resolve, reject) => {
      let out = '';
      child!.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        const line = out.split('\n')[0];
        if (out.includes('\n')) resolve(JSON.parse(line!));
      });
      child!.once('exit', (code) => reject(new Error(`shoal up exited (${code}): ${err}`)));
    });
    hostData = ready.hostData;
    assert.equal(ready.driver, 'process');
    assert.match(ready.provider, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(ready.adminToken, join(checkout, '.shoal', 'admin-token'));
    if (process.getuid?.() === 0) {
      assert.ok(!ready.hostData.startsWith(dir), `instances (uid 65534) must reach the host's data: ${ready.hostData}`);
      const st = await stat(ready.hostData);
      assert.equal(st.uid, 0);
      assert.equal(st.mode & 0o777, 0o711, 'traversable, not writable, by the instance');
    }

    // The CLI from inside the checkout finds the admin token in ./.shoal/.
    const call = await run(process.execPath, [shoal, 'call', 'echo', 'Echo', '{"message":"hi"}'], {
      cwd: checkout,
      env: { ...process.env, SHOAL_URL: ready.provider, SHOAL_TOKEN: '' },
      timeout: 60_000,
    }).catch((e: { stderr?: string; message: string }) => assert.fail(`shoal call failed: ${e.stderr ?? e.message}\n${err}`));
    assert.deepEqual(JSON.parse(call.stdout), { message: 'hi' });

    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child!.once('exit', (c) => resolve(c)));
    assert.equal(code, 0, err);
    assert.deepEqual(await pidsMentioning(checkout), [], 'no process of the checkout left');
    assert.deepEqual(await pidsMentioning(ready.hostData), [], 'no instance left');
  });
});
