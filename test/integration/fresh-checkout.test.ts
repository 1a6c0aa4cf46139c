// The fresh-machine path: a copy of the checkout in a 0700 directory (root's home, a
// `mktemp -d` dir), `shoal up --driver process` there on an OS-chosen port, and
// `shoal call echo` answers. As root the process driver runs instances as uid 65534,
// which cannot enter the checkout, so the host keeps what they reach elsewhere
// (/var/lib/shoal/<hash>). Then the newcomer's next steps on that platform: their own
// service deployed with `shoal deploy greeter.ts` (one module: the definition is read from
// it without serving), `shoal logs -f` and `shoal status`. Ctrl-C (SIGINT) then stops
// everything and leaves no process.
// The store is seeded from the cached echo store (no ~10 s template build), and
// node_modules is a symlink to this worktree's (an `npm ci` would take minutes).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmod, cp, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { echoStoreDir } from '../provider/fixtures/echo-store.ts';
import { pidsMentioning } from '../fixtures/processes.ts';

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

const GREETER = `import { defineService, serve, Type } from 'shoal/service';

export const Greeter = defineService({
  name: 'greeter',
  version: '1',
  operations: {
    Hello: { input: Type.Object({ name: Type.String() }), output: Type.Object({ greeting: Type.String() }) },
  },
  scaling: { idleTimeoutMs: 60_000 },
});

await serve(Greeter, {
  Hello: ({ name }) => {
    console.log('greeting ' + name);
    return { greeting: 'hello, ' + name };
  },
});
`;

interface Ready {
  provider: string;
  hostData: string;
  adminToken: string;
  driver: string;
}

