// What the long-running roles print: one JSON line when ready with --json (and nothing
// else on stdout), logs as JSON lines when stderr is not a terminal or --log-format json,
// pretty lines with --log-format pretty; SIGINT (Ctrl-C) stops them cleanly. Also where
// `shoal up` keeps the host's data when instances could not reach the state directory.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { logFormat, prettyLine } from '../../src/cli/logger.ts';
import { hostDataDir, othersCanTraverse } from '../../src/cli/commands/reachable-dir.ts';

const SHOAL = fileURLToPath(new URL('../../bin/shoal.js', import.meta.url));
const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'ro-'));
  dirs.push(d);
  return d;
}

/** Starts `shoal ARGS`, waits for its first stdout line, then Ctrl-C; returns all output. */
async function readyThenInterrupt(args: string[]): Promise<{ first: string; stdout: string; stderr: string; code: number | null }> {
  const child: ChildProcess = spawn(process.execPath, [SHOAL, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SHOAL_LOG_FORMAT: '' } });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  try {
    const first = await new Promise<string>((resolve, reject) => {
      child.stdout!.on('data', (c: Buffer) => {
        stdout += c.toString();
        if (stdout.includes('\n')) resolve(stdout.split('\n')[0]!);
      });
      child.once('exit', (code) => reject(new Error(`shoal ${args[0]} exited (${code}): ${stderr}`)));
    });
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    return { first, stdout, stderr, code };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

describe('log format', () => {
  it('is pretty on a terminal, JSON lines otherwise, and refuses unknown names', () => {
    assert.equal(logFormat(undefined, true), 'pretty');
    assert.equal(logFormat(undefined, false), 'json');
    assert.equal(logFormat('auto', false), 'json');
    assert.equal(logFormat('json', true), 'json');
    assert.equal(logFormat('pretty', false), 'pretty');
    assert.throws(() => logFormat('yaml', true), /--log-format must be json, pretty or auto/);
  });

  it('prints a pino line as time, level, role, message and fields', () => {
    const line = prettyLine(JSON.stringify({ level: 40, time: Date.UTC(2026, 0, 1, 12, 0, 1), pid: 1, hostname: 'h', name: 'up', msg: 'cannot expire', dir: '/x y', n: 3 }));
    assert.equal(line, '12:00:01 WARN  up: cannot expire  dir="/x y" n=3\n');
    assert.equal(prettyLine('not json'), 'not json\n');
  });
});

describe('host data of shoal up', () => {
  it('stays in the state dir unless instances run as another user and cannot reach it', async () => {
    const d = await tempDir();
    await chmod(d, 0o700);
    const state = join(d, '.shoal');
    assert.equal(await othersCanTraverse(state), false);
    assert.deepEqual(await hostDataDir(state, { processAsRoot: false }), { dir: join(state, 'host'), relocated: false });
    const top = await tempDir();
    await chmod(top, 0o755); // like /var/lib: others may pass
    const base = join(top, 'var-lib-shoal');
    const moved = await hostDataDir(state, { processAsRoot: true, base });
    assert.equal(moved.relocated, true);
    assert.ok(moved.dir.startsWith(`${base}/`));
    assert.equal((await stat(moved.dir)).mode & 0o777, 0o711);
    assert.equal(await othersCanTraverse(moved.dir), true);
    assert.deepEqual(await hostDataDir(state, { processAsRoot: true, base }), moved, 'the same state dir, the same place');
    const open = join(top, 'open');
    await mkdir(open, { mode: 0o755 });
    assert.equal((await hostDataDir(open, { processAsRoot: true, base })).relocated, false);
  });
});

describe('--json of the long-running roles', () => {
  it('shoal store --json prints one ready line, logs JSON on a pipe, and stops on Ctrl-C', async () => {
    const data = join(await tempDir(), 'store');
    const r = await readyThenInterrupt(['store', '--json', '--listen', '127.0.0.1:0', '--data', data]);
    const ready = JSON.parse(r.first) as { store: string; token: string };
    assert.match(ready.store, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(ready.token, join(data, 'store-token'));
    assert.equal(r.stdout, `${r.first}\n`, 'nothing else on stdout');
    assert.equal(r.code, 0, r.stderr);
    for (const line of r.stderr.split('\n').filter((l) => l.startsWith('{'))) JSON.parse(line);
  });

  it('shoal provider --json prints one ready line and stops on Ctrl-C; the join hint names --token', async () => {
    const d = await tempDir();
    const args = ['provider', '--listen', '127.0.0.1:0', '--db', join(d, 'shoal.db'), '--data', d, '--store', 'http://127.0.0.1:9'];
    const r = await readyThenInterrupt([...args, '--json', '--log-format', 'pretty']);
    const ready = JSON.parse(r.first) as { provider: string; adminToken: string; joinToken?: string };
    assert.match(ready.provider, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(ready.adminToken, join(d, 'admin-token'));
    assert.ok(ready.joinToken && ready.joinToken.length >= 8);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /^\{"level"/m, 'pretty logs, not JSON');
    const human = await readyThenInterrupt(args);
    assert.match(human.stdout, /hosts join with: shoal host --provider \S+ --join-token \S+ --token </);
  });
});