describe('a fresh checkout in a 0700 directory', () => {
  let dir = '';
  let checkout = '';
  let shoalJs = '';
  let ready: Ready | undefined;
  let child: ChildProcess | undefined;
  let err = '';
  const env = () => ({ ...process.env, SHOAL_URL: ready!.provider, SHOAL_TOKEN: '', SHOAL_STORE: '', SHOAL_LOG_FORMAT: '' });
  /** `shoal ARGS` from inside the checkout (the CLI finds the admin token in ./.shoal/). */
  const shoal = (args: string[], cwd = checkout) =>
    run(process.execPath, [shoalJs, ...args], { cwd, env: env(), timeout: 120_000 }).catch((e: { stderr?: string; message: string }) =>
      assert.fail(`shoal ${args.join(' ')} failed: ${e.stderr ?? e.message}\n--- shoal up:\n${err.slice(-3000)}`),
    );

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fresh-'));
    await chmod(dir, 0o700);
    checkout = join(dir, 'shoal');
    shoalJs = join(checkout, 'bin', 'shoal.js');
    await copyCheckout(checkout);
    await cp(await echoStoreDir(), join(checkout, '.shoal', 'store'), { recursive: true });
    child = spawn(process.execPath, [shoalJs, 'up', '--driver', 'process', '--listen', '127.0.0.1:0', '--json'], {
      cwd: checkout,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SHOAL_LOG_LEVEL: 'warn', SHOAL_URL: '', SHOAL_TOKEN: '' },
    });
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    ready = await new Promise<Ready>((resolve, reject) => {
      let out = '';
      child!.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]!) as Ready);
      });
      child!.once('exit', (code) => reject(new Error(`shoal up exited (${code}): ${err}`)));
    });
  });

  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
    if (ready && !ready.hostData.startsWith(dir)) await rm(ready.hostData, { recursive: true, force: true });
  });

  it('shoal up --driver process starts, with what instances reach outside the 0700 directory', async () => {
    assert.equal(ready!.driver, 'process');
    assert.match(ready!.provider, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(ready!.adminToken, join(checkout, '.shoal', 'admin-token'));
    if (process.getuid?.() === 0) {
      assert.ok(!ready!.hostData.startsWith(dir), `instances (uid 65534) must reach the host's data: ${ready!.hostData}`);
      const st = await stat(ready!.hostData);
      assert.equal(st.uid, 0);
      assert.equal(st.mode & 0o777, 0o711, 'traversable, not writable, by the instance');
    }
  });

  it('shoal call echo answers', async () => {
    const call = await shoal(['call', 'echo', 'Echo', '{"message":"hi"}']);
    assert.deepEqual(JSON.parse(call.stdout), { message: 'hi' });
  });

  it('shoal deploy greeter.ts builds, pushes and registers it from one module, and it answers', async () => {
    const project = join(dir, 'greeter');
    await mkdir(join(project, 'node_modules'), { recursive: true });
    await symlink(checkout, join(project, 'node_modules', 'shoal')); // what `npm install <path to shoal>` makes
    await writeFile(join(project, 'greeter.ts'), GREETER);
    const deployed = await shoal(['deploy', join(project, 'greeter.ts'), '--json']);
    const r = JSON.parse(deployed.stdout) as { service: string; version: string; image: string; operations: string[]; call: string };
    assert.equal(r.service, 'greeter');
    assert.deepEqual(r.operations, ['Hello']);
    assert.match(r.image, /^greeter@sha256:[0-9a-f]{64}$/);
    assert.equal(r.call, `shoal call greeter Hello '{"name":"…"}'`);
    const show = JSON.parse((await shoal(['service', 'show', 'greeter', '--json'])).stdout) as { service: { description: { scaling: { idleTimeoutMs: number }; image: string } } };
    assert.equal(show.service.description.scaling.idleTimeoutMs, 60_000, 'the definition came from the module');
    assert.equal(show.service.description.image, 'greeter:1');
    const call = await shoal(['call', 'greeter', 'Hello', '{"name":"ada"}']);
    assert.deepEqual(JSON.parse(call.stdout), { greeting: 'hello, ada' });
    const human = await shoal(['deploy', join(project, 'greeter.ts')]);
    assert.match(human.stdout, /deployed greeter 1 .*\n  call it +shoal call greeter Hello/);
  });

  it('shoal logs shows what an instance wrote, and -f follows it until Ctrl-C', async () => {
    const once = await shoal(['logs', 'greeter']);
    assert.match(once.stdout, /greeting ada/);
    const follower = spawn(process.execPath, [shoalJs, 'logs', 'greeter', '-f', '--tail', '1'], { cwd: checkout, env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let ferr = '';
    follower.stderr.on('data', (c: Buffer) => (ferr += c.toString()));
    try {
      const seen = new Promise<void>((resolve, reject) => {
        follower.stdout.on('data', (c: Buffer) => {
          out += c.toString();
          if (out.includes('greeting grace')) resolve();
        });
        follower.once('exit', (code) => reject(new Error(`shoal logs -f exited (${code}): ${ferr}`)));
      });
      // The follower may not be attached yet when a call lands: call until one is seen.
      let stop = false;
      const calling = (async () => {
        while (!stop) {
          await shoal(['call', 'greeter', 'Hello', '{"name":"grace"}']);
          await new Promise((r) => setTimeout(r, 200));
        }
      })();
      await seen;
      stop = true;
      await calling;
      follower.kill('SIGINT');
      const code = await new Promise<number | null>((resolve) => follower.once('exit', (c) => resolve(c)));
      assert.equal(code, 0, ferr);
    } finally {
      if (follower.exitCode === null && follower.signalCode === null) follower.kill('SIGKILL');
    }
    const read = JSON.parse((await shoal(['token', 'create', '--role', 'read', '--json'])).stdout) as { secret: string };
    const withRead = await shoal(['logs', 'greeter', '--token', read.secret]);
    assert.match(withRead.stdout, /greeting grace/, 'a read token is enough');
  });

  it('shoal status shows hosts, services and instances', async () => {
    const s = JSON.parse((await shoal(['status', '--json'])).stdout) as {
      hosts: Array<{ state: string }>;
      services: Array<{ name: string; instances: number }>;
      instances: Array<{ service: string }>;
      recentFailures: { deployments: unknown[]; events: unknown[] };
    };
    assert.equal(s.hosts.length, 1);
    assert.equal(s.hosts[0]!.state, 'alive');
    assert.deepEqual(s.services.map((v) => v.name).sort(), ['echo', 'greeter']);
    assert.equal(s.services.find((v) => v.name === 'greeter')!.instances, 1);
    assert.ok(s.instances.some((i) => i.service === 'greeter'));
    assert.deepEqual(s.recentFailures.deployments, []);
    const human = await shoal(['status']);
    assert.match(human.stdout, /hosts \(1\)\n.*HOST/);
    assert.match(human.stdout, /services \(2\)/);
  });

  it('Ctrl-C (SIGINT) stops shoal up and leaves no process behind', async () => {
    child!.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child!.once('exit', (c) => resolve(c)));
    assert.equal(code, 0, err);
    assert.deepEqual(await pidsMentioning(checkout), [], 'no process of the checkout left');
    assert.deepEqual(await pidsMentioning(ready!.hostData), [], 'no instance left');
  });
});
